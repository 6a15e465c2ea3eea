/**
 * OIDC sign-in against a REAL provider (oidc-provider 9 on 127.0.0.1) and a real control plane:
 * authorization code + PKCE S256, state and nonce, and the refusals (wrong state, replayed code,
 * wrong nonce, open redirect), each with its stable code.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, codeOf } from '../../../test/support/http-browser.js';
import { startOidcProvider, type TestOidcProvider } from '../../../test/support/oidc.js';
import { freePort } from '../../../test/support/process.js';
import { rawRequest, startControlPlane, type TestControlPlane } from '../../../test/support/server.js';
import { oidcCountsAsMfa } from './oidc.js';

let t: TestControlPlane;
let idp: TestOidcProvider;

beforeAll(async () => {
  const port = await freePort();
  // Discovery is lazy: the control plane may start before its provider, which needs the redirect URI.
  t = await startControlPlane({
    people: { oidc: { issuer: `http://127.0.0.1:${port}`, clientId: 'tessera', clientSecret: 'test-client-secret-0123456789abcdef', groupsClaim: 'groups', mfaAcr: ['urn:test:mfa'] } },
  });
  idp = await startOidcProvider(port, `${t.cp.url}/v1/auth/oidc/callback`);
});
afterAll(async () => {
  await t?.close();
  await idp?.close();
});

const browser = (): Browser => new Browser(t.cp.url, t.adminTls.ca);

/** Starts the flow in `b`: the provider URL the control plane redirects to. */
async function start(b: Browser, query = ''): Promise<URL> {
  const r = await b.request(`/v1/auth/oidc/start${query}`);
  expect(r.status, r.text).toBe(302);
  return new URL(String(r.headers.location));
}

/** The callback path (and query) the provider sent the browser back to. */
const callbackPath = (u: URL): string => `${u.pathname}${u.search}`;

