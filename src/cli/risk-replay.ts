/**
 * `tessera risk replay FILE`: feeds a telemetry file (README "Telemetry format") through the risk engine
 * with the file's own clock and prints every state change it proposes.
 *
 * Order: the whole file is read and validated first (a bad line fails the replay before anything is
 * printed, naming the line), then the windows are sorted by `ts` (stable: equal times keep file order),
 * so files merged from several sidecars need no pre-sorting. Memory grows with the file: at most
 * {@link MAX_REPLAY_WINDOWS} windows.
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { TesseraError } from '../core/errors.js';
import { DEFAULT_RISK_CONFIG, parseRiskConfig, type RiskConfig } from '../core/risk/config.js';
import { RiskEngine } from '../core/risk/engine.js';
import { readTelemetry, windowStart } from '../core/risk/telemetry.js';
import type { RiskChange, TelemetryWindow } from '../core/risk/types.js';
import type { GlobalOptions, Run } from './context.js';

type Json = Record<string, unknown>;

export const MAX_REPLAY_WINDOWS = 5_000_000;

/** A risk configuration file's JSON (not yet validated); `what` names it in errors (`--config x.json`). */
export async function readRiskConfigFile(file: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `${what}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `${what}: not valid JSON`);
  }
}

async function loadConfig(file: string | undefined): Promise<RiskConfig> {
  if (file === undefined) return DEFAULT_RISK_CONFIG;
  return parseRiskConfig(await readRiskConfigFile(file, `--config ${file}`));
}

function speedOf(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !/^[0-9]+(\.[0-9]+)?$/.test(v) || !Number.isFinite(n) || n <= 0 || n > 1_000_000) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', '--speed must be a number above 0 and at most 1000000, e.g. 60 (one minute of telemetry per second)');
  }
  return n;
}

/** Reads and validates every window of FILE (`-`: stdin), sorted by time. */
export async function loadWindows(file: string): Promise<{ t: number; w: TelemetryWindow; lineNo: number }[]> {
  const source = file === '-' ? process.stdin : createReadStream(file);
  const out: { t: number; w: TelemetryWindow; lineNo: number }[] = [];
  try {
    for await (const { lineNo, window } of readTelemetry(source)) {
      if (out.length >= MAX_REPLAY_WINDOWS) throw new TesseraError('TESSERA_TELEMETRY_INVALID', `telemetry line ${lineNo}: more than ${MAX_REPLAY_WINDOWS} windows in one replay; split the file`);
      out.push({ t: windowStart(window), w: window, lineNo });
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES' || code === 'EISDIR') throw new TesseraError('TESSERA_CONFIG_INVALID', `${file}: cannot read it (${code})`);
    throw err;
  } finally {
    if (file !== '-') (source as ReturnType<typeof createReadStream>).destroy();
  }
  // Array.prototype.sort is stable (ES2019).
  return out.sort((a, b) => a.t - b.t);
}

/** One human line per change: time, identity, transition, score, then the reasons. */
export function formatChange(c: RiskChange): string {
  const head = `${new Date(c.time).toISOString()}  ${c.identity}  ${c.previous} -> ${c.state}  score ${c.score}`;
  return [head, ...c.reasons.map((r) => `    ${r.signal}${r.points !== undefined ? ` (+${r.points})` : ''}: ${r.text}`)].join('\n');
}

export function riskReplayCommand(risk: Command, run: Run): void {
  risk.command('replay')
    .description('feed a telemetry file (one JSON window per line) through the risk engine with the file\'s clock; print every state change')
    .argument('<file>', 'telemetry file, or - for stdin')
    .option('--speed <n>', 'replay N times real time (sleeping between windows); default: as fast as possible')
    .option('--as-fast-as-possible', 'no sleeping (the default)')
    .option('--config <file>', 'risk configuration, JSON (README "Risk engine"); default: the built-in defaults')
    .addHelpText('after', '\nLines may come in any order: the file is validated whole, then sorted by ts. A bad line stops the replay\n'
      + 'before any output: exit 1 with TESSERA_TELEMETRY_INVALID and the line number. --json prints one JSON object per\n'
      + 'change: {identity, time (ISO 8601), score, state, previous, reasons}; a summary goes to stderr.\n'
      + 'Exit: 0 done, 1 bad file, 2 bad options or config.')
    .action(run(async (g: GlobalOptions, file: string, o: Json) => {
      const speed = speedOf(o.speed);
      if (speed !== undefined && o.asFastAsPossible) throw new TesseraError('TESSERA_CONFIG_INVALID', '--speed and --as-fast-as-possible exclude each other');
      const config = await loadConfig(o.config as string | undefined);
      const windows = await loadWindows(file);
      const engine = new RiskEngine(config);
      let changes = 0;
      const print = (list: RiskChange[]): void => {
        for (const c of list) {
          changes++;
          process.stdout.write(g.json ? `${JSON.stringify({ ...c, time: new Date(c.time).toISOString() })}\n` : `${formatChange(c)}\n`);
        }
      };
      let last: number | undefined;
      for (const { t, w, lineNo } of windows) {
        if (speed !== undefined && last !== undefined && t > last) await sleep((t - last) / speed);
        last = t;
        try {
          print(engine.ingest(w));
        } catch (err) {
          // The engine refuses a window that does not fit it (window_s): name the line.
          if (err instanceof TesseraError && err.code === 'TESSERA_TELEMETRY_INVALID') throw new TesseraError(err.code, err.message.replace('telemetry window', `telemetry line ${lineNo}`));
          throw err;
        }
      }
      print(engine.flush());
      const s = engine.stats();
      process.stderr.write(`replayed ${s.windows} windows, ${s.identities} identities, ${s.edges} edges: ${changes} state change${changes === 1 ? '' : 's'}\n`);
    }));
}
