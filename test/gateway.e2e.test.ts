/**
 * The gateway for people end to end, over real TLS sockets on 127.0.0.1: a control plane (SQLite file),
 * a gateway node (its own agent joined with a join token, the signed policy bundle, its HTTPS front),
 * plain HTTP apps behind it, people signed in at the control plane (one-time console links) and an
 * enrolled device with signed posture reports.
 *
 * Checked: the sign-in round trip (authorization code + PKCE through the control plane), allow and
 * deny by Cedar `gateway:request` (groups, `context.device` posture), a device certificate presented or
 * not, a revoked device, identity headers and Tessera cookies stripped, the assertion verified by the
 * apps' verifier (and a forged, expired, wrong-audience one refused), state / PKCE / open-redirect
 * refusals, CSRF on logout, logout everywhere ending the gateway session within the check period,
 * step-up (the redirect, and the round trip: passkey + TOTP again at the control plane, allowed with a
 * fresh MFA, redirected again once it is older than the policy's @stepup), and the decisions and people's telemetry reaching the control plane.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { Secret, TOTP } from 'otpauth';
import type { IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SignJWT, exportJWK } from 'jose';
import { createLogger } from '../src/core/log.js';
import { enrollDevice, sendPosture, type DeviceIdentity } from '../src/device/device.js';
import { AssertionSigner } from '../src/gateway/assertion.js';
import { DEFAULT_FLOW_LIMITS } from '../src/gateway/flows.js';
import { GatewayMetrics } from '../src/gateway/metrics.js';
import { startGatewayNode, type GatewayNode } from '../src/gateway/node.js';
import { parseRoute } from '../src/gateway/route-table.js';
import { createAssertionVerifier } from '../src/gateway/verify.js';
import { SoftPasskey } from './support/webauthn.js';
import { startHttpApp } from './support/fabric.js';
import { PeopleBrowser, gatewayCert, signedInBrowser, type GatewayCert, type Hop } from './support/gateway.js';
import { freePort, waitFor } from './support/process.js';
import { agentClient, applyPolicy, joinAgent, rawRequest, rejectionCode, startControlPlane, type TestControlPlane } from './support/server.js';

const TD = 'tessera.test';
const GATEWAY_ID = `spiffe://${TD}/gateway/apps`;
const appId = (route: string): string => `spiffe://${TD}/tessera/gateway/apps/app/${route}`;

const POLICY = `
@id("wiki-eng")
permit (principal in Tessera::Group::"eng", action == Tessera::Action::"gateway:request", resource == Tessera::App::"wiki");

@id("admin-encrypted-device")
permit (principal in Tessera::Group::"eng", action == Tessera::Action::"gateway:request", resource == Tessera::App::"admin")
when { context.device.enrolled && context.device.posture_state == "fresh" && context.device has disk_encrypted && context.device.disk_encrypted };

@id("secure-fresh-mfa")
@stepup("300")
permit (principal in Tessera::Group::"eng", action == Tessera::Action::"gateway:request", resource == Tessera::App::"secure");

@id("fresh-mfa-60")
@stepup("60")
permit (principal in Tessera::Group::"eng", action == Tessera::Action::"gateway:request", resource == Tessera::App::"fresh");
`;

let t: TestControlPlane;
let dir: string;
let port: number;
let node: GatewayNode;
let cert: GatewayCert;
let ca: string;
let apps: { port: number; close(): Promise<void> };
/** How far the gateway's clock runs ahead of the control plane's (ages an MFA without waiting). */
let gatewaySkewMs = 0;
const metrics = new GatewayMetrics();
/** What the app saw of each request: its headers. */
const seen: IncomingHttpHeaders[] = [];
const wiki = (path = '/'): string => `https://wiki.localhost:${port}${path}`;
const adminApp = (path = '/'): string => `https://admin.localhost:${port}${path}`;

async function addUser(username: string, groups: string[]): Promise<void> {
  await t.admin.call('POST', '/v1/users', { username, groups });
}

/** A browser signed in at the control plane as `username` (a one-time console link: no MFA). */
const signedIn = (username: string): Promise<PeopleBrowser> => signedInBrowser(t, ca, username);

