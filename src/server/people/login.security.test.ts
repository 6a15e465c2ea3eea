/**
 * `tessera login` against a real control plane (HTTPS on 127.0.0.1, SQLite file): the browser flow
 * (loopback redirect + PKCE S256) and the device authorization grant (RFC 8628), the person
 * certificate they give (X509-SVID, recorded with the approving session's MFA), how admin actions
 * through it are judged, its revocation, and every refusal with its stable code.
 */
import { X509Certificate, createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf, type Browser } from '../../../test/support/http-browser.js';
import { PeopleDriver, TestClock, type TestPerson } from '../../../test/support/people.js';
import { makeCsrPem, rawRequest, startControlPlane, type RawResponse, type TestControlPlane } from '../../../test/support/server.js';
import { createCsr } from '../../core/csr.js';
import { pemEncode, spkiDer } from '../../core/x509.js';
import { DEVICE_GRANT } from './login-routes.js';
import { normaliseUserCode, USER_CODE_ALPHABET } from './login.js';

let t: TestControlPlane;
const clock = new TestClock();
let p: PeopleDriver;
let alice: TestPerson;
let aliceBrowser: Browser;

interface Key { pem: string; keyPem: string; thumbprint: string }

/** A CLI key: its CSR (no SAN) and the thumbprint the login starts with. */
function cliKey(o: { uriSan?: string } = {}): Key {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const pem = pemEncode(createCsr({ privateKey, publicKey, ...(o.uriSan ? { uriSan: o.uriSan } : {}) }), 'CERTIFICATE REQUEST');
  return { pem, keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, thumbprint: createHash('sha256').update(spkiDer(publicKey)).digest('base64url') };
}

