/**
 * Sidecar telemetry (issue 11, item 1): per window (default 5 s) and per edge — caller SPIFFE ID →
 * callee SPIFFE ID, action class http|tcp, as seen by one end — requests, errors, denials, bytes,
 * latency p50/p99, distinct paths and whether the edge is new to this agent. Both ends report: the
 * callee's inbound proxy (`reporter: 'callee'`) and the caller's outbound proxy (`reporter: 'caller'`).
 *
 * Hot path: a proxy holds a TelemetryLane (one per reporter and action class); per request or
 * connection it does one Map lookup by the peer's SPIFFE ID (already a string it has) and adds to
 * integer counters of the EdgeStats it gets (edge.ts). At each window boundary the collector asks
 * the proxies for their open connections' byte counts (`meter`), turns every edge with traffic into
 * a TelemetryWindow (src/core/risk/types.ts), hands them to `onWindows`, and starts new, empty maps.
 */
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../../core/files.js';
import { TesseraError } from '../../core/errors.js';
import type { TelemetryWindow } from '../../core/risk/types.js';
import { DEFAULT_MAX_EXACT_PATHS, EdgeStats } from './edge.js';

export const DEFAULT_WINDOW_SECONDS = 5;
/** Edges per window (all lanes together); calls on further edges are counted in `dropped`. */
export const DEFAULT_MAX_EDGES = 1000;
/** Edges remembered (and persisted) for `first_seen`; the oldest are forgotten past it. */
export const DEFAULT_MAX_SEEN = 10_000;
export const SEEN_FILE = 'telemetry-seen.json';

export interface TelemetryCollectorOptions {
  /** This agent's SPIFFE ID. */
  self: string;
  /** This agent's site (its entry's `site` attribute). */
  selfSite: string;
  /** A peer's site (from the policy bundle's entities); 'unknown' when not known. Called at window close only. */
  peerSite: (spiffeId: string) => string | undefined;
  /** Called at each window close with the windows that saw traffic (possibly none) and the calls not attributed since the last close. */
  onWindows: (windows: TelemetryWindow[], dropped: number) => void;
  windowSeconds?: number;
  maxEdges?: number;
  maxExactPaths?: number;
  /** Directory of the persisted `first_seen` edge list (`telemetry-seen.json`, 0600); none: kept in memory only. */
  dir?: string;
  maxSeen?: number;
  now?: () => number;
}

export type Reporter = 'caller' | 'callee';
/** `unseal`: a key server's POST /v1/evaluate answers (src/keyserver/node.ts), reported by the key server only. */
export type ActionClass = 'http' | 'tcp' | 'unseal';

/** What a proxy counts into: one reporter and action class. */
export class TelemetryLane {
  /** @internal the current window's edges, by peer SPIFFE ID. */
  map = new Map<string, EdgeStats>();

  constructor(private readonly c: TelemetryCollector, readonly reporter: Reporter, readonly action: ActionClass) {}

  /**
   * The counters of the edge with `peer` in the current window: one Map lookup. Past the window's
   * edge bound, a shared sink that is never reported (the call is counted in `dropped`).
   */
  edge(peer: string): EdgeStats {
    return this.map.get(peer) ?? this.c.newEdge(this, peer);
  }

  /** The edge again if `e` belongs to a closed window (a request that spanned a window boundary). */
  current(e: EdgeStats): EdgeStats {
    return e.gen === this.c.gen ? e : this.edge(e.peer);
  }

  /** Registers a function called just before each window closes (to count open connections' bytes); returns its removal. */
  meter(fn: () => void): () => void {
    return this.c.addMeter(fn);
  }
}

export class TelemetryCollector {
  /** The current window's generation: incremented at each close. */
  gen = 0;
  /** Calls not attributed to an edge because the window's edge bound was reached (since the last close). */
  dropped = 0;
  readonly windowMs: number;
  readonly #opts: TelemetryCollectorOptions;
  readonly #maxEdges: number;
  readonly #lanes: TelemetryLane[] = [];
  readonly #meters = new Set<() => void>();
  #edges = 0;
  #start: number;
  #sink: EdgeStats;
  #timer: NodeJS.Timeout | undefined;
  readonly #seen: Set<string>;
  readonly #maxSeen: number;
  #seenDirty = false;
  readonly #now: () => number;

  constructor(opts: TelemetryCollectorOptions) {
    const w = opts.windowSeconds ?? DEFAULT_WINDOW_SECONDS;
    if (!Number.isInteger(w) || w < 1 || w > 3600) throw new TesseraError('TESSERA_CONFIG_INVALID', 'the telemetry window must be a whole number of seconds from 1 to 3600');
    this.#opts = opts;
    this.windowMs = w * 1000;
    this.#maxEdges = opts.maxEdges ?? DEFAULT_MAX_EDGES;
    this.#maxSeen = opts.maxSeen ?? DEFAULT_MAX_SEEN;
    this.#now = opts.now ?? Date.now;
    this.#start = this.#windowStart(this.#now());
    this.#sink = new EdgeStats('', -1, 0);
    this.#seen = new Set(this.#loadSeen());
  }

