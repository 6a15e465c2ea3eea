/**
 * The SPIFFE Workload API endpoint of the agent: gRPC over a Unix domain socket
 * (SPIFFE_Workload_Endpoint.md, SPIFFE_Workload_API.md), serving the workload's X.509-SVID, its
 * trust bundle, JWT-SVIDs and JWT-SVID validation.
 *
 * Connections are accepted by our own `net.Server`, so that the caller's Unix peer credentials
 * (SO_PEERCRED) are read from the accepted socket before it is handed to grpc-js through its public
 * `Server.createConnectionInjector()`. Every call must carry `workload.spiffe.io: true`
 * (InvalidArgument otherwise), and the caller's credentials must match the registration entry's
 * selectors (PermissionDenied otherwise); both are checked on every call, and the entitlement
 * again before every message pushed on a stream.
 */
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { TesseraError, isTesseraError } from '../../core/errors.js';
import { createLogger, type Logger } from '../../core/log.js';
import { claimedTrustDomain, verifyJwtSvid } from '../../core/jwt-svid.js';
import { parseSpiffeId } from '../../core/spiffe-id.js';
import { assertPeerCredentialsAvailable, peerCredentialsOf, type PeerCredentials } from '../attest/peercred.js';
import {
  SECURITY_HEADER,
  SECURITY_HEADER_VALUE,
  workloadApiService,
  type JwtBundlesResponse,
  type JwtSvidRequest,
  type JwtSvidResponse,
  type ValidateJwtSvidRequest,
  type ValidateJwtSvidResponse,
  type X509BundlesResponse,
  type X509SvidResponse,
} from './proto.js';
import {
  fingerprint,
  jwtBundlesResponse,
  toStruct,
  x509BundlesResponse,
  x509SvidResponse,
  type FederatedBundleMap,
  type IdentitySnapshot,
} from './responses.js';
import { selectEntryForCaller } from '../attest/selectors.js';
import { checkSocketPath, listenOnUnixSocket } from '../attest/unix-socket.js';
import { NO_IDENTITY, SECURITY_HEADER_MISSING, grpcError, grpcErrorOf, type GrpcError } from './status.js';

/** What the Workload API needs from the agent (the Agent class satisfies it once wired). */
export interface IdentitySource {
  readonly trustDomain: string;
  /** The workload's current X.509-SVID and bundle, or undefined before the first issuance. */
  current(): IdentitySnapshot | undefined;
  /** The trust domain's SPIFFE bundle in JWK Set form (its `jwt-svid` keys are used). */
  jwtBundle(): { keys: readonly object[] };
  /** A JWT-SVID for the workload's identity (the control plane's POST /v1/svid/jwt). */
  mintJwt(audience: string[]): Promise<{ token: string }>;
  /** The selectors of the registration entry this agent serves, e.g. ['unix:uid:1000']. */
  entrySelectors(): readonly string[];
  /** The federated bundles the agent holds (issue 14); absent: none. */
  federatedBundles?(): FederatedBundleMap;
  on(event: 'svid' | 'bundle', listener: () => void): unknown;
  off(event: 'svid' | 'bundle', listener: () => void): unknown;
}

/**
 * The identities of a node agent serving several workloads: each caller gets the one whose entry
 * selectors it matches (the most specific when several match; none when that is ambiguous:
 * `selectEntryForCaller`). Events: any identity's SVID or bundle changed.
 */
export interface IdentityDirectory {
  identities(): readonly IdentitySource[];
  on(event: 'svid' | 'bundle', listener: () => void): unknown;
  off(event: 'svid' | 'bundle', listener: () => void): unknown;
}

export interface WorkloadApiOptions {
  /** Absolute path of the Unix socket to create (at most 107 bytes on Linux). */
  socketPath: string;
  /** One workload's identity (a sidecar), or the identities of every workload on the node. */
  source: IdentitySource | IdentityDirectory;
  log?: Logger;
  /**
   * File mode of the socket (default 0o666). Workloads need write permission on the socket to
   * connect; who may actually obtain an identity is decided by the peer credentials, not by this.
   */
  socketMode?: number;
}

