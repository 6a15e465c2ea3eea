/** `tessera audit tail`: the audit log as JSON lines or OCSF events on stdout, for a SIEM pipe. */
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import { adminClient } from '../admin/clients.js';
import { toOcsf } from '../core/audit-export.js';
import { TesseraError, isTesseraError } from '../core/errors.js';
import type { AuditExportRecord, AuditTailEnd } from '../core/wire/control-plane.js';
import { count, reportError, type GlobalOptions } from './context.js';

type Json = Record<string, unknown>;

/**
 * Registers `audit tail`. Its errors go to stderr even with --json (stdout carries records only), so
 * it does not use the shared `run` wrapper's reporting.
 */
export function tailCommand(audit: Command): void {
  audit.command('tail')
    .description('print audit records as JSON lines (Tessera\'s record schema, with leaf hashes) or OCSF events, optionally following new ones')
    .option('--from <id>', 'start at this record id (inclusive)', '1')
    .option('--follow', 'keep the stream open and print records as they are stored (SIGINT/SIGTERM end it, exit 0)')
    .option('--ocsf', 'print OCSF 1.1.0 events instead of Tessera records')
    .addHelpText('after', '\nstdout carries one record per line and nothing else; errors go to stderr. --json (the default format)\n'
      + 'prints records in Tessera\'s schema: id, ts, actor, action, target, outcome, code, detail, [principal,] leaf_hash.\n'
      + 'With --follow, a lost connection is retried with backoff from the record after the last one printed.\n'
      + 'Exit: 0 done (or stopped by a signal), 1 failed, 2 bad arguments, 3 control plane unreachable, 4 refused.')
    .action(async (o: Json, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      try {
        await tail(g, o);
      } catch (err) {
        process.exitCode = reportError(err, false);
      }
    });
}

async function tail(g: GlobalOptions, o: Json): Promise<void> {
  if (g.json && o.ocsf) throw new TesseraError('TESSERA_CONFIG_INVALID', '--json and --ocsf exclude each other');
  const from = count('--from', Number.MAX_SAFE_INTEGER)(String(o.from));
  const follow = Boolean(o.follow);
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // A reader that went away (`| head`) is a normal end, not an error.
  const onStdoutError = (err: NodeJS.ErrnoException): void => {
    if (err.code === 'EPIPE') stop.abort();
  };
  process.stdout.on('error', onStdoutError);
  let last = from - 1;
  let ended = false;
  const onLine = async (line: string): Promise<void> => {
    const value = JSON.parse(line) as AuditExportRecord | AuditTailEnd;
    if ('end' in value) {
      ended = true;
      return;
    }
    // Records come in id order without gaps: anything else is a broken stream, never skipped silently.
    if (value.id !== last + 1) throw new TesseraError('TESSERA_SERVER_UNREACHABLE', `the stream skipped from record ${last} to ${value.id}`);
    last = value.id;
    if (stop.signal.aborted) return;
    if (!process.stdout.write(`${o.ocsf ? JSON.stringify(toOcsf(value)) : line}\n`)) await once(process.stdout, 'drain', { signal: stop.signal }).catch(() => {});
  };
  const client = adminClient(g);
  let connectedOnce = false;
  let backoff = 1000;
  try {
    for (;;) {
      const q = new URLSearchParams({ after: String(last), ...(follow ? { follow: 'true' } : {}) });
      const before = last;
      try {
        await client.stream(`/v1/audit/tail?${q}`, (line) => { connectedOnce = true; return onLine(line); }, { signal: stop.signal });
        if (stop.signal.aborted) return;
        if (!follow) {
          if (!ended) throw new TesseraError('TESSERA_SERVER_UNREACHABLE', `the stream ended early after record ${last}`);
          return;
        }
        throw new TesseraError('TESSERA_SERVER_UNREACHABLE', 'the control plane ended the stream');
      } catch (err) {
        if (stop.signal.aborted) return;
        // Following: a lost control plane is waited for; refusals and bad requests are final.
        const retry = follow && (connectedOnce || last > before) && isTesseraError(err) && err.code === 'TESSERA_SERVER_UNREACHABLE';
        if (!retry) throw err;
        if (last > before) backoff = 1000;
        process.stderr.write(`tessera: ${(err as Error).message}; reconnecting in ${backoff / 1000}s from record ${last + 1}\n`);
        await sleep(backoff, undefined, { signal: stop.signal }).catch(() => {});
        if (stop.signal.aborted) return;
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  } finally {
    client.close();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