function last<T>(a: T[]): T {
  return a[a.length - 1]!;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-gateway-'));
  t = await startControlPlane();
  port = await freePort();
  cert = gatewayCert(['wiki.localhost', 'admin.localhost']);
  ca = `${t.adminTls.ca}\n${cert.caPem}`;
  writeFileSync(join(dir, 'gw.pem'), cert.certPem);
  writeFileSync(join(dir, 'gw.key'), cert.keyPem, { mode: 0o600 });
  apps = await startHttpApp((req, res) => {
    seen.push(req.headers);
    req.resume();
    res.setHeader('content-type', 'text/plain');
    res.end(`app ${req.url}`);
  });
  await applyPolicy(t.admin, { 'gateway.cedar': POLICY });
  await addUser('ana', ['eng']);
  await addUser('bob', ['sales']);
  const entry = await t.admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: GATEWAY_ID });
  const { token } = await t.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entry.id });
  await t.admin.call('POST', '/v1/gateways', { name: 'apps', spiffe_id: GATEWAY_ID, urls: [`https://wiki.localhost:${port}`, `https://admin.localhost:${port}`] });
  const app = `http://127.0.0.1:${apps.port}`;
  node = await startGatewayNode({
    serverUrl: t.cp.url, dataDir: join(dir, 'gw'), name: 'apps', listen: { host: '127.0.0.1', port },
    tlsCertFile: join(dir, 'gw.pem'), tlsKeyFile: join(dir, 'gw.key'), joinToken: token, trustBundleFile: join(t.cp.adminDir, 'bundle.pem'),
    routes: [parseRoute(`wiki.localhost=${app}`), parseRoute(`secure:wiki.localhost/secure=${app}`), parseRoute(`fresh:wiki.localhost/fresh=${app}`), parseRoute(`admin:admin.localhost=${app}`)],
    log: createLogger({ level: 'error' }), policyWatchSeconds: 1, telemetry: { windowSeconds: 1 }, metrics,
    server: { sessions: { checkMs: 1000 }, now: () => Date.now() + gatewaySkewMs },
  });
  const version = (await t.admin.call<{ version: number }>('GET', '/v1/policy/bundle')).version;
  await waitFor('the gateway holds the policy', () => node.sidecar.enforcer.version >= version, 20_000);
}, 60_000);

