/**
 * TOTP (RFC 6238) as the second factor of local users, via otpauth: HMAC-SHA-1, 6 digits, 30-second
 * steps counted from the Unix epoch (T0 = 0), and a window of one step either side for clock drift
 * (RFC 6238 §5.2 recommends at most one). The step that matched is returned so the caller can record
 * it: a code is accepted at most once (§5.2: "MUST NOT accept the second attempt of the same OTP").
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';

export interface TotpParams {
  algorithm: 'SHA1' | 'SHA256' | 'SHA512';
  digits: number;
  /** Step length in seconds (X in RFC 6238 §4.1). */
  period: number;
  /** Steps accepted before and after the current one. */
  window: number;
}

export const TOTP_DEFAULTS: TotpParams = { algorithm: 'SHA1', digits: 6, period: 30, window: 1 };

/** A new seed: 20 random bytes, the HMAC-SHA-1 output length (RFC 4226 §4 R6 asks for at least 128 bits). */
export function newTotpSecret(): Buffer {
  return randomBytes(20);
}

/** The time step of `nowMs` (RFC 6238 §4.2: T = floor((now − T0) / X)). */
export function totpStep(nowMs: number, params: TotpParams = TOTP_DEFAULTS): number {
  return Math.floor(nowMs / 1000 / params.period);
}

/** The code of step `step` (RFC 6238 §4.2, HOTP of RFC 4226 §5.3 with the step as counter). */
export function totpCode(secret: Buffer, step: number, params: TotpParams = TOTP_DEFAULTS): string {
  return TOTP.generate({ secret: toSecret(secret), algorithm: params.algorithm, digits: params.digits, period: params.period, timestamp: step * params.period * 1000 });
}

/**
 * The step whose code is `code`, within the window around `nowMs`, or undefined. The code must be
 * exactly `digits` ASCII digits; every candidate is compared in constant time.
 */
export function matchTotp(secret: Buffer, code: string, nowMs: number, params: TotpParams = TOTP_DEFAULTS): number | undefined {
  if (typeof code !== 'string' || code.length !== params.digits || !/^[0-9]+$/.test(code)) return undefined;
  const current = totpStep(nowMs, params);
  let found: number | undefined;
  for (let d = -params.window; d <= params.window; d++) {
    const step = current + d;
    if (step < 0) continue;
    // No early exit: every candidate is computed and compared, whichever matches.
    if (timingSafeEqual(Buffer.from(totpCode(secret, step, params)), Buffer.from(code)) && found === undefined) found = step;
  }
  return found;
}

/** The otpauth:// URI an authenticator app scans (Key Uri Format), shown once at enrolment. */
export function totpUri(secret: Buffer, issuer: string, label: string, params: TotpParams = TOTP_DEFAULTS): string {
  return new TOTP({ issuer, label, secret: toSecret(secret), algorithm: params.algorithm, digits: params.digits, period: params.period }).toString();
}

function toSecret(secret: Buffer): Secret {
  return new Secret({ buffer: secret.buffer.slice(secret.byteOffset, secret.byteOffset + secret.byteLength) });
}
