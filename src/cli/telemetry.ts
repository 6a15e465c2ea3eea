import type { Command } from 'commander';
import { parseDuration } from '../core/duration.js';
import { TesseraError } from '../core/errors.js';
import type { TelemetryWindow } from '../core/risk/types.js';
import { isSpiffeId } from '../core/spiffe-id.js';
import type { TelemetryListResponse } from '../core/wire/control-plane.js';
import { withAdmin, type Run } from './context.js';

type Json = Record<string, unknown>;

/** Rows fetched per request while exporting. */
const PAGE = 1000;

/**
 * `--since`: an ISO 8601 time (2026-12-03T10:00:00Z) or a duration meaning that long ago (`1h`).
 * Milliseconds since the epoch; TESSERA_CONFIG_INVALID otherwise.
 */
export function parseSince(value: string, now = Date.now()): number {
  if (/^\d{4}-\d{2}-\d{2}/.test(value)) {
    const t = Date.parse(value);
    if (!Number.isFinite(t) || t < 0) throw new TesseraError('TESSERA_CONFIG_INVALID', '--since must be an ISO 8601 time (e.g. 2026-12-03T10:00:00Z) or a duration ago (e.g. 1h)');
    return t;
  }
  return Math.max(0, now - parseDuration(value, '--since'));
}

/** The interchange record alone (the stored row's id and reporter removed), fields in the type's order. */
function interchange(w: TelemetryListResponse['windows'][number]): TelemetryWindow {
  const { id: _id, reported_by: _by, ...window } = w;
  return window;
}

/** `tessera telemetry ...`: the sidecars' telemetry windows stored by the control plane (admin). */
export function telemetryCommands(program: Command, run: Run): void {
  const telemetry = program.command('telemetry').description('sidecar telemetry stored by the control plane (admin)');
  telemetry.command('export')
    .description('write stored telemetry windows as JSON lines (one TelemetryWindow per line, oldest first): the input of `tessera risk replay`')
    .option('--since <time>', 'only windows starting at or after this: ISO 8601 time, or a duration ago (e.g. 1h)')
    .option('--identity <spiffe-id>', 'only windows of edges where this identity is the caller or the callee')
    .addHelpText('after', '\nExample: tessera telemetry export --since 1h > traffic.jsonl')
    .action(run(async (g, o: Json) => {
      const q = new URLSearchParams({ limit: String(PAGE) });
      if (o.since !== undefined) q.set('since', String(parseSince(String(o.since))));
      if (o.identity !== undefined) {
        if (!isSpiffeId(String(o.identity))) throw new TesseraError('TESSERA_CONFIG_INVALID', '--identity must be a SPIFFE ID');
        q.set('identity', String(o.identity));
      }
      let after = 0;
      let total = 0;
      await withAdmin(g, async (c) => {
        for (;;) {
          q.set('after', String(after));
          const res = await c.call<TelemetryListResponse>('GET', `/v1/telemetry?${q}`);
          if (res.windows.length === 0) break;
          const text = res.windows.map((w) => `${JSON.stringify(interchange(w))}\n`).join('');
          if (!process.stdout.write(text)) await new Promise((resolve) => process.stdout.once('drain', resolve));
          total += res.windows.length;
          after = res.windows[res.windows.length - 1]!.id;
          if (res.windows.length < PAGE) break;
        }
      });
      process.stderr.write(`tessera: exported ${total} telemetry window(s)\n`);
    }));
}
