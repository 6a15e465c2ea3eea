/**
 * The counters of one edge (caller → callee, one reporter, one action class) during one telemetry
 * window. The proxies touch these per request (http) or per connection (tcp): integer additions,
 * one histogram bucket, one path hash; nothing is allocated or sorted per request. Percentiles
 * and the distinct-path count are computed once, when the window closes.
 */

/**
 * Upper bounds (ms) of the latency buckets: 0.25 ms (a local denial) to 60 s (the proxy's
 * response timeout); one more bucket above the last bound. A percentile is interpolated
 * linearly inside its bucket, so its error is at most the bucket's width (about a third of the
 * value above 1 ms) and it never exceeds the largest latency observed.
 */
export const LATENCY_BOUNDS_MS: readonly number[] = Object.freeze([
  0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10_000, 30_000, 60_000,
]);
const BOUNDS = LATENCY_BOUNDS_MS as number[];
const NB = BOUNDS.length;

/** Distinct paths counted exactly per edge and window; beyond it, an estimate (see EdgeStats.path). */
export const DEFAULT_MAX_EXACT_PATHS = 1024;
/** Bits of the linear-counting bitmap (1 KiB), allocated only for an edge past the exact cap. */
const BITMAP_BITS = 8192;

/** FNV-1a over the path's UTF-16 code units up to the query (`?`), folded to 30 bits (a V8 small integer). */
export function pathHash(path: string): number {
  let h = 0x811c9dc5;
  const n = path.length;
  for (let i = 0; i < n; i++) {
    const c = path.charCodeAt(i);
    if (c === 63 /* ? */) break;
    h = Math.imul(h ^ c, 0x01000193);
  }
  return (h ^ (h >>> 30)) & 0x3fffffff;
}

export class EdgeStats {
  requests = 0;
  /** 5xx answers (the app's or the proxy's) and connections ending in a reset or abnormal close. */
  errors = 0;
  denials = 0;
  /** Bytes received from the peer / sent to it, on the wire between the sidecars. */
  bytesIn = 0;
  bytesOut = 0;
  /** Latency samples per bucket; the last bucket is above LATENCY_BOUNDS_MS's last bound. */
  readonly hist = new Uint32Array(NB + 1);
  samples = 0;
  maxMs = 0;
  /** Path hashes seen, exactly, until `maxExact` distinct ones; then undefined and `bitmap` takes over. */
  paths: Set<number> | undefined;
  bitmap: Uint32Array | undefined;

  constructor(
    /** The other end of the edge (the caller for a callee's report, the callee for a caller's). */
    readonly peer: string,
    /** The collector's window generation this belongs to (a stale reference is detected by it). */
    readonly gen: number,
    private readonly maxExact = DEFAULT_MAX_EXACT_PATHS,
  ) {}

  /** One latency sample: a short scan of the bucket bounds from the fast end. */
  latency(ms: number): void {
    let i = 0;
    while (i < NB && ms > BOUNDS[i]!) i++;
    this.hist[i]!++;
    this.samples++;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  /**
   * One request path. Exact (a set of 30-bit hashes, so two paths colliding count once) up to
   * `maxExact` distinct paths; past it the hashes go to a 8192-bit bitmap and the window reports
   * the linear-counting estimate m·ln(m/zeros) (Whang et al. 1990): within a few percent up to
   * ~20,000 distinct paths, and at most m·ln(m) ≈ 73,800 once the bitmap is full.
   */
  path(p: string): void {
    const h = pathHash(p);
    const bits = this.bitmap;
    if (bits !== undefined) {
      bits[(h >>> 5) & (BITMAP_BITS / 32 - 1)]! |= 1 << (h & 31);
      return;
    }
    const set = (this.paths ??= new Set<number>());
    set.add(h);
    if (set.size > this.maxExact) {
      const b = new Uint32Array(BITMAP_BITS / 32);
      for (const x of set) b[(x >>> 5) & (BITMAP_BITS / 32 - 1)]! |= 1 << (x & 31);
      this.bitmap = b;
      this.paths = undefined;
    }
  }

  /** Distinct paths: exact below the cap, estimated above it. */
  distinctPaths(): number {
    if (this.bitmap === undefined) return this.paths?.size ?? 0;
    let zeros = 0;
    for (const w of this.bitmap) zeros += 32 - popcount(w);
    const m = BITMAP_BITS;
    const estimate = Math.round(m * Math.log(m / Math.max(zeros, 1)));
    return Math.max(estimate, this.maxExact + 1);
  }

  /** The q-quantile (0 < q ≤ 1) of the latency samples in ms, interpolated inside its bucket; 0 without samples. */
  percentile(q: number): number {
    const n = this.samples;
    if (n === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * n));
    let seen = 0;
    for (let i = 0; i <= NB; i++) {
      const c = this.hist[i]!;
      if (c === 0) continue;
      if (seen + c >= rank) {
        const lo = i === 0 ? 0 : BOUNDS[i - 1]!;
        const hi = i === NB ? this.maxMs : BOUNDS[i]!;
        const v = lo + ((hi - lo) * (rank - seen)) / c;
        return round3(Math.min(v, this.maxMs));
      }
      seen += c;
    }
    return round3(this.maxMs);
  }
}

function popcount(x: number): number {
  let v = x - ((x >>> 1) & 0x55555555);
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}
