/**
 * People's sign-in against a real control plane (HTTPS on 127.0.0.1, SQLite file): enrolment, passkey
 * (a software authenticator building real WebAuthn responses) + TOTP, sessions, console links, and
 * every refusal with its stable code. The sign-in clock is the test's (PeopleOptions.now), so TOTP
 * steps and expiries are exact.
 */
import { Secret, TOTP } from 'otpauth';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Browser, codeOf } from '../../../test/support/http-browser.js';
import { rawRequest, startControlPlane, type RawResponse, type TestControlPlane } from '../../../test/support/server.js';
import { SoftPasskey } from '../../../test/support/webauthn.js';

let t: TestControlPlane;
const STEP = 30_000;
// Just after a step boundary: offsets of whole steps stay inside their step.
let clock = Math.floor(Date.now() / STEP) * STEP + 1000;

function admin(path: string, body?: unknown, method?: string): Promise<RawResponse> {
  return rawRequest(t.cp.url, {
    path, method: method ?? (body === undefined ? 'GET' : 'POST'), ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key,
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
}

const browser = (): Browser => new Browser(t.cp.url, t.adminTls.ca);

interface Person { name: string; passkey: SoftPasskey; secret: string }

function code(secret: string, stepOffset = 0): string {
  return TOTP.generate({ secret: Secret.fromBase32(secret), timestamp: clock + stepOffset * STEP });
}

async function addUser(name: string, groups: string[] = ['eng']): Promise<string> {
  const r = await admin('/v1/users', { username: name, groups });
  expect(r.status, r.text).toBe(201);
  return String((r.json as { enrolment_url: string }).enrolment_url).split('#token=')[1]!;
}

/** Adds and enrols a local user (its enrolment code uses the current step). */
async function enrol(b: Browser, name: string): Promise<Person> {
  const token = await addUser(name);
  const start = await b.post('/v1/auth/enrol/start', { token });
  expect(start.status, start.text).toBe(200);
  const s = start.json as { passkey_options: { challenge: string; rp: { id: string }; user: { id: string } }; totp_uri: string };
  const passkey = new SoftPasskey();
  const reg = await b.post('/v1/auth/enrol/passkey', { response: passkey.register(s.passkey_options, b.origin) });
  expect(reg.status, reg.text).toBe(200);
  const uri = new URL(s.totp_uri);
  expect(uri.protocol).toBe('otpauth:');
  expect(uri.searchParams.get('algorithm')).toBe('SHA1');
  expect(uri.searchParams.get('digits')).toBe('6');
  expect(uri.searchParams.get('period')).toBe('30');
  const secret = uri.searchParams.get('secret')!;
  const done = await b.post('/v1/auth/enrol/totp', { code: code(secret) });
  expect(done.status, done.text).toBe(200);
  return { name, passkey, secret };
}

async function passkeyStep(b: Browser, p: Person, o: { username?: string } = { username: p.name }): Promise<RawResponse> {
  const opts = await b.post('/v1/auth/passkey/options', o);
  expect(opts.status, opts.text).toBe(200);
  return b.post('/v1/auth/passkey/verify', { response: p.passkey.assert((opts.json as { options: { challenge: string; rpId: string } }).options, b.origin) });
}

async function signIn(b: Browser, p: Person, stepOffset = 1): Promise<RawResponse> {
  const v = await passkeyStep(b, p);
  expect(v.status, v.text).toBe(200);
  return b.post('/v1/auth/totp', { code: code(p.secret, stepOffset) });
}

/** Moves the sign-in clock to a fresh step (so each person's next code is unused). */
function nextStep(): void {
  clock += 3 * STEP;
}

beforeAll(async () => {
  t = await startControlPlane({ people: { now: () => clock } });
});
afterAll(async () => {
  await t?.close();
});

describe('enrolment and local sign-in', () => {
  it('enrols with a passkey and a TOTP code, signs in with both, and the session says who and when MFA happened', async () => {
    const b = browser();
    const p = await enrol(b, 'alice');
    // Enrolment itself signs the person in, with MFA.
    let who = await b.request('/v1/auth/session');
    expect(who.status).toBe(200);
    expect((who.json as { session: Record<string, unknown> }).session).toMatchObject({ username: 'alice', spiffe_id: 'spiffe://tessera.test/user/alice', groups: ['eng'], source: 'local' });

    const b2 = browser();
    const r = await signIn(b2, p);
    expect(r.status, r.text).toBe(200);
    const body = r.json as { session: { username: string; mfa_at: string }; csrf_token: string };
    expect(body.session.username).toBe('alice');
    expect(Date.parse(body.session.mfa_at)).toBe(clock);
    const cookies = ([] as string[]).concat(r.headers['set-cookie'] ?? []);
    const session = cookies.find((c) => c.startsWith('__Host-tessera_session='))!;
    expect(session).toMatch(/; Path=\//);
    expect(session).toMatch(/; Secure/);
    expect(session).toMatch(/; SameSite=Strict/);
    expect(session).toMatch(/; HttpOnly/);
    expect(session).not.toMatch(/Domain=/i);
    const csrf = cookies.find((c) => c.startsWith('__Host-tessera_csrf='))!;
    expect(csrf).not.toMatch(/HttpOnly/);
    expect(csrf.split(';')[0]).toBe(`__Host-tessera_csrf=${body.csrf_token}`);
    who = await b2.request('/v1/auth/session?max_mfa_age_seconds=60');
    expect(who.status).toBe(200);
    // The store holds only hashes: the cookie's id is nowhere in the database file.
    const id = b2.cookies.get('__Host-tessera_session')!;
    const { readFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    expect(readFileSync(join(t.dataDir, 'tessera.db')).includes(Buffer.from(id))).toBe(false);
    expect(t.logs.join('\n')).not.toContain(id);
  });

  it('a passkey alone is not a sign-in: no session until the TOTP code', async () => {
    nextStep();
    const b = browser();
    const p = await enrol(b, 'pat');
    const c = browser();
    expect((await passkeyStep(c, p)).status).toBe(200);
    expect(c.cookies.has('__Host-tessera_session')).toBe(false);
    expect(codeOf(await c.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
    // A TOTP code without the passkey step first:
    expect(codeOf(await browser().post('/v1/auth/totp', { code: code(p.secret, 1) }))).toBe('TESSERA_LINK_INVALID');
  });

  it('an enrolment link works once, and not after it expires', async () => {
    nextStep();
    const token = await addUser('bob');
    const b = browser();
    expect((await b.post('/v1/auth/enrol/start', { token })).status).toBe(200);
    expect(codeOf(await browser().post('/v1/auth/enrol/start', { token }))).toBe('TESSERA_LINK_INVALID');
    const again = await admin('/v1/users/bob/enrolment', {});
    const token2 = String((again.json as { enrolment_url: string }).enrolment_url).split('#token=')[1];
    clock += 24 * 3600_000 + 1000;
    expect(codeOf(await browser().post('/v1/auth/enrol/start', { token: token2 }))).toBe('TESSERA_LINK_INVALID');
    expect(codeOf(await browser().post('/v1/auth/enrol/start', { token: 'x'.repeat(43) }))).toBe('TESSERA_LINK_INVALID');
    expect(codeOf(await browser().post('/v1/auth/enrol/start', { token: 'short' }))).toBe('TESSERA_LINK_INVALID');
    // The TOTP step of enrolment needs the passkey first; without an enrolment cookie nothing is under way.
    expect(codeOf(await browser().post('/v1/auth/enrol/totp', { code: '123456' }))).toBe('TESSERA_LINK_INVALID');
  });
});

describe('passkey registration (WebAuthn L2 §7.1)', () => {
  it('refuses another origin, another RP ID, a reused or foreign challenge, a credential already registered; fresh options allow a retry', async () => {
    nextStep();
    const known = await enrol(browser(), 'lou');
    const b = browser();
    const start = await b.post('/v1/auth/enrol/start', { token: await addUser('reg') });
    type Opts = { challenge: string; rp: { id: string }; user: { id: string } };
    const opts = (start.json as { passkey_options: Opts }).passkey_options;
    const pk = new SoftPasskey();
    expect(codeOf(await b.post('/v1/auth/enrol/passkey', { response: pk.register(opts, 'https://evil.example') }))).toBe('TESSERA_WEBAUTHN_INVALID');
    // That attempt used the challenge up: even a correct response to it is refused now.
    expect(codeOf(await b.post('/v1/auth/enrol/passkey', { response: pk.register(opts, b.origin) }))).toBe('TESSERA_WEBAUTHN_INVALID');
    // The TOTP step needs a registered passkey first.
    expect(codeOf(await b.post('/v1/auth/enrol/totp', { code: '123456' }))).toBe('TESSERA_WEBAUTHN_INVALID');
    const fresh = async (): Promise<Opts> => ((await b.post('/v1/auth/enrol/passkey/options', {})).json as { options: Opts }).options;
    expect(codeOf(await b.post('/v1/auth/enrol/passkey', { response: pk.register(await fresh(), b.origin, { rpId: 'evil.example' }) }))).toBe('TESSERA_WEBAUTHN_INVALID');
    expect(codeOf(await b.post('/v1/auth/enrol/passkey', { response: pk.register(await fresh(), b.origin, { type: 'webauthn.get' }) }))).toBe('TESSERA_WEBAUTHN_INVALID');
    // Another person's credential id cannot be registered again.
    expect(codeOf(await b.post('/v1/auth/enrol/passkey', { response: known.passkey.register(await fresh(), b.origin) }))).toBe('TESSERA_WEBAUTHN_INVALID');
    // A registration challenge issued for another user's enrolment.
    const other = browser();
    await other.post('/v1/auth/enrol/start', { token: await addUser('reg2') });
    const foreign = ((await other.post('/v1/auth/enrol/passkey/options', {})).json as { options: Opts }).options;
    expect(codeOf(await b.post('/v1/auth/enrol/passkey', { response: pk.register(foreign, b.origin) }))).toBe('TESSERA_WEBAUTHN_INVALID');
    // A console link's token is not an enrolment link.
    const link = await admin('/v1/console/links', { username: 'lou' });
    expect(codeOf(await browser().post('/v1/auth/enrol/start', { token: (link.json as { url: string }).url.split('#token=')[1] }))).toBe('TESSERA_LINK_INVALID');
    // A proper retry completes the enrolment.
    expect((await b.post('/v1/auth/enrol/passkey', { response: pk.register(await fresh(), b.origin) })).status).toBe(200);
    const secret = new URL((start.json as { totp_uri: string }).totp_uri).searchParams.get('secret')!;
    expect((await b.post('/v1/auth/enrol/totp', { code: code(secret) })).status).toBe(200);
  });
});

describe('TOTP (RFC 6238)', () => {
  it('accepts the codes of the previous, current and next step, and no other', async () => {
    nextStep();
    const p = await enrol(browser(), 'carol');
    nextStep();
    for (const offset of [-2, 2, 5, -5]) {
      const b = browser();
      expect((await passkeyStep(b, p)).status).toBe(200);
      expect(codeOf(await b.post('/v1/auth/totp', { code: code(p.secret, offset) }))).toBe('TESSERA_TOTP_INVALID');
    }
    for (const offset of [-1, 0, 1]) {
      nextStep();
      const r = await signIn(browser(), p, offset);
      expect(r.status, `offset ${offset}: ${r.text}`).toBe(200);
    }
  });

  it('never accepts a code twice (the same user and step), nor an earlier step after a later one', async () => {
    nextStep();
    const p = await enrol(browser(), 'dave');
    expect((await signIn(browser(), p, 1)).status).toBe(200);
    const b = browser();
    expect((await passkeyStep(b, p)).status).toBe(200);
    expect(codeOf(await b.post('/v1/auth/totp', { code: code(p.secret, 1) }))).toBe('TESSERA_TOTP_INVALID');
    // Step 0 is inside the window but older than the step already used.
    expect(codeOf(await b.post('/v1/auth/totp', { code: code(p.secret, 0) }))).toBe('TESSERA_TOTP_INVALID');
    // The code typed at enrolment (current step) is spent too.
    nextStep();
    const audit = await admin('/v1/audit?limit=200');
    const records = (audit.json as { records: { action: string; outcome: string; detail: Record<string, unknown> }[] }).records;
    expect(records.some((r) => r.action === 'login.totp' && r.outcome === 'denied' && r.detail.totp === 'code already used')).toBe(true);
  });

  it('refuses malformed codes, and voids the sign-in after five wrong codes', async () => {
    nextStep();
    const p = await enrol(browser(), 'erin');
    const b = browser();
    expect((await passkeyStep(b, p)).status).toBe(200);
    for (const bad of ['12345', '1234567', 'abcdef', ' 12345', 123456]) {
      expect(codeOf(await b.post('/v1/auth/totp', { code: bad }))).toBe('TESSERA_BAD_REQUEST');
    }
    const wrong = code(p.secret, 1) === '000000' ? '000001' : '000000';
    for (let i = 0; i < 5; i++) expect(codeOf(await b.post('/v1/auth/totp', { code: wrong }))).toBe('TESSERA_TOTP_INVALID');
    expect(codeOf(await b.post('/v1/auth/totp', { code: code(p.secret, 1) }))).toBe('TESSERA_LINK_INVALID');
  });
});

describe('WebAuthn ceremonies', () => {
  let alice2: Person;
  let frank: Person;
  beforeAll(async () => {
    nextStep();
    alice2 = await enrol(browser(), 'grace');
    frank = await enrol(browser(), 'frank');
  });

  it('a challenge answers one assertion only', async () => {
    const b = browser();
    const opts = await b.post('/v1/auth/passkey/options', { username: 'grace' });
    const o = (opts.json as { options: { challenge: string; rpId: string } }).options;
    const resp = alice2.passkey.assert(o, b.origin);
    expect((await b.post('/v1/auth/passkey/verify', { response: resp })).status).toBe(200);
    expect(codeOf(await b.post('/v1/auth/passkey/verify', { response: resp }))).toBe('TESSERA_WEBAUTHN_INVALID');
    // A fresh signature over the used challenge (higher counter) is refused too.
    expect(codeOf(await b.post('/v1/auth/passkey/verify', { response: alice2.passkey.assert(o, b.origin) }))).toBe('TESSERA_WEBAUTHN_INVALID');
  });

  it('an expired challenge is refused', async () => {
    const b = browser();
    const opts = await b.post('/v1/auth/passkey/options', { username: 'grace' });
    clock += 5 * 60_000 + 1000;
    const resp = alice2.passkey.assert((opts.json as { options: { challenge: string; rpId: string } }).options, b.origin);
    expect(codeOf(await b.post('/v1/auth/passkey/verify', { response: resp }))).toBe('TESSERA_WEBAUTHN_INVALID');
  });

  it('a challenge issued for one user does not accept another user\'s credential', async () => {
    const b = browser();
    const opts = await b.post('/v1/auth/passkey/options', { username: 'grace' });
    const resp = frank.passkey.assert((opts.json as { options: { challenge: string; rpId: string } }).options, b.origin);
    expect(codeOf(await b.post('/v1/auth/passkey/verify', { response: resp }))).toBe('TESSERA_WEBAUTHN_INVALID');
  });

  it('refuses another origin, another RP ID, a create-type clientData, no user presence, a foreign user handle, a cloned authenticator\'s counter, an unknown credential', async () => {
    const cases: [string, (o: { challenge: string; rpId: string }, origin: string) => Record<string, unknown>][] = [
      ['origin', (o) => alice2.passkey.assert(o, 'https://evil.example')],
      ['rp id', (o, origin) => alice2.passkey.assert(o, origin, { rpId: 'evil.example' })],
      ['type', (o, origin) => alice2.passkey.assert(o, origin, { type: 'webauthn.create' })],
      ['no UP flag', (o, origin) => alice2.passkey.assert(o, origin, { flags: 0x04 })],
      ['user handle', (o, origin) => alice2.passkey.assert(o, origin, { userHandle: 'AAAAAAAAAAAAAAAAAAAAAA' })],
      ['counter', (o, origin) => alice2.passkey.assert(o, origin, { counter: 1 })],
      ['unknown credential', (o, origin) => new SoftPasskey().assert(o, origin)],
    ];
    for (const [what, make] of cases) {
      const b = browser();
      const opts = await b.post('/v1/auth/passkey/options', {});
      const r = await b.post('/v1/auth/passkey/verify', { response: make((opts.json as { options: { challenge: string; rpId: string } }).options, b.origin) });
      expect(codeOf(r), what).toBe('TESSERA_WEBAUTHN_INVALID');
    }
    // Malformed responses never reach the verifier's internals.
    for (const bad of [null, 'x', {}, { id: 'a', rawId: 'b', type: 'public-key', response: {} }, { id: 'a', rawId: 'a', type: 'public-key', response: { clientDataJSON: '!!' } }]) {
      expect(codeOf(await browser().post('/v1/auth/passkey/verify', { response: bad }))).toBe('TESSERA_WEBAUTHN_INVALID');
    }
  });

  it('a discoverable-credential sign-in (no user name) finds the user from the credential', async () => {
    nextStep();
    const b = browser();
    const v = await passkeyStep(b, frank, {});
    expect(v.status, v.text).toBe(200);
    expect((v.json as { username: string }).username).toBe('frank');
    expect((await b.post('/v1/auth/totp', { code: code(frank.secret, 1) })).status).toBe(200);
  });
});

describe('sessions', () => {
  let p: Person;
  beforeAll(async () => {
    nextStep();
    p = await enrol(browser(), 'henry');
  });

  it('session fixation: a session id planted before sign-in is never the one signed in, and is ended', async () => {
    // The attacker's own live session, planted in the victim's browser.
    nextStep();
    const mallory = await enrol(browser(), 'mallory');
    nextStep();
    const attacker = browser();
    expect((await signIn(attacker, mallory)).status).toBe(200);
    const planted = attacker.cookies.get('__Host-tessera_session')!;
    const victim = browser();
    victim.cookies.set('__Host-tessera_session', planted);
    expect((await signIn(victim, p)).status).toBe(200);
    const issued = victim.cookies.get('__Host-tessera_session')!;
    expect(issued).not.toBe(planted);
    expect(codeOf(await attacker.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
    // An invented id is not a session either.
    const forged = browser();
    forged.cookies.set('__Host-tessera_session', 'A'.repeat(43));
    expect(codeOf(await forged.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
    // Two session cookies (cookie tossing) count as none.
    const tossed = await rawRequest(t.cp.url, { path: '/v1/auth/session', ca: t.adminTls.ca, headers: { cookie: `__Host-tessera_session=${issued}; __Host-tessera_session=${planted}` } });
    expect(codeOf(tossed)).toBe('TESSERA_SESSION_REQUIRED');
  });

  it('CSRF: a state-changing request needs the token and the server\'s Origin', async () => {
    nextStep();
    const b = browser();
    expect((await signIn(b, p)).status).toBe(200);
    expect(codeOf(await b.post('/v1/auth/logout', {}, { csrf: null }))).toBe('TESSERA_CSRF_INVALID');
    expect(codeOf(await b.post('/v1/auth/logout', {}, { csrf: 'B'.repeat(43) }))).toBe('TESSERA_CSRF_INVALID');
    expect(codeOf(await b.post('/v1/auth/logout', {}, { origin: 'https://evil.example' }))).toBe('TESSERA_CSRF_INVALID');
    expect(codeOf(await b.post('/v1/auth/logout', {}, { origin: null }))).toBe('TESSERA_CSRF_INVALID');
    expect(codeOf(await b.post('/v1/auth/logout', {}, { headers: { 'sec-fetch-site': 'cross-site' } }))).toBe('TESSERA_CSRF_INVALID');
    // The token of another session (header and cookie both set to it) does not fit this session.
    nextStep();
    const other = browser();
    expect((await signIn(other, p)).status).toBe(200);
    const foreign = other.cookies.get('__Host-tessera_csrf')!;
    const saved = b.cookies.get('__Host-tessera_csrf')!;
    b.cookies.set('__Host-tessera_csrf', foreign);
    expect(codeOf(await b.post('/v1/auth/logout', {}, { csrf: foreign }))).toBe('TESSERA_CSRF_INVALID');
    b.cookies.set('__Host-tessera_csrf', saved);
    // Still signed in after all that; then a proper logout ends the session.
    expect((await b.request('/v1/auth/session')).status).toBe(200);
    expect((await b.post('/v1/auth/logout', {})).status).toBe(200);
    expect(b.cookies.has('__Host-tessera_session')).toBe(false);
    // Sign-in requests from another origin (login CSRF) are refused too.
    expect(codeOf(await browser().post('/v1/auth/passkey/options', {}, { origin: 'https://evil.example' }))).toBe('TESSERA_CSRF_INVALID');
    expect(codeOf(await browser().post('/v1/auth/link', { token: 'x'.repeat(43) }, { origin: null }))).toBe('TESSERA_CSRF_INVALID');
  });

  it('expires after the idle timeout and after the absolute timeout', async () => {
    nextStep();
    const b = browser();
    expect((await signIn(b, p)).status).toBe(200);
    clock += 31 * 60_000;
    expect(codeOf(await b.request('/v1/auth/session'))).toBe('TESSERA_SESSION_EXPIRED');
    expect(codeOf(await b.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
    nextStep();
    const c = browser();
    expect((await signIn(c, p)).status).toBe(200);
    for (let i = 0; i < 25; i++) {
      clock += 29 * 60_000;
      if (i < 24) expect((await c.request('/v1/auth/session')).status, `after ${i}`).toBe(200);
    }
    expect(codeOf(await c.request('/v1/auth/session'))).toBe('TESSERA_SESSION_EXPIRED');
  });

  it('logout everywhere, from a session and by an admin', async () => {
    nextStep();
    const a = browser();
    const b = browser();
    expect((await signIn(a, p)).status).toBe(200);
    nextStep();
    expect((await signIn(b, p)).status).toBe(200);
    const r = await a.post('/v1/auth/logout-all', {});
    expect(r.status).toBe(200);
    expect((r.json as { ended: number }).ended).toBe(2);
    expect(codeOf(await b.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
    nextStep();
    expect((await signIn(a, p)).status).toBe(200);
    const byAdmin = await admin('/v1/users/henry/logout-all', {});
    expect((byAdmin.json as { sessions_ended: number }).sessions_ended).toBe(1);
    expect(codeOf(await a.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
  });

  it('a disabled user loses its sessions and cannot sign in; enabled again, it can', async () => {
    nextStep();
    const b = browser();
    expect((await signIn(b, p)).status).toBe(200);
    const d = await admin('/v1/users/henry/disable', { reason: 'left the company' });
    expect(d.status, d.text).toBe(200);
    expect(codeOf(await b.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
    nextStep();
    expect(codeOf(await passkeyStep(browser(), p))).toBe('TESSERA_USER_DISABLED');
    expect(codeOf(await admin('/v1/console/links', { username: 'henry' }))).toBe('TESSERA_USER_DISABLED');
    expect(codeOf(await admin('/v1/users/henry/disable', { reason: 'again' }))).toBe('TESSERA_CONFLICT');
    expect((await admin('/v1/users/henry/enable', {})).status).toBe(200);
    nextStep();
    expect((await signIn(browser(), p)).status).toBe(200);
  });
});

describe('console link and step-up', () => {
  it('a console link signs in once, without MFA; a step-up mints a new session with MFA and ends the old one', async () => {
    nextStep();
    const p = await enrol(browser(), 'ivy');
    const link = await admin('/v1/console/links', { username: 'ivy', ttl_seconds: 600 });
    expect(link.status, link.text).toBe(201);
    const url = (link.json as { url: string }).url;
    expect(url.startsWith(`${t.cp.url}/console/sign-in#token=`)).toBe(true);
    const token = url.split('#token=')[1];
    const b = browser();
    const r = await b.post('/v1/auth/link', { token });
    expect(r.status, r.text).toBe(200);
    expect((r.json as { session: { mfa_at: unknown } }).session.mfa_at).toBeNull();
    expect(codeOf(await browser().post('/v1/auth/link', { token }))).toBe('TESSERA_LINK_INVALID');
    const needMfa = await b.request('/v1/auth/session?max_mfa_age_seconds=300');
    expect(needMfa.status).toBe(401);
    expect(codeOf(needMfa)).toBe('TESSERA_MFA_REQUIRED');
    expect((needMfa.json as { error: { message: string } }).error.message).toMatch(/step up/);

    // Step-up: the passkey challenge is bound to the session's user, then the TOTP code.
    const before = b.cookies.get('__Host-tessera_session')!;
    const opts = await b.post('/v1/auth/passkey/options', { step_up: true });
    expect(opts.status, opts.text).toBe(200);
    const v = await b.post('/v1/auth/passkey/verify', { response: p.passkey.assert((opts.json as { options: { challenge: string; rpId: string } }).options, b.origin) });
    expect(v.status, v.text).toBe(200);
    expect((await b.post('/v1/auth/totp', { code: code(p.secret, 1) })).status).toBe(200);
    const after = b.cookies.get('__Host-tessera_session')!;
    expect(after).not.toBe(before);
    expect((await b.request('/v1/auth/session?max_mfa_age_seconds=300')).status).toBe(200);
    const old = browser();
    old.cookies.set('__Host-tessera_session', before);
    expect(codeOf(await old.request('/v1/auth/session'))).toBe('TESSERA_SESSION_REQUIRED');
    // MFA ages: ten minutes later a 5-minute requirement is not met.
    clock += 10 * 60_000;
    expect(codeOf(await b.request('/v1/auth/session?max_mfa_age_seconds=300'))).toBe('TESSERA_MFA_REQUIRED');
  });

  it('an expired console link is refused; without --user the link is for "admin", created on demand', async () => {
    const link = await admin('/v1/console/links', { ttl_seconds: 60 });
    expect(link.status, link.text).toBe(201);
    expect((link.json as { username: string }).username).toBe('admin');
    clock += 61_000;
    const token = (link.json as { url: string }).url.split('#token=')[1];
    expect(codeOf(await browser().post('/v1/auth/link', { token }))).toBe('TESSERA_LINK_INVALID');
    expect(codeOf(await admin('/v1/console/links', { ttl_seconds: 5 }))).toBe('TESSERA_BAD_REQUEST');
    expect(codeOf(await admin('/v1/console/links', { username: 'nobody' }))).toBe('TESSERA_NOT_FOUND');
  });
});

describe('admin API for users and groups', () => {
  it('adds, lists, shows, removes; refuses bad input, duplicates and callers without an admin credential', async () => {
    await addUser('judy', ['ops', 'eng']);
    expect(codeOf(await admin('/v1/users', { username: 'judy' }))).toBe('TESSERA_USER_CONFLICT');
    for (const bad of [{}, { username: 'Judy' }, { username: '-x' }, { username: 'a'.repeat(64) }, { username: 'ok', groups: ['Bad Group'] },
      { username: 'ok', email: 'not-an-email' }, { username: 'ok', extra: 1 }, { username: 'ok', enrol_ttl_seconds: 5 }]) {
      expect(codeOf(await admin('/v1/users', bad)), JSON.stringify(bad)).toBe('TESSERA_BAD_REQUEST');
    }
    const show = await admin('/v1/users/judy');
    expect((show.json as { user: Record<string, unknown> }).user).toMatchObject({ username: 'judy', groups: ['eng', 'ops'], state: 'active', credentials: [] });
    const list = await admin('/v1/users');
    expect((list.json as { users: { username: string }[] }).users.map((u) => u.username)).toContain('judy');
    const groups = await admin('/v1/groups');
    expect((groups.json as { groups: { name: string; members: string[] }[] }).groups.find((g) => g.name === 'ops')?.members).toEqual(['judy']);
    expect((await admin('/v1/users/judy/remove', {})).status).toBe(200);
    expect(codeOf(await admin('/v1/users/judy'))).toBe('TESSERA_NOT_FOUND');
    expect(codeOf(await admin('/v1/users/..%2F..'))).toBe('TESSERA_NOT_FOUND');
    const anon = await rawRequest(t.cp.url, { path: '/v1/users', ca: t.adminTls.ca });
    expect(codeOf(anon)).toBe('TESSERA_AUTH_REQUIRED');
    // A signed-in person is judged by the admin policy: kim is in no admin group, so the default policy refuses.
    nextStep();
    const b = browser();
    await enrol(b, 'kim');
    expect(codeOf(await b.request('/v1/users'))).toBe('TESSERA_FORBIDDEN');
  });

  it('a user credential never appears in admin answers', async () => {
    const show = await admin('/v1/users/alice');
    expect(show.text).not.toMatch(/secret|public_key|sealed/i);
    expect((show.json as { user: { credentials: { kind: string }[] } }).user.credentials.map((c) => c.kind).sort()).toEqual(['passkey', 'totp']);
  });

  it('workload entries may not use the /user tree', async () => {
    const r = await admin('/v1/entries', { spiffe_id: 'spiffe://tessera.test/user/alice', selectors: ['unix:uid:1000'] });
    expect(codeOf(r)).toBe('TESSERA_SPIFFE_ID_RESERVED');
  });
});

describe('sign-in pages', () => {
  it('are served with a strict CSP and no inline script', async () => {
    for (const page of ['/auth/signin', '/auth/enrol', '/auth/link']) {
      const r = await browser().request(page);
      expect(r.status).toBe(200);
      expect(r.headers['content-security-policy']).toMatch(/script-src 'self'/);
      expect(r.headers['content-security-policy']).not.toMatch(/unsafe-inline/);
      expect(r.text).not.toMatch(/<script>|<script [^>]*>[^<]/);
      expect(r.text).not.toMatch(/ on[a-z]+=/);
    }
    const js = await browser().request('/auth/static/people.js');
    expect(js.headers['content-type']).toMatch(/javascript/);
  });
});
