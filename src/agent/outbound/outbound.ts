/**
 * The agent's outbound proxy: the local app connects in plain TCP (HTTP or anything else) to a
 * port on 127.0.0.1, and the agent carries the bytes over mTLS to the target workload's inbound
 * proxy, presenting our X509-SVID. The server must chain to the bundle AND present exactly the
 * expected SPIFFE ID (X509-SVID §5: authorize the peer's identity, not a DNS name); anything
 * else closes the app's connection before a byte of it is sent.
 *
 * The client SecureContext is built once per SVID or bundle rotation and shared by every
 * connection: building one per connection halves the handshake rate.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { TesseraError, type ErrorCode } from '../../core/errors.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import { certificateUriSans } from '../../core/x509.js';
import { MIN_TLS_VERSION, keyPem, listenOn, requireMaterial, watchTlsSource, type TlsSource } from '../inbound/tls-source.js';

export interface OutboundLimits {
  /** TCP connect plus TLS handshake to the target (default 10 s). */
  connectTimeoutMs: number;
  /** App connections at once (default 10,000). */
  maxConnections: number;
}

export const DEFAULT_OUTBOUND_LIMITS: Readonly<OutboundLimits> = Object.freeze({ connectTimeoutMs: 10_000, maxConnections: 10_000 });

export interface OutboundStats {
  /** App connections carried to the target (identity verified). */
  connections: number;
  /** Connections open now (app side). */
  active: number;
  /** Targets refused for their identity (chain fine, SPIFFE ID not the expected one). */
  identityRefused: number;
  /** TLS handshakes that failed (untrusted chain, expired, protocol errors, refused by the target). */
  handshakeFailures: number;
  /** The target could not be reached, or the connection failed after the handshake. */
  upstreamErrors: number;
}

export interface OutboundRefusal {
  code: ErrorCode;
  reason: string;
  time: number;
}

export interface OutboundOptions {
  listen: { host: '127.0.0.1' | (string & {}); port: number };
  /** The target's inbound proxy and the SPIFFE ID it must present. */
  upstream: { host: string; port: number; expectedId: string };
  tls: TlsSource;
  limits?: Partial<OutboundLimits>;
  /**
   * Whether the target, once its SPIFFE ID is the expected one, is a live workload (not revoked,
   * has an entry): the policy enforcer's `peerStatus`. Absent: not checked.
   */
  peerStatus?: (spiffeId: string, serial: string) => { ok: true } | { ok: false; reason: 'unknown' | 'revoked' };
  /** Every connection refused: the target's identity or handshake. */
  onRefused?: (record: OutboundRefusal) => void;
}

export interface Outbound {
  readonly port: number;
  readonly stats: OutboundStats;
  close(): Promise<void>;
}

const IDENTITY_ERROR = Symbol('tessera.identity');

/**
 * Starts the outbound proxy. TESSERA_CONFIG_INVALID for a bad expectedId or limits,
 * TESSERA_CREDENTIAL_MISSING if the source has no SVID yet.
 *
 * @example
 * const out = await startOutbound({
 *   listen: { host: '127.0.0.1', port: 15001 },
 *   upstream: { host: '10.0.0.7', port: 8443, expectedId: 'spiffe://example.org/payments' },
 *   tls: agent,
 * });
 */
