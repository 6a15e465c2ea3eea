/**
 * The agent's inbound proxy: terminates mTLS from other workloads' agents in front of the local
 * application. The caller must present an X509-SVID that chains to the bundle (OpenSSL checks
 * the chain and validity during the handshake) and carries exactly one SPIFFE ID of our trust
 * domain; then every connection (`tcp` mode) or every request (`http` mode) is put to the
 * injected authorizer before a byte reaches the app.
 *
 * The server's certificate, key and trusted CAs are rebuilt from the TlsSource when the SVID or
 * bundle rotates (`server.setSecureContext`): established connections keep going on the
 * context they were made with, new ones use the new one.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { createServer, type SecureContextOptions, type Server, type TLSSocket } from 'node:tls';
import { TesseraError, type ErrorCode } from '../../core/errors.js';
import { DEFAULT_HEAD_LIMITS } from '../../core/http-head.js';
import { HttpConnection, callAuthorize, newStats, type Authorize, type DecisionRecord, type HttpContext, type InboundStats } from './http.js';
import { MIN_TLS_VERSION, keyPem, listenOn, peerSpiffeId, requireMaterial, trustDomainOf, watchTlsSource, type TlsSource } from './tls-source.js';
import { UpstreamPool } from './upstream-pool.js';

export type { Authorize, AuthorizeRequest, AuthorizeResult, DecisionRecord, InboundStats } from './http.js';
export type { TlsMaterial, TlsSource } from './tls-source.js';

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
  /** Every caller refused before authorization (handshake failures, identity). */
  onRefused?: (record: RefusalRecord) => void;
  /** Header carrying the caller's verified SPIFFE ID to the app in http mode (default `x-spiffe-id`). */
  idHeader?: string;
  /** The trust domain callers must belong to (default: our own SVID's). */
  trustDomain?: string;
  limits?: Partial<InboundLimits>;
}

export interface Inbound {
  /** The port listened on (useful with `listen.port: 0`). */
  readonly port: number;
  /** A snapshot of the counters. */
  readonly stats: InboundStats;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const SWEEP_MS = 500;

interface Tracked {
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

  const material = requireMaterial(opts.tls);
  let trustDomain = opts.trustDomain ?? trustDomainOf(material.spiffeId);
  const contextOptions = (): SecureContextOptions => {
    const m = requireMaterial(opts.tls);
    return { cert: m.certPem, key: keyPem(m.key), ca: m.bundlePem, minVersion: MIN_TLS_VERSION };
  };

  const stats = newStats();
  const clock = { now: Date.now() };
  const tracked = new Set<Tracked>();
  const pool = new UpstreamPool({ host: opts.app.host, port: opts.app.port, maxIdle: limits.upstreamMaxIdle, idleTimeoutMs: limits.upstreamIdleTimeoutMs });
  const httpCtx: HttpContext = {
    pool, idHeader, limits, authorize: opts.authorize, onDecision: opts.onDecision, stats, clock,
  };

  const refused = (code: ErrorCode, reason: string, remote: string | undefined): void => {
    if (opts.onRefused === undefined) return;
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
  server.on('connection', (raw: Socket) => {
    sockets.add(raw);
    raw.once('close', () => sockets.delete(raw));
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
      const peerCert = socket.getPeerX509Certificate();
      const verdict = peerSpiffeId(peerCert, trustDomain);
      if ('refused' in verdict || verdict.notAfter <= Date.now()) {
        stats.identityRefused++;
        refused('TESSERA_PROXY_PEER_IDENTITY', 'refused' in verdict ? verdict.refused : 'peer certificate expired', remoteOf(socket));
        socket.destroy();
        return;
      }
      stats.connections++;
      stats.active++;
      let entry: Tracked;
      if (opts.mode === 'http') {
        entry = new HttpConnection(socket, verdict.id, verdict.notAfter, httpCtx, peerCert?.serialNumber);
      } else {
        if (!callAuthorize(httpCtx, { peer: verdict.id, serial: peerCert?.serialNumber, action: 'tcp:connect' })) {
          stats.active--;
          socket.destroy();
          return;
        }
        entry = relayTcp(socket, opts.app, stats);
      }
      tracked.add(entry);
      socket.once('close', () => {
        tracked.delete(entry);
        stats.active--;
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
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        clearInterval(sweep);
        unwatch();
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
 * soon as either fails.
 */
function relayTcp(client: TLSSocket, app: { host: string; port: number }, stats: InboundStats): Tracked {
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
  return { tick: noop, destroy: fail };
}

function noop(): void {}