afterAll(async () => {
  await node?.close();
  await apps?.close();
  await t?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('sign-in through the control plane', () => {
  it('round trip: gateway → authorize → code → gateway session → the app, with a verifiable assertion', async () => {
    const b = await signedIn('ana');
    const hops = await b.navigate(wiki('/hello?x=1'));
    expect(hops.map((h) => h.status)).toEqual([303, 303, 303, 200]);
    expect(hops[0]!.location).toMatch(new RegExp(`^${t.cp.url}/v1/gateway/authorize\\?`));
    const authorize = new URL(hops[0]!.location!);
    expect(authorize.searchParams.get('code_challenge_method')).toBe('S256');
    expect(authorize.searchParams.get('redirect_uri')).toBe(wiki('/_tessera/callback'));
    expect(hops[1]!.location).toMatch(new RegExp(`^${wiki('/_tessera/callback')}\\?code=gwc_`));
    expect(hops[2]!.location).toBe(wiki('/hello?x=1'));
    const setCookie = String(hops[2]!.headers['set-cookie']);
    expect(setCookie).toMatch(/__Host-tessera_gw=[A-Za-z0-9_-]{43}; Path=\/; Secure; SameSite=Lax; HttpOnly; Max-Age=\d+/);
    expect(last(hops).text).toBe('app /hello?x=1');
    // The apps' verifier with the gateway's JWKS document (as fetched from /.well-known/jwks.json).
    const jwks = JSON.parse((await b.fetch(wiki('/.well-known/jwks.json'))).text) as { keys: object[] };
    const verifyLocal = createAssertionVerifier({ jwks: jwks as never, issuer: GATEWAY_ID, audience: appId('wiki') });
    const claims = await verifyLocal(last(seen)['x-tessera-user-assertion']);
    expect(claims).toMatchObject({ sub: `spiffe://${TD}/user/ana`, username: 'ana', groups: ['eng'] });
    expect(claims.device).toBeUndefined();
    // Signed in now: the next request goes straight through.
    const again = await b.navigate(wiki('/two'));
    expect(again.map((h) => h.status)).toEqual([200]);
  }, 30_000);

  it('without a control-plane session the browser lands on the sign-in page, coming back to authorize', async () => {
    const b = new PeopleBrowser(ca);
    const hops = await b.navigate(wiki('/'));
    expect(hops.map((h) => h.status)).toEqual([303, 303, 200]);
    const signin = new URL(hops[1]!.location!);
    expect(signin.pathname).toBe('/auth/signin');
    expect(signin.searchParams.get('return_to')).toMatch(/^\/v1\/gateway\/authorize\?gateway=apps&/);
  });

  it('an API request without a session gets 401 JSON, not a redirect', async () => {
    const b = new PeopleBrowser(ca);
    const res = await b.fetch(wiki('/api'), { headers: { accept: 'application/json' } });
    expect(res.status).toBe(401);
    expect(JSON.parse(res.text).error.code).toBe('TESSERA_SESSION_REQUIRED');
  });

  it('an unknown host is a 404 page', async () => {
    const b = await signedIn('ana');
    const res = await b.fetch(`https://wiki.localhost:${port}/`, { headers: { host: `nope.localhost:${port}` } });
    expect(res.status).toBe(404);
    expect(res.text).toContain('TESSERA_ROUTE_NOT_FOUND');
  });
});

describe('authorization', () => {
  it('a person the policy does not allow is refused (403), and the app sees nothing', async () => {
    const b = await signedIn('bob');
    const before = seen.length;
    const hops = await b.navigate(wiki('/'));
    expect(last(hops).status).toBe(403);
    expect(last(hops).text).toContain('TESSERA_PROXY_DENIED');
    expect(seen.length).toBe(before);
  });

  it('context.device: no device certificate → denied; an enrolled, encrypted device → allowed; revoked → refused', async () => {
    const b = await signedIn('ana');
    expect(last(await b.navigate(adminApp('/'))).status).toBe(403);
    const tok = await t.admin.call<{ token: string }>('POST', '/v1/devices/tokens', { device_id: 'lap-1', owner: 'ana' });
    const device: DeviceIdentity = await enrollDevice({ serverUrl: t.cp.url, token: tok.token, dataDir: join(dir, 'lap-1'), trustBundlePem: t.adminTls.ca });
    const now = Date.now();
    await sendPosture(device, { disk_encrypted: { value: true, observedAt: now }, os: { value: 'linux', observedAt: now } });
    const keyPem = device.key.export({ format: 'pem', type: 'pkcs8' }) as string;
    const withDevice = await b.navigate(adminApp('/x'), { cert: device.certPem, key: keyPem });
    expect(last(withDevice).status, last(withDevice).text).toBe(200);
    const jwks = JSON.parse((await b.fetch(wiki('/.well-known/jwks.json'))).text) as never;
    const claims = await createAssertionVerifier({ jwks, issuer: GATEWAY_ID, audience: appId('admin') })(last(seen)['x-tessera-user-assertion']);
    expect(claims.device).toBe(`spiffe://${TD}/device/lap-1`);
    // Revoked: the signed bundle's revocation list reaches the gateway within a second or two.
    await t.admin.call('POST', '/v1/devices/lap-1/revoke', { reason: 'lost' });
    await waitFor('the revoked device is refused', async () => {
      const r = await b.fetch(adminApp('/x'), { cert: device.certPem, key: keyPem });
      return r.status === 403 && r.text.includes('TESSERA_IDENTITY_REVOKED');
    }, 20_000, 200);
    // A certificate the bundle does not trust is refused, not ignored.
    const stranger = gatewayCert(['x.test']);
    const bad = await b.fetch(adminApp('/x'), { cert: stranger.certPem, key: stranger.keyPem });
    expect(bad.status).toBe(401);
    expect(bad.text).toContain('TESSERA_AUTH_INVALID');
    // Counted: the device-less denial, the allow, and the revoked and untrusted certificates as errors.
    const m = await metrics.registry.getSingleMetricAsString('tessera_gateway_requests_total');
    expect(m).toMatch(/route="admin",outcome="denied"\} [1-9]/);
    expect(m).toMatch(/route="admin",outcome="allowed"\} [1-9]/);
    expect(m).toMatch(/route="admin",outcome="error"\} ([2-9]|\d\d)/);
  }, 60_000);

  it('step-up: a @stepup policy sends a session without fresh MFA back to sign in with step_up=1', async () => {
    const b = await signedIn('ana');
    await b.navigate(wiki('/'));
    const hops = await b.navigate(wiki('/secure/page'));
    const authorize = new URL(hops[0]!.location!);
    expect(authorize.pathname).toBe('/v1/gateway/authorize');
    expect(authorize.searchParams.get('step_up')).toBe('1');
    expect(authorize.searchParams.get('max_mfa_age')).toBe('300');
    const signin = new URL(hops[1]!.location!);
    expect(signin.pathname).toBe('/auth/signin');
    expect(signin.searchParams.get('step_up')).toBe('1');
  });
});