export interface WorkloadApi {
  readonly socketPath: string;
  /** Stops accepting, ends open streams with UNAVAILABLE (clients reconnect with backoff), removes the socket. */
  close(): Promise<void>;
}

const MAX_REQUEST_BYTES = 64 * 1024; // requests are tiny: a JWT-SVID is at most 8 KiB
const MAX_AUDIENCES = 32;
const MAX_AUDIENCE_LENGTH = 2048;
const CLOSE_GRACE_MS = 1000;

type Peer = { creds: PeerCredentials } | { creds: undefined; reason: string };
/** A caller and the identity it is entitled to, as of the call. */
interface Attested { peer: Peer; source: IdentitySource }

/** One workload's identity as a directory of one. */
function single(source: IdentitySource): IdentityDirectory {
  return { identities: () => [source], on: (e, f) => source.on(e, f), off: (e, f) => source.off(e, f) };
}

interface Subscriber {
  push(): void;
  stop(error: GrpcError): void;
}

type Built<T> = { message: T; digest: string } | GrpcError;

function isGrpcError<T>(b: Built<T>): b is GrpcError {
  return 'code' in b;
}

/**
 * Starts the Workload API on `unix:<socketPath>`.
 *
 * @example
 * const api = await startWorkloadApi({ socketPath: '/run/tessera/agent.sock', source, log });
 * // workloads: SPIFFE_ENDPOINT_SOCKET=unix:///run/tessera/agent.sock
 * await api.close();
 */
