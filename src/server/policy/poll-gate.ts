/**
 * Limits on GET /v1/policy/bundle per caller identity. Every enrolled identity may read the bundle, so
 * without them one identity (a compromised workload, or one the policy gives nothing) could make the
 * control plane build an audit consistency proof for an arbitrary `witness=N` in a tight loop (N not
 * held by any agent misses the proof cache), and hold open as many long polls as it has sockets.
 * A token bucket per identity bounds the requests, a counter per identity the long polls open at
 * once; both are per process (`--workers N` allows N times as much), like the decision limits.
 */
import { TesseraError } from '../../core/errors.js';
import { parseRateLimit, RateLimiter, type RateLimit } from '../../core/rate-limit.js';

export interface BundlePollSettings {
  /** Requests per identity. */
  rateLimit: RateLimit;
  /** Long polls (timeout_seconds > 0) one identity may hold open at once. */
  maxPolls: number;
}

/**
 * An agent asks once per watch period (1 s at the least, 25 s by default) and once more after each
 * bundle change, and changes come in storms (entries registered by a script, the risk engine acting on
 * many identities): 20 a second with bursts of 100 keeps an agent out of the limit through those, and
 * still bounds a flooding identity to 20 answers (and uncached proofs) a second. One agent holds one long
 * poll; 4 leave room for a restart whose old connection the control plane has not yet seen close.
 */
export const DEFAULT_BUNDLE_POLL_SETTINGS: BundlePollSettings = { rateLimit: { perSecond: 20, burst: 100 }, maxPolls: 4 };

/** `--bundle-rate-limit PER_SECOND[:BURST]` and `--bundle-max-polls N`. */
export function parseBundlePollSettings(rate: string, maxPolls: string): BundlePollSettings {
  const rateLimit = parseRateLimit(rate, '--bundle-rate-limit');
  const n = /^\d{1,4}$/.test(maxPolls.trim()) ? Number(maxPolls) : NaN;
  if (!(n >= 1 && n <= 1000)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--bundle-max-polls must be an integer from 1 to 1000');
  return { rateLimit, maxPolls: n };
}

/** Refusal of a request over the limits: the code, and the Retry-After (seconds) to send with it. */
export class PollRefused extends TesseraError {
  constructor(code: 'TESSERA_RATE_LIMITED' | 'TESSERA_POLL_LIMIT', message: string, readonly retryAfterSeconds: number) {
    super(code, message);
  }
}

export class BundlePollGate {
  readonly #limiter: RateLimiter;
  readonly #open = new Map<string, number>();

  constructor(readonly settings: BundlePollSettings, now: () => number = Date.now) {
    if (!Number.isInteger(settings.maxPolls) || settings.maxPolls < 1) throw new TesseraError('TESSERA_CONFIG_INVALID', 'maxPolls must be an integer >= 1');
    this.#limiter = new RateLimiter(settings.rateLimit, now);
  }

  /**
   * Admits one request of `id` (throws PollRefused over a limit). A long poll holds a slot until the
   * returned release runs (idempotent); a request that does not wait takes only a token.
   */
  admit(id: string, longPoll: boolean): () => void {
    // The slot is checked first: a refused long poll should not also spend a token.
    const open = this.#open.get(id) ?? 0;
    if (longPoll && open >= this.settings.maxPolls) {
      throw new PollRefused('TESSERA_POLL_LIMIT', `this identity already holds ${open} policy long polls; retry when one ends`, 1);
    }
    if (!this.#limiter.take(id)) {
      throw new PollRefused('TESSERA_RATE_LIMITED', 'too many policy bundle requests from this identity; retry later', this.#limiter.retryAfterSeconds(id));
    }
    if (!longPoll) return () => {};
    this.#open.set(id, open + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.#open.get(id) ?? 1) - 1;
      if (n <= 0) this.#open.delete(id);
      else this.#open.set(id, n);
    };
  }

  /** Long polls `id` holds open now (for tests and metrics). */
  openPolls(id: string): number {
    return this.#open.get(id) ?? 0;
  }
}