function anon(path: string, body: unknown): Promise<RawResponse> {
  return rawRequest(t.cp.url, { path, method: 'POST', ca: t.adminTls.ca, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
}

/** A request with a person certificate. */
function asPerson(cert: { cert_pem: string }, key: Key, path: string, body?: unknown): Promise<RawResponse> {
  return rawRequest(t.cp.url, {
    path, method: body === undefined ? 'GET' : 'POST', ca: t.adminTls.ca, cert: cert.cert_pem, key: key.keyPem,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
}

interface Issued { cert_pem: string; bundle_pem: string; spiffe_id: string; serial: string; mfa_at: string | null; not_after: string; groups: string[]; username: string }

/** The browser flow up to the code: the signed-in person approves; returns the code and the verifier. */
async function approveBrowser(b: Browser, key: Key, o: { step_up?: boolean; ttl_seconds?: number; redirect_uri?: string } = {}): Promise<{ code: string; verifier: string; redirect: string; res: RawResponse }> {
  const verifier = randomBytes(32).toString('base64url');
  const res = await b.post('/v1/login/authorize', {
    redirect_uri: o.redirect_uri ?? 'http://127.0.0.1:41234/', state: 'state-0123456789abcdef', code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256', key_thumbprint: key.thumbprint, approve: true, ...(o.step_up !== undefined ? { step_up: o.step_up } : {}), ...(o.ttl_seconds ? { ttl_seconds: o.ttl_seconds } : {}),
  });
  const redirect = res.status === 200 ? String((res.json as { redirect: string }).redirect) : '';
  return { code: redirect ? new URL(redirect).searchParams.get('code')! : '', verifier, redirect, res };
}

function redeem(code: string, verifier: string, key: Key, redirectUri = 'http://127.0.0.1:41234/'): Promise<RawResponse> {
  return anon('/v1/login/token', { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirectUri, csr: key.pem });
}

/** A whole browser-flow login of the person signed in in `b`. */
async function browserLogin(b: Browser, key = cliKey()): Promise<{ issued: Issued; key: Key }> {
  const a = await approveBrowser(b, key);
  expect(a.res.status, a.res.text).toBe(200);
  const r = await redeem(a.code, a.verifier, key);
  expect(r.status, r.text).toBe(200);
  return { issued: r.json as Issued, key };
}

async function startDevice(key: Key, extra: Record<string, unknown> = {}): Promise<{ device_code: string; user_code: string; interval: number; expires_in: number; verification_uri: string; verification_uri_complete: string }> {
  const r = await anon('/v1/login/device', { key_thumbprint: key.thumbprint, ...extra });
  expect(r.status, r.text).toBe(200);
  return r.json as never;
}

const poll = (deviceCode: string, key: Key): Promise<RawResponse> => anon('/v1/login/token', { grant_type: DEVICE_GRANT, device_code: deviceCode, csr: key.pem });

beforeAll(async () => {
  t = await startControlPlane({ people: { now: clock.now } });
  p = new PeopleDriver(t, clock);
  ({ person: alice, browser: aliceBrowser } = await p.enrol('alice', ['admins']));
});
afterAll(async () => {
  await t?.close();
});

describe('device authorization grant (RFC 8628)', () => {
  it('§3.2 answers, §3.5 authorization_pending and slow_down (interval +5 s, kept), then the certificate once approved', async () => {
    const key = cliKey();
    const d = await startDevice(key);
    expect(d.interval).toBe(5);
    expect(d.expires_in).toBe(600);
    expect(d.user_code).toMatch(new RegExp(`^[${USER_CODE_ALPHABET}]{4}-[${USER_CODE_ALPHABET}]{4}$`));
    expect(d.verification_uri).toBe(`${t.cp.url}/auth/device`);
    expect(d.verification_uri_complete).toBe(`${t.cp.url}/auth/device?user_code=${d.user_code}`);
    expect(d.device_code).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(codeOf(await poll(d.device_code, key))).toBe('TESSERA_LOGIN_PENDING');
    // Polled again at once: slow_down, and from now on 10 s.
    const slow = await poll(d.device_code, key);
    expect(codeOf(slow)).toBe('TESSERA_LOGIN_SLOW_DOWN');
    expect((slow.json as { error: { message: string } }).error.message).toContain('10 s');
    clock.t += 6_000;
    expect(codeOf(await poll(d.device_code, key))).toBe('TESSERA_LOGIN_SLOW_DOWN');
    clock.t += 16_000;
    expect(codeOf(await poll(d.device_code, key))).toBe('TESSERA_LOGIN_PENDING');
    // The person looks the code up (typed in lower case, without the dash), sees which CLI asked, approves.
    const look = await aliceBrowser.post('/v1/login/device/lookup', { user_code: d.user_code.replace('-', '').toLowerCase() });
    expect(look.status, look.text).toBe(200);
    expect(look.json).toMatchObject({ client_ip: '127.0.0.1', ttl_seconds: 3600, step_up: false, key_thumbprint: key.thumbprint });
    expect((await aliceBrowser.post('/v1/login/device/decide', { user_code: d.user_code, approve: true })).status).toBe(200);
    const r = await poll(d.device_code, key);
    expect(r.status, r.text).toBe(200);
    const issued = r.json as Issued;
    expect(issued).toMatchObject({ username: 'alice', spiffe_id: 'spiffe://tessera.test/user/alice', groups: ['admins'] });
    expect(issued.mfa_at).not.toBeNull();
    // Redeemed once only.
    clock.t += 30_000;
    expect(codeOf(await poll(d.device_code, key))).toBe('TESSERA_LOGIN_CODE_INVALID');
  });

  it('§3.5 access_denied when the person denies, expired_token after expires_in', async () => {
    const key = cliKey();
    const d = await startDevice(key);
    expect((await aliceBrowser.post('/v1/login/device/decide', { user_code: d.user_code, approve: false })).status).toBe(200);
    expect(codeOf(await poll(d.device_code, key))).toBe('TESSERA_LOGIN_DENIED');
    // A decided code cannot be decided again.
    expect(codeOf(await aliceBrowser.post('/v1/login/device/decide', { user_code: d.user_code, approve: true }))).toBe('TESSERA_USER_CODE_INVALID');
    const late = await startDevice(key);
    clock.t += 601_000;
    expect(codeOf(await poll(late.device_code, key))).toBe('TESSERA_LOGIN_EXPIRED');
    expect(codeOf(await aliceBrowser.post('/v1/login/device/lookup', { user_code: late.user_code }))).toBe('TESSERA_USER_CODE_INVALID');
    expect(codeOf(await poll('x'.repeat(43), key))).toBe('TESSERA_LOGIN_CODE_INVALID');
  });

  it('a guessed user code: a few wrong attempts, then TESSERA_RATE_LIMITED (even for the right code) with Retry-After', async () => {
    const { person: bob, browser: bobB } = await p.enrol('bob', ['admins']);
    expect(bob.name).toBe('bob');
    const d = await startDevice(cliKey());
    const wrong = normaliseUserCode(d.user_code) === 'BBBBBBBB' ? 'CCCC-CCCC' : 'BBBB-BBBB';
    for (let i = 0; i < 5; i++) expect(codeOf(await bobB.post('/v1/login/device/lookup', { user_code: wrong })), `attempt ${i}`).toBe('TESSERA_USER_CODE_INVALID');
    for (const bad of ['', 'AEIO-UAEI', '1234-5678', 'x'.repeat(40)]) expect(codeOf(await bobB.post('/v1/login/device/decide', { user_code: bad, approve: true }))).toBe('TESSERA_RATE_LIMITED');
    const limited = await bobB.post('/v1/login/device/lookup', { user_code: d.user_code });
    expect(limited.status).toBe(429);
    expect(codeOf(limited)).toBe('TESSERA_RATE_LIMITED');
    // Another person's allowance is their own.
    expect((await aliceBrowser.post('/v1/login/device/lookup', { user_code: d.user_code })).status).toBe(200);
  });

  it('refuses bad device requests', async () => {
    for (const bad of [{}, { key_thumbprint: 'short' }, { key_thumbprint: 'A'.repeat(43), ttl_seconds: 10 }, { key_thumbprint: 'A'.repeat(43), ttl_seconds: '3600' },
      { key_thumbprint: 'A'.repeat(43), step_up: 'yes' }, { key_thumbprint: 'A'.repeat(43), extra: 1 }]) {
      expect(codeOf(await anon('/v1/login/device', bad)), JSON.stringify(bad)).toBe('TESSERA_BAD_REQUEST');
    }
    expect(codeOf(await anon('/v1/login/token', { grant_type: 'password', csr: 'x' }))).toBe('TESSERA_BAD_REQUEST');
    // Approving needs a session; lookups too.
    const nobody = p.browser();
    expect(codeOf(await nobody.post('/v1/login/device/lookup', { user_code: 'BCDF-GHJK' }))).toBe('TESSERA_SESSION_REQUIRED');
    // And the CSRF token from the page's origin.
    expect(codeOf(await aliceBrowser.post('/v1/login/device/decide', { user_code: 'BCDF-GHJK', approve: true }, { csrf: null }))).toBe('TESSERA_CSRF_INVALID');
    expect(codeOf(await aliceBrowser.post('/v1/login/device/decide', { user_code: 'BCDF-GHJK', approve: true }, { origin: 'https://evil.example' }))).toBe('TESSERA_CSRF_INVALID');
  });
});

describe('browser flow (loopback redirect, PKCE S256)', () => {
  it('issues an X509-SVID for the person\'s key, recorded with the session\'s MFA; TTL bounded by the server', async () => {
    const long = cliKey();
    const a = await approveBrowser(aliceBrowser, long, { ttl_seconds: 6 * 86_400 });
    expect(a.redirect).toMatch(/^http:\/\/127\.0\.0\.1:41234\/\?state=state-0123456789abcdef&code=[A-Za-z0-9_-]{43}$/);
    const { issued } = await browserLogin(aliceBrowser);
    const cert = new X509Certificate(issued.cert_pem);
    // X509-SVID §4: one URI SAN, not a CA, digitalSignature, no keyCertSign.
    expect(cert.subjectAltName).toBe('URI:spiffe://tessera.test/user/alice');
    expect(cert.ca).toBe(false);
    expect(cert.keyUsage ?? []).not.toContain('2.5.29.15.keyCertSign');
    const ttl = Date.parse(cert.validTo) - Date.parse(cert.validFrom);
    expect(ttl).toBeGreaterThan(3590_000);
    expect(ttl).toBeLessThan(3700_000);
    expect(cert.serialNumber.toUpperCase()).toBe(issued.serial);
    expect(cert.verify(new X509Certificate(issued.bundle_pem).publicKey)).toBe(true);
    // Asked for 6 days: capped at the server's 8 h.
    const capped = await redeem(a.code, a.verifier, long);
    expect(capped.status, capped.text).toBe(200);
    const c8 = new X509Certificate((capped.json as Issued).cert_pem);
    expect(Math.abs(Date.parse(c8.validTo) - Date.parse(c8.validFrom) - 8 * 3600_000)).toBeLessThan(120_000);
  });

  it('admin actions through the certificate are judged with its MFA; whoami tells who', async () => {
    const { issued, key } = await browserLogin(aliceBrowser);
    expect((await asPerson(issued, key, '/v1/entries')).status).toBe(200);
    const w = await asPerson(issued, key, '/v1/entries', { spiffe_id: 'spiffe://tessera.test/shop/orders', selectors: ['unix:uid:1000'] });
    expect(w.status, w.text).toBe(201);
    const who = await asPerson(issued, key, '/v1/login/whoami');
    expect(who.json).toMatchObject({ username: 'alice', serial: issued.serial, flow: 'browser', mfa_max_age_seconds: 900 });
    // The audit record names the person and the certificate's MFA age.
    const audit = await p.admin('/v1/audit?limit=10000&action=entry.create');
    const rec = (audit.json as { records: { actor: string; detail: Record<string, { via?: string; kind?: string }> }[] }).records.find((r) => r.actor === issued.spiffe_id);
    expect(rec?.detail.admin_authorize).toMatchObject({ kind: 'user', via: 'cert' });
  });

  it('a stale MFA: reads yes, writes TESSERA_MFA_REQUIRED; --step-up needs an MFA of the last 5 minutes', async () => {
    // Olga signs in 20 minutes "ago" (the sign-in clock behind the authorizer's, which is real time).
    clock.t = Date.now() - 20 * 60_000;
    const { person: olga, browser: ob } = await p.enrol('olga', ['admins']);
    clock.t = Date.now();
    const { issued, key } = await browserLogin(ob);
    expect((await asPerson(issued, key, '/v1/entries')).status).toBe(200);
    const w = await asPerson(issued, key, '/v1/entries', { spiffe_id: 'spiffe://tessera.test/shop/olga', selectors: ['unix:uid:1001'] });
    expect(codeOf(w)).toBe('TESSERA_MFA_REQUIRED');
    expect((w.json as { error: { message: string } }).error.message).toContain('tessera login --step-up');
    // A step-up login with that 20-minute-old MFA is refused; after signing in again it is granted and writes work.
    expect(codeOf((await approveBrowser(ob, cliKey(), { step_up: true })).res)).toBe('TESSERA_MFA_REQUIRED');
    const fresh = await p.signIn(olga, ob);
    const step = await approveBrowser(fresh, cliKey(), { step_up: true });
    expect(step.res.status, step.res.text).toBe(200);
  });

  it('refuses a replayed code (and revokes the certificate it gave), a wrong verifier (code used up), another redirect_uri', async () => {
    const { issued, key } = await (async () => {
      const k = cliKey();
      const a = await approveBrowser(aliceBrowser, k);
      const r = await redeem(a.code, a.verifier, k);
      expect(r.status).toBe(200);
      // Replayed: refused, and the certificate from the first redemption is revoked (RFC 6749 §4.1.2).
      expect(codeOf(await redeem(a.code, a.verifier, k))).toBe('TESSERA_LOGIN_CODE_INVALID');
      return { issued: r.json as Issued, key: k };
    })();
    expect(codeOf(await asPerson(issued, key, '/v1/entries'))).toBe('TESSERA_LOGIN_REVOKED');
    const k = cliKey();
    const a = await approveBrowser(aliceBrowser, k);
    expect(codeOf(await redeem(a.code, randomBytes(32).toString('base64url'), k))).toBe('TESSERA_LOGIN_CODE_INVALID');
    expect(codeOf(await redeem(a.code, a.verifier, k))).toBe('TESSERA_LOGIN_CODE_INVALID');
    const b = await approveBrowser(aliceBrowser, k);
    expect(codeOf(await redeem(b.code, b.verifier, k, 'http://127.0.0.1:41235/'))).toBe('TESSERA_LOGIN_CODE_INVALID');
    expect(codeOf(await redeem(b.code, 'short', k))).toBe('TESSERA_BAD_REQUEST');
    // Expired (60 s).
    const c = await approveBrowser(aliceBrowser, k);
    clock.t += 61_000;
    expect(codeOf(await redeem(c.code, c.verifier, k))).toBe('TESSERA_LOGIN_CODE_INVALID');
    expect(codeOf(await redeem('nope', c.verifier, k))).toBe('TESSERA_LOGIN_CODE_INVALID');
  });

  it('refuses a CSR for another key or with SANs (the code stays good for the right CSR)', async () => {
    const k = cliKey();
    const a = await approveBrowser(aliceBrowser, k);
    expect(codeOf(await redeem(a.code, a.verifier, cliKey()))).toBe('TESSERA_LOGIN_KEY_MISMATCH');
    const other = makeCsrPem({ uriSan: 'spiffe://tessera.test/tessera/admin' });
    expect(codeOf(await redeem(a.code, a.verifier, { ...k, pem: other.pem }))).toBe('TESSERA_CSR_IDENTITY_MISMATCH');
    expect(codeOf(await redeem(a.code, a.verifier, { ...k, pem: makeCsrPem({ uriSan: 'spiffe://tessera.test/user/bob' }).pem }))).toBe('TESSERA_CSR_IDENTITY_MISMATCH');
    expect(codeOf(await redeem(a.code, a.verifier, { ...k, pem: 'not a csr' }))).toBe('TESSERA_CSR_INVALID');
    // Its own ID as the one SAN is fine.
    const own = cliKey({ uriSan: 'spiffe://tessera.test/user/alice' });
    const b = await approveBrowser(aliceBrowser, own);
    expect((await redeem(b.code, b.verifier, own)).status).toBe(200);
    expect((await redeem(a.code, a.verifier, k)).status).toBe(200);
  });

  it('accepts only http://127.0.0.1:PORT/ as the redirect (no open redirect)', async () => {
    for (const uri of ['http://evil.example/', 'https://127.0.0.1:8080/', 'http://127.0.0.1:8080/cb', 'http://127.0.0.1:8080/?x=1', 'http://127.0.0.1:8080/#x',
      'http://127.0.0.1.evil.example:8080/', 'http://localhost:8080/', 'http://user@127.0.0.1:8080/', 'http://127.0.0.1:0/', 'http://127.0.0.1:70000/',
      'http://127.0.0.1:8080', '//127.0.0.1:8080/', 'http://[::1]:8080/', 'http://127.0.0.1:8080/\\evil.example', 'javascript:alert(1)//127.0.0.1:8080/']) {
      expect(codeOf((await approveBrowser(aliceBrowser, cliKey(), { redirect_uri: uri })).res), uri).toBe('TESSERA_REDIRECT_INVALID');
    }
  });

  it('refuses approval from a console-link session (no MFA), without a session, without CSRF; plain PKCE refused', async () => {
    const link = await p.admin('/v1/console/links', { username: 'alice' });
    const token = (link.json as { url: string }).url.split('#token=')[1];
    const lb = p.browser();
    expect((await lb.post('/v1/auth/link', { token })).status).toBe(200);
    expect(codeOf((await approveBrowser(lb, cliKey())).res)).toBe('TESSERA_MFA_REQUIRED');
    expect(codeOf(await lb.post('/v1/login/device/decide', { user_code: (await startDevice(cliKey())).user_code, approve: true }))).toBe('TESSERA_MFA_REQUIRED');
    expect(codeOf((await approveBrowser(p.browser(), cliKey())).res)).toBe('TESSERA_SESSION_REQUIRED');
    const k = cliKey();
    const base = { redirect_uri: 'http://127.0.0.1:41234/', state: 'state-0123456789abcdef', code_challenge: 'A'.repeat(43), key_thumbprint: k.thumbprint, approve: true };
    expect(codeOf(await aliceBrowser.post('/v1/login/authorize', { ...base, code_challenge_method: 'plain' }))).toBe('TESSERA_BAD_REQUEST');
    expect(codeOf(await aliceBrowser.post('/v1/login/authorize', { ...base, code_challenge_method: 'S256', state: 'x' }))).toBe('TESSERA_BAD_REQUEST');
    expect(codeOf(await aliceBrowser.post('/v1/login/authorize', { ...base, code_challenge_method: 'S256' }, { csrf: null }))).toBe('TESSERA_CSRF_INVALID');
    // Denied in the browser: back to the loopback with error=access_denied, no code.
    const denied = await aliceBrowser.post('/v1/login/authorize', { ...base, code_challenge_method: 'S256', approve: false });
    expect((denied.json as { redirect: string }).redirect).toBe('http://127.0.0.1:41234/?state=state-0123456789abcdef&error=access_denied');
  });
});

describe('revocation of person certificates', () => {
  it('tessera logout, logout everywhere (session and admin), user disabled: refused from the next request on', async () => {
    const { person: carol, browser: cb } = await p.enrol('carol', ['admins']);
    const one = await browserLogin(cb);
    const two = await browserLogin(cb);
    expect((await asPerson(one.issued, one.key, '/v1/login/logout', {})).status).toBe(200);
    expect(codeOf(await asPerson(one.issued, one.key, '/v1/entries'))).toBe('TESSERA_LOGIN_REVOKED');
    expect((await asPerson(two.issued, two.key, '/v1/entries')).status).toBe(200);
    // Logout everywhere from a browser session ends the certificates too.
    const all = await cb.post('/v1/auth/logout-all', {});
    expect((all.json as { ended: number }).ended).toBe(1);
    expect(codeOf(await asPerson(two.issued, two.key, '/v1/entries'))).toBe('TESSERA_LOGIN_REVOKED');
    // By an admin.
    const b3 = await p.signIn(carol);
    const three = await browserLogin(b3);
    const byAdmin = await p.admin('/v1/users/carol/logout-all', {});
    expect((byAdmin.json as { sessions_ended: number }).sessions_ended).toBe(1);
    expect(codeOf(await asPerson(three.issued, three.key, '/v1/entries'))).toBe('TESSERA_LOGIN_REVOKED');
    // Disabled, and enabled again: the old certificate stays refused.
    const b4 = await p.signIn(carol);
    const four = await browserLogin(b4);
    expect((await p.admin('/v1/users/carol/disable', { reason: 'left' })).status).toBe(200);
    expect(codeOf(await asPerson(four.issued, four.key, '/v1/entries'))).toBe('TESSERA_LOGIN_REVOKED');
    expect((await p.admin('/v1/users/carol/enable', {})).status).toBe(200);
    expect(codeOf(await asPerson(four.issued, four.key, '/v1/entries'))).toBe('TESSERA_LOGIN_REVOKED');
    // The person's own logout-all through the certificate: certificates and sessions.
    const b5 = await p.signIn(carol);
    const five = await browserLogin(b5);
    const mine = await asPerson(five.issued, five.key, '/v1/login/logout-all', {});
    expect(mine.json).toMatchObject({ certs_revoked: 1, sessions_ended: 1 });
    expect(codeOf(await asPerson(five.issued, five.key, '/v1/login/whoami'))).toBe('TESSERA_LOGIN_REVOKED');
    // Removed.
    const b6 = await p.signIn(carol);
    const six = await browserLogin(b6);
    expect((await p.admin('/v1/users/carol/remove', {})).status).toBe(200);
    expect(codeOf(await asPerson(six.issued, six.key, '/v1/entries'))).toBe('TESSERA_LOGIN_REVOKED');
  });

  it('a revocation by another process (straight in the store) takes effect at the next sync', async () => {
    const { issued, key } = await browserLogin(aliceBrowser);
    expect(await t.cp.store.login.revokeUserCert(issued.serial, Date.now(), 'by another worker')).toBe(true);
    // Every process re-reads the store each tick (a sync begun before the issue may keep it one tick more).
    await expect.poll(async () => {
      await t.cp.ctx.personCerts.sync();
      return codeOf(await asPerson(issued, key, '/v1/entries'));
    }, { timeout: 5_000, interval: 300 }).toBe('TESSERA_LOGIN_REVOKED');
    // A certificate for /user/... that tessera login never issued is no admin either.
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const forged = t.cp.ctx.ca.issue({ publicKey: pair.publicKey, uriSans: ['spiffe://tessera.test/user/alice'] }, 600_000);
    const stray = { cert_pem: pemEncode(forged.der, 'CERTIFICATE') };
    expect(codeOf(await asPerson(stray, { ...key, keyPem: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string }, '/v1/entries'))).toBe('TESSERA_LOGIN_REVOKED');
  });

  it('the approval pages are served with a strict CSP and no inline script', async () => {
    for (const page of ['/auth/cli', '/auth/device']) {
      const r = await p.browser().request(page);
      expect(r.status).toBe(200);
      expect(r.headers['content-security-policy']).toMatch(/script-src 'self'/);
      expect(r.headers['content-security-policy']).not.toMatch(/unsafe-inline/);
      expect(r.text).not.toMatch(/<script>|<script [^>]*>[^<]/);
      expect(r.text).toContain('/auth/static/login.js');
    }
  });
});

describe('a console session as admin caller (sessionAdmin)', () => {
  it('an admins member with fresh MFA writes; no CSRF header or another Origin: TESSERA_CSRF_INVALID', async () => {
    const ok = await aliceBrowser.post('/v1/console/links', { username: 'alice' });
    expect(ok.status, ok.text).toBe(201);
    expect(codeOf(await aliceBrowser.post('/v1/console/links', { username: 'alice' }, { csrf: null }))).toBe('TESSERA_CSRF_INVALID');
    expect(codeOf(await aliceBrowser.post('/v1/console/links', { username: 'alice' }, { origin: 'https://evil.example' }))).toBe('TESSERA_CSRF_INVALID');
    expect(codeOf(await aliceBrowser.post('/v1/console/links', { username: 'alice' }, { origin: null }))).toBe('TESSERA_CSRF_INVALID');
  });

  it('stale MFA: reads allowed, writes TESSERA_MFA_REQUIRED; a console-link session gets nothing', async () => {
    clock.t = Date.now() - 20 * 60_000;
    const { browser: db } = await p.enrol('dora', ['admins']);
    clock.t = Date.now();
    expect((await db.request('/v1/entries')).status).toBe(200);
    expect(codeOf(await db.post('/v1/console/links', { username: 'dora' }))).toBe('TESSERA_MFA_REQUIRED');
    const link = await p.admin('/v1/console/links', { username: 'dora' });
    const lb = p.browser();
    expect((await lb.post('/v1/auth/link', { token: (link.json as { url: string }).url.split('#token=')[1] })).status).toBe(200);
    expect(codeOf(await lb.request('/v1/entries'))).toBe('TESSERA_MFA_REQUIRED');
  });

  it('a client certificate always wins over a session cookie', async () => {
    const cookie = aliceBrowser.cookieHeader();
    const csrf = aliceBrowser.cookies.get('__Host-tessera_csrf')!;
    const headers = { cookie, 'x-tessera-csrf': csrf, origin: aliceBrowser.origin, 'content-type': 'application/json' };
    // A revoked person certificate with a valid admin session cookie: the certificate decides.
    const { issued, key } = await browserLogin(aliceBrowser);
    expect((await asPerson(issued, key, '/v1/login/logout', {})).status).toBe(200);
    const r = await rawRequest(t.cp.url, { path: '/v1/entries', ca: t.adminTls.ca, cert: issued.cert_pem, key: key.keyPem, headers });
    expect(codeOf(r)).toBe('TESSERA_LOGIN_REVOKED');
    // The bootstrap certificate with alice's cookie: the audit record names the bootstrap admin.
    const b = await rawRequest(t.cp.url, { path: '/v1/console/links', method: 'POST', body: JSON.stringify({ username: 'alice' }), ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key, headers });
    expect(b.status).toBe(201);
    const audit = await p.admin('/v1/audit?limit=10000&action=console.link');
    const last = (audit.json as { records: { actor: string; detail: Record<string, unknown> }[] }).records.at(-1)!;
    expect(last.actor).toBe('spiffe://tessera.test/tessera/admin');
    expect(last.detail.session).toBeUndefined();
  });

  it('a disabled user\'s session is refused', async () => {
    const { browser: eb } = await p.enrol('erin', ['admins']);
    expect((await eb.request('/v1/entries')).status).toBe(200);
    expect((await p.admin('/v1/users/erin/disable', { reason: 'left' })).status).toBe(200);
    // Disabling ends the sessions; a session record left over (another process's) answers USER_DISABLED.
    expect(codeOf(await eb.request('/v1/entries'))).toBe('TESSERA_SESSION_REQUIRED');
    expect(codeOf(await eb.post('/v1/console/links', { username: 'erin' }))).toBe('TESSERA_SESSION_REQUIRED');
  });
});

describe('limits on the sign-in routes', () => {
  let lt: TestControlPlane;
  beforeAll(async () => {
    lt = await startControlPlane({ people: { signInLimits: { rateLimit: { perSecond: 0.2, burst: 3 } }, login: { caps: { perIp: 2, total: 3 } }, maxPendingTickets: 2 } });
  });
  afterAll(async () => {
    await lt?.close();
  });
  const post = (path: string, body: unknown): Promise<RawResponse> =>
    rawRequest(lt.cp.url, { path, method: 'POST', ca: lt.adminTls.ca, body: JSON.stringify(body), headers: { 'content-type': 'application/json', origin: lt.cp.url } });

  it('caps the sign-in tickets anyone may cause (passkey challenges) in all, with a clear refusal', async () => {
    // Straight at the service: the per-address bucket is for the next test.
    const issue = () => lt.cp.ctx.people.passkeyOptions(undefined);
    await issue();
    await issue();
    await expect(issue()).rejects.toMatchObject({ code: 'TESSERA_RATE_LIMITED', message: expect.stringContaining('sign-ins are under way') });
    // Admin-made tickets (enrolment and console links) are not capped by it.
    const a = lt.adminTls;
    const link = await rawRequest(lt.cp.url, { path: '/v1/console/links', method: 'POST', ca: a.ca, cert: a.cert, key: a.key, body: '{}', headers: { 'content-type': 'application/json' } });
    expect(link.status, link.text).toBe(201);
  });

  it('caps logins under way per address (TESSERA_RATE_LIMITED), then limits requests per address: 429 with Retry-After, not audited', async () => {
    const k = cliKey();
    expect((await post('/v1/login/device', { key_thumbprint: k.thumbprint })).status).toBe(200);
    expect((await post('/v1/login/device', { key_thumbprint: k.thumbprint })).status).toBe(200);
    const capped = await post('/v1/login/device', { key_thumbprint: k.thumbprint });
    expect(capped.status).toBe(429);
    expect((capped.json as { error: { message: string } }).error.message).toContain('logins under way');
    // In all: 3 under way at most (another address's request is stored directly, as from another client).
    const rec = { hash: 'a'.repeat(64), kind: 'device' as const, userCodeHash: 'b'.repeat(64), state: 'pending' as const, username: null, mfaAt: null, clientIp: '10.0.0.9',
      keyThumbprint: k.thumbprint, ttlMs: 3600_000, stepUp: false, codeChallenge: null, redirectUri: null, intervalS: 5, lastPollAt: null, serial: null, createdAt: Date.now(), expiresAt: Date.now() + 600_000 };
    expect(await lt.cp.store.login.insertLoginRequest(rec, Date.now(), { perIp: 2, total: 3 })).toBe('ok');
    expect(await lt.cp.store.login.insertLoginRequest({ ...rec, hash: 'c'.repeat(64), userCodeHash: 'd'.repeat(64), clientIp: '10.0.0.8' }, Date.now(), { perIp: 2, total: 3 })).toBe('total_cap');
    // The bucket (3) is spent: every sign-in route answers 429 with Retry-After, before its handler runs.
    for (const [path, body] of [['/v1/auth/passkey/options', {}], ['/v1/auth/totp', { code: '123456' }], ['/v1/auth/link', { token: 'x'.repeat(43) }], ['/v1/login/token', { grant_type: DEVICE_GRANT }]] as const) {
      const r = await post(path, body);
      expect(r.status, path).toBe(429);
      expect(codeOf(r)).toBe('TESSERA_RATE_LIMITED');
      expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    }
    const oidc = await rawRequest(lt.cp.url, { path: '/v1/auth/oidc/start', ca: lt.adminTls.ca });
    expect(oidc.status).toBe(429);
    // Admin routes and the session check are not sign-in routes.
    const a = lt.adminTls;
    expect((await rawRequest(lt.cp.url, { path: '/v1/entries', ca: a.ca, cert: a.cert, key: a.key })).status).toBe(200);
    expect(codeOf(await rawRequest(lt.cp.url, { path: '/v1/auth/session', ca: a.ca }))).toBe('TESSERA_SESSION_REQUIRED');
    const audit = await rawRequest(lt.cp.url, { path: '/v1/audit?limit=10000', ca: a.ca, cert: a.cert, key: a.key });
    const actions = (audit.json as { records: { action: string }[] }).records.map((r) => r.action);
    expect(actions.filter((x) => x === 'login.device_start')).toHaveLength(3);
    expect(actions).not.toContain('login.totp');
  });
});
