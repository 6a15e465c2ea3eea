/**
 * The gateway's pending sign-ins (code flow + PKCE): one per browser redirect to the control plane,
 * kept until its callback or its expiry. Anyone who can reach the gateway starts one with a plain
 * GET, so the table is bounded twice: in all (the oldest is dropped when it is full) and per client
 * address, so that one address cannot push everyone else's pending sign-ins out. Over its own
 * limit an address is refused (TESSERA_RATE_LIMITED, with the seconds until its oldest flow
 * expires as Retry-After) and keeps the flows it has.
 *
 * Every flow lives the same time, so the order flows were added in is their expiry order: a queue
 * in that order gives the next to expire, or the oldest to drop, in amortized constant time, and no
 * request ever scans the table. (Not the Map's own order: deleted entries stay in a V8 Map's
 * backing store as holes until it is rehashed, and iterating from the front walks over them.)
 */
import { TesseraError } from '../core/errors.js';

export interface PendingFlow { state: string; verifier: string; returnTo: string; redirectUri: string; expiresAt: number }

export interface FlowLimits {
  /** How long a flow waits for its callback (ms). */
  ttlMs: number;
  /** Pending flows in all; the oldest is dropped to make room. */
  max: number;
  /** Pending flows per client address (an IPv6 client counts by its /64). */
  maxPerAddress: number;
}

/**
 * 10 minutes, 10,000 in all, 100 per address: a browser's flow normally ends within seconds (its
 * callback), so 100 leaves room for an office behind one NAT address signing in at once, with
 * abandoned tabs; one address holds at most 1% of the table.
 */
export const DEFAULT_FLOW_LIMITS: FlowLimits = { ttlMs: 10 * 60_000, max: 10_000, maxPerAddress: 100 };

/** A refusal over the per-address limit, with the Retry-After (seconds) to send. */
export class FlowsLimited extends TesseraError {
  constructor(readonly retryAfterSeconds: number) {
    super('TESSERA_RATE_LIMITED', 'too many sign-ins pending from this address; finish one, or retry later');
  }
}

/**
 * The key a client address counts under: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by its /64 (one
 * host usually holds a whole /64), anything else as is.
 */
export function clientKey(address: string | undefined): string {
  if (address === undefined || address === '') return '-';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  // Expand "::" to the missing zero groups, then keep the first four.
  const [head, tail] = address.toLowerCase().split('%')[0]!.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

type Stored = PendingFlow & { client: string };

export class SignInFlows {
  /** flow key → flow and the client it counts for. */
  readonly #flows = new Map<string, Stored>();
  /** client → its pending flow keys, oldest first (at most maxPerAddress). */
  readonly #byClient = new Map<string, string[]>();
  /** Every flow added, oldest first, from #head on; an entry whose flow was taken is skipped. */
  #queue: { key: string; flow: Stored }[] = [];
  #head = 0;

  constructor(readonly limits: FlowLimits = DEFAULT_FLOW_LIMITS, private readonly now: () => number = Date.now) {}

  get size(): number {
    return this.#flows.size;
  }

  /** Pending flows of `address`'s client key. */
  pendingFor(address: string | undefined): number {
    return this.#byClient.get(clientKey(address))?.length ?? 0;
  }

  /** Adds a flow for `address` under `key` (throws FlowsLimited when the address has its fill). */
  add(address: string | undefined, key: string, flow: Omit<PendingFlow, 'expiresAt'>): void {
    const t = this.now();
    this.expire(t);
    const client = clientKey(address);
    const mine = this.#byClient.get(client);
    if (mine !== undefined && mine.length >= this.limits.maxPerAddress) {
      const oldest = this.#flows.get(mine[0]!)!;
      throw new FlowsLimited(Math.max(1, Math.ceil((oldest.expiresAt - t) / 1000)));
    }
    while (this.#flows.size >= this.limits.max) this.#drop(this.#front()!.key);
    const stored = { ...flow, expiresAt: t + this.limits.ttlMs, client };
    this.#flows.set(key, stored);
    this.#queue.push({ key, flow: stored });
    // Taken flows leave entries behind: compact when they far outnumber the live ones (amortized).
    if (this.#queue.length - this.#head > 4 * Math.max(this.#flows.size, 1024)) {
      this.#queue = this.#queue.slice(this.#head).filter((e) => this.#flows.get(e.key) === e.flow);
      this.#head = 0;
    }
    if (mine === undefined) this.#byClient.set(client, [key]);
    else mine.push(key);
  }

  /** Removes and returns the flow under `key` (undefined when unknown or expired). */
  take(key: string): PendingFlow | undefined {
    const f = this.#flows.get(key);
    if (f === undefined) return undefined;
    this.#drop(key);
    if (f.expiresAt <= this.now()) return undefined;
    return { state: f.state, verifier: f.verifier, returnTo: f.returnTo, redirectUri: f.redirectUri, expiresAt: f.expiresAt };
  }

  /** Drops the expired flows: from the front, stopping at the first live one. */
  expire(t = this.now()): void {
    for (let e = this.#front(); e !== undefined && e.flow.expiresAt <= t; e = this.#front()) this.#drop(e.key);
  }

  /** The oldest pending flow's queue entry (entries of taken flows before it are discarded). */
  #front(): { key: string; flow: Stored } | undefined {
    while (this.#head < this.#queue.length) {
      const e = this.#queue[this.#head]!;
      if (this.#flows.get(e.key) === e.flow) return e;
      this.#head += 1;
    }
    if (this.#head > 0) {
      this.#queue = [];
      this.#head = 0;
    }
    return undefined;
  }

  #drop(key: string): void {
    const f = this.#flows.get(key);
    if (f === undefined) return;
    this.#flows.delete(key);
    if (this.#head < this.#queue.length && this.#queue[this.#head]!.key === key) {
      this.#head += 1;
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
    }
    const mine = this.#byClient.get(f.client)!;
    // At most maxPerAddress keys, and the one dropped is nearly always the first.
    mine.splice(mine.indexOf(key), 1);
    if (mine.length === 0) this.#byClient.delete(f.client);
  }
}
