/**
 * At most `perSecond` events of each kind per wall-clock second pass; the rest are only counted.
 * For audit records and log lines about events anyone can cause at will (refused handshakes,
 * denied requests): the counters stay exact while the records stay bounded.
 *
 * @example
 * const sampler = new PerSecondSampler(10);
 * if (sampler.take('TESSERA_AUTH_INVALID', Date.now())) record(...); // else counted in sampler.skipped
 */
export class PerSecondSampler {
  #second = 0;
  /** Passed per kind in the current second (cleared each second, so it never outgrows one second's events). */
  readonly #taken = new Map<string, number>();
  /** Events that did not pass, over the sampler's life. */
  skipped = 0;

  constructor(readonly perSecond: number) {}

  take(kind: string, now: number): boolean {
    const second = Math.floor(now / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#taken.clear();
    }
    const n = this.#taken.get(kind) ?? 0;
    if (n >= this.perSecond) {
      this.skipped += 1;
      return false;
    }
    this.#taken.set(kind, n + 1);
    return true;
  }
}
