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
