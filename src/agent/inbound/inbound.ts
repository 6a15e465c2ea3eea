/**
 * The agent's inbound proxy: terminates mTLS from other workloads' agents in front of the local
 * application. The caller must present an X509-SVID that chains to the bundle (OpenSSL checks
 * the chain and validity during the handshake) and passes the one X509-SVID leaf check
 * (src/core/x509-svid.ts) for our trust domain; then every connection (`tcp` mode) or every
 * request (`http` mode) is put to the injected authorizer before a byte reaches the app.
 *
 * The server's certificate, key and trusted CAs are rebuilt from the TlsSource when the SVID or
 * bundle rotates (`server.setSecureContext`): established connections keep going on the
 * context they were made with, new ones use the new one.
 *
 * A connection does not outlive what admitted it: it is closed at the caller's certificate
 * expiry (both modes, even mid-exchange), and `rejudge()` (called by the sidecar when the policy
 * or revocation list changes) closes tcp-mode connections the authorizer now refuses and those of
 * callers whose identity is revoked or unknown (see rejudge.ts).
 */
import { connect as netConnect, type Socket } from 'node:net';
import { createServer, type SecureContextOptions, type Server, type TLSSocket } from 'node:tls';
import { TesseraError, type ErrorCode } from '../../core/errors.js';
import { DEFAULT_HEAD_LIMITS, STRICT_PATH, type PathAllowances } from '../../core/http-head.js';
import { PerSecondSampler } from '../../core/sampler.js';
import { HttpConnection, callAuthorize, newStats, type Authorize, type DecisionRecord, type HttpContext, type InboundStats } from './http.js';
import { peerRefusal, rejudge, standingCode, type Judged, type PeerStatus, type RejudgeResult } from './rejudge.js';
import { verifyPeerSvid } from '../../core/x509-svid.js';
import { judgeFederatedPeer } from '../../core/federation-trust.js';
import { MIN_TLS_VERSION, keyPem, listenOn, requireMaterial, trustDomainOf, watchTlsSource, type TlsSource } from '../../common/tls-source.js';
import { UpstreamPool } from './upstream-pool.js';
import type { TelemetryLane } from '../telemetry/collector.js';
import { ConnectionMeter } from '../telemetry/meter.js';

export type { Authorize, AuthorizeRequest, AuthorizeResult, DecisionRecord, InboundStats } from './http.js';
export type { TlsMaterial, TlsSource } from '../../common/tls-source.js';
export type { PathAllowances } from '../../core/http-head.js';
export type { PeerStatus, RejudgeResult } from './rejudge.js';

export interface InboundLimits {
  /** Largest request head (default 16 KiB) → 431. */
  maxHeadBytes: number;
  /** Most header fields in a request (default 100) → 431. */
  maxHeaders: number;
  /** Time from a head's first byte to its last (default 10 s) → 408. */
  headTimeoutMs: number;
  /** A kept-alive caller connection with no request for this long is closed (default 60 s). */
  idleTimeoutMs: number;
  /**
   * http mode: time from the request's last byte reaching the app to the app's response head
   * (default 60 s) → 504 TESSERA_PROXY_UPSTREAM_TIMEOUT, and the app connection is dropped.
   */
  responseTimeoutMs: number;
  /** How long a closing connection still reads (and drops) what the caller sends (default 2 s). */
  lingerMs: number;
  /** TLS handshake deadline (default 10 s). */
  handshakeTimeoutMs: number;
  /** Caller connections accepted at once (default 10,000); more are refused by the kernel's backlog. */
  maxConnections: number;
  /** Idle kept-alive connections to the app kept in http mode (default 64). */
  upstreamMaxIdle: number;
  /** An idle app connection is closed after this long (default 4 s, below Node's 5 s keepAliveTimeout). */
  upstreamIdleTimeoutMs: number;
  /**
   * http mode: denied pipelined requests answered on one connection before the proxy stops reading
   * from it (default 32); it reads on once the answers have gone out ('drain'), or at the next turn
   * of the event loop if they already have. A caller that never reads its answers is never read
   * either, and the idle timeout closes it.
   */
  maxPendingDenials: number;
  /**
   * Refusals before any decision (failed handshakes, refused identities) passed to `onRefused` per
   * second and per code (default 10); the rest are only counted (`stats.refusalsNotRecorded`).
   */
  refusalRecordsPerSecond: number;
}

