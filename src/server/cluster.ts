import cluster, { type Worker } from 'node:cluster';
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
    const onMessage = (m: unknown): void => {
      if ((m as { type?: string })?.type === 'tessera:listening') {
        w.off('exit', onEarlyExit);
        resolve(w);
      }
    };
    const onEarlyExit = (code: number): void => reject(new Error(`${role} worker exited with status ${code} while starting`));
    w.on('message', onMessage);
    w.once('exit', onEarlyExit);
    w.once('exit', (code, signal) => {
      if (stopping) return;
      log.error('control-plane worker died; restarting it', { role, code, signal });
      setTimeout(() => void fork(role).catch((err: unknown) => log.error('restart failed', { role, error: String(err) })), 1000);
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
      stop();
      reject(err);
    });
  });
}

export const isPrimary = (): boolean => cluster.isPrimary;