export async function startOutbound(opts: OutboundOptions): Promise<Outbound> {
  const limits: OutboundLimits = { ...DEFAULT_OUTBOUND_LIMITS, ...opts.limits };
  for (const [k, v] of Object.entries(limits)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `outbound limit ${k} must be a positive number`);
  }
  const expectedId = opts.upstream.expectedId;
  if (typeof expectedId !== 'string' || !isSpiffeId(expectedId)) throw new TesseraError('TESSERA_CONFIG_INVALID', 'upstream.expectedId must be a SPIFFE ID');

  const build = (): SecureContext => {
    const m = requireMaterial(opts.tls);
    return createSecureContext({ cert: m.certPem, key: keyPem(m.key), ca: m.bundlePem, minVersion: MIN_TLS_VERSION });
  };
  let context = build();
  const stats: OutboundStats = { connections: 0, active: 0, identityRefused: 0, handshakeFailures: 0, upstreamErrors: 0 };
  const unwatch = watchTlsSource(opts.tls, () => {
    context = build();
  }, () => {
    /* keep the previous context */
  });

  const refused = (code: ErrorCode, reason: string): void => {
    if (opts.onRefused === undefined) return;
    try {
      opts.onRefused({ code, reason, time: Date.now() });
    } catch {
      /* ignored */
    }
  };

  // Replaces hostname verification: the peer is identified by its SPIFFE ID only.
  const checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined => {
    let reason: string | undefined;
    if (cert.ca) reason = 'the target presented a CA certificate';
    else {
      let uris: string[] = [];
      try {
        uris = certificateUriSans(cert.raw);
      } catch {
        reason = 'the target presented a malformed certificate';
      }
      if (reason === undefined && (uris.length !== 1 || uris[0] !== expectedId)) reason = 'the target did not present the expected SPIFFE ID';
      if (reason === undefined && opts.peerStatus !== undefined) {
        const status = opts.peerStatus(expectedId, cert.serialNumber.toUpperCase());
        if (!status.ok) reason = status.reason === 'revoked' ? 'the target\'s identity is revoked' : 'the target has no live entry';
      }
    }
    if (reason === undefined) return undefined;
    const err = new TesseraError('TESSERA_PROXY_PEER_IDENTITY', reason);
    (err as unknown as Record<symbol, boolean>)[IDENTITY_ERROR] = true;
    return err;
  };

  const open = new Set<() => void>();
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (local) => {
    stats.active++;
    const destroy = carry(local);
    open.add(destroy);
    local.once('close', () => {
      open.delete(destroy);
      stats.active--;
    });
  });
  server.maxConnections = limits.maxConnections;

  /** Connects `local` to the target; returns what destroys both. */
  function carry(local: Socket): () => void {
    let up: TLSSocket | undefined;
    let secure = false;
    let failed = false;
    const fail = (): void => {
      if (failed) return;
      failed = true;
      local.destroy();
      up?.destroy();
    };
    local.on('error', fail);
    try {
      up = tlsConnect({
        host: opts.upstream.host,
        port: opts.upstream.port,
        secureContext: context,
        rejectUnauthorized: true,
        checkServerIdentity,
      });
      up.setNoDelay(true);
    } catch {
      stats.upstreamErrors++;
      fail();
      return fail;
    }
    const tls = up;
    tls.setTimeout(limits.connectTimeoutMs, () => {
      if (!secure) {
        stats.upstreamErrors++;
        fail();
      }
    });
    tls.on('error', (err: Error & { code?: string }) => {
      if (!secure) {
        if ((err as unknown as Record<symbol, boolean>)[IDENTITY_ERROR] === true) {
          stats.identityRefused++;
          refused('TESSERA_PROXY_PEER_IDENTITY', err.message);
        } else if (err.code === 'ECONNREFUSED' || (err.code === 'ECONNRESET' && tls.connecting) || err.code === 'EHOSTUNREACH' || err.code === 'ETIMEDOUT') {
          stats.upstreamErrors++;
        } else {
          stats.handshakeFailures++;
          refused('TESSERA_AUTH_INVALID', String(err.code ?? err.message));
        }
      } else {
        stats.upstreamErrors++;
      }
      fail();
    });
    tls.once('secureConnect', () => {
      secure = true;
      tls.setTimeout(0);
      // Half-closes are passed on once connected (see the inbound proxy for why not before).
      tls.allowHalfOpen = true;
      stats.connections++;
      // Only now, with the target's identity verified, do the app's bytes start to flow.
      local.pipe(tls);
      tls.pipe(local);
    });
    // Clean closes: pipe passes the half-closes on; a side fully closed ends the other.
    tls.on('close', (hadError) => {
      if (hadError || !secure) fail();
      else if (!local.writableEnded) local.end();
    });
    local.on('close', (hadError) => {
      if (hadError || !secure) fail();
      else if (!tls.writableEnded) tls.end();
    });
    return fail;
  }

  let port: number;
  try {
    port = await listenOn(server, opts.listen, 'outbound', () => { stats.upstreamErrors++; });
  } catch (err) {
    unwatch();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    port,
    get stats(): OutboundStats {
      return { ...stats };
    },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        unwatch();
        server.close(() => resolve());
        for (const destroy of open) destroy();
        open.clear();
      });
      return closing;
    },
  };
}