export const DEFAULT_INBOUND_LIMITS: Readonly<InboundLimits> = Object.freeze({
  maxHeadBytes: DEFAULT_HEAD_LIMITS.maxHeadBytes,
  maxHeaders: DEFAULT_HEAD_LIMITS.maxHeaders,
  headTimeoutMs: 10_000,
  idleTimeoutMs: 60_000,
  responseTimeoutMs: 60_000,
  lingerMs: 2_000,
  handshakeTimeoutMs: 10_000,
  maxConnections: 10_000,
  upstreamMaxIdle: 64,
  upstreamIdleTimeoutMs: 4_000,
  maxPendingDenials: 32,
  refusalRecordsPerSecond: 10,
});

/** A caller refused before any authorization: TLS handshake failure or unacceptable identity. */
export interface RefusalRecord {
  code: ErrorCode;
  reason: string;
  /** `address:port` of the caller, when known. */
  remote: string | undefined;
  time: number;
}

export interface InboundOptions {
  listen: { host: '127.0.0.1' | (string & {}); port: number };
  /** The local application (plain TCP). */
  app: { host: string; port: number };
  mode: 'tcp' | 'http';
  tls: TlsSource;
  authorize: Authorize;
  /** Every decision (allow and deny); sample allows there if needed. Must not throw (it is ignored if it does). */
  onDecision?: (record: DecisionRecord) => void;
  /**
   * Callers refused before authorization (handshake failures, identity), sampled: at most
   * `limits.refusalRecordsPerSecond` per code and second (anyone who can reach the port can cause them).
   */
  onRefused?: (record: RefusalRecord) => void;
  /**
   * The standing of a caller's identity and certificate serial (revocation list): a caller not
   * `ok` is refused at the handshake, and its open connections are closed by `rejudge()`.
   */
  peerStatus?: PeerStatus;
  /**
   * Header carrying the caller's verified SPIFFE ID to the app in http mode (default `x-spiffe-id`).
   * Every header and trailer the caller sends under this name, in any case and with `_` for `-`, is removed.
   */
  idHeader?: string;
  /**
   * http mode: request path shapes accepted although an app may read them differently from the
   * policy (default: none; see parseRequestHead in src/core/http-head.ts). Control bytes and
   * invalid UTF-8 are never accepted.
   */
  allowPath?: Partial<PathAllowances>;
  /** The trust domain callers must belong to (default: our own SVID's). */
  trustDomain?: string;
  limits?: Partial<InboundLimits>;
  /** Prometheus hooks (src/agent/metrics.ts); absent: nothing is timed. */
  metrics?: InboundMetrics;
  /**
   * Telemetry of this end (reporter 'callee', the lane's action class matching `mode`;
   * src/agent/telemetry): requests or connections, denials, errors, bytes, latency per caller.
   */
  telemetry?: TelemetryLane;
}

/** What the proxy reports for metrics: cheap calls, made per request (http) or per connection (tcp). */
export interface InboundMetrics {
  /** http mode: seconds from a request head's arrival to the end of the app's response (requests forwarded to the app). */
  observeRequest(seconds: number): void;
  /** tcp mode: seconds an accepted caller connection was open. */
  observeConnection(seconds: number): void;
  /** A connection or request refused with `code` (not a policy denial: those are decisions). */
  refused(code: ErrorCode): void;
}

