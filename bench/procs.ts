/**
 * Child processes for the benchmarks: a bounded set of `node` children (the Tessera CLI or a bench
 * helper), each with its stdout and stderr appended to a log file (never a pipe: a child blocks on a
 * full pipe nobody reads, and reading one costs the bench process CPU), waited for by a JSON log line,
 * stopped with SIGTERM then SIGKILL within a bound, and killed synchronously if this process exits
 * first. Linux CPU accounting from /proc, where available.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The compiled CLI, as `tessera` runs it. */
export const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export interface Child {
  name: string;
  proc: ChildProcess;
  logFile: string;
}

type Json = Record<string, unknown>;

/** The environment for a child: this one's, without TESSERA_* (a stray KEK, join token or admin directory). */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('TESSERA_')) env[k] = v;
  return { ...env, ...extra };
}

export class Children {
  private readonly list: Child[] = [];
  private readonly onExit = (): void => this.killAllNow();

  constructor(private readonly max: number) {
    process.on('exit', this.onExit);
  }

  get all(): readonly Child[] {
    return this.list;
  }

  /** Starts `node script ...args`; its output goes to `logFile`. */
  spawn(name: string, script: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = cleanEnv(), stdin: 'ignore' | 'pipe' = 'ignore'): Child {
    if (this.list.length >= this.max) throw new Error(`bench: more than ${this.max} child processes`);
    const fd = openSync(logFile, 'a', 0o600);
    try {
      const proc = spawn(process.execPath, [script, ...args], { stdio: [stdin, fd, fd], env });
      const child = { name, proc, logFile };
      proc.on('error', () => {}); // reported through exitCode / the log by waitForLine
      this.list.push(child);
      return child;
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Waits for the first JSON log line with `msg` (and `extra`, when given) in the child's log, and
   * returns it. Fails when the child exits first or after `timeoutMs`, with the log's tail.
   */
  async waitForLine(child: Child, msg: string, timeoutMs: number): Promise<Json> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const text = existsSync(child.logFile) ? readFileSync(child.logFile, 'utf8') : '';
      for (const line of text.split('\n')) {
        if (!line.startsWith('{')) continue;
        try {
          const j = JSON.parse(line) as Json;
          if (j.msg === msg) return j;
        } catch {
          // a partly written line: read again next time
        }
      }
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) throw new Error(`${child.name} exited (${child.proc.exitCode ?? child.proc.signalCode}) before "${msg}":\n${tail(text)}`);
      if (Date.now() > deadline) throw new Error(`${child.name}: no "${msg}" within ${timeoutMs} ms:\n${tail(text)}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** user + system CPU seconds of every live child, by name (Linux /proc; undefined elsewhere). */
  cpuSeconds(): Map<string, number> | undefined {
    const out = new Map<string, number>();
    for (const c of this.list) {
      const s = procCpuSeconds(c.proc.pid);
      if (s === undefined) return undefined;
      out.set(c.name, s);
    }
    return out;
  }

  /** SIGTERM to all, SIGKILL to whoever is still there after `graceMs`; resolves once all exited (or 2 s more). */
  async stopAll(graceMs: number): Promise<void> {
    await Promise.all(this.list.map(async (c) => {
      if (!alive(c.proc)) return;
      const exited = new Promise<void>((r) => c.proc.once('exit', () => r()));
      c.proc.kill('SIGTERM');
      if (await within(exited, graceMs)) return;
      c.proc.kill('SIGKILL');
      await within(exited, 2000);
    }));
    process.off('exit', this.onExit);
  }

  /** Synchronous last resort (process 'exit'): SIGKILL whatever is still running. */
  killAllNow(): void {
    for (const c of this.list) if (alive(c.proc)) c.proc.kill('SIGKILL');
  }
}

function alive(p: ChildProcess): boolean {
  return p.pid !== undefined && p.exitCode === null && p.signalCode === null;
}

async function within(p: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<boolean>((r) => { timer = setTimeout(() => r(false), ms); });
  try {
    return await Promise.race([p.then(() => true), t]);
  } finally {
    clearTimeout(timer);
  }
}

function tail(text: string): string {
  return text.split('\n').slice(-15).join('\n');
}

/** USER_HZ, what /proc/PID/stat counts in: 100 on Linux. */
const CLOCK_TICKS = 100;

/** utime + stime of a process in seconds, from /proc/PID/stat (10 ms resolution at 100 ticks/s). */
export function procCpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** CPU seconds the whole machine spent busy (all cores: /proc/stat user..steal, not idle or iowait); undefined off Linux. */
export function machineBusySeconds(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    return (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0)) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}
