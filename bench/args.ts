/** The command line shared by the small benchmarks: `[--seconds S] [--json]`. */
import { performance } from 'node:perf_hooks';

export interface BenchArgs {
  seconds: number;
  json: boolean;
}

/** One measured operation, as the benchmarks print it. */
export interface RateRow {
  name: string;
  usPerOp: number;
  opsPerSecond: number;
}

export function parseBenchArgs(argv: string[], name: string, defaultSeconds: number): BenchArgs {
  const usage = (msg: string): never => {
    process.stderr.write(`bench/${name}: ${msg}\nusage: node dist/bench/${name}.js [--seconds S] [--json]\n`);
    process.exit(2);
  };
  const o: BenchArgs = { seconds: defaultSeconds, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') o.json = true;
    else if (a === '--seconds') o.seconds = secondsArg(argv[++i], usage);
    else usage(`unknown argument ${a}`);
  }
  return o;
}

/** The value of `--seconds`: a number in (0, 60]. */
export function secondsArg(value: string | undefined, usage: (msg: string) => never): number {
  const v = Number(value);
  if (!(v > 0 && v <= 60)) usage('--seconds must be in (0, 60]');
  return v;
}

/**
 * Measures a synchronous operation: a warm-up (at least `minWarmOps` calls), then 5 rounds of
 * `seconds / 5` each, reading the clock every `batch` calls (so that reading it is not what is
 * measured; 1 for operations of milliseconds); the median round is reported (this VM has noisy
 * neighbours). `op` receives a running call number.
 */
export function measureRate(name: string, seconds: number, op: (i: number) => unknown, options: { batch?: number; minWarmOps?: number } = {}): RateRow {
  const batch = options.batch ?? 256;
  const warmUntil = performance.now() + Math.max(100, seconds * 100);
  let i = 0;
  while (performance.now() < warmUntil || i < (options.minWarmOps ?? 300)) op(i++);
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    let n = 0;
    const start = performance.now();
    const end = start + (seconds * 1000) / 5;
    let now = start;
    while (now < end) {
      for (let k = 0; k < batch; k++) op(i + n++);
      now = performance.now();
    }
    rounds.push(((now - start) * 1000) / n);
  }
  rounds.sort((a, b) => a - b);
  const us = rounds[2]!;
  return { name, usPerOp: us, opsPerSecond: 1e6 / us };
}

/** The rows as an aligned text table: name, µs per operation, operations per second. */
export function formatRateRows(rows: readonly RateRow[], nameHeader: string, usHeader: string): string {
  const width = Math.max(nameHeader.length, ...rows.map((r) => r.name.length));
  let out = `${nameHeader.padEnd(width)}  ${usHeader.padStart(12)}  ${'ops/s'.padStart(12)}\n`;
  for (const r of rows) {
    out += `${r.name.padEnd(width)}  ${r.usPerOp.toFixed(r.usPerOp < 10 ? 3 : 1).padStart(12)}  ${Math.round(r.opsPerSecond).toLocaleString('en-US').padStart(12)}\n`;
  }
  return out;
}
