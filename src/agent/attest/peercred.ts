/**
 * Unix peer credentials (pid, uid, gid) of a process connected to one of the agent's Unix sockets
 * (the Workload API, the outbound proxy's Unix-socket listeners).
 *
 * Node has no public API for SO_PEERCRED, so a tiny N-API addon (`native/peercred.c`, built by
 * node-gyp at install time) calls getsockopt(SO_PEERCRED) on the accepted socket's descriptor.
 * The kernel records the credentials when the client calls connect(): the client cannot forge
 * them, and they do not change if it later forks, execs or hands the descriptor to another process.
 * One call costs about 2 µs (three getsockopt system calls), once per connection.
 *
 * Alternatives measured and rejected (src/agent/workload-api/README.md): deriving the peer from
 * /proc needs the peer socket's inode, which /proc/net/unix does not show (only sock_diag netlink,
 * i.e. `ss -x`, does), and then a scan of every /proc/<pid>/fd to find who holds it: milliseconds
 * per connection, racy (the holder may exit or be replaced), and ambiguous after fork or fd passing.
 *
 * Fail closed: when the addon is missing or the descriptor is not a connected Unix stream socket,
 * this throws TESSERA_PEER_CREDENTIALS_UNAVAILABLE and the caller must be refused.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { TesseraError } from '../../core/errors.js';
import { projectRoot } from '../project-root.js';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

interface Addon {
  peerCredentials(fd: number): unknown;
}

/** Where node-gyp leaves the addon, relative to the project root. */
export const ADDON_PATH = join('native', 'build', 'Release', 'peercred.node');

let addon: Addon | undefined;
let loadError: string | undefined;

function loadAddon(): Addon {
  if (addon !== undefined) return addon;
  if (loadError !== undefined) throw unavailable(loadError);
  if (process.platform !== 'linux') {
    loadError = `peer credentials are only supported on Linux (this is ${process.platform})`;
    throw unavailable(loadError);
  }
  try {
    const path = join(projectRoot(), ADDON_PATH);
    const mod: unknown = createRequire(import.meta.url)(path);
    if (typeof mod !== 'object' || mod === null || typeof (mod as Partial<Addon>).peerCredentials !== 'function') {
      throw new Error('the addon does not export peerCredentials');
    }
    addon = mod as Addon;
    return addon;
  } catch (err) {
    loadError = `the peer-credential addon ${ADDON_PATH} cannot be loaded (build it with \`npx node-gyp rebuild --directory=native\`): ${err instanceof Error ? err.message : String(err)}`;
    throw unavailable(loadError);
  }
}

function unavailable(message: string): TesseraError {
  return new TesseraError('TESSERA_PEER_CREDENTIALS_UNAVAILABLE', message);
}

/** Throws TESSERA_PEER_CREDENTIALS_UNAVAILABLE unless the addon can be used on this platform. */
export function assertPeerCredentialsAvailable(): void {
  loadAddon();
}

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= 0xffffffff;
}

/** The peer credentials of the process at the other end of descriptor `fd` (a connected AF_UNIX stream socket). */
export function peerCredentialsOfFd(fd: number): PeerCredentials {
  const a = loadAddon();
  if (!Number.isSafeInteger(fd) || fd < 0) throw unavailable('not a file descriptor');
  let raw: unknown;
  try {
    raw = a.peerCredentials(fd);
  } catch (err) {
    const code = err instanceof Error ? String((err as { code?: unknown }).code ?? '') : '';
    throw unavailable(`getsockopt(SO_PEERCRED) failed${code ? ` (${code})` : ''}`);
  }
  const r = raw as Partial<Record<'pid' | 'uid' | 'gid', unknown>>;
  // The kernel reports the overflow ids (65534) for ids unmapped in our user namespace; those are
  // ordinary numbers here and will simply not match an entry registered for another id.
  if (typeof raw !== 'object' || raw === null || !isId(r.pid) || r.pid === 0 || !isId(r.uid) || !isId(r.gid)) {
    throw unavailable('malformed SO_PEERCRED answer');
  }
  return { pid: r.pid, uid: r.uid, gid: r.gid };
}

/**
 * The peer credentials of an accepted `net.Socket` on a Unix domain socket. Must be called while
 * the socket is open (at accept time): the descriptor number is only ours until it is closed.
 */
export function peerCredentialsOf(socket: Socket): PeerCredentials {
  // `_handle.fd` is libuv's descriptor for the Pipe handle: not public API, but present on every
  // Unix Node release; checked, never trusted blindly (the addon verifies it is a Unix stream socket).
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || !Number.isSafeInteger(fd) || fd < 0) throw unavailable('the socket has no file descriptor');
  return peerCredentialsOfFd(fd);
}
