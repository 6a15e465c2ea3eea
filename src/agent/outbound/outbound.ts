/**
 * The agent's outbound proxy: the local app connects in plain TCP (HTTP or anything else) to a
 * port on 127.0.0.1, and the agent carries the bytes over mTLS to the target workload's inbound
 * proxy, presenting our X509-SVID. The server must chain to the bundle AND pass the one X509-SVID
 * leaf check (src/core/x509-svid.ts) as exactly the expected SPIFFE ID (X509-SVID §5: authorize
 * the peer's identity, not a DNS name); anything else closes the app's connection before a byte
 * of it is sent.
 *
 * The client SecureContext is built once per SVID or bundle rotation and shared by every
 * connection: building one per connection halves the handshake rate.
 *
 * Who may use it: on loopback TCP, any local user (it makes mTLS calls as the workload). On a Unix
 * socket (the secure choice), only a process whose peer credentials (SO_PEERCRED) match the entry's
 * `unix:` selectors, the same check as the Workload API (attest/selectors.ts); anyone else is
 * refused before a byte goes out.
 *
 * A target whose identity the revocation list refuses (`peerStatus`) is refused after the
 * handshake, before the app's bytes flow; an established connection is closed at the target
 * certificate's expiry, and by `rejudge()` when the target's identity is no longer acceptable.
 *
 * TLS session resumption: the last session ticket the target issued on a connection whose identity
 * was verified is offered on the next connection, which then skips the certificate exchange (and
 * both ends' signature and chain work). On a resumed TLS 1.3 session Node gives the client neither
 * the server's certificate nor a checkServerIdentity call: the identity verified at the full
 * handshake (expected SPIFFE ID, serial, expiry) stays bound to the ticket here, and a resumed
 * connection gets the same standing check (revocation list) and expiry as a full one. A ticket
 * is only ever used for the target it was issued by (one target per proxy), dropped when our SVID
 * or bundle rotates (so a changed bundle re-verifies the target), when the target is refused, and
 * when the bound certificate has expired. `resumeSessions: false` turns it off. (The inbound proxy
 * reads the caller's certificate from the resumed session, which Node keeps on the server side.)
 */
import { createServer, type Server, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { TesseraError, type ErrorCode } from '../../core/errors.js';
import { assertPeerCredentialsAvailable, peerCredentialsOf, type PeerCredentials } from '../attest/peercred.js';
import { entryMatchesCaller } from '../attest/selectors.js';
import { listenOnUnixSocket, type UnixSocket } from '../attest/unix-socket.js';
import { isSpiffeId, parseSpiffeId } from '../../core/spiffe-id.js';
import { verifyPeerSvid } from '../../core/x509-svid.js';
import { peerIntermediates, type TrustAnchors } from '../../core/federation-trust.js';
import { peerRefusal, type PeerStatus } from '../inbound/rejudge.js';
import { MIN_TLS_VERSION, keyPem, listenOn, requireMaterial, watchTlsSource, type TlsSource } from '../../common/tls-source.js';
import type { TelemetryLane } from '../telemetry/collector.js';
import { ConnectionMeter } from '../telemetry/meter.js';

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
  /** Local processes refused on a Unix socket: credentials not matching the entry (or unreadable). */
  callerRefused: number;
  /** Established connections closed by `rejudge()` (the target's identity no longer acceptable). */
  rejudged: number;
  /** Established connections closed at the target certificate's expiry. */
  expired: number;
  /** App connections refused, and open ones closed, because the local workload itself is quarantined. */
  selfRefused: number;
  /** Connections to the target that resumed a TLS session (no certificate exchange). */
  resumed: number;
}

export interface OutboundRefusal {
  code: ErrorCode;
  reason: string;
  time: number;
  /** TESSERA_PROXY_LOCAL_CALLER: the refused local process, when its credentials could be read. */
  caller?: PeerCredentials;
}

/**
 * Where the app connects: loopback TCP (any local user can connect), or a Unix socket (only
 * processes matching the entry's `unix:` selectors are carried). `mode` is the socket file's mode
 * (default 0o666, like the Workload API: the peer credentials decide, not the mode).
 */
export type OutboundListen = { host: '127.0.0.1' | (string & {}); port: number } | { path: string; mode?: number };

