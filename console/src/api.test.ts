import { describe, expect, it } from 'vitest';
import { ApiError, CSRF_COOKIE, csrfToken } from './api.js';

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
  });
});
