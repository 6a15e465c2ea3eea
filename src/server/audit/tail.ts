import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { setImmediate as yieldTurn, setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { exportRecord } from '../../core/audit-export.js';
import type { AuditTailEnd } from '../../core/wire/control-plane.js';
import { queryInt, queryStr } from '../../common/api/validate.js';
import { adminCaller, audited } from '../api/handlers.js';
import type { ServerContext } from '../context.js';

export interface TailSettings {
  /** How often a following stream looks for new records once it has caught up. */
  pollMs: number;
  /** An empty line after this long without a record, so idle connections are not cut. */
  keepAliveMs: number;
  /** Records read from the store at a time (memory bound per stream). */
  pageSize: number;
}

export const DEFAULT_TAIL_SETTINGS: TailSettings = { pollMs: 250, keepAliveMs: 15_000, pageSize: 500 };

/**
 * GET /v1/audit/tail?after=ID[&follow=true] (admin): every record after ID, in order, as NDJSON
 * (AuditExportRecord lines), then an AuditTailEnd line; with follow, the stream stays open and
 * carries each new record as it is stored, until the client goes away or the server stops.
 *
 * One request for the whole tail, audited once (`audit.tail`, stored before the first byte is
 * sent): a client that polled GET /v1/audit instead would add an `audit.read` record per poll, which
 * the next poll would return, for ever. The stream polls the store (an indexed read every
 * `pollMs` once caught up) rather than waiting on an in-process event, because other worker
 * processes of `--workers N` append to the same store.
 */
export function auditTailRoute(app: FastifyInstance, ctx: ServerContext, settings: TailSettings = DEFAULT_TAIL_SETTINGS): void {
  app.get('/v1/audit/tail', async (req, reply) => {
    const { after, follow } = await audited(ctx, req, 'audit.tail', async (ev) => {
      await adminCaller(ctx, req, ev, 'admin:audit.tail');
      const q = {
        after: queryInt(req.query, 'after', 0, 0, Number.MAX_SAFE_INTEGER),
        follow: queryStr(req.query, 'follow', /^(true|false)$/) === 'true',
      };
      Object.assign(ev.detail, q);
      ev.succeed();
      return q;
    });
    const out = new PassThrough();
    const stop = new AbortController();
    reply.raw.on('close', () => stop.abort());
    void pump(ctx, out, after, follow, settings, stop.signal);
    void reply.type('application/x-ndjson').header('cache-control', 'no-store');
    return out;
  });
}

async function pump(ctx: ServerContext, out: PassThrough, after: number, follow: boolean, s: TailSettings, signal: AbortSignal): Promise<void> {
  let last = after;
  let lastWrite = Date.now();
  try {
    while (!signal.aborted) {
      const page = await ctx.audit.page(last, s.pageSize);
      for (const { record, leafHash } of page) {
        if (!out.write(`${JSON.stringify(exportRecord(record, leafHash))}\n`)) await once(out, 'drain', { signal });
        last = record.id;
        lastWrite = Date.now();
      }
      if (page.length === s.pageSize) {
        await yieldTurn(); // a long backlog is sent page by page without holding the event loop
        continue;
      }
      if (!follow) {
        out.end(`${JSON.stringify({ end: true, last_id: last } satisfies AuditTailEnd)}\n`);
        return;
      }
      if (Date.now() - lastWrite >= s.keepAliveMs) {
        out.write('\n');
        lastWrite = Date.now();
      }
      await sleep(s.pollMs, undefined, { signal });
    }
  } catch (err) {
    if (!signal.aborted) ctx.log.warn('audit tail stream ended by an error', { error: (err as Error).message });
  }
  out.destroy();
}