describe('OIDC sign-in', () => {
  it('signs in with code + PKCE S256, state and nonce; creates the user from the claims; MFA from amr', async () => {
    idp.account = { sub: 'sub-ada-1', claims: { preferred_username: 'Ada.L', email: 'ada@example.com', email_verified: true, name: 'Ada', groups: ['eng', 'admins'] }, amr: ['pwd', 'otp'] };
    const b = browser();
    const auth = await start(b, '?return_to=/console/map%3Fsite%3Da');
    // The authorization request (OIDC Core §3.1.2.1, RFC 7636 §4.3).
    expect(auth.origin).toBe(idp.issuer);
    expect(auth.searchParams.get('response_type')).toBe('code');
    expect(auth.searchParams.get('code_challenge_method')).toBe('S256');
    expect(auth.searchParams.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(auth.searchParams.get('state')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(auth.searchParams.get('nonce')).toMatch(/^[A-Za-z0-9_-]{20,}$/);
    expect(auth.searchParams.get('scope')).toContain('openid');
    expect(b.cookies.get('__Host-tessera_oidc')).toBe(auth.searchParams.get('state'));
    const back = await idp.follow(auth.href);
    expect(back.origin).toBe(new URL(t.cp.url).origin);
    expect(back.searchParams.get('code')).toBeTruthy();
    const cb = await b.request(callbackPath(back));
    expect(cb.status, cb.text).toBe(303);
    expect(cb.headers.location).toBe('/console/map?site=a');
    const who = await b.request('/v1/auth/session?max_mfa_age_seconds=60');
    expect(who.status, who.text).toBe(200);
    expect((who.json as { session: Record<string, unknown> }).session).toMatchObject({
      username: 'ada.l', spiffe_id: 'spiffe://tessera.test/user/ada.l', groups: ['admins', 'eng'], source: 'oidc',
    });
    const show = await rawRequest(t.cp.url, { path: '/v1/users/ada.l', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key });
    expect((show.json as { user: Record<string, unknown> }).user).toMatchObject({ source: 'oidc', oidc_subject: 'sub-ada-1', oidc_issuer: idp.issuer, email: 'ada@example.com' });

    // The next sign-in of the same subject with new claims updates the same user (the name stays).
    idp.account = { sub: 'sub-ada-1', claims: { preferred_username: 'renamed', groups: ['eng'] }, amr: ['pwd'] };
    const b2 = browser();
    const cb2 = await b2.request(callbackPath(await idp.follow((await start(b2, '?step_up=1')).href)));
    expect(cb2.status, cb2.text).toBe(303);
    const who2 = await b2.request('/v1/auth/session');
    expect((who2.json as { session: Record<string, unknown> }).session).toMatchObject({ username: 'ada.l', groups: ['eng'], mfa_at: null });
    expect(codeOf(await b2.request('/v1/auth/session?max_mfa_age_seconds=60'))).toBe('TESSERA_MFA_REQUIRED');
  });

  it('counts as MFA per the acr list; a single factor does not', () => {
    expect(oidcCountsAsMfa({ amr: ['mfa'] }, [])).toBe(true);
    expect(oidcCountsAsMfa({ amr: ['pwd', 'hwk'] }, [])).toBe(true);
    expect(oidcCountsAsMfa({ amr: ['otp', 'hwk'] }, [])).toBe(false);
    expect(oidcCountsAsMfa({ amr: ['pwd'] }, [])).toBe(false);
    expect(oidcCountsAsMfa({ acr: 'urn:test:mfa' }, ['urn:test:mfa'])).toBe(true);
    expect(oidcCountsAsMfa({ acr: 'urn:test:pwd' }, ['urn:test:mfa'])).toBe(false);
    expect(oidcCountsAsMfa({ amr: 'mfa' }, [])).toBe(false);
  });

  it('refuses a callback whose state is not this browser\'s, is missing, or was already used', async () => {
    idp.account = { sub: 'sub-bo', claims: { preferred_username: 'bo' }, amr: ['mfa'] };
    const victim = browser();
    const back = await idp.follow((await start(victim)).href);
    // The attacker's browser (no state cookie, or its own flow's) gets the victim's callback URL.
    const attacker = browser();
    expect(codeOf(await attacker.request(callbackPath(back)))).toBe('TESSERA_OIDC_STATE_INVALID');
    await start(attacker);
    expect(codeOf(await attacker.request(callbackPath(back)))).toBe('TESSERA_OIDC_STATE_INVALID');
    // A forged state in the query (cookie unchanged).
    const forged = new URL(back);
    forged.searchParams.set('state', 'A'.repeat(43));
    expect(codeOf(await victim.request(callbackPath(forged)))).toBe('TESSERA_OIDC_STATE_INVALID');
    const none = new URL(back);
    none.searchParams.delete('state');
    expect(codeOf(await victim.request(callbackPath(none)))).toBe('TESSERA_OIDC_STATE_INVALID');
    expect(victim.cookies.has('__Host-tessera_session')).toBe(false);
  });

  it('a code works once: replaying the callback, or the code with a new flow\'s state, is refused', async () => {
    idp.account = { sub: 'sub-cy', claims: { preferred_username: 'cy' }, amr: ['mfa'] };
    const b = browser();
    const auth = await start(b);
    const stateCookie = b.cookies.get('__Host-tessera_oidc')!;
    const back = await idp.follow(auth.href);
    expect((await b.request(callbackPath(back))).status).toBe(303);
    // The same callback again (the browser's cookie put back): the state is used up.
    b.cookies.set('__Host-tessera_oidc', stateCookie);
    expect(codeOf(await b.request(callbackPath(back)))).toBe('TESSERA_OIDC_STATE_INVALID');
    // The old code with a fresh flow's state: the provider refuses the redeemed code (and its verifier differs).
    const c = browser();
    const fresh = await start(c);
    const replay = new URL(back);
    replay.searchParams.set('state', fresh.searchParams.get('state')!);
    expect(codeOf(await c.request(callbackPath(replay)))).toBe('TESSERA_OIDC_FAILED');
  });

  it('refuses an ID token with another nonce', async () => {
    idp.account = { sub: 'sub-di', claims: { preferred_username: 'di' }, amr: ['mfa'] };
    const b = browser();
    const auth = await start(b);
    // Same state, verifier and redirect URI, but the provider is asked for another nonce.
    auth.searchParams.set('nonce', 'someone-elses-nonce-0123456789');
    const back = await idp.follow(auth.href);
    expect(back.searchParams.get('code')).toBeTruthy();
    expect(codeOf(await b.request(callbackPath(back)))).toBe('TESSERA_OIDC_FAILED');
    expect(b.cookies.has('__Host-tessera_session')).toBe(false);
  });

  it('refuses a provider error response and a missing code', async () => {
    const b = browser();
    const auth = await start(b);
    const state = auth.searchParams.get('state')!;
    expect(codeOf(await b.request(`/v1/auth/oidc/callback?error=access_denied&state=${state}&iss=${encodeURIComponent(idp.issuer)}`))).toBe('TESSERA_OIDC_FAILED');
    const b2 = browser();
    const s2 = (await start(b2)).searchParams.get('state')!;
    expect(codeOf(await b2.request(`/v1/auth/oidc/callback?state=${s2}&iss=${encodeURIComponent(idp.issuer)}`))).toBe('TESSERA_OIDC_FAILED');
  });

  it('refuses open redirects in return_to', async () => {
    for (const bad of ['https://evil.example/', '//evil.example/x', '/\\evil.example', 'javascript:alert(1)', 'console', '/\t/evil.example']) {
      const r = await browser().request(`/v1/auth/oidc/start?return_to=${encodeURIComponent(bad)}`);
      expect(codeOf(r), bad).toBe('TESSERA_REDIRECT_INVALID');
    }
  });

  it('refuses a derived name taken by a local user, and a disabled OIDC user', async () => {
    const add = await rawRequest(t.cp.url, { path: '/v1/users', method: 'POST', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'eve' }) });
    expect(add.status).toBe(201);
    idp.account = { sub: 'sub-eve-oidc', claims: { preferred_username: 'eve' }, amr: ['mfa'] };
    const b = browser();
    expect(codeOf(await b.request(callbackPath(await idp.follow((await start(b)).href))))).toBe('TESSERA_USER_CONFLICT');

    idp.account = { sub: 'sub-fay', claims: { preferred_username: 'fay' }, amr: ['mfa'] };
    const c = browser();
    expect((await c.request(callbackPath(await idp.follow((await start(c)).href)))).status).toBe(303);
    const dis = await rawRequest(t.cp.url, { path: '/v1/users/fay/disable', method: 'POST', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'test' }) });
    expect(dis.status).toBe(200);
    expect(codeOf(await c.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
    const d = browser();
    expect(codeOf(await d.request(callbackPath(await idp.follow((await start(d)).href))))).toBe('TESSERA_USER_DISABLED');
  });

  it('without a provider configured, OIDC sign-in says so', async () => {
    const other = await startControlPlane();
    try {
      const r = await new Browser(other.cp.url, other.adminTls.ca).request('/v1/auth/oidc/start');
      expect(codeOf(r)).toBe('TESSERA_OIDC_NOT_CONFIGURED');
      const cfg = await new Browser(other.cp.url, other.adminTls.ca).request('/v1/auth/config');
      expect((cfg.json as { oidc: boolean }).oidc).toBe(false);
    } finally {
      await other.close();
    }
  });
});