  lane(reporter: Reporter, action: ActionClass): TelemetryLane {
    let l = this.#lanes.find((x) => x.reporter === reporter && x.action === action);
    if (l === undefined) {
      l = new TelemetryLane(this, reporter, action);
      this.#lanes.push(l);
    }
    return l;
  }

  /** @internal */
  newEdge(lane: TelemetryLane, peer: string): EdgeStats {
    if (this.#edges >= this.#maxEdges) {
      this.dropped++;
      return this.#sink;
    }
    this.#edges++;
    const e = new EdgeStats(peer, this.gen, this.#opts.maxExactPaths ?? DEFAULT_MAX_EXACT_PATHS);
    lane.map.set(peer, e);
    return e;
  }

  /** @internal */
  addMeter(fn: () => void): () => void {
    this.#meters.add(fn);
    return () => this.#meters.delete(fn);
  }

  /**
   * Windows are aligned on the epoch (a 5 s window starts at :00, :05, ...), so that the two ends
   * of an edge, whose clocks agree, report the same windows.
   */
  #windowStart(now: number): number {
    return Math.floor(now / this.windowMs) * this.windowMs;
  }

  /** Closes a window at every boundary until stop(). */
  start(): void {
    const arm = (): void => {
      const now = this.#now();
      this.#timer = setTimeout(() => {
        this.close();
        arm();
      }, this.#windowStart(now) + this.windowMs - now + 1);
      this.#timer.unref();
    };
    arm();
  }

  /** Stops the timer and closes the window in progress (its windows are handed to onWindows). */
  stop(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.close();
  }

  /**
   * Closes the current window: meters run, edges with traffic become TelemetryWindows (handed to
   * onWindows and returned), new empty maps start the next window.
   */
  close(): TelemetryWindow[] {
    for (const m of this.#meters) {
      try {
        m();
      } catch {
        /* a meter must not stop the window */
      }
    }
    const ts = new Date(this.#start).toISOString();
    const windowS = this.windowMs / 1000;
    const out: TelemetryWindow[] = [];
    const { self, selfSite } = this.#opts;
    for (const lane of this.#lanes) {
      const map = lane.map;
      lane.map = new Map();
      for (const e of map.values()) {
        if (e.requests === 0 && e.bytesIn === 0 && e.bytesOut === 0 && e.errors === 0) continue;
        const peerSite = this.#opts.peerSite(e.peer) ?? 'unknown';
        const caller = lane.reporter === 'callee' ? e.peer : self;
        const callee = lane.reporter === 'callee' ? self : e.peer;
        const w: TelemetryWindow = {
          ts, window_s: windowS, caller, callee,
          caller_site: lane.reporter === 'callee' ? peerSite : selfSite,
          callee_site: lane.reporter === 'callee' ? selfSite : peerSite,
          reporter: lane.reporter, action: lane.action,
          requests: e.requests, errors: e.errors, denials: e.denials,
          // Edge-relative, whichever end reports (the risk engine compares both ends): bytes_out flows
          // caller → callee, bytes_in callee → caller. The callee's inbound read what the caller sent.
          bytes_in: lane.reporter === 'callee' ? e.bytesOut : e.bytesIn, bytes_out: lane.reporter === 'callee' ? e.bytesIn : e.bytesOut,
          latency_p50_ms: e.percentile(0.5), latency_p99_ms: e.percentile(0.99), // Past the exact cap the count is an estimate: never above the requests (the format's rule).
          paths_distinct: Math.min(e.distinctPaths(), e.requests),
        };
        if (this.#firstSeen(`${lane.reporter} ${lane.action} ${caller} ${callee}`)) w.first_seen = true;
        out.push(w);
      }
    }
    const dropped = this.dropped;
    this.dropped = 0;
    this.#edges = 0;
    this.gen++;
    this.#sink = new EdgeStats('', -1, 0);
    this.#start = this.#windowStart(this.#now());
    this.#saveSeen();
    try {
      this.#opts.onWindows(out, dropped);
    } catch {
      /* the sink must not stop the collector */
    }
    return out;
  }

  /** True the first time an edge is reported; the oldest remembered edge is forgotten past maxSeen. */
  #firstSeen(key: string): boolean {
    if (this.#seen.has(key)) return false;
    this.#seen.add(key);
    if (this.#seen.size > this.#maxSeen) this.#seen.delete(this.#seen.values().next().value as string);
    this.#seenDirty = true;
    return true;
  }

  #loadSeen(): string[] {
    const dir = this.#opts.dir;
    if (dir === undefined) return [];
    const file = `${dir}/${SEEN_FILE}`;
    if (!existsSync(file)) return [];
    try {
      const v: unknown = JSON.parse(readFileSync(file, 'utf8'));
      return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string').slice(-this.#maxSeen) : [];
    } catch {
      // A torn file: every edge is new again once (first_seen is a hint, not a security decision).
      return [];
    }
  }

  #saveSeen(): void {
    if (!this.#seenDirty || this.#opts.dir === undefined) return;
    this.#seenDirty = false;
    try {
      writeFileAtomic(`${this.#opts.dir}/${SEEN_FILE}`, JSON.stringify([...this.#seen]), 0o600);
    } catch {
      /* kept in memory; written again at the next new edge */
      this.#seenDirty = true;
    }
  }
}