export interface OutboundOptions {
  listen: OutboundListen;
  /**
   * Required with a Unix-socket listen: the selectors of the entry this agent serves, read at
   * every connection (e.g. `['unix:uid:1000']`).
   */
  entrySelectors?: () => readonly string[];
  /** The target's inbound proxy and the SPIFFE ID it must present. */
  upstream: { host: string; port: number; expectedId: string };
  tls: TlsSource;
  limits?: Partial<OutboundLimits>;
  /** Every connection refused: the local caller (Unix socket), the target's identity or handshake. */
  onRefused?: (record: OutboundRefusal) => void;
  /** The standing of the target's identity and certificate serial (revocation list): a target not `ok` is refused. */
  peerStatus?: PeerStatus;
  /**
   * Telemetry of this end (reporter 'caller', action class tcp: src/agent/telemetry): per
   * connection to the target, counted under `upstream.expectedId`. A connection that fails before
   * the target's identity is verified counts as an error.
   */
  telemetry?: TelemetryLane;
  /**
   * Why the local workload itself may not call out now (it is quarantined: issue 11), or
   * undefined. Read at every app connection and by `rejudge()`; a throw refuses (fail closed).
   */
  selfRefusal?: () => string | undefined;
  /** Offer the target's last session ticket on new connections (default true; see the file comment). */
  resumeSessions?: boolean;
}

export interface Outbound {
  /** The TCP port listened on (0 on a Unix socket). */
  readonly port: number;
  /** The Unix socket listened on, if any. */
  readonly socketPath: string | undefined;
  readonly stats: OutboundStats;
  /**
   * Re-checks the target's standing (`peerStatus`) for every established connection and closes
   * those it refuses (the policy or revocation list changed). Returns how many were looked at and closed.
   */
  rejudge(): { checked: number; closed: number };
  close(): Promise<void>;
}

/** An established connection: the target's certificate serial and expiry, and what closes it. */
interface Established {
  serial: string;
  notAfter: number;
  destroy: () => void;
}

/**
 * A session ticket of the target, with the identity verified on the full handshake it descends
 * from (Node does not give a resumed client session the server's certificate).
 */
interface Ticket {
  session: Buffer;
  serial: string;
  notAfter: number;
  /** The secure context generation it was obtained with: a rotation makes it unusable. */
  generation: number;
}

/** How often established connections are checked against their target certificate's expiry. */
const SWEEP_MS = 500;

const IDENTITY_ERROR = Symbol('tessera.identity');