describe('step-up round trip', () => {
  /** A JSON POST to the control plane from the browser (same Origin, its cookies, the CSRF header once it has a session). */
  async function cpPost(b: PeopleBrowser, path: string, body: unknown): Promise<{ status: number; json: Record<string, unknown>; text: string }> {
    const csrf = b.cookies('127.0.0.1').get('__Host-tessera_csrf');
    const headers: Record<string, string> = { origin: new URL(t.cp.url).origin, 'content-type': 'application/json', accept: 'application/json', ...(csrf ? { 'x-tessera-csrf': csrf } : {}) };
    const res = await b.fetch(`${t.cp.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
    return { status: res.status, text: res.text, json: res.text === '' ? {} : JSON.parse(res.text) as Record<string, unknown> };
  }

  it('@stepup("60"): redirected to step up, passkey + TOTP again at the control plane, back allowed with a fresh mfa_at; once the MFA is over 60 s old, redirected again', async () => {
    const STEP = 30_000;
    // Enrol cy (passkey + TOTP) through the one-time enrolment link, as the enrolment page does.
    const added = await t.admin.call<{ enrolment_url: string }>('POST', '/v1/users', { username: 'cy', groups: ['eng'] });
    const b = new PeopleBrowser(ca);
    const start = await cpPost(b, '/v1/auth/enrol/start', { token: added.enrolment_url.split('#token=')[1]! });
    expect(start.status, start.text).toBe(200);
    const passkey = new SoftPasskey();
    const origin = new URL(t.cp.url).origin;
    expect((await cpPost(b, '/v1/auth/enrol/passkey', { response: passkey.register(start.json.passkey_options as never, origin) })).status).toBe(200);
    const secret = Secret.fromBase32(new URL(start.json.totp_uri as string).searchParams.get('secret')!);
    const enrolledAt = Date.now();
    expect((await cpPost(b, '/v1/auth/enrol/totp', { code: TOTP.generate({ secret, timestamp: enrolledAt }) })).status).toBe(200);
    // Enrolment left no session: cy signs in with a console link (no MFA) and reaches the plain route.
    const signed = await signedIn('cy');
    signed.jar.get('127.0.0.1')?.forEach((v, k) => b.cookies('127.0.0.1').set(k, v));
    expect(last(await b.navigate(wiki('/'))).status).toBe(200);
    // The @stepup("60") route: gateway → authorize?step_up=1&max_mfa_age=60 → the sign-in page with step_up=1.
    const hops = await b.navigate(wiki('/fresh/doc?v=2'));
    expect(hops.map((h) => h.status)).toEqual([303, 303, 200]);
    const authorize = new URL(hops[0]!.location!);
    expect(authorize.searchParams.get('step_up')).toBe('1');
    expect(authorize.searchParams.get('max_mfa_age')).toBe('60');
    const signin = new URL(hops[1]!.location!);
    expect(signin.pathname).toBe('/auth/signin');
    expect(signin.searchParams.get('step_up')).toBe('1');
    const returnTo = signin.searchParams.get('return_to')!;
    expect(returnTo).toMatch(/^\/v1\/gateway\/authorize\?/);
    // What the sign-in page does on step_up=1: passkey options bound to the session's user, assertion, TOTP.
    const opts = await cpPost(b, '/v1/auth/passkey/options', { step_up: true });
    expect(opts.status, opts.text).toBe(200);
    const verified = await cpPost(b, '/v1/auth/passkey/verify', { response: passkey.assert((opts.json as { options: { challenge: string; rpId: string } }).options, origin) });
    expect(verified.status, verified.text).toBe(200);
    // The next step's code (RFC 6238 §5.2 window of one step; the enrolment used this step's).
    const mfaAt = Date.now();
    const totp = await cpPost(b, '/v1/auth/totp', { code: TOTP.generate({ secret, timestamp: enrolledAt + STEP }) });
    expect(totp.status, totp.text).toBe(200);
    // Back to where the page sends the person: authorize → code → the gateway → the app.
    const before = seen.length;
    const back = await b.navigate(`${t.cp.url}${returnTo}`);
    expect(back.map((h) => h.status)).toEqual([303, 303, 200]);
    expect(back[1]!.location).toBe(wiki('/fresh/doc?v=2'));
    expect(last(back).text).toBe('app /fresh/doc?v=2');
    expect(seen.length).toBe(before + 1);
    const gw = node.server.sessions.get(b.cookies('wiki.localhost').get('__Host-tessera_gw'));
    expect(gw?.username).toBe('cy');
    expect(gw!.mfaAt).toBeGreaterThanOrEqual(mfaAt - 1000);
    expect(gw!.mfaAt).toBeLessThanOrEqual(Date.now());
    // Straight through while the MFA is recent.
    expect((await b.navigate(wiki('/fresh/again'))).map((h) => h.status)).toEqual([200]);
    // 61 s later (the gateway's clock moved on): the same session is sent to step up again.
    gatewaySkewMs = 61_000;
    try {
      const stale = await b.navigate(wiki('/fresh/again'), { follow: 0 });
      expect(stale[0]!.status).toBe(303);
      const again = new URL(stale[0]!.location!);
      expect(again.pathname).toBe('/v1/gateway/authorize');
      expect(again.searchParams.get('step_up')).toBe('1');
      // A route without @stepup still goes through.
      expect((await b.navigate(wiki('/plain'))).map((h) => h.status)).toEqual([200]);
    } finally {
      gatewaySkewMs = 0;
    }
  }, 40_000);
});

describe('forwarding', () => {
  it('strips an assertion and identity headers set by the caller, and Tessera\'s cookies', async () => {
    const b = await signedIn('ana');
    await b.navigate(wiki('/'));
    const forged = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJzcGlmZmU6Ly90ZXNzZXJhLnRlc3QvdXNlci9hZG1pbiJ9.';
    const gwCookie = b.cookies('wiki.localhost').get('__Host-tessera_gw')!;
    const res = await b.fetch(wiki('/h'), {
      headers: {
        'x-tessera-user-assertion': forged, 'x-forwarded-user': 'admin', 'remote-user': 'admin', 'x-forwarded-email': 'a@b',
        cookie: `__Host-tessera_gw=${gwCookie}; app_pref=dark; __Host-tessera_session=cp-session`,
      },
    });
    expect(res.status, res.text).toBe(200);
    const h = last(seen);
    expect(h['x-tessera-user-assertion']).not.toBe(forged);
    expect(h['x-forwarded-user']).toBeUndefined();
    expect(h['remote-user']).toBeUndefined();
    expect(h['x-forwarded-email']).toBeUndefined();
    expect(h.cookie).toBe('app_pref=dark');
    const jwks = JSON.parse((await b.fetch(wiki('/.well-known/jwks.json'))).text) as never;
    expect((await createAssertionVerifier({ jwks, issuer: GATEWAY_ID, audience: appId('wiki') })(h['x-tessera-user-assertion'])).username).toBe('ana');
  });
});

describe('the apps\' verifier', () => {
  it('refuses a forged, expired, wrong-audience, wrong-issuer, unsigned or over-long assertion', async () => {
    const b = new PeopleBrowser(ca);
    const jwks = JSON.parse((await b.fetch(wiki('/.well-known/jwks.json'))).text) as never;
    const verify = createAssertionVerifier({ jwks, issuer: GATEWAY_ID, audience: appId('wiki') });
    const code = (p: Promise<unknown>) => rejectionCode(p);
    const good = node.signer.sign({ aud: appId('wiki'), sub: `spiffe://${TD}/user/ana`, username: 'ana', groups: ['eng'] });
    expect((await verify(good)).username).toBe('ana');
    // Another key with the gateway's kid: forged.
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const claims = { sub: `spiffe://${TD}/user/ana`, username: 'ana', groups: ['eng'], jti: 'x' };
    const forged = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: node.signer.kid }).setIssuer(GATEWAY_ID).setAudience(appId('wiki')).setIssuedAt().setExpirationTime('50s').sign(other.privateKey);
    expect(await code(verify(forged))).toBe('TESSERA_ASSERTION_INVALID');
    const expiredDir = mkdtempSync(join(dir, 'expired-'));
    const past = new AssertionSigner({ dir: expiredDir, issuer: GATEWAY_ID, now: () => Date.now() - 10 * 60_000 });
    const pastJwks = JSON.parse(past.jwks()) as never;
    const pastVerify = createAssertionVerifier({ jwks: pastJwks, issuer: GATEWAY_ID, audience: appId('wiki') });
    expect(await code(pastVerify(past.sign({ aud: appId('wiki'), sub: claims.sub, username: 'ana', groups: [] })))).toBe('TESSERA_ASSERTION_INVALID');
    expect(await code(verify(node.signer.sign({ aud: appId('admin'), sub: claims.sub, username: 'ana', groups: [] })))).toBe('TESSERA_ASSERTION_INVALID');
    expect(await code(createAssertionVerifier({ jwks, issuer: 'spiffe://tessera.test/other', audience: appId('wiki') })(good))).toBe('TESSERA_ASSERTION_INVALID');
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from(JSON.stringify({ ...claims, iss: GATEWAY_ID, aud: appId('wiki'), iat: 1, exp: 9e9 })).toString('base64url')}.`;
    expect(await code(verify(unsigned))).toBe('TESSERA_ASSERTION_INVALID');
    // A token of the gateway's own key but living 10 minutes: refused (assertions live ≤ 60 s).
    const jwk = await exportJWK(other.publicKey);
    const longVerify = createAssertionVerifier({ jwks: { keys: [{ ...jwk, kid: 'k', alg: 'ES256' }] }, issuer: GATEWAY_ID, audience: appId('wiki') });
    const long = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k' }).setIssuer(GATEWAY_ID).setAudience(appId('wiki')).setIssuedAt().setExpirationTime('10m').sign(other.privateKey);
    expect(await code(longVerify(long))).toBe('TESSERA_ASSERTION_INVALID');
    expect(await code(verify(undefined))).toBe('TESSERA_ASSERTION_INVALID');
  });
});

describe('state, PKCE and open redirects', () => {
  const authorizeUrl = (o: Record<string, string>): string => `${t.cp.url}/v1/gateway/authorize?${new URLSearchParams({
    gateway: 'apps', redirect_uri: wiki('/_tessera/callback'), state: randomBytes(16).toString('base64url'),
    code_challenge: createHash('sha256').update('v'.repeat(43)).digest('base64url'), code_challenge_method: 'S256', ...o,
  }).toString()}`;

  it('the control plane never redirects to an unregistered redirect URI, and requires S256 PKCE and a state', async () => {
    const b = await signedIn('ana');
    for (const redirect_uri of ['https://evil.example/_tessera/callback', wiki('/_tessera/callback/../x'), `https://wiki.localhost:${port}.evil.example/_tessera/callback`, wiki('/other')]) {
      const res = await b.fetch(authorizeUrl({ redirect_uri }));
      expect(res.status, redirect_uri).toBe(400);
      expect(res.headers.location).toBeUndefined();
      expect(JSON.parse(res.text).error.code).toBe('TESSERA_REDIRECT_INVALID');
    }
    expect((await b.fetch(authorizeUrl({ gateway: 'nope' }))).status).toBe(404);
    expect(JSON.parse((await b.fetch(authorizeUrl({ code_challenge_method: 'plain' }))).text).error.code).toBe('TESSERA_BAD_REQUEST');
    expect(JSON.parse((await b.fetch(authorizeUrl({ state: 'short' }))).text).error.code).toBe('TESSERA_BAD_REQUEST');
    expect((await b.fetch(authorizeUrl({}))).status).toBe(303);
  });

  it('a code is redeemed once, only by the gateway, only with the right verifier and redirect URI', async () => {
    const b = await signedIn('ana');
    const verifier = randomBytes(32).toString('base64url');
    const issue = async (): Promise<string> => {
      const res = await b.fetch(authorizeUrl({ code_challenge: createHash('sha256').update(verifier).digest('base64url') }));
      expect(res.status).toBe(303);
      return new URL(res.headers.location as string).searchParams.get('code')!;
    };
    const call = (body: object) => node.agent.call('POST', '/v1/gateway/token', body);
    const redirect_uri = wiki('/_tessera/callback');
    expect(await rejectionCode(call({ code: await issue(), code_verifier: randomBytes(32).toString('base64url'), redirect_uri }))).toBe('TESSERA_GATEWAY_CODE_INVALID');
    expect(await rejectionCode(call({ code: await issue(), code_verifier: verifier, redirect_uri: adminApp('/_tessera/callback') }))).toBe('TESSERA_GATEWAY_CODE_INVALID');
    const code = await issue();
    expect(await call({ code, code_verifier: verifier, redirect_uri })).toMatchObject({ username: 'ana', groups: ['eng'], mfa_at: null });
    expect(await rejectionCode(call({ code, code_verifier: verifier, redirect_uri }))).toBe('TESSERA_GATEWAY_CODE_INVALID');
    // Anyone else (the admin credential here) is not a gateway.
    const other = await rawRequest(t.cp.url, { method: 'POST', path: '/v1/gateway/token', ca: t.adminTls.ca, cert: t.adminTls.cert, key: t.adminTls.key, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: await issue(), code_verifier: verifier, redirect_uri }) });
    expect([401, 403]).toContain(other.status);
  });

  it('the gateway refuses a callback without its flow cookie or with another state', async () => {
    const b = await signedIn('ana');
    const first = await b.fetch(wiki('/'));
    const authorize = new URL(first.headers.location as string);
    // The control plane's answer, with the state changed on the way back.
    const back = await b.fetch(authorize.toString());
    const callback = new URL(back.headers.location as string);
    callback.searchParams.set('state', randomBytes(24).toString('base64url'));
    const bad = await b.fetch(callback.toString());
    expect(bad.status).toBe(400);
    expect(bad.text).toContain('TESSERA_GATEWAY_STATE_INVALID');
    // A callback with no flow at all (a link someone else sent).
    const stranger = new PeopleBrowser(ca);
    const res = await stranger.fetch(wiki(`/_tessera/callback?code=gwc_${'a'.repeat(43)}&state=${'b'.repeat(32)}`));
    expect(res.status).toBe(400);
    expect(res.text).toContain('TESSERA_GATEWAY_STATE_INVALID');
    expect(stranger.cookies('wiki.localhost').has('__Host-tessera_gw')).toBe(false);
  });
});

