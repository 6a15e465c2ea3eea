/**
 * The socket file of the agent's local Unix-socket endpoints (the Workload API, the outbound
 * proxy's Unix-socket listeners), made the same way for both: the folder is created world-traversable
 * (0755) when missing, a stale socket left by an agent that did not stop cleanly is removed (only if
 * it is a socket and nothing answers on it), the socket is chmod'ed to the given mode, and at close
 * it is removed only if it is still the one we created.
 *
 * Who may use an endpoint is decided by the caller's peer credentials (peercred.ts, selectors.ts),
 * not by the file mode: the mode only has to let the entry's workloads connect.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import { dirname, isAbsolute, resolve } from 'node:path';
import { TesseraError, listenFailure, type ErrorCode } from '../../core/errors.js';

const MAX_SOCKET_PATH_BYTES = 107; // sockaddr_un.sun_path is 108 bytes on Linux, NUL included

export interface UnixSocketOptions {
  /** The socket path (relative paths are resolved against the working directory). */
  path: string;
  /** File mode of the socket, 0 to 0o777. */
  mode: number;
  /** What listens, for error messages, e.g. "the Workload API". */
  what: string;
  /** The code when another process is serving on the path (default TESSERA_ADDRESS_IN_USE). */
  inUseCode?: ErrorCode;
}

export interface UnixSocket {
  /** The absolute path. */
  readonly path: string;
  /** Removes the socket file if it is still ours (call once the server is closed). */
  unlink(): void;
}

/** The absolute socket path, or TESSERA_CONFIG_INVALID when it is empty or does not fit in sockaddr_un. */
export function checkSocketPath(path: string, what: string): string {
  if (typeof path !== 'string' || path.length === 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `the socket path of ${what} is empty`);
  const abs = isAbsolute(path) ? path : resolve(path);
  if (Buffer.byteLength(abs, 'utf8') > MAX_SOCKET_PATH_BYTES || abs.includes('\0')) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `the socket path of ${what} must be at most ${MAX_SOCKET_PATH_BYTES} bytes, without NUL`);
  }
  return abs;
}

/**
 * Makes `server` listen on a Unix socket at `opts.path`. TESSERA_CONFIG_INVALID for a bad path or
 * mode, a folder that cannot be created, or a path that exists and is not a socket;
 * `opts.inUseCode` when another process answers on the socket.
 *
 * @example
 * const sock = await listenOnUnixSocket(server, { path: '/run/tessera/out.sock', mode: 0o666, what: 'the outbound proxy' });
 * server.close(() => sock.unlink());
 */
export async function listenOnUnixSocket(server: net.Server, opts: UnixSocketOptions): Promise<UnixSocket> {
  const { what, mode } = opts;
  const path = checkSocketPath(opts.path, what);
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) throw new TesseraError('TESSERA_CONFIG_INVALID', `the socket mode of ${what} must be a file mode between 0 and 0o777`);
  const inUse = opts.inUseCode ?? 'TESSERA_ADDRESS_IN_USE';
  createFolder(path);
  await removeStaleSocket(path, what, inUse);
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(path, () => {
      server.off('error', fail);
      ok();
    });
  }).catch((err: unknown) => {
    // Another agent may have taken the path between the stale check and listen().
    const e = listenFailure(err, what, path);
    throw e.code === 'TESSERA_ADDRESS_IN_USE' ? new TesseraError(inUse, e.message) : e;
  });
  let ino: number;
  try {
    chmodSync(path, mode);
    ino = lstatSync(path).ino;
  } catch (err) {
    server.close();
    throw new TesseraError('TESSERA_CONFIG_INVALID', `cannot set the mode of ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return {
    path,
    unlink(): void {
      // libuv removes the path when the listener closes; remove it ourselves only if it is still
      // the socket we created (another agent may have been started on the same path since).
      try {
        if (lstatSync(path).ino === ino) unlinkSync(path);
      } catch {
        // already gone
      }
    },
  };
}

function createFolder(path: string): void {
  try {
    // World-traversable: workloads of every user must be able to reach the socket inside.
    const parent = dirname(path);
    const firstCreated = mkdirSync(parent, { recursive: true, mode: 0o755 });
    // mkdir's mode is masked by the umask: set it on every folder we created.
    if (firstCreated !== undefined) {
      for (let d = parent; ; d = dirname(d)) {
        chmodSync(d, 0o755);
        if (d === firstCreated || d === dirname(d)) break;
      }
    }
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `cannot create the folder of ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/**
 * Removes a socket left behind by an agent that did not stop cleanly. A path that is not a socket
 * is never removed, and neither is a socket something still answers on.
 */
async function removeStaleSocket(path: string, what: string, inUse: ErrorCode): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!st.isSocket()) throw new TesseraError('TESSERA_CONFIG_INVALID', `${path} exists and is not a socket (${what} never removes other files)`);
  const live = await new Promise<boolean>((ok) => {
    const c = net.connect(path);
    c.once('connect', () => {
      c.destroy();
      ok(true);
    });
    c.once('error', () => ok(false));
  });
  if (live) throw new TesseraError(inUse, `another process is serving on ${path}`);
  try {
    unlinkSync(path);
  } catch {
    // removed meanwhile
  }
}
