import { describe, expect, it } from 'vitest';
import { ApiError, CSRF_COOKIE, csrfToken, setStepUpPrompt, withStepUp } from './api.js';

describe('console api client', () => {
  it('reads the CSRF token from its cookie only', () => {
    expect(csrfToken(`a=1; ${CSRF_COOKIE}=tok%2Ben; b=2`)).toBe('tok+en');
    expect(csrfToken(`${CSRF_COOKIE}x=1; x${CSRF_COOKIE}=2`)).toBe('');
    expect(csrfToken('')).toBe('');
    expect(csrfToken(`${CSRF_COOKIE}=%E0%A4%A`)).toBe('');
    expect(CSRF_COOKIE).toBe('__Host-tessera_csrf');
  });

  it('401 means sign in; other errors do not', () => {
    expect(new ApiError(401, 'TESSERA_AUTH_REQUIRED', 'x').signIn).toBe(true);
    expect(new ApiError(403, 'TESSERA_FORBIDDEN', 'x').signIn).toBe(false);
    // A 401 asking for fresh MFA is a step-up, not a sign-in.
    const mfa = new ApiError(401, 'TESSERA_MFA_REQUIRED', 'x');
    expect([mfa.signIn, mfa.stepUp]).toEqual([false, true]);
  });

  it('withStepUp: on TESSERA_MFA_REQUIRED asks once, retries once after a step-up; passes other refusals through', async () => {
    const mfa = new ApiError(401, 'TESSERA_MFA_REQUIRED', 'x');
    let asked = 0;
    let answer = true;
    setStepUpPrompt(async () => {
      asked++;
      return answer;
    });
    try {
      let calls = 0;
      await expect(withStepUp(async () => (++calls === 1 ? Promise.reject(mfa) : 'done'))).resolves.toBe('done');
      expect([calls, asked]).toEqual([2, 1]);
      // Cancelled: the refusal stands, no retry.
      answer = false;
      calls = 0;
      await expect(withStepUp(async () => {
        calls++;
        throw mfa;
      })).rejects.toBe(mfa);
      expect([calls, asked]).toEqual([1, 2]);
      // Still refused after the step-up: thrown, not asked again.
      answer = true;
      await expect(withStepUp(async () => {
        throw mfa;
      })).rejects.toBe(mfa);
      expect(asked).toBe(3);
      const forbidden = new ApiError(403, 'TESSERA_FORBIDDEN', 'no');
      await expect(withStepUp(async () => {
        throw forbidden;
      })).rejects.toBe(forbidden);
      expect(asked).toBe(3);
    } finally {
      setStepUpPrompt(undefined);
    }
  });
});