describe('pending sign-ins per client address', () => {
  it('one address gets DEFAULT_FLOW_LIMITS.maxPerAddress pending sign-ins, then 429 TESSERA_RATE_LIMITED with Retry-After; another address\'s pending sign-in survives it and completes', async () => {
    // ana, from 127.0.0.2, starts signing in (one pending flow) before the flood.
    const victim = await signedIn('ana');
    const started = await victim.fetch(wiki('/after-flood'), { localAddress: '127.0.0.2' });
    expect(started.status).toBe(303);
    // 127.0.0.3 starts sign-ins and never finishes them (new browsers: no cookies).
    const flooder = (): Promise<Hop> => new PeopleBrowser(ca).fetch(wiki('/'), { localAddress: '127.0.0.3' });
    for (let i = 0; i < DEFAULT_FLOW_LIMITS.maxPerAddress; i++) expect((await flooder()).status).toBe(303);
    const over = await flooder();
    expect(over.status).toBe(429);
    expect(over.text).toContain('TESSERA_RATE_LIMITED');
    expect(over.headers.location).toBeUndefined();
    expect(over.headers['set-cookie']).toBeUndefined();
    // Seconds until its oldest pending sign-in expires (they live 10 minutes).
    const retry = Number(over.headers['retry-after']);
    expect(retry).toBeGreaterThan(500);
    expect(retry).toBeLessThanOrEqual(600);
    // The refusal is per address: ana's flow is still pending and completes; 127.0.0.4 signs in.
    const done = await victim.navigate(started.location!, { localAddress: '127.0.0.2' });
    expect(done.map((h) => h.status)).toEqual([303, 303, 200]);
    expect(last(done).text).toBe('app /after-flood');
    expect((await new PeopleBrowser(ca).fetch(wiki('/'), { localAddress: '127.0.0.4' })).status).toBe(303);
  });
});

