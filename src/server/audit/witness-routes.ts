import type { FastifyInstance } from 'fastify';
import { TesseraError } from '../../core/errors.js';
import { RateLimiter, type RateLimit } from '../../core/rate-limit.js';
import { MAX_WITNESS_NOTE_CHARS, noteHash, WITNESS_ALARM_KINDS } from '../../core/witness.js';
import { adminCaller, audited, liveOrAdminCaller } from '../api/handlers.js';
import { body, int, reqStr } from '../../common/api/validate.js';
import type { ServerContext } from '../context.js';
import type { AuditCosignatureResponse, WitnessAlarmResponse, WitnessTreeRef } from '../../core/wire/control-plane.js';

/** Per caller: a burst of 10 alarms, then one a minute. A witness raises one per distinct bad checkpoint. */
export const DEFAULT_ALARM_RATE: RateLimit = { perSecond: 1 / 60, burst: 10 };
/** An alarm carries one note of at most 16 KiB plus a few short fields. */
const ALARM_BODY_LIMIT = 32 * 1024;
const MAX_MESSAGE = 1024;
const ROOT_B64 = /^(?:[A-Za-z0-9+/]{43}=)?$/;
const HEX64 = /^[0-9a-f]{64}$/;
const PRINTABLE = /^[\x20-\x7e]*$/;

function bad(message: string): TesseraError {
  return new TesseraError('TESSERA_BAD_REQUEST', message);
}

function treeRef(v: unknown, field: string): WitnessTreeRef {
  const o = body(v, ['size', 'root_hash']);
  const size = int(o, 'size', { min: -1, max: Number.MAX_SAFE_INTEGER })!;
  const root = o.root_hash;
  if (typeof root !== 'string' || !ROOT_B64.test(root)) throw bad(`"${field}.root_hash" must be base64 of 32 bytes (or empty when unreadable)`);
  return { size, root_hash: root };
}

/**
 * The witnesses' side of the audit log: agents (any live SVID) and `tessera audit witness` (the admin)
 * report alarms, which become `audit.witness_alarm` records; the admin stores witnesses' cosignatures.
 */
export function witnessRoutes(app: FastifyInstance, ctx: ServerContext, alarmRate: RateLimit = DEFAULT_ALARM_RATE): void {
  const limiter = new RateLimiter(alarmRate);

  app.post('/v1/audit/alarms', { bodyLimit: ALARM_BODY_LIMIT }, (req, reply) => audited(ctx, req, 'audit.witness_alarm', async (ev) => {
    const caller = await liveOrAdminCaller(ctx, req, ev, 'admin:audit.witness_alarm');
    if (!limiter.take(caller.spiffeId)) {
      void reply.header('retry-after', String(limiter.retryAfterSeconds(caller.spiffeId)));
      throw new TesseraError('TESSERA_RATE_LIMITED', 'too many witness alarms from this identity; retry later');
    }
    const b = body(req.body, ['kind', 'message', 'held', 'seen', 'note', 'note_hash']);
    const kind = b.kind;
    if (typeof kind !== 'string' || !(WITNESS_ALARM_KINDS as readonly string[]).includes(kind)) throw bad(`"kind" must be one of ${WITNESS_ALARM_KINDS.join(', ')}`);
    const message = reqStr(b, 'message', { max: MAX_MESSAGE });
    if (!PRINTABLE.test(message)) throw bad('"message" must be printable ASCII');
    const held = treeRef(b.held, 'held');
    const seen = treeRef(b.seen, 'seen');
    const note = b.note;
    if (typeof note !== 'string' || note.length > MAX_WITNESS_NOTE_CHARS) throw bad(`"note" must be text of at most ${MAX_WITNESS_NOTE_CHARS} characters`);
    const hash = reqStr(b, 'note_hash', { pattern: HEX64 });
    // The hash is of the whole note the witness saw; a clipped note cannot be checked against it.
    if (note.length < MAX_WITNESS_NOTE_CHARS && noteHash(note) !== hash) throw bad('"note_hash" is not the SHA-256 of "note"');
    ev.target = `${held.size} -> ${seen.size}`;
    Object.assign(ev.detail, { kind, message, held, seen, note_hash: hash, note });
    ctx.metrics.recordWitnessAlarm();
    ctx.log.error('audit witness alarm reported', { code: 'TESSERA_AUDIT_WITNESS_ALARM', witness: caller.spiffeId, kind, held, seen });
    ev.succeed();
    return reply.code(201).send({ recorded: true } satisfies WitnessAlarmResponse);
  }));

  app.post('/v1/audit/cosignatures', (req, reply) => audited(ctx, req, 'audit.cosign', async (ev) => {
    await adminCaller(ctx, req, ev, 'admin:audit.cosign');
    const b = body(req.body, ['size', 'witness_key', 'line']);
    const size = int(b, 'size', { min: 0, max: Number.MAX_SAFE_INTEGER })!;
    const witnessKey = reqStr(b, 'witness_key', { max: 2048 });
    const line = reqStr(b, 'line', { max: 4096 });
    ev.detail.size = size;
    const rec = await ctx.tlog.addCosignature(size, witnessKey, line);
    ev.target = `${rec.name}+${rec.keyId}`;
    ev.detail.timestamp = rec.timestamp;
    ev.succeed();
    return reply.code(201).send({ stored: true, size, name: rec.name, key_id: rec.keyId, timestamp: rec.timestamp } satisfies AuditCosignatureResponse);
  }));
}
