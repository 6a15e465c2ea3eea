/**
 * The gateway's HTTPS front: signs people in through the control plane (code flow + PKCE), takes a
 * device identity from a client certificate when one is presented, asks Cedar (`gateway:request`) for
 * every request, and forwards allowed ones to the app with a signed user assertion.
 *
 * Reserved paths on every host: `GET /.well-known/jwks.json` (the assertion keys), `GET /_tessera/callback`
 * (the return from the control plane), `GET /_tessera/` (who am I, logout buttons), `POST /_tessera/logout`,
 * `POST /_tessera/logout-all` (CSRF token and same Origin required). Everything else is routed
 * (route-table.ts); an unknown host or path is a 404 page.
 *
 * This module does not know the agent: it takes its TLS trust (TlsSource), the policy decisions, the
 * control-plane calls and the telemetry counters as interfaces (node.ts wires them).
 */
import { createHash, randomBytes } from 'node:crypto';
import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { TLSSocket } from 'node:tls';
import type { DevicePostureContext } from '../core/devices/posture.js';
import { TesseraError, isTesseraError } from '../core/errors.js';
import { parseRequest } from '../core/http-head.js';
import type { Logger } from '../core/log.js';
import type { Decision } from '../core/policy/engine.js';
import { verifyPeerSvid } from '../core/x509-svid.js';
import { GATEWAY_CALLBACK_PATH, gatewayAppId, type DevicePostureResponse, type GatewayLogoutAllResponse, type GatewaySessionResponse, type GatewayTokenRequest, type GatewayTokenResponse } from '../core/wire/gateway.js';
import { MIN_TLS_VERSION, listenOn, watchTlsSource, type TlsSource } from '../common/tls-source.js';
import { cookieValue, serializeCookie } from '../common/cookies.js';
import { ASSERTION_HEADER, type AssertionSigner } from './assertion.js';
import type { GatewayOutcome, GatewayServerMetrics } from './metrics.js';
import { DEFAULT_FLOW_LIMITS, FlowsLimited, SignInFlows, type FlowLimits } from './flows.js';
import { RouteTable, type GatewayRoute, hostOf } from './route-table.js';
import { FLOW_COOKIE, GATEWAY_COOKIE, GatewaySessions, sameSecret, type GatewaySession, type GatewaySessionSettings } from './sessions.js';

/** What the gateway asks the control plane (over its SVID's mTLS: node.ts). */
export interface GatewayControlPlane {
  /** The control plane's public URL (where the browser signs in). */
  publicUrl: string;
  token(req: GatewayTokenRequest): Promise<GatewayTokenResponse>;
  session(ref: string): Promise<GatewaySessionResponse>;
  logoutAll(ref: string): Promise<GatewayLogoutAllResponse>;
  posture(deviceId: string): Promise<DevicePostureResponse>;
}

/** The decisions (the agent's policy enforcer with the signed bundle: node.ts). */
export interface GatewayPolicy {
  decidePerson(req: { user: string; groups: readonly string[]; app: string; appId: string; method: string; path: string; device: DevicePostureContext }): Decision & { stepUpSeconds?: number };
  riskOf(id: string): { state: 'normal' | 'step-up' | 'quarantined'; score: number };
  isRevoked(id: string, serial?: string): boolean;
}

/** Per request counters of a person → app edge (the sidecar's telemetry EdgeStats, structurally). */
export interface EdgeCounters {
  requests: number;
  errors: number;
  denials: number;
  bytesIn: number;
  bytesOut: number;
  latency(ms: number): void;
  path(p: string): void;
}
export type PeopleTelemetry = (route: string, user: string) => EdgeCounters;

