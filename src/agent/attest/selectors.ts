/**
 * Caller attestation for the agent's local Unix sockets (the Workload API and the outbound proxy's
 * Unix-socket listeners): does the process at the other end of the socket match the registration
 * entry's selectors? One function, so both endpoints admit exactly the same processes.
 *
 * Semantics (SPIRE's, the de-facto SPIFFE reading): an entry matches a caller when EVERY selector of
 * the entry is satisfied by the caller. These endpoints attest only Unix peer credentials, so it can
 * satisfy `unix:uid:N`, `unix:gid:N` (primary group at connect time) and `unix:pid:N`. Fail closed:
 * - an entry with no `unix:` selector matches nobody (it would otherwise match every local process);
 * - a selector they cannot attest (another type such as `k8s:...`, another unix key such as
 *   `unix:user:...`, or a malformed number) cannot be satisfied, so the entry matches nobody.
 */
import type { PeerCredentials } from './peercred.js';

export type MatchResult = { ok: true } | { ok: false; reason: string };

const DECIMAL_RE = /^(?:0|[1-9][0-9]{0,9})$/;
const MAX_ID = 0xffffffff;

/** The selectors these endpoints can attest for a caller, e.g. `['unix:uid:1000', 'unix:gid:1000', 'unix:pid:42']`. */
export function callerSelectors(peer: PeerCredentials): string[] {
  return [`unix:uid:${peer.uid}`, `unix:gid:${peer.gid}`, `unix:pid:${peer.pid}`];
}

function parseId(value: string): number | undefined {
  if (!DECIMAL_RE.test(value)) return undefined;
  const n = Number(value);
  return n <= MAX_ID ? n : undefined;
}

function satisfies(selector: string, peer: PeerCredentials): boolean {
  // `unix:<key>:<value>`; the value is exact decimal (no sign, no leading zeros, no spaces).
  const second = selector.indexOf(':', 5);
  if (second < 0) return false;
  const key = selector.slice(5, second);
  const value = parseId(selector.slice(second + 1));
  if (value === undefined) return false;
  switch (key) {
    case 'uid':
      return value === peer.uid;
    case 'gid':
      return value === peer.gid;
    case 'pid':
      return value !== 0 && value === peer.pid;
    default:
      return false;
  }
}

/**
 * Whether `peer` satisfies every one of `entrySelectors`. The reason (for logs, never for the
 * caller) names the first selector that failed.
 *
 * @example
 * entryMatchesCaller(['unix:uid:1000'], { pid: 42, uid: 1000, gid: 100 }) // { ok: true }
 * entryMatchesCaller(['unix:uid:1000', 'k8s:ns:prod'], peer)              // { ok: false, ... }
 */
export function entryMatchesCaller(entrySelectors: readonly string[], peer: PeerCredentials): MatchResult {
  if (!Array.isArray(entrySelectors)) return { ok: false, reason: 'the entry selectors are not a list' };
  let unix = 0;
  for (const s of entrySelectors) {
    if (typeof s !== 'string') return { ok: false, reason: 'an entry selector is not a string' };
    if (!s.startsWith('unix:')) {
      return { ok: false, reason: `selector type "${s.slice(0, Math.max(0, s.indexOf(':')))}" cannot be attested from Unix peer credentials` };
    }
    unix++;
    if (!satisfies(s, peer)) return { ok: false, reason: `selector ${s} does not match the caller` };
  }
  if (unix === 0) return { ok: false, reason: 'the entry has no unix selector' };
  return { ok: true };
}

/**
 * Which of several registration entries a caller gets, when one agent serves many workloads (the
 * node agent's Workload API): among the entries whose selectors the caller satisfies (as
 * {@link entryMatchesCaller}), the one whose selector set contains every other match's set and is
 * strictly larger than each (the most specific: `unix:uid:1000` + `unix:pid:42` over `unix:uid:1000`
 * alone). When no single entry is that (two entries with the same selectors, or `uid`+`gid` vs `pid`),
 * the caller is ambiguous and gets none: fail closed, whatever the order of the entries.
 *
 * @example
 * selectEntryForCaller([{ selectors: ['unix:uid:1000'] }, { selectors: ['unix:uid:1000', 'unix:pid:42'] }], { pid: 42, uid: 1000, gid: 100 })
 * // { ok: true, entry: the second }
 */
export function selectEntryForCaller<T extends { selectors: readonly string[] }>(entries: readonly T[], peer: PeerCredentials): { ok: true; entry: T } | { ok: false; reason: string } {
  if (entries.length === 0) return { ok: false, reason: 'no workload is served here' };
  if (entries.length === 1) {
    const m = entryMatchesCaller(entries[0]!.selectors, peer);
    return m.ok ? { ok: true, entry: entries[0]! } : m;
  }
  const matches = entries.filter((e) => entryMatchesCaller(e.selectors, peer).ok);
  if (matches.length === 1) return { ok: true, entry: matches[0]! };
  if (matches.length === 0) return { ok: false, reason: 'the caller matches no workload\'s entry' };
  const sets = matches.map((e) => new Set(e.selectors));
  const covers = (a: Set<string>, b: Set<string>): boolean => a.size > b.size && [...b].every((s) => a.has(s));
  const winner = sets.findIndex((s, i) => sets.every((o, j) => j === i || covers(s, o)));
  if (winner < 0) return { ok: false, reason: `the caller matches ${matches.length} workloads' entries and none is more specific than all the others` };
  return { ok: true, entry: matches[winner]! };
}