export interface Inbound {
  /** The port listened on (useful with `listen.port: 0`). */
  readonly port: number;
  /** A snapshot of the counters. */
  readonly stats: InboundStats;
  /** Bytes received from and sent to callers on the wire (TLS records included), closed and open connections; computed when asked. */
  bytes(): { received: number; sent: number };
  /**
   * Re-judges every open connection (policy or revocation list changed): tcp-mode connections
   * the authorizer now refuses, and connections of callers `peerStatus` refuses, are closed
   * (http mode: after the exchange in progress), counted in `stats.rejudged` and reported
   * through `onDecision`, one denial per refused caller.
   */
  rejudge(): RejudgeResult;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

const PATH_OPTION_NAMES: Record<string, keyof PathAllowances> = { semicolon: 'semicolon', 'empty-segments': 'emptySegments' };

/**
 * The `--inbound-allow` list (`semicolon,empty-segments`) as InboundOptions.allowPath;
 * TESSERA_CONFIG_INVALID for any other name.
 */
export function parsePathAllowances(list: string): PathAllowances {
  const out: PathAllowances = { ...STRICT_PATH };
  for (const raw of list.split(',')) {
    const name = raw.trim();
    if (!Object.hasOwn(PATH_OPTION_NAMES, name)) throw new TesseraError('TESSERA_CONFIG_INVALID', `--inbound-allow takes a comma-separated list of: ${Object.keys(PATH_OPTION_NAMES).join(', ')}`);
    out[PATH_OPTION_NAMES[name]!] = true;
  }
  return out;
}

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const SWEEP_MS = 500;

interface Tracked extends Judged {
  tick(now: number): void;
  destroy(): void;
}

/**
 * Starts the inbound proxy. Resolves once listening; TESSERA_CREDENTIAL_MISSING if the source
 * has no SVID yet, TESSERA_CONFIG_INVALID for bad options.
 *
 * @example
 * const inbound = await startInbound({
 *   listen: { host: '127.0.0.1', port: 8443 }, app: { host: '127.0.0.1', port: 8080 }, mode: 'http',
 *   tls: agent, authorize: (r) => engine.decide(r),
 * });
 */
export async function startInbound(opts: InboundOptions): Promise<Inbound> {
  const limits: InboundLimits = { ...DEFAULT_INBOUND_LIMITS, ...opts.limits };
  for (const [k, v] of Object.entries(limits)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `inbound limit ${k} must be a positive number`);
  }
  if (opts.mode !== 'tcp' && opts.mode !== 'http') throw new TesseraError('TESSERA_CONFIG_INVALID', 'inbound mode must be tcp or http');
  if (typeof opts.authorize !== 'function') throw new TesseraError('TESSERA_CONFIG_INVALID', 'inbound needs an authorize function');
  const idHeader = (opts.idHeader ?? 'x-spiffe-id').toLowerCase();
  if (!TOKEN_RE.test(idHeader)) throw new TesseraError('TESSERA_CONFIG_INVALID', 'idHeader must be a header field name');

  const allowPath: PathAllowances = { ...STRICT_PATH };
  for (const [k, v] of Object.entries(opts.allowPath ?? {})) {
    if (!(k in STRICT_PATH) || (v !== undefined && typeof v !== 'boolean')) throw new TesseraError('TESSERA_CONFIG_INVALID', `inbound allowPath.${k} is not a path option (semicolon, emptySegments: true or false)`);
    if (v === true) allowPath[k as keyof PathAllowances] = true;
  }
  if (opts.mode === 'tcp' && (allowPath.semicolon || allowPath.emptySegments)) throw new TesseraError('TESSERA_CONFIG_INVALID', 'path options apply to the http mode only');

  const material = requireMaterial(opts.tls);
  let trustDomain = opts.trustDomain ?? trustDomainOf(material.spiffeId);
  // Federated bundles (issue 14): OpenSSL's store holds every domain's authorities; each peer is then
  // held to its own trust domain's bundle (judgeFederatedPeer). Undefined without federation.
  let trust = material.trust;
  const contextOptions = (): SecureContextOptions => {
    const m = requireMaterial(opts.tls);
    trust = m.trust;
    return { cert: m.certPem, key: keyPem(m.key), ca: m.trust?.caPem ?? m.bundlePem, minVersion: MIN_TLS_VERSION };
  };