export async function startWorkloadApi(opts: WorkloadApiOptions): Promise<WorkloadApi> {
  const log = (opts.log ?? createLogger()).child({ component: 'workload-api' });
  const directory: IdentityDirectory = 'identities' in opts.source ? opts.source : single(opts.source);
  const socketPath = checkSocketPath(opts.socketPath, 'the Workload API');
  const mode = opts.socketMode ?? 0o666;
  // Fail at start, not on the first call, when peer credentials cannot be read on this machine.
  assertPeerCredentialsAvailable();
  const service = workloadApiService();

  const peers = new Map<string, Peer>();
  const sockets = new Set<net.Socket>();
  const subscribers = new Set<Subscriber>();
  let connectionSeq = 0;
  let closing = false;

  // ------------------------------------------------------------------------------------------
  // Authorization of a call.

  /** The identity the caller is entitled to (its entry's selectors match its credentials), or the error to answer. */
  function attest(peer: Peer): IdentitySource | GrpcError {
    if (peer.creds === undefined) {
      return grpcError(grpc.status.PERMISSION_DENIED, NO_IDENTITY);
    }
    let entries: { source: IdentitySource; selectors: readonly string[] }[];
    try {
      entries = directory.identities().map((source) => ({ source, selectors: source.entrySelectors() }));
    } catch (err) {
      log.error('cannot read the entry selectors; refusing the caller', { code: isTesseraError(err) ? err.code : 'unknown' });
      return grpcError(grpc.status.PERMISSION_DENIED, NO_IDENTITY);
    }
    const m = selectEntryForCaller(entries, peer.creds);
    if (!m.ok) {
      log.info('caller refused: its credentials do not match the entry', { ...peer.creds, reason: m.reason });
      return grpcError(grpc.status.PERMISSION_DENIED, NO_IDENTITY);
    }
    return m.entry.source;
  }

  /** Security header, then the caller's peer credentials against the entries: the peer and its identity, or the error to answer. */
  function authorize(call: { metadata: grpc.Metadata; getPeer(): string }, method: string): Attested | GrpcError {
    const values = call.metadata.get(SECURITY_HEADER);
    if (values.length !== 1 || values[0] !== SECURITY_HEADER_VALUE) {
      log.debug('request without the security header', { method });
      return grpcError(grpc.status.INVALID_ARGUMENT, SECURITY_HEADER_MISSING);
    }
    // getPeer() is grpc-js's public way to tell which connection a call came on; we named each
    // accepted connection ourselves (onConnection), so an unknown name means "not ours": refuse.
    const peer = peers.get(call.getPeer());
    if (peer === undefined) return grpcError(grpc.status.PERMISSION_DENIED, NO_IDENTITY);
    if (peer.creds === undefined) {
      log.warn('caller refused: its peer credentials are unknown', { method, reason: peer.reason });
    }
    const source = attest(peer);
    return 'code' in source ? source : { peer, source };
  }

  function isAttested(v: Attested | GrpcError): v is Attested {
    return 'peer' in v;
  }

  // ------------------------------------------------------------------------------------------
  // Streams: the first message at once (§4.3), then one on every change of its content.

  function serveStream<T>(call: grpc.ServerWritableStream<unknown, T>, peer: Peer, build: (source: IdentitySource) => Built<T>): void {
    let done = false;
    let lastDigest: string | undefined;
    let waitingForDrain = false;
    let changedWhileWaiting = false;

    const sub: Subscriber = { push, stop };
    function stop(error: GrpcError): void {
      if (done) return;
      done = true;
      subscribers.delete(sub);
      call.emit('error', error); // grpc-js ends the stream with this status after pending writes
    }
    function push(): void {
      if (done) return;
      if (waitingForDrain) {
        changedWhileWaiting = true; // every message is complete (§4.3): only the latest matters
        return;
      }
      const source = attest(peer); // still entitled? (Appendix A, server state 6)
      if ('code' in source) return stop(source);
      let built: Built<T>;
      try {
        built = build(source);
      } catch (err) {
        log.error('cannot build a Workload API response', { code: isTesseraError(err) ? err.code : 'unknown' });
        built = grpcErrorOf(err);
      }
      if (isGrpcError(built)) return stop(built);
      if (built.digest === lastDigest) return;
      lastDigest = built.digest;
      if (!call.write(built.message)) {
        waitingForDrain = true;
        call.once('drain', () => {
          waitingForDrain = false;
          if (changedWhileWaiting) {
            changedWhileWaiting = false;
            push();
          }
        });
      }
    }
    const forget = (): void => {
      done = true;
      subscribers.delete(sub);
    };
    call.on('cancelled', forget);
    call.on('close', forget);
    subscribers.add(sub);
    push();
  }

  function onChange(): void {
    for (const s of [...subscribers]) s.push();
  }

  function currentIdentity(source: IdentitySource): IdentitySnapshot | GrpcError {
    const snap = source.current();
    // No SVID yet, or an expired one: no identity to give (§5.2.1; the client retries with backoff).
    if (snap === undefined || !(snap.notAfter instanceof Date) || snap.notAfter.getTime() <= Date.now()) {
      return grpcError(grpc.status.PERMISSION_DENIED, NO_IDENTITY);
    }
    return snap;
  }

  function buildX509Svid(source: IdentitySource): Built<X509SvidResponse> {
    const snap = currentIdentity(source);
    if ('code' in snap) return snap;
    const message = x509SvidResponse(snap, source.federatedBundles?.());
    const svid = message.svids[0]!;
    return { message, digest: fingerprint([svid.spiffe_id, svid.x509_svid, svid.x509_svid_key, svid.bundle, ...Object.entries(message.federated_bundles).flat()]) };
  }

  function buildX509Bundles(source: IdentitySource): Built<X509BundlesResponse> {
    const snap = currentIdentity(source);
    if ('code' in snap) return snap;
    const message = x509BundlesResponse(source.trustDomain, snap.bundlePem, source.federatedBundles?.());
    return { message, digest: fingerprint(Object.entries(message.bundles).flat()) };
  }

  function buildJwtBundles(source: IdentitySource): Built<JwtBundlesResponse> {
    const message = jwtBundlesResponse(source.trustDomain, source.jwtBundle(), source.federatedBundles?.());
    return { message, digest: fingerprint(Object.entries(message.bundles).flat()) };
  }

  // ------------------------------------------------------------------------------------------
  // Handlers.

  function streamHandler<T>(method: string, build: (source: IdentitySource) => Built<T>): grpc.handleServerStreamingCall<unknown, T> {
    return (call) => {
      const auth = authorize(call, method);
      if (!isAttested(auth)) {
        call.emit('error', auth);
        return;
      }
      if (closing) {
        call.emit('error', grpcError(grpc.status.UNAVAILABLE, 'the Workload API is shutting down'));
        return;
      }
      serveStream(call, auth.peer, build);
    };
  }

  const fetchJwtSvid: grpc.handleUnaryCall<JwtSvidRequest, JwtSvidResponse> = (call, callback) => {
    const auth = authorize(call, 'FetchJWTSVID');
    if (!isAttested(auth)) return callback(auth);
    const { source } = auth;
    const req = call.request;
    const audience = req.audience ?? [];
    // §6.2.1: audience is mandatory; §4.5: a missing mandatory field is InvalidArgument.
    if (!Array.isArray(audience) || audience.length === 0) return callback(grpcError(grpc.status.INVALID_ARGUMENT, 'audience must be specified'));
    if (audience.length > MAX_AUDIENCES || audience.some((a) => typeof a !== 'string' || a.length === 0 || a.length > MAX_AUDIENCE_LENGTH)) {
      return callback(grpcError(grpc.status.INVALID_ARGUMENT, `each audience must be a non-empty string (at most ${MAX_AUDIENCES} of at most ${MAX_AUDIENCE_LENGTH} characters)`));
    }
    const snap = currentIdentity(source);
    if ('code' in snap) return callback(snap);
    const wanted = req.spiffe_id ?? '';
    if (wanted !== '') {
      try {
        parseSpiffeId(wanted);
      } catch {
        return callback(grpcError(grpc.status.INVALID_ARGUMENT, 'spiffe_id is not a valid SPIFFE ID'));
      }
      // §6.2.1: not authorized for the requested identity -> PermissionDenied.
      if (wanted !== snap.spiffeId) return callback(grpcError(grpc.status.PERMISSION_DENIED, NO_IDENTITY));
    }
    source.mintJwt([...audience]).then(
      ({ token }) => {
        if (typeof token !== 'string' || token.length === 0) return callback(grpcError(grpc.status.INTERNAL, 'internal error'));
        callback(null, { svids: [{ spiffe_id: snap.spiffeId, svid: token }] });
      },
      (err: unknown) => {
        log.warn('JWT-SVID request failed', { code: isTesseraError(err) ? err.code : 'unknown' });
        callback(grpcErrorOf(err));
      },
    );
  };

  const validateJwtSvid: grpc.handleUnaryCall<ValidateJwtSvidRequest, ValidateJwtSvidResponse> = (call, callback) => {
    const auth = authorize(call, 'ValidateJWTSVID');
    if (!isAttested(auth)) return callback(auth);
    const { source } = auth;
    const { audience = '', svid = '' } = call.request;
    // §6.2.3: all request fields are mandatory.
    if (typeof audience !== 'string' || audience.length === 0) return callback(grpcError(grpc.status.INVALID_ARGUMENT, 'audience must be specified'));
    if (typeof svid !== 'string' || svid.length === 0) return callback(grpcError(grpc.status.INVALID_ARGUMENT, 'svid must be specified'));
    // A JWT-SVID of a federated trust domain is checked against that domain's JWT bundle only (bundles
    // are never merged); the domain it claims only picks the bundle, and verifyJwtSvid then requires
    // its `sub` in that very domain. A domain we do not federate with: our own bundle, which refuses it.
    let jwks: { keys: readonly object[] };
    let trustDomain = source.trustDomain;
    try {
      const claimed = claimedTrustDomain(svid);
      const foreign = claimed !== undefined && claimed !== source.trustDomain ? source.federatedBundles?.().get(claimed) : undefined;
      if (foreign !== undefined) {
        jwks = foreign.jwks;
        trustDomain = claimed!;
      } else {
        jwks = source.jwtBundle();
      }
    } catch (err) {
      return callback(grpcErrorOf(err));
    }
    verifyJwtSvid(svid, jwks, { audience, trustDomain }).then(
      (v) => {
        let claims;
        try {
          claims = toStruct(v.claims);
        } catch (err) {
          return callback(grpcErrorOf(err));
        }
        callback(null, { spiffe_id: v.spiffeId, claims });
      },
      (err: unknown) => {
        log.debug('JWT-SVID did not validate', { code: isTesseraError(err) ? err.code : 'unknown' });
        callback(grpcErrorOf(err));
      },
    );
  };

  const handlers: grpc.UntypedServiceImplementation = {
    FetchX509SVID: streamHandler('FetchX509SVID', buildX509Svid),
    FetchX509Bundles: streamHandler('FetchX509Bundles', buildX509Bundles),
    FetchJWTSVID: fetchJwtSvid,
    FetchJWTBundles: streamHandler('FetchJWTBundles', buildJwtBundles),
    ValidateJWTSVID: validateJwtSvid,
  };

  // ------------------------------------------------------------------------------------------
  // Transport.

  const grpcServer = new grpc.Server({ 'grpc.max_receive_message_length': MAX_REQUEST_BYTES });
  grpcServer.addService(service, handlers);
  const injector = grpcServer.createConnectionInjector(grpc.ServerCredentials.createInsecure());

  function onConnection(socket: net.Socket): void {
    if (closing) {
      socket.destroy();
      return;
    }
    let peer: Peer;
    try {
      // Read at accept time: SO_PEERCRED is the process that called connect().
      peer = { creds: peerCredentialsOf(socket) };
    } catch (err) {
      // Fail closed: the connection is still served, so the caller gets a proper PermissionDenied.
      peer = { creds: undefined, reason: err instanceof Error ? err.message : String(err) };
      log.warn('cannot read the peer credentials of a connection; its calls will be refused', { reason: peer.reason });
    }
    const name = `unix-peer-${++connectionSeq}`;
    // A Unix socket has no remote address, so grpc-js's getPeer() would say "unknown" for every
    // call; naming the connection there lets a call be tied to the credentials read above.
    Object.defineProperty(socket, 'remoteAddress', { value: name, configurable: true, enumerable: true, writable: false });
    peers.set(name, peer);
    sockets.add(socket);
    socket.once('close', () => {
      peers.delete(name);
      sockets.delete(socket);
    });
    socket.on('error', (err) => log.debug('Workload API connection error', { reason: err.message }));
    injector.injectConnection(socket);
  }

  const netServer = net.createServer(onConnection);
  const socket = await listenOnUnixSocket(netServer, {
    path: socketPath, mode, what: 'the Workload API', inUseCode: 'TESSERA_WORKLOAD_API_SOCKET_IN_USE',
  }).catch((err: unknown) => {
    injector.destroy();
    grpcServer.forceShutdown();
    throw err;
  });
  netServer.on('error', (err) => log.error('Workload API listener error', { reason: err.message }));

  directory.on('svid', onChange);
  directory.on('bundle', onChange);
  log.info('Workload API listening', { socket: socketPath, mode: `0${mode.toString(8)}` });

  let closed: Promise<void> | undefined;
  async function close(): Promise<void> {
    closing = true;
    directory.off('svid', onChange);
    directory.off('bundle', onChange);
    const listenerClosed = new Promise<void>((ok) => netServer.close(() => ok()));
    for (const s of [...subscribers]) s.stop(grpcError(grpc.status.UNAVAILABLE, 'the Workload API is shutting down'));
    await new Promise<void>((ok) => {
      const timer = setTimeout(() => {
        grpcServer.forceShutdown();
        ok();
      }, CLOSE_GRACE_MS);
      timer.unref();
      injector.drain(CLOSE_GRACE_MS);
      grpcServer.tryShutdown(() => {
        clearTimeout(timer);
        ok();
      });
    });
    injector.destroy();
    for (const s of sockets) s.destroy();
    await listenerClosed;
    socket.unlink();
    log.info('Workload API closed', { socket: socketPath });
  }

  return {
    socketPath,
    close: () => (closed ??= close()),
  };
}
