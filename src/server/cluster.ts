import cluster, { type Worker } from 'node:cluster';
import { ERROR_CODES, TesseraError, isTesseraError, type ErrorCode } from '../core/errors.js';
import type { Logger } from '../core/log.js';

export type Role = 'leader' | 'follower';

/** The role of this process when it is a worker of `tessera server --workers N`. */
export function workerRole(): Role | undefined {
  if (!cluster.isWorker) return undefined;
  return process.env.TESSERA_ROLE === 'follower' ? 'follower' : 'leader';
}

/** Tells the supervising primary that this worker is serving. */
export function reportListening(): void {
  if (cluster.isWorker) process.send?.({ type: 'tessera:listening' });
}

/**
 * A worker that cannot start (an address in use, a bad data directory) hands its error to the
 * supervising primary, which reports it once with its code and exit status, and leaves. Returns
 * false when this process is not a worker (then the caller reports the error itself).
 */
export function reportStartFailure(err: unknown): boolean {
  if (!cluster.isWorker) return false;
  const e = isTesseraError(err) ? err : new TesseraError('TESSERA_INTERNAL');
  process.send?.({ type: 'tessera:failed', code: e.code, message: e.message }, () => leaveCluster());
  return true;
}

/** After a clean stop, closes the IPC channel so that the worker process can exit. */
export function leaveCluster(): void {
  if (cluster.isWorker && process.connected) process.disconnect();
}

/**
 * Runs N control-plane processes on one port and one store (node:cluster shares the listening
 * socket): the leader runs the CA schedule, followers serve requests and follow the store. The
 * leader starts first so that it alone creates the trust domain. A worker that dies is restarted
 * with its role; SIGINT/SIGTERM stop them all.
 */
export function supervise(workers: number, log: Logger): Promise<void> {
  let stopping = false;
  const fork = (role: Role): Promise<Worker> => new Promise((resolve, reject) => {
    const w = cluster.fork({ TESSERA_ROLE: role });
    let failure: TesseraError | undefined;
    const onMessage = (m: unknown): void => {
      const msg = m as { type?: string; code?: string; message?: string };
      if (msg?.type === 'tessera:listening') {
        w.off('exit', onEarlyExit);
        resolve(w);
      } else if (msg?.type === 'tessera:failed') {
        const code = typeof msg.code === 'string' && msg.code in ERROR_CODES ? (msg.code as ErrorCode) : 'TESSERA_INTERNAL';
        failure = new TesseraError(code, typeof msg.message === 'string' ? msg.message : undefined);
      }
    };
    // The worker's own error when it sent one (the exit status and code of a single process).
    const onEarlyExit = (code: number): void => reject(failure ?? new Error(`${role} worker exited with status ${code} while starting`));
    w.on('message', onMessage);
    w.once('exit', onEarlyExit);
    w.once('exit', (code, signal) => {
      // A worker that failed to start is not restarted: the same configuration fails again.
      if (stopping || failure !== undefined) return;
      log.error('control-plane worker died; restarting it', { role, code, signal });
      setTimeout(() => {
        if (!stopping) void fork(role).catch((err: unknown) => log.error('restart failed', { role, error: String(err) }));
      }, 1000);
    });
  });

  return new Promise((resolve, reject) => {
    const stop = (): void => {
      if (stopping) return;
      stopping = true;
      const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => Boolean(w && !w.isDead()));
      let left = alive.length;
      if (left === 0) resolve();
      for (const w of alive) {
        w.once('exit', () => { if (--left === 0) resolve(); });
        w.process.kill('SIGTERM');
      }
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    (async () => {
      await fork('leader');
      for (let i = 1; i < workers; i++) await fork('follower');
      log.info('control plane running', { workers });
    })().catch((err: unknown) => {
      // Settle with the error first: stop() resolves at once when no worker is left alive.
      reject(err);
      stop();
    });
  });
}

export const isPrimary = (): boolean => cluster.isPrimary;