/**
 * Starts the outbound proxy. TESSERA_CONFIG_INVALID for a bad expectedId, limits or socket path
 * (or a Unix socket without `entrySelectors`), TESSERA_ADDRESS_IN_USE when the port or socket is
 * taken, TESSERA_PEER_CREDENTIALS_UNAVAILABLE when a Unix socket's callers cannot be attested here,
 * TESSERA_CREDENTIAL_MISSING if the source has no SVID yet.
 *
 * @example
 * const out = await startOutbound({
 *   listen: { path: '/run/tessera/payments.sock' }, // or { host: '127.0.0.1', port: 15001 }: any local user
 *   entrySelectors: () => agent.entry?.selectors ?? [],
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
  // X509-SVID §3.1: a leaf's ID has a path, so the bare trust-domain ID can never be a target.
  if (parseSpiffeId(expectedId).path === '') throw new TesseraError('TESSERA_CONFIG_INVALID', 'upstream.expectedId needs a path (the trust-domain ID is not a workload)');
  const unixListen = 'path' in opts.listen ? opts.listen : undefined;
  const entrySelectors = opts.entrySelectors;
  if (unixListen !== undefined) {
    // Fail closed: a Unix socket is only offered with the check that makes it the secure choice.
    if (typeof entrySelectors !== 'function') throw new TesseraError('TESSERA_CONFIG_INVALID', 'an outbound Unix socket needs the entry selectors to check its callers against');
    assertPeerCredentialsAvailable();
  }

  // Federated bundles (issue 14): the target must chain to its own trust domain's bundle, no other.
  let trust: TrustAnchors | undefined;
  const build = (): SecureContext => {
    const m = requireMaterial(opts.tls);
    trust = m.trust;
    return createSecureContext({ cert: m.certPem, key: keyPem(m.key), ca: m.trust?.caPem ?? m.bundlePem, minVersion: MIN_TLS_VERSION });
  };
  let context = build();
  let generation = 0;
  const resumeSessions = opts.resumeSessions !== false;
  /** The ticket offered to the next connection (see the file comment). */
  let ticket: Ticket | undefined;
  const stats: OutboundStats = { connections: 0, active: 0, identityRefused: 0, handshakeFailures: 0, upstreamErrors: 0, callerRefused: 0, rejudged: 0, expired: 0, selfRefused: 0, resumed: 0 };
  const unwatch = watchTlsSource(opts.tls, () => {
    context = build();
    generation++;
    ticket = undefined;
  }, () => {
    /* keep the previous context */
  });

  const refused = (code: ErrorCode, reason: string, caller?: PeerCredentials): void => {
    if (opts.onRefused === undefined) return;
    try {
      opts.onRefused({ code, reason, time: Date.now(), ...(caller !== undefined ? { caller } : {}) });
    } catch {
      /* ignored */
    }
  };

  // Replaces hostname verification: the peer is identified by its SPIFFE ID only. Node calls this
  // only once OpenSSL has verified the chain to the bundle (rejectUnauthorized), hence `true`.
  const expect = { trustDomain: parseSpiffeId(expectedId).trustDomain, id: expectedId };
  const checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined => {
    const v = verifyPeerSvid(cert.raw, true, expect, Date.now());
    const anchored = !v.ok || trust === undefined || trust.chainsTo(expect.trustDomain, cert.raw, peerIntermediates(cert));
    if (v.ok && anchored) return undefined;
    const err = new TesseraError('TESSERA_PROXY_PEER_IDENTITY', `the target's certificate was refused: ${v.ok ? 'not chained to its trust domain\'s bundle' : v.reason}`);
    (err as unknown as Record<symbol, boolean>)[IDENTITY_ERROR] = true;
    return err;
  };

  /**
   * Unix socket only: does the connecting process match the entry? Read at accept time, before
   * anything is sent upstream (SO_PEERCRED is the process that called connect()).
   */
  function admit(local: Socket, selectorsOf: () => readonly string[]): boolean {
    let caller: PeerCredentials | undefined;
    let reason: string;
    try {
      caller = peerCredentialsOf(local);
      const m = entryMatchesCaller(selectorsOf(), caller);
      if (m.ok) return true;
      reason = m.reason;
    } catch (err) {
      reason = err instanceof Error ? err.message : String(err);
    }
    stats.callerRefused++;
    local.destroy();
    refused('TESSERA_PROXY_LOCAL_CALLER', reason, caller);
    return false;
  }

  const tel = opts.telemetry;
  const meter = tel !== undefined ? new ConnectionMeter(tel, true) : undefined;
  const selfRefusal = (): string | undefined => {
    if (opts.selfRefusal === undefined) return undefined;
    try {
      return opts.selfRefusal();
    } catch {
      return 'self status lookup failed';
    }
  };

  const open = new Set<() => void>();
  const established = new Set<Established>();
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (local) => {
    if (entrySelectors !== undefined && unixListen !== undefined && !admit(local, entrySelectors)) return;
    const self = selfRefusal();
    if (self !== undefined) {
      stats.selfRefused++;
      local.destroy();
      refused('TESSERA_IDENTITY_QUARANTINED', `this workload may not call out: ${self}`);
      return;
    }
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
    const since = tel !== undefined ? performance.now() : 0;
    if (tel !== undefined) tel.edge(expectedId).requests++;
    const fail = (): void => {
      if (failed) return;
      failed = true;
      if (!secure && tel !== undefined) tel.edge(expectedId).errors++;
      local.destroy();
      up?.destroy();
    };
    local.on('error', fail);
    // A ticket whose bound certificate has expired is not offered: the target presents its renewed one.
    if (ticket !== undefined && !(Date.now() < ticket.notAfter)) ticket = undefined;
    const offered = ticket;
    const gen = generation;
    /** The identity this connection proved (full handshake) or resumed; its tickets inherit it. */
    let bound: Omit<Ticket, 'session'> | undefined;
    let early: Buffer | undefined;
    const keep = (session: Buffer): void => {
      if (bound !== undefined && bound.generation === generation) ticket = { session, ...bound };
    };
    try {
      up = tlsConnect({
        host: opts.upstream.host,
        port: opts.upstream.port,
        secureContext: context,
        rejectUnauthorized: true,
        checkServerIdentity,
        ...(offered !== undefined ? { session: offered.session } : {}),
      });
      if (resumeSessions) {
        // TLS 1.3 tickets come after the handshake; a TLS 1.2 one can come before 'secureConnect'.
        up.on('session', (session: Buffer) => {
          if (bound !== undefined) keep(session);
          else early = session;
        });
      }
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
      let serial: string;
      let notAfter: number;
      if (tls.isSessionReused()) {
        // No certificate and no checkServerIdentity on a resumed session: the identity is the one
        // bound to the ticket offered. A resumption we did not offer cannot happen; fail closed.
        if (offered === undefined || offered.generation !== gen) {
          ticket = undefined;
          stats.identityRefused++;
          refused('TESSERA_PROXY_PEER_IDENTITY', 'the target resumed a session without a verified identity');
          fail();
          return;
        }
        stats.resumed++;
        serial = offered.serial;
        notAfter = offered.notAfter;
      } else {
        const cert = tls.getPeerX509Certificate();
        serial = cert?.serialNumber ?? '';
        // An unreadable expiry closes at the next sweep (fail closed).
        const parsed = cert === undefined ? 0 : Date.parse(cert.validTo);
        notAfter = Number.isFinite(parsed) ? parsed : 0;
      }
      const refusal = peerRefusal(opts.peerStatus, expectedId, serial);
      if (refusal !== undefined) {
        if (ticket?.serial === serial) ticket = undefined;
        stats.identityRefused++;
        refused('TESSERA_PROXY_PEER_IDENTITY', `the target is refused: ${refusal}`);
        fail();
        return;
      }
      if (resumeSessions && notAfter > 0) {
        bound = { serial, notAfter, generation: gen };
        if (early !== undefined) keep(early);
        early = undefined;
      }
      const conn: Established = { serial, notAfter, destroy: fail };
      established.add(conn);
      tls.once('close', () => established.delete(conn));
      secure = true;
      tls.setTimeout(0);
      // Half-closes are passed on once connected (see the inbound proxy for why not before).
      tls.allowHalfOpen = true;
      stats.connections++;
      meter?.track(tls, expectedId, since);
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

  // The target's certificate expiry ends the connection: the app's next connection handshakes
  // with the target's renewed SVID.
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const c of established) {
      if (now < c.notAfter) continue;
      stats.expired++;
      established.delete(c);
      c.destroy();
    }
  }, SWEEP_MS);
  sweep.unref();

  let port = 0;
  let socket: UnixSocket | undefined;
  try {
    if (unixListen !== undefined) {
      socket = await listenOnUnixSocket(server, { path: unixListen.path, mode: unixListen.mode ?? 0o666, what: 'the outbound proxy' });
      server.on('error', () => { stats.upstreamErrors++; });
    } else {
      port = await listenOn(server, opts.listen as { host: string; port: number }, 'outbound', () => { stats.upstreamErrors++; });
    }
  } catch (err) {
    clearInterval(sweep);
    unwatch();
    throw err;
  }

  let closing: Promise<void> | undefined;
  return {
    port,
    socketPath: socket?.path,
    get stats(): OutboundStats {
      return { ...stats };
    },
    rejudge(): { checked: number; closed: number } {
      let checked = 0;
      let closed = 0;
      // The local workload quarantined: every connection it has open closes, whatever the target.
      const self = selfRefusal();
      // The target's standing may have changed: its ticket is re-checked before it is offered again.
      if (ticket !== undefined && peerRefusal(opts.peerStatus, expectedId, ticket.serial) !== undefined) ticket = undefined;
      if (self !== undefined) {
        for (const destroy of open) {
          checked++;
          closed++;
          destroy();
        }
        established.clear();
        if (closed > 0) {
          stats.selfRefused += closed;
          refused('TESSERA_IDENTITY_QUARANTINED', `re-judged: this workload may not call out (${self}); ${closed} open connection(s) closed`);
        }
        return { checked, closed };
      }
      // Every connection goes to the same target: one lookup per certificate serial (consecutive
      // connections mostly share one), none allocated per connection.
      let lastSerial: string | undefined;
      let refusal: string | undefined;
      let reported = '';
      for (const c of established) {
        checked++;
        if (c.serial !== lastSerial) {
          lastSerial = c.serial;
          refusal = peerRefusal(opts.peerStatus, expectedId, c.serial);
        }
        if (refusal === undefined) continue;
        if (ticket?.serial === c.serial) ticket = undefined;
        reported = refusal;
        closed++;
        established.delete(c);
        c.destroy();
      }
      if (closed > 0) {
        stats.rejudged += closed;
        refused('TESSERA_PROXY_PEER_IDENTITY', `re-judged: the target is refused (${reported}); ${closed} open connection(s) closed`);
      }
      return { checked, closed };
    },
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        clearInterval(sweep);
        unwatch();
        meter?.close();
        server.close(() => {
          socket?.unlink();
          resolve();
        });
        for (const destroy of open) destroy();
        open.clear();
      });
      return closing;
    },
  };
}