  const stats = newStats();
  const clock = { now: Date.now() };
  const tracked = new Set<Tracked>();
  const pool = new UpstreamPool({ host: opts.app.host, port: opts.app.port, maxIdle: limits.upstreamMaxIdle, idleTimeoutMs: limits.upstreamIdleTimeoutMs });
  const httpCtx: HttpContext = {
    pool, idHeader, limits, authorize: opts.authorize, onDecision: opts.onDecision, stats, clock,
    allowPath, metrics: opts.metrics, telemetry: opts.telemetry,
  };
  const tel = opts.telemetry;
  const meter = tel !== undefined ? new ConnectionMeter(tel, opts.mode === 'tcp') : undefined;
  const metrics = opts.metrics;

  const sampler = new PerSecondSampler(limits.refusalRecordsPerSecond);
  const refused = (code: ErrorCode, reason: string, remote: string | undefined): void => {
    metrics?.refused(code);
    if (opts.onRefused === undefined) return;
    if (!sampler.take(code, Date.now())) {
      stats.refusalsNotRecorded++;
      return;
    }
    try {
      opts.onRefused({ code, reason, remote, time: Date.now() });
    } catch {
      /* ignored */
    }
  };

  const server: Server = createServer({
    ...contextOptions(),
    requestCert: true,
    rejectUnauthorized: true,
    handshakeTimeout: limits.handshakeTimeoutMs,
  });
  server.maxConnections = limits.maxConnections;
  // Every TCP connection, handshaking or not, so that close() ends them all.
  const sockets = new Set<Socket>();
  // Bytes of closed connections; open ones are added when bytes() is asked (no per-chunk counting).
  const closedBytes = { received: 0, sent: 0 };
  server.on('connection', (raw: Socket) => {
    sockets.add(raw);
    raw.once('close', () => {
      sockets.delete(raw);
      closedBytes.received += raw.bytesRead;
      closedBytes.sent += raw.bytesWritten;
    });
  });

