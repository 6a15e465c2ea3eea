/** The command line shared by the small benchmarks: `[--seconds S] [--json]`. */
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
    else if (a === '--seconds') {
      const v = Number(argv[++i]);
      if (!(v > 0 && v <= 60)) usage('--seconds must be in (0, 60]');
      o.seconds = v;
    } else usage(`unknown argument ${a}`);
  }
  return o;
}