describe('logout', () => {
  it('logout needs the session\'s CSRF token and the gateway\'s Origin', async () => {
    const b = await signedIn('ana');
    await b.navigate(wiki('/'));
    const me = await b.fetch(wiki('/_tessera/'));
    const csrf = /name="csrf" value="([^"]+)"/.exec(me.text)![1]!;
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    expect((await b.fetch(wiki('/_tessera/logout'), { method: 'POST', headers: { ...form, origin: wiki('').slice(0, -1) }, body: 'csrf=wrong' })).status).toBe(403);
    expect((await b.fetch(wiki('/_tessera/logout'), { method: 'POST', headers: { ...form, origin: 'https://evil.example' }, body: `csrf=${csrf}` })).status).toBe(403);
    expect((await b.fetch(wiki('/_tessera/logout'), { method: 'POST', headers: form, body: `csrf=${csrf}` })).status).toBe(403);
    const ok = await b.fetch(wiki('/_tessera/logout'), { method: 'POST', headers: { ...form, origin: `https://wiki.localhost:${port}` }, body: `csrf=${csrf}` });
    expect(ok.status).toBe(200);
    expect(b.cookies('wiki.localhost').has('__Host-tessera_gw')).toBe(false);
  });

  it('logout everywhere at the control plane ends the gateway session within the check period', async () => {
    const b = await signedIn('ana');
    expect(last(await b.navigate(wiki('/'))).status).toBe(200);
    const cp = b.cookies('127.0.0.1');
    const res = await b.fetch(`${t.cp.url}/v1/auth/logout-all`, { method: 'POST', headers: { origin: new URL(t.cp.url).origin, 'x-tessera-csrf': cp.get('__Host-tessera_csrf')!, 'content-type': 'application/json' }, body: '{}' });
    expect(res.status, res.text).toBe(200);
    const ended = Date.now();
    // checkMs is 1 s here: within it (plus a round trip) the gateway sends the browser to sign in again.
    await waitFor('the gateway session is ended', async () => (await b.fetch(wiki('/'))).status === 303, 5000, 100);
    expect(Date.now() - ended).toBeLessThan(3000);
  });
});

