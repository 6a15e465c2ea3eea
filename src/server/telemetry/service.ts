/**
 * Ingestion of sidecar and key server telemetry (POST /v1/telemetry, issue 11): the reporter is the
 * caller's live SVID, and it may only report edges it is a party to (reporter 'callee' → the callee is
 * itself, 'caller' → the caller is itself). `unseal` windows come only from a key server (an identity a
 * secret-policy record names) about its own unseals (reporter 'callee'): anyone else could otherwise
 * make an innocent identity look like it pulls unseals. Batches are rate limited per identity and
 * checked with the one rule set of the interchange format (validateTelemetryWindow, src/core/risk/
 * telemetry.ts); accepted windows go to a bounded table and to the `windows` listeners (the risk
 * engine). Windows are not audited one by one (volume); refusals are, sampled (routes.ts).
 */
import { EventEmitter } from 'node:events';
import { TesseraError } from '../../core/errors.js';
import { RateLimiter, type RateLimit } from '../../core/rate-limit.js';
import type { TelemetryWindow } from '../../core/risk/types.js';
import type { Store, StoredTelemetryRow, TelemetryQuery } from '../store/store.js';
import { body } from '../../common/api/validate.js';
import { validateTelemetryWindow } from '../../core/risk/telemetry.js';
import { gatewayAppPrefix, isUserId } from '../../core/wire/gateway.js';
import { parseSpiffeId } from '../../core/spiffe-id.js';

/** Whether gateway `name` (SVID `reporter`) may report `w`: people → its own apps, as callee, HTTP. */
function gatewayMayReport(reporter: string, name: string, w: TelemetryWindow): boolean {
  const td = parseSpiffeId(reporter).trustDomain;
  const prefix = gatewayAppPrefix(td, name);
  return w.reporter === 'callee' && (w.action ?? 'http') === 'http' && w.callee.startsWith(prefix) && w.callee.length > prefix.length && isUserId(td, w.caller);
}

export interface TelemetrySettings {
  /** Windows per second (and burst) each identity may ship; the burst must hold a full batch. */
  rateLimit: RateLimit;
  /** Rows kept in `telemetry_windows` (oldest pruned first). */
  maxRows: number;
  /** Rows older than this (by arrival) are pruned. */
  maxAgeMs: number;
}

/** Windows per POST. */
export const MAX_TELEMETRY_BATCH = 1000;
/** A full batch of windows with long SPIFFE IDs; the agent keeps its batches near 512 KiB. */
export const TELEMETRY_BODY_LIMIT = 1024 * 1024;

export const DEFAULT_TELEMETRY_SETTINGS: TelemetrySettings = {
  // An agent with 1000 edges on both lanes at 5 s windows ships 400 windows/s; the burst covers an
  // agent draining its queue (10,000 windows) after an outage.
  rateLimit: { perSecond: 500, burst: 10_000 },
  maxRows: 200_000,
  maxAgeMs: 7 * 24 * 3600_000,
};

export type TelemetrySink = (windows: readonly TelemetryWindow[], reporter: string) => void;

export class TelemetryService {
  readonly #limiter: RateLimiter;
  readonly #events = new EventEmitter();
  /** Calls the reporting agents could not attribute to an edge (their edge bound), as they report them. */
  unattributed = 0;

  /**
   * `isKeyServer`: whether a SPIFFE ID is a key server (named by a secret-policy record); without it,
   * `unseal` windows are refused from everyone.
   */
  constructor(private readonly store: Store, readonly settings: TelemetrySettings = DEFAULT_TELEMETRY_SETTINGS, private readonly now: () => number = Date.now,
    private readonly isKeyServer?: (spiffeId: string) => Promise<boolean>,
    private readonly gatewayOf?: (spiffeId: string) => Promise<string | undefined>) {
    if (settings.rateLimit.burst < MAX_TELEMETRY_BATCH) throw new TesseraError('TESSERA_CONFIG_INVALID', `the telemetry rate limit's burst must be at least ${MAX_TELEMETRY_BATCH} (one full batch)`);
    if (!Number.isSafeInteger(settings.maxRows) || settings.maxRows < 1) throw new TesseraError('TESSERA_CONFIG_INVALID', 'telemetry maxRows must be a positive integer');
    this.#limiter = new RateLimiter(settings.rateLimit);
    // Listeners are the coordinator's (the risk engine): no warning for a handful of them.
    this.#events.setMaxListeners(50);
  }

