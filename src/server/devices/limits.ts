/**
 * Posture reports each device may send (`tessera server --device-posture-rate-limit`): every
 * accepted report is an audit record, so without a limit one device could flood the audit log.
 * The device agent reports every 5 minutes by default (`tessera device run --interval`); one a
 * 10 s on average with bursts of 30 leaves room for short intervals, restarts and one-shot
 * `tessera device report` runs. Separate from service.ts so that the CLI can show it cheaply.
 */
import { parseRateLimit, type RateLimit } from '../../core/rate-limit.js';

export const DEFAULT_POSTURE_RATE_LIMIT: RateLimit = { perSecond: 0.1, burst: 30 };

/** `--device-posture-rate-limit PER_SECOND[:BURST]`. */
export function parsePostureRateLimit(v: string): RateLimit {
  return parseRateLimit(v, '--device-posture-rate-limit');
}
