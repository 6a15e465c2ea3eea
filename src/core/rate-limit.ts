/**
 * Per-identity token buckets: the key servers' /v1/evaluate and the control plane's decision
 * ingestion (POST /v1/decisions) limit each caller identity with one. In memory, per process.
 */
import { TesseraError } from './errors.js';

export interface RateLimit {
  /** Tokens added per second. */
  perSecond: number;
  /** Bucket size. */
  burst: number;
}

const MAX_BUCKETS = 10_000;

/** One token bucket per identity; full buckets are forgotten when the table grows large. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(readonly limit: RateLimit, private readonly now: () => number = Date.now) {
    if (!(limit.perSecond > 0) || !(limit.burst >= 1)) throw new TesseraError('TESSERA_CONFIG_INVALID', 'the rate limit needs perSecond > 0 and burst >= 1');
  }

  /** Takes `cost` tokens from `id`'s bucket if it holds that many (all or nothing). */
  take(id: string, cost = 1): boolean {
    const now = this.now();
    let b = this.buckets.get(id);
    if (b === undefined) {
      if (this.buckets.size >= MAX_BUCKETS) this.prune(now);
      b = { tokens: this.limit.burst, at: now };
      this.buckets.set(id, b);
    } else {
      b.tokens = Math.min(this.limit.burst, b.tokens + ((now - b.at) / 1000) * this.limit.perSecond);
      b.at = now;
    }
    if (b.tokens < cost) return false;
    b.tokens -= cost;
    return true;
  }

  /** Tokens `id`'s bucket holds now (without taking any). */
  peek(id: string): number {
    const b = this.buckets.get(id);
    if (b === undefined) return this.limit.burst;
    return Math.min(this.limit.burst, b.tokens + ((this.now() - b.at) / 1000) * this.limit.perSecond);
  }

  /** Whole seconds until `id`'s bucket holds `cost` tokens (at least 1): a Retry-After value. */
  retryAfterSeconds(id: string, cost = 1): number {
    const b = this.buckets.get(id);
    const missing = Math.max(0, cost - (b?.tokens ?? this.limit.burst));
    return Math.max(1, Math.ceil(missing / this.limit.perSecond));
  }

  private prune(now: number): void {
    for (const [id, b] of this.buckets) {
      if (b.tokens + ((now - b.at) / 1000) * this.limit.perSecond >= this.limit.burst) this.buckets.delete(id);
    }
    // Still full of active identities: drop the oldest (insertion order) rather than grow without bound.
    while (this.buckets.size >= MAX_BUCKETS) {
      const first = this.buckets.keys().next();
      if (first.done) break;
      this.buckets.delete(first.value);
    }
  }
}

/** `PER_SECOND[:BURST]`, e.g. `20:40`; the burst defaults to twice the rate (at least 1). */
export function parseRateLimit(v: string, flag = '--rate-limit'): RateLimit {
  const m = /^(\d{1,9}(?:\.\d{1,6})?)(?::(\d{1,9}))?$/.exec(v.trim());
  const perSecond = m ? Number(m[1]) : NaN;
  const burst = m?.[2] !== undefined ? Number(m[2]) : Math.max(1, Math.ceil(perSecond * 2));
  if (!m || !(perSecond > 0) || !(burst >= 1)) throw new TesseraError('TESSERA_CONFIG_INVALID', `${flag} must be PER_SECOND[:BURST] with PER_SECOND > 0 and BURST >= 1, e.g. 20:40`);
  return { perSecond, burst };
}