  /**
   * The sink of accepted windows: `fn` is called once per accepted batch, after it is stored, with
   * the windows and their reporter. Returns the function that removes it. A listener that throws
   * does not fail the batch (the agent would retry windows already stored).
   */
  onWindows(fn: TelemetrySink): () => void {
    const wrapped = (w: readonly TelemetryWindow[], r: string): void => {
      try {
        fn(w, r);
      } catch {
        /* the sink's problem, not the reporter's */
      }
    };
    this.#events.on('windows', wrapped);
    return () => this.#events.off('windows', wrapped);
  }

  /**
   * Accepts one batch shipped by `reporter` (a live identity). The whole batch is refused for a
   * malformed body (TESSERA_BAD_REQUEST) or window (TESSERA_TELEMETRY_INVALID), a window about an
   * edge the reporter is not a party to (TESSERA_FORBIDDEN), or the rate limit
   * (TESSERA_RATE_LIMITED with `retryAfterSeconds`). Nothing of a refused batch is stored.
   */
  async accept(reporter: string, input: unknown): Promise<{ accepted: number }> {
    const b = body(input, ['windows', 'dropped']);
    if (!Array.isArray(b.windows) || b.windows.length > MAX_TELEMETRY_BATCH) throw new TesseraError('TESSERA_BAD_REQUEST', `"windows" must be a list of at most ${MAX_TELEMETRY_BATCH} telemetry windows`);
    const dropped = b.dropped;
    if (dropped !== undefined && (typeof dropped !== 'number' || !Number.isSafeInteger(dropped) || dropped < 0)) throw new TesseraError('TESSERA_BAD_REQUEST', '"dropped" must be a non-negative integer');
    const cost = Math.max(1, b.windows.length);
    if (!this.#limiter.take(reporter, cost)) {
      const err = new TesseraError('TESSERA_RATE_LIMITED', `this identity ships more than ${this.#limiter.limit.perSecond} telemetry windows per second; retry later`);
      throw Object.assign(err, { retryAfterSeconds: this.#limiter.retryAfterSeconds(reporter, cost) });
    }
    const windows = (b.windows as unknown[]).map((v, i) => {
      const w = validateTelemetryWindow(v, { window: i });
      w.action ??= 'http';
      return w;
    });
    let unseals = false;
    let gateway: string | undefined | null = null;
    for (const [i, w] of windows.entries()) {
      const party = w.reporter === 'callee' ? w.callee : w.caller;
      if (party !== reporter) {
        // A gateway for people reports the requests of people (callers in the /user tree) to its own
        // apps (callees under spiffe://<td>/tessera/gateway/<its name>/app/, a reserved tree no
        // workload holds), as their callee: it can misreport only its own users' traffic to its own apps.
        if (gateway === null) gateway = await this.gatewayOf?.(reporter);
        if (gateway === undefined || !gatewayMayReport(reporter, gateway, w)) {
          throw new TesseraError('TESSERA_FORBIDDEN', `window ${i}: a sidecar reports only edges it is a party to (reporter "${w.reporter}" must be the ${w.reporter}, ${reporter})`);
        }
      }
      if (w.action === 'unseal') unseals = true;
    }
    if (unseals && !(await this.isKeyServer?.(reporter))) throw new TesseraError('TESSERA_FORBIDDEN', `only a key server named by a secret policy reports unseals (${reporter} is none)`);
    if (typeof dropped === 'number') this.unattributed += dropped;
    if (windows.length === 0) return { accepted: 0 };
    const now = this.now();
    await this.store.insertTelemetry(windows.map((window) => ({ reportedBy: reporter, receivedAt: now, window })), { maxRows: this.settings.maxRows, maxAgeMs: this.settings.maxAgeMs, now });
    this.#events.emit('windows', windows, reporter);
    return { accepted: windows.length };
  }

  list(q: TelemetryQuery): Promise<StoredTelemetryRow[]> {
    return this.store.listTelemetry(q);
  }
}
