/**
 * Where HAProxy is installed (a module of its own: the CLI checks `--data-plane haproxy` before
 * the join without loading the data plane).
 */
import { spawnSync } from 'node:child_process';

/** The haproxy executable on the PATH, or undefined. */
export function findHaproxy(): string | undefined {
  const r = spawnSync('sh', ['-c', 'command -v haproxy'], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 && r.stdout.trim() !== '' ? r.stdout.trim() : undefined;
}
