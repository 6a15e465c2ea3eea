import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../../src/common/api-client.js';

export const CLI = fileURLToPath(new URL('../../dist/src/cli/main.js', import.meta.url));

/** A free TCP port on 127.0.0.1 (bound then released), for a server that must restart on the same port. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 15_000, everyMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Sends `signal` to a child process that is still running and resolves once it has exited. */
export function signalChild(child: ChildProcess | undefined, signal: NodeJS.Signals): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

/** `tessera server` as a real child process (so it can be SIGKILLed), on a fixed port. */
export class ServerProcess {
  child: ChildProcess | undefined;
  output = '';

  constructor(readonly dataDir: string, readonly port: number, readonly extraArgs: string[] = [], readonly env: NodeJS.ProcessEnv = process.env) {}

  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  get adminDir(): string {
    return join(this.dataDir, 'admin');
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [CLI, 'server', '--data-dir', this.dataDir, '--listen', `127.0.0.1:${this.port}`, ...this.extraArgs], {
      stdio: ['ignore', 'pipe', 'pipe'], env: this.env,
    });
    this.child = child;
    child.stdout!.on('data', (d: Buffer) => { this.output += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { this.output += d.toString(); });
    const started = this.output.length;
    await waitFor('server to listen', () => {
      if (child.exitCode !== null) throw new Error(`server exited: ${this.output}`);
      return this.output.slice(started).includes('control plane listening');
    });
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    return signalChild(this.child, signal);
  }

  admin(): ApiClient {
    const f = (n: string): string => readFileSync(join(this.adminDir, n), 'utf8');
    return new ApiClient(this.url, { ca: f('bundle.pem'), cert: f('admin.pem'), key: f('admin.key') });
  }

  async stop(removeDir = true): Promise<void> {
    await this.kill('SIGTERM');
    if (removeDir && existsSync(this.dataDir)) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Runs the CLI as a child process without blocking this one (in-process servers keep serving). */
export function runTessera(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
    child.stdin!.end(opts.input ?? '');
  });
}