  server.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) => {
    stats.handshakeFailures++;
    refused('TESSERA_AUTH_INVALID', String(err.code ?? err.message), remoteOf(socket));
    socket.destroy();
  });

  server.on('secureConnection', (socket: TLSSocket) => {
    try {
      socket.setNoDelay(true);
      // Half-open only once authenticated: http mode finishes a response after the caller's FIN,
      // tcp mode passes half-closes on. (A server made allowHalfOpen would also keep sockets
      // whose handshake the peer abandoned with a FIN, until the handshake timeout.)
      socket.allowHalfOpen = true;
      // A resumed TLS session (the caller's agent offers the ticket we issued it) carries the caller's
      // certificate and its verification result: Node reads both from the session, so a resumed
      // caller gets every check below (SVID leaf rules, expiry against now, revocation, quarantine)
      // as on a full handshake, and a session without a certificate is refused like a missing one.
      // Tickets are sealed with keys of the secure context: a rotation (new SVID or bundle) makes
      // every earlier ticket unusable, so a chain verified against an old bundle never resumes.
      const peer = socket.getPeerX509Certificate();
      let verdict = verifyPeerSvid(peer?.raw, socket.authorized, { trustDomain }, Date.now());
      if (trust !== undefined) verdict = judgeFederatedPeer(trust, trustDomain, verdict, peer, socket.authorized, Date.now());
      if (!verdict.ok) {
        stats.identityRefused++;
        refused('TESSERA_PROXY_PEER_IDENTITY', verdict.reason, remoteOf(socket));
        socket.destroy();
        return;
      }
      // A revoked or unknown caller. In tcp mode the connection is refused and closed (a byte
      // stream cannot say why); in http mode its first request is decided (so the enforcer records
      // the denial with its reason) and answered 403 TESSERA_IDENTITY_REVOKED whatever the
      // answer, and the connection is closed.
      const serial = verdict.serial;
      const standing = peerRefusal(opts.peerStatus, verdict.spiffeId, serial);
      if (standing !== undefined) stats.identityRefused++;
      if (standing !== undefined && opts.mode === 'tcp') {
        refused(standingCode(standing), standing, remoteOf(socket));
        socket.destroy();
        return;
      }
      stats.connections++;
      if (socket.isSessionReused()) stats.resumed++;
      stats.active++;
      const since = (metrics !== undefined && opts.mode === 'tcp') || tel !== undefined ? performance.now() : 0;
      let entry: Tracked;
      if (opts.mode === 'http') {
        entry = new HttpConnection(socket, verdict.spiffeId, verdict.notAfter, httpCtx, serial, standing);
      } else {
        const allowed = callAuthorize(httpCtx, { peer: verdict.spiffeId, serial, action: 'tcp:connect' });
        if (tel !== undefined) {
          const e = tel.edge(verdict.spiffeId);
          e.requests++;
          if (!allowed) e.denials++;
        }
        if (!allowed) {
          stats.active--;
          socket.destroy();
          return;
        }
        entry = relayTcp(socket, opts.app, stats, verdict.spiffeId, serial, verdict.notAfter);
      }
      tracked.add(entry);
      meter?.track(socket, verdict.spiffeId, since);
      socket.once('close', () => {
        tracked.delete(entry);
        stats.active--;
        if (since !== 0 && metrics !== undefined && opts.mode === 'tcp') metrics.observeConnection((performance.now() - since) / 1000);
      });
    } catch {
      stats.internalErrors++;
      socket.destroy();
    }
  });

  const unwatch = watchTlsSource(opts.tls, () => {
    const m = requireMaterial(opts.tls);
    if (opts.trustDomain === undefined) trustDomain = trustDomainOf(m.spiffeId);
    server.setSecureContext(contextOptions());
  }, () => {
    stats.internalErrors++;
  });

  const sweep = setInterval(() => {
    const now = Date.now();
    clock.now = now;
    pool.sweep(now);
    for (const t of tracked) t.tick(now);
  }, SWEEP_MS);
  sweep.unref();

  let port: number;
  try {
    port = await listenOn(server, opts.listen, 'inbound', () => { stats.internalErrors++; });
  } catch (err) {
    clearInterval(sweep);
    unwatch();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    port,
    get stats(): InboundStats {
      return { ...stats };
    },
    bytes(): { received: number; sent: number } {
      let { received, sent } = closedBytes;
      for (const raw of sockets) {
        received += raw.bytesRead;
        sent += raw.bytesWritten;
      }
      return { received, sent };
    },
    rejudge(): RejudgeResult {
      const r = rejudge(tracked, { authorize: opts.authorize, peerStatus: opts.peerStatus, onDecision: opts.onDecision });
      stats.rejudged += r.closed;
      return r;
    },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        clearInterval(sweep);
        unwatch();
        meter?.close();
        server.close(() => resolve());
        for (const t of tracked) t.destroy();
        tracked.clear();
        for (const raw of sockets) raw.destroy();
        sockets.clear();
        pool.close();
      });
      return closing;
    },
  };
}

function remoteOf(socket: Socket): string | undefined {
  return socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}:${socket.remotePort ?? 0}`;
}

/**
 * tcp mode: bytes both ways between the caller and a new app connection, with backpressure
 * (pipe), half-closes passed on (both sockets allow half-open), and both sides destroyed as
 * soon as either fails, or at the caller's certificate expiry (`notAfter`, by the sweep).
 */
function relayTcp(client: TLSSocket, app: { host: string; port: number }, stats: InboundStats, peer: string, serial: string, notAfter: number): Tracked {
  const upstream = netConnect({ host: app.host, port: app.port, noDelay: true, allowHalfOpen: true });
  let failed = false;
  const fail = (): void => {
    if (failed) return;
    failed = true;
    client.destroy();
    upstream.destroy();
  };
  upstream.on('error', () => {
    stats.upstreamErrors++;
    fail();
  });
  client.on('error', fail);
  // A socket that closes while the other is still open: nothing more can be relayed to it.
  upstream.on('close', (hadError) => {
    if (hadError) fail();
    else if (!client.writableEnded) client.end();
  });
  client.on('close', (hadError) => {
    if (hadError) fail();
    else if (!upstream.writableEnded) upstream.end();
  });
  client.pipe(upstream);
  upstream.pipe(client);
  return {
    peer, serial, action: 'tcp:connect',
    tick: (now) => {
      if (now < notAfter || failed) return;
      stats.expired++;
      fail();
    },
    retire: fail,
    destroy: fail,
  };
}