export interface GatewayServerOptions {
  listen: { host: string; port: number };
  /** The server certificate and key (PEM) browsers see. */
  cert: string;
  key: string;
  /** The trust bundle (device certificates are verified against it) and our identity. */
  tls: TlsSource;
  trustDomain: string;
  /** The gateway's registered name (`tessera gateway add NAME`). */
  name: string;
  routes: GatewayRoute[];
  controlPlane: GatewayControlPlane;
  policy: GatewayPolicy;
  signer: AssertionSigner;
  log: Logger;
  sessions?: Partial<GatewaySessionSettings>;
  /** Ask browsers for a device certificate (default true). */
  requestDeviceCert?: boolean;
  /** Seconds a device's posture is cached (default 5). */
  postureCacheSeconds?: number;
  /** MFA age (seconds) required while the person's risk state is `step-up` (default 300). */
  stepUpMaxAgeSeconds?: number;
  /** Milliseconds the app has to answer (default 30 s). */
  upstreamTimeoutMs?: number;
  telemetry?: PeopleTelemetry;
  /** Prometheus hooks (`--metrics-listen`: metrics.ts). */
  metrics?: GatewayServerMetrics;
  /** Pending sign-ins: their lifetime, and how many in all and per client address (default DEFAULT_FLOW_LIMITS). */
  flows?: Partial<FlowLimits>;
  now?: () => number;
}

export interface GatewayServer {
  port: number;
  sessions: GatewaySessions;
  close(): Promise<void>;
}

/**
 * Headers a caller may try to pass as an identity: removed from every forwarded request, so the app
 * can trust the one the gateway sets (and nothing else that looks like it).
 */
const IDENTITY_HEADERS = [
  ASSERTION_HEADER, 'x-forwarded-user', 'x-forwarded-email', 'x-forwarded-groups', 'x-forwarded-preferred-username', 'x-forwarded-access-token',
  'x-auth-request-user', 'x-auth-request-email', 'x-auth-request-groups', 'x-auth-request-preferred-username', 'x-auth-request-access-token',
  'remote-user', 'x-remote-user', 'x-user', 'x-email', 'x-tessera-user', 'x-tessera-device', 'x-spiffe-id', 'x-forwarded-client-cert', 'authorization-user',
];
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);
const SAFE = new Set(['GET', 'HEAD']);
const CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

interface Device { id: string; serial: string }