describe('audit and telemetry', () => {
  it('ships every decision (reporter the gateway) and people\'s telemetry windows', async () => {
    const b = await signedIn('ana');
    await b.navigate(wiki('/t'));
    await waitFor('decision records', async () => {
      const r = await t.admin.call<{ records: { actor: string; detail: { action?: string; principal?: string } }[] }>('GET', '/v1/audit?action=decision&limit=200');
      return r.records.some((x) => x.actor === GATEWAY_ID && x.detail.action === 'gateway:request' && x.detail.principal === `spiffe://${TD}/user/ana`);
    }, 15_000, 250);
    await waitFor('telemetry windows', async () => {
      const r = await t.admin.call<{ windows: { caller: string; callee: string; reporter: string; requests: number }[] }>('GET', `/v1/telemetry?identity=${encodeURIComponent(`spiffe://${TD}/user/ana`)}`);
      return r.windows.some((w) => w.callee === appId('wiki') && w.reporter === 'callee' && w.requests > 0);
    }, 15_000, 250);
  }, 40_000);

  it('takes people\'s windows and gateway:request records only from a registered gateway, about its own apps and people', async () => {
    const w = (caller: string, callee: string) => ({
      caller, callee, reporter: 'callee', action: 'http', ts: new Date(Math.floor(Date.now() / 1000) * 1000 - 5000).toISOString(), window_s: 1, requests: 1, errors: 0, denials: 0,
      bytes_in: 0, bytes_out: 0, latency_p50_ms: 1, latency_p99_ms: 1, paths_distinct: 1, first_seen: false, caller_site: 'unknown', callee_site: 'unknown',
    });
    const ana = `spiffe://${TD}/user/ana`;
    expect(await node.agent.call('POST', '/v1/telemetry', { windows: [w(ana, appId('wiki'))] })).toEqual({ accepted: 1 });
    expect(await rejectionCode(node.agent.call('POST', '/v1/telemetry', { windows: [w(ana, `spiffe://${TD}/tessera/gateway/other/app/wiki`)] }))).toBe('TESSERA_FORBIDDEN');
    expect(await rejectionCode(node.agent.call('POST', '/v1/telemetry', { windows: [w(`spiffe://${TD}/shop/orders`, appId('wiki'))] }))).toBe('TESSERA_FORBIDDEN');
    const workload = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/web`);
    const wc = agentClient(t.cp, workload);
    try {
      expect(await rejectionCode(wc.call('POST', '/v1/telemetry', { windows: [w(ana, appId('wiki'))] }))).toBe('TESSERA_FORBIDDEN');
      const record = (resource: string, principal = ana) => ({ ts: Date.now(), principal, action: 'gateway:request', resource, context: { app: 'wiki' }, allow: true, reasons: [] });
      expect(await wc.call('POST', '/v1/decisions', { decisions: [record(appId('wiki'))] })).toEqual({ accepted: 0, refused: 1 });
    } finally {
      wc.close();
    }
    const record = (resource: string, principal = ana) => ({ ts: Date.now(), principal, action: 'gateway:request', resource, context: { app: 'wiki' }, allow: true, reasons: [] });
    expect(await node.agent.call('POST', '/v1/decisions', { decisions: [record(appId('wiki')), record(`spiffe://${TD}/tessera/gateway/other/app/x`), record(appId('wiki'), `spiffe://${TD}/shop/web`)] })).toEqual({ accepted: 1, refused: 2 });
  }, 30_000);
});