const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res: ServerResponse, status: number, title: string, body: string): void {
  const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title></head><body><main><h1>${esc(title)}</h1>${body}</main></body></html>`;
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8', 'content-security-policy': CSP, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer',
    'content-length': Buffer.byteLength(html),
  });
  res.end(html);
}

function refuse(res: ServerResponse, err: TesseraError, asJson: boolean): void {
  if (asJson) {
    const body = JSON.stringify({ error: err.toJSON() });
    res.writeHead(err.status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  page(res, err.status, err.status === 404 ? 'Not found' : err.status === 403 ? 'Access denied' : 'Request refused', `<p>${esc(err.message)}</p><p><code>${err.code}</code></p>`);
}

function redirect(res: ServerResponse, location: string, cookies: string[] = []): void {
  res.writeHead(303, { location, 'cache-control': 'no-store', 'referrer-policy': 'no-referrer', ...(cookies.length > 0 ? { 'set-cookie': cookies } : {}), 'content-length': 0 });
  res.end();
}

/** Cookies sent to the app: everything but Tessera's own (the gateway's and, on a shared host name, the control plane's). */
function appCookies(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const kept = header.split(';').map((p) => p.trim()).filter((p) => p !== '' && !/^__Host-tessera_/i.test(p));
  return kept.length > 0 ? kept.join('; ') : undefined;
}

/** Whether the browser asked for a page (a navigation) rather than data. */
function wantsHtml(req: IncomingMessage): boolean {
  return SAFE.has(req.method ?? '') && (req.headers['sec-fetch-mode'] === 'navigate' || (req.headers.accept ?? '').includes('text/html'));
}

function readSmallBody(req: IncomingMessage, limit = 4096): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > limit) {
        reject(new TesseraError('TESSERA_PAYLOAD_TOO_LARGE'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export async function startGatewayServer(opts: GatewayServerOptions): Promise<GatewayServer> {
  const log = opts.log.child({ component: 'gateway' });
  const now = opts.now ?? Date.now;
  const table = new RouteTable(opts.routes);
  const sessions = new GatewaySessions({
    settings: { idleMs: 15 * 60_000, absoluteMs: 8 * 3600_000, checkMs: 5000, graceMs: 30_000, ...opts.sessions },
    check: (ref) => opts.controlPlane.session(ref), now,
    ...(opts.metrics ? { onCheck: (r: 'ok' | 'ended' | 'unavailable') => opts.metrics!.sessionCheck(r) } : {}),
  });
  const flows = new SignInFlows({ ...DEFAULT_FLOW_LIMITS, ...opts.flows }, now);
  const postures = new Map<string, { at: number; p: Promise<DevicePostureContext> }>();
  const postureMs = (opts.postureCacheSeconds ?? 5) * 1000;
  const stepUpMaxAge = opts.stepUpMaxAgeSeconds ?? 300;
  const upstream = new HttpAgent({ keepAlive: true, maxSockets: 256 });
  const cpOrigin = new URL(opts.controlPlane.publicUrl).origin;
  const NO_DEVICE: DevicePostureContext = Object.freeze({ enrolled: false, posture_state: 'missing' }) as DevicePostureContext;

  const tlsOptions = () => {
    const m = opts.tls.current();
    return {
      cert: opts.cert, key: opts.key, minVersion: MIN_TLS_VERSION,
      // A device certificate is asked for, never required: the chain is judged per request (device()).
      requestCert: opts.requestDeviceCert !== false, rejectUnauthorized: false, ...(m ? { ca: m.bundlePem } : {}),
    } as const;
  };
  const server: Server = createServer({ ...tlsOptions(), requestTimeout: 60_000, headersTimeout: 20_000, maxHeaderSize: 16 * 1024 });
  const unwatch = watchTlsSource(opts.tls, () => server.setSecureContext(tlsOptions()), (err) => log.error('TLS context rebuild failed; keeping the previous one', { error: String(err) }));

  /** The presented device, undefined when none; a presented certificate that is not a live device refuses the request. */
  function device(req: IncomingMessage): Device | undefined {
    const sock = req.socket as TLSSocket;
    const cert = typeof sock.getPeerX509Certificate === 'function' ? sock.getPeerX509Certificate() : undefined;
    if (cert === undefined) return undefined;
    const v = verifyPeerSvid(cert.raw, sock.authorized, { trustDomain: opts.trustDomain }, now());
    if (!v.ok) throw new TesseraError('TESSERA_AUTH_INVALID', `the client certificate is not a device certificate of this trust domain (${v.reason})`);
    if (!v.spiffeId.startsWith(`spiffe://${opts.trustDomain}/device/`)) throw new TesseraError('TESSERA_AUTH_INVALID', 'the client certificate is not a device certificate (spiffe://<td>/device/<id>)');
    if (opts.policy.isRevoked(v.spiffeId, v.serial)) throw new TesseraError('TESSERA_IDENTITY_REVOKED', 'this device is revoked');
    return { id: v.spiffeId, serial: v.serial };
  }

  function posture(d: Device | undefined): Promise<DevicePostureContext> {
    if (d === undefined) return Promise.resolve(NO_DEVICE);
    const t = now();
    const hit = postures.get(d.id);
    // A cached answer's age grows with the time it has been held: a policy's age threshold is
    // judged on the report's real age, not on the age when it was fetched.
    if (hit && t - hit.at < postureMs) return hit.p.then((c) => (c.posture_age_seconds === undefined ? c : { ...c, posture_age_seconds: c.posture_age_seconds + Math.floor((t - hit.at) / 1000) }));
    const p = opts.controlPlane.posture(d.id).then((r) => r.device);
    // A failed read is not cached: the next request asks again (and is refused meanwhile: fail closed).
    p.catch(() => postures.delete(d.id));
    if (postures.size > 10_000) postures.clear();
    postures.set(d.id, { at: t, p });
    return p;
  }

  /** Starts the code flow: a new state and PKCE verifier, kept here under a flow cookie. */
  function signIn(req: IncomingMessage, res: ServerResponse, host: string, stepUp?: number): void {
    if (!wantsHtml(req)) {
      refuse(res, new TesseraError(stepUp === undefined ? 'TESSERA_SESSION_REQUIRED' : 'TESSERA_MFA_REQUIRED', `sign in at https://${host}/_tessera/ first`), true);
      return;
    }
    const flowId = randomBytes(32).toString('base64url');
    const verifier = randomBytes(32).toString('base64url');
    const state = randomBytes(24).toString('base64url');
    const redirectUri = `https://${req.headers.host}${GATEWAY_CALLBACK_PATH}`;
    // The path to come back to is this request's own target on this host: never taken from a parameter.
    try {
      flows.add(req.socket.remoteAddress, createHash('sha256').update(flowId).digest('hex'), { state, verifier, returnTo: req.url ?? '/', redirectUri });
    } catch (err) {
      if (err instanceof FlowsLimited) res.setHeader('retry-after', String(err.retryAfterSeconds));
      throw err;
    }
    const q = new URLSearchParams({
      gateway: opts.name, redirect_uri: redirectUri, state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256',
      ...(stepUp !== undefined ? { step_up: '1', max_mfa_age: String(stepUp) } : {}),
    });
    redirect(res, `${cpOrigin}/v1/gateway/authorize?${q.toString()}`, [serializeCookie(FLOW_COOKIE, flowId, { httpOnly: true, sameSite: 'Lax', maxAge: Math.floor(flows.limits.ttlMs / 1000) })]);
  }

  async function callback(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const flowId = cookieValue(req.headers.cookie, FLOW_COOKIE);
    const key = flowId === undefined ? undefined : createHash('sha256').update(flowId).digest('hex');
    const flow = key === undefined ? undefined : flows.take(key);
    const clear = serializeCookie(FLOW_COOKIE, '', { httpOnly: true, sameSite: 'Lax', maxAge: 0 });
    const state = url.searchParams.getAll('state');
    const code = url.searchParams.getAll('code');
    if (!flow || state.length !== 1 || !sameSecret(state[0]!, flow.state) || code.length !== 1 || flow.redirectUri !== `https://${req.headers.host}${GATEWAY_CALLBACK_PATH}`) {
      res.setHeader('set-cookie', [clear]);
      throw new TesseraError('TESSERA_GATEWAY_STATE_INVALID');
    }
    const t = await opts.controlPlane.token({ code: code[0]!, code_verifier: flow.verifier, redirect_uri: flow.redirectUri });
    // A new id for every sign-in: whatever id the browser held before is never promoted (no fixation).
    sessions.end(cookieValue(req.headers.cookie, GATEWAY_COOKIE));
    const { id, session } = sessions.create(t);
    log.info('signed in', { user: session.spiffeId, mfa: session.mfaAt !== undefined });
    redirect(res, flow.returnTo, [clear, serializeCookie(GATEWAY_COOKIE, id, { httpOnly: true, sameSite: 'Lax', maxAge: Math.floor((session.expiresAt - now()) / 1000) })]);
  }

  /** The gateway's own state-changing requests: same Origin, and the session's CSRF token. */
  async function checkCsrf(req: IncomingMessage, s: GatewaySession): Promise<void> {
    const origin = req.headers.origin;
    const site = req.headers['sec-fetch-site'];
    if (origin !== `https://${req.headers.host}` || (site !== undefined && site !== 'same-origin')) throw new TesseraError('TESSERA_CSRF_INVALID', 'the request\'s Origin is missing or not this gateway\'s');
    let token = req.headers['x-tessera-csrf'];
    if (token === undefined && (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) token = new URLSearchParams(await readSmallBody(req)).get('csrf') ?? undefined;
    if (typeof token !== 'string' || !sameSecret(token, s.csrf)) throw new TesseraError('TESSERA_CSRF_INVALID', 'the CSRF token is missing or is not this session\'s');
  }

  async function own(req: IncomingMessage, res: ServerResponse, url: URL, host: string): Promise<void> {
    const path = url.pathname;
    if (path === '/.well-known/jwks.json' && SAFE.has(req.method!)) {
      const body = opts.signer.jwks();
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      return;
    }
    if (path === GATEWAY_CALLBACK_PATH && req.method === 'GET') return callback(req, res, url);
    const id = cookieValue(req.headers.cookie, GATEWAY_COOKIE);
    const s = sessions.get(id);
    if ((path === '/_tessera/' || path === '/_tessera') && SAFE.has(req.method!)) {
      if (!s) return signIn(req, res, host);
      const form = (action: string, label: string): string => `<form method="post" action="${action}"><input type="hidden" name="csrf" value="${esc(s.csrf)}"><button type="submit">${label}</button></form>`;
      page(res, 200, 'Signed in', `<p>Signed in as <strong>${esc(s.username)}</strong> (${esc(s.spiffeId)}), groups: ${esc(s.groups.join(', ') || 'none')}.</p>${form('/_tessera/logout', 'Sign out of this gateway')}${form('/_tessera/logout-all', 'Sign out everywhere')}`);
      return;
    }
    if ((path === '/_tessera/logout' || path === '/_tessera/logout-all') && req.method === 'POST') {
      if (!s) throw new TesseraError('TESSERA_SESSION_REQUIRED');
      await checkCsrf(req, s);
      let ended = 1;
      if (path === '/_tessera/logout-all') {
        // Ends the person's control-plane sessions (hence every gateway's, at their next check) and ours now.
        await opts.controlPlane.logoutAll(s.ref).catch((err: unknown) => {
          if (!(isTesseraError(err) && err.code === 'TESSERA_SESSION_REQUIRED')) throw err;
        });
        ended = sessions.endUser(s.username);
      } else {
        sessions.end(id);
      }
      log.info(path === '/_tessera/logout' ? 'signed out' : 'signed out everywhere', { user: s.spiffeId, gateway_sessions_ended: ended });
      const clear = serializeCookie(GATEWAY_COOKIE, '', { httpOnly: true, sameSite: 'Lax', maxAge: 0 });
      if (wantsHtml(req) || (req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
        res.setHeader('set-cookie', [clear]);
        page(res, 200, 'Signed out', '<p>You are signed out.</p>');
      } else {
        const body = JSON.stringify({ ended });
        res.writeHead(200, { 'content-type': 'application/json', 'set-cookie': [clear], 'content-length': Buffer.byteLength(body) });
        res.end(body);
      }
      return;
    }
    throw new TesseraError('TESSERA_NOT_FOUND');
  }

  /** What the metrics learn of a request: its route once matched, and what became of it. */
  interface Track { route?: string; outcome?: GatewayOutcome }

  async function handle(req: IncomingMessage, res: ServerResponse, m: Track): Promise<void> {
    const started = performance.now();
    const host = req.headers.host === undefined ? undefined : hostOf(req.headers.host);
    const target = req.url ?? '';
    if (host === undefined || !target.startsWith('/')) throw new TesseraError('TESSERA_BAD_REQUEST', 'a request needs a Host header and an origin-form target');
    // The path the policy sees must be the path the app routes on: the sidecar's strict target rules.
    parseRequest(Buffer.from(`GET ${target} HTTP/1.1\r\nhost: x\r\n\r\n`, 'latin1'));
    const url = new URL(target, `https://${host}`);
    if (url.pathname === '/.well-known/jwks.json' || url.pathname === '/_tessera' || url.pathname.startsWith('/_tessera/')) return own(req, res, url, host);
    const route = table.match(req.headers.host, url.pathname);
    if (route === undefined) throw new TesseraError('TESSERA_ROUTE_NOT_FOUND');
    m.route = route.name;
    m.outcome = 'unauthenticated';
    const s = sessions.get(cookieValue(req.headers.cookie, GATEWAY_COOKIE));
    if (!s) return signIn(req, res, host);
    const liveness = await sessions.live(s);
    if (liveness === 'ended') return signIn(req, res, host);
    m.outcome = 'error';
    if (liveness === 'unavailable') throw new TesseraError('TESSERA_UNAVAILABLE', 'the control plane cannot confirm the session');
    const dev = device(req);
    const appId = gatewayAppId(opts.trustDomain, opts.name, route.name);
    const edge = opts.telemetry?.(route.name, s.spiffeId);
    if (edge) {
      edge.requests++;
      edge.path(url.pathname);
    }
    const decision = opts.policy.decidePerson({ user: s.spiffeId, groups: s.groups, app: route.name, appId, method: req.method ?? '', path: url.pathname, device: await posture(dev) });
    opts.metrics?.decision(decision.cached);
    if (!decision.allow) {
      m.outcome = 'denied';
      if (edge) edge.denials++;
      throw new TesseraError(decision.reasons.includes('quarantined') ? 'TESSERA_IDENTITY_QUARANTINED' : 'TESSERA_PROXY_DENIED', 'the policy does not allow this request');
    }
    // Step-up: the determining permits' @stepup, or the person's risk state, ask for a recent MFA.
    const risk = opts.policy.riskOf(s.spiffeId);
    const maxAge = Math.min(decision.stepUpSeconds ?? Infinity, risk.state === 'step-up' ? stepUpMaxAge : Infinity);
    if (maxAge !== Infinity && (s.mfaAt === undefined || now() - s.mfaAt > maxAge * 1000)) {
      m.outcome = 'step_up';
      return signIn(req, res, host, maxAge);
    }
    m.outcome = 'allowed';
    forward(req, res, route, s, appId, dev, edge, started, m);
  }

  function forward(req: IncomingMessage, res: ServerResponse, route: GatewayRoute, s: GatewaySession, appId: string, dev: Device | undefined, edge: EdgeCounters | undefined, started: number, m: Track): void {
    const headers: OutgoingHttpHeaders = {};
    const h: IncomingHttpHeaders = req.headers;
    const connection = String(h.connection ?? '').toLowerCase().split(',').map((x) => x.trim());
    for (const [name, value] of Object.entries(h)) {
      if (value === undefined || HOP_BY_HOP.has(name) || connection.includes(name) || IDENTITY_HEADERS.includes(name) || name === 'cookie' || name.startsWith('x-forwarded-')) continue;
      headers[name] = value;
    }
    const cookies = appCookies(h.cookie);
    if (cookies !== undefined) headers.cookie = cookies;
    headers['x-forwarded-proto'] = 'https';
    headers['x-forwarded-host'] = h.host;
    headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
    headers[ASSERTION_HEADER] = opts.signer.sign({ aud: appId, sub: s.spiffeId, username: s.username, groups: s.groups, ...(dev ? { device: dev.id } : {}) });
    let bytesIn = 0;
    let bytesOut = 0;
    const up = httpRequest({ host: route.upstream.host, port: route.upstream.port, method: req.method, path: req.url, headers, agent: upstream, timeout: opts.upstreamTimeoutMs ?? 30_000 }, (ures) => {
      const out: OutgoingHttpHeaders = {};
      for (const [name, value] of Object.entries(ures.headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
      res.writeHead(ures.statusCode ?? 502, out);
      ures.on('data', (c: Buffer) => { bytesOut += c.length; });
      ures.pipe(res);
      ures.on('end', () => {
        // The edge of the window the request ends in (a window may have closed meanwhile).
        const e = edge ? opts.telemetry!(route.name, s.spiffeId) : undefined;
        if (e) {
          if ((ures.statusCode ?? 502) >= 500) e.errors++;
          e.bytesIn += bytesIn;
          e.bytesOut += bytesOut;
          e.latency(performance.now() - started);
        }
      });
    });
    up.on('timeout', () => up.destroy(new TesseraError('TESSERA_PROXY_UPSTREAM_TIMEOUT')));
    up.on('error', (err) => {
      if (edge) edge.errors++;
      m.outcome = 'error';
      if (res.headersSent) {
        res.destroy();
        return;
      }
      refuse(res, isTesseraError(err) ? err : new TesseraError('TESSERA_PROXY_UPSTREAM', 'the app cannot be reached'), !wantsHtml(req));
    });
    req.on('data', (c: Buffer) => { bytesIn += c.length; });
    req.pipe(up);
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const m: Track = {};
    if (opts.metrics) {
      const started = performance.now();
      // Counted once the answer is sent (or the connection is gone): an allowed request whose app
      // fails is an error; a request that never matched a route is not counted.
      res.once('close', () => {
        if (m.route === undefined) return;
        opts.metrics!.request(m.route, m.outcome ?? 'error', (performance.now() - started) / 1000);
      });
    }
    handle(req, res, m).catch((err: unknown) => {
      const e = isTesseraError(err) ? err : new TesseraError('TESSERA_INTERNAL');
      if (!isTesseraError(err)) log.error('internal error', { error: (err as Error)?.message });
      if (res.headersSent) {
        res.destroy();
        return;
      }
      refuse(res, e, !wantsHtml(req));
    });
  });
  server.on('tlsClientError', () => { /* a browser closing a handshake (e.g. declined certificate prompt) */ });

  const port = await listenOn(server, opts.listen, 'the gateway', () => {});
  const sweep = setInterval(() => {
    sessions.sweep();
    flows.expire();
  }, 60_000);
  sweep.unref();
  return {
    port, sessions,
    async close() {
      clearInterval(sweep);
      unwatch();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      upstream.destroy();
    },
  };
}
