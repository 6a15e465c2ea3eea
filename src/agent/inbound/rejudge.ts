/**
 * Re-judging open connections when the policy or the revocation list changes. A TLS connection
 * is authenticated once, at its handshake; what it was allowed then may no longer hold. tcp-mode
 * connections were authorized once (`tcp:connect`) and are put to the authorizer again; http-mode
 * connections are decided per request anyway, so only their peer's standing (revoked, unknown) is
 * checked, and a refused peer's connection closes after the exchange in progress.
 *
 * One pass over every open connection, with one decision per distinct peer (and one status
 * lookup per distinct certificate): thousands of connections from a few callers cost a few
 * authorizer calls, and nothing is allocated per connection.
 */
import type { Authorize, AuthorizeRequest, DecisionRecord } from './http.js';
import type { PeerStanding } from '../enforce/policy.js';

/**
 * The standing of a peer's identity (and certificate serial) in the current revocation list:
 * `unknown` when no registration entry holds the ID, `revoked` when the entry or that serial
 * was revoked. Synchronous, like the authorizer: it reads local state.
 */
export type PeerStatus = (spiffeId: string, serial?: string) => PeerStanding;

/** An open connection as re-judging sees it. */
export interface Judged {
  /** The peer's verified SPIFFE ID. */
  readonly peer: string;
  /** The serial number of the certificate the peer presented (hex, as `X509Certificate.serialNumber`). */
  readonly serial: string;
  /** `tcp:connect`: authorized once, re-authorized here. `http:request`: only the peer's status is checked. */
  readonly action: AuthorizeRequest['action'];
  /** The peer is no longer allowed: close now (tcp) or after the exchange in progress (http). */
  retire(): void;
}

export interface RejudgeDeps {
  authorize: Authorize;
  peerStatus: PeerStatus | undefined;
  onDecision: ((record: DecisionRecord) => void) | undefined;
}

export interface RejudgeResult {
  /** Open connections looked at. */
  checked: number;
  /** Of them, retired (closed now, or after their current exchange in http mode). */
  closed: number;
  /** Distinct peers put to the authorizer or the status lookup. */
  peers: number;
}

/** What {@link peerRefusal} says of a quarantined peer (issue 11). */
export const QUARANTINED_REFUSAL = 'peer quarantined';

/** The stable code a refusal from {@link peerRefusal} is answered with. */
export function standingCode(refusal: string): 'TESSERA_IDENTITY_QUARANTINED' | 'TESSERA_IDENTITY_REVOKED' {
  return refusal === QUARANTINED_REFUSAL ? 'TESSERA_IDENTITY_QUARANTINED' : 'TESSERA_IDENTITY_REVOKED';
}

/**
 * Why `peerStatus` refuses this peer, or undefined when it accepts it (or there is no status
 * source). A lookup that throws refuses: fail closed.
 */
export function peerRefusal(peerStatus: PeerStatus | undefined, id: string, serial: string): string | undefined {
  if (peerStatus === undefined) return undefined;
  try {
    const s = peerStatus(id, serial);
    return s.ok ? undefined : `peer ${s.reason}`;
  } catch {
    return 'peer status lookup failed';
  }
}

interface PeerVerdict {
  /** Why policy refuses this peer now (tcp), or undefined. */
  denied: string[] | undefined;
  /** Refusal reason per certificate serial (undefined: accepted). */
  serials: Map<string, string | undefined>;
  closed: number;
  /** The reasons of the record reported for this peer. */
  reasons: string[] | undefined;
  action: AuthorizeRequest['action'];
}

/**
 * Re-judges `connections` (see the module comment), retires the ones no longer allowed and
 * reports one denial per refused peer through `onDecision` (not one per connection: a thousand
 * connections of a revoked caller make one record).
 */
export function rejudge(connections: Iterable<Judged>, deps: RejudgeDeps): RejudgeResult {
  const verdicts = new Map<string, PeerVerdict>();
  let checked = 0;
  let closed = 0;
  for (const c of connections) {
    checked++;
    let v = verdicts.get(c.peer);
    if (v === undefined) {
      v = { denied: c.action === 'tcp:connect' ? policyRefusal(deps.authorize, c.peer) : undefined, serials: new Map(), closed: 0, reasons: undefined, action: c.action };
      verdicts.set(c.peer, v);
    }
    let refusal: string | undefined;
    if (v.serials.has(c.serial)) refusal = v.serials.get(c.serial);
    else {
      refusal = peerRefusal(deps.peerStatus, c.peer, c.serial);
      v.serials.set(c.serial, refusal);
    }
    if (refusal !== undefined) v.reasons = [`re-judged: ${refusal}`];
    else if (c.action === 'tcp:connect' && v.denied !== undefined) v.reasons ??= ['re-judged: denied after policy change', ...v.denied];
    else continue;
    v.closed++;
    closed++;
    c.retire();
  }
  if (closed > 0 && deps.onDecision !== undefined) report(verdicts, deps.onDecision);
  return { checked, closed, peers: verdicts.size };
}

/** The authorizer's reasons for refusing `tcp:connect` to `peer` now, or undefined if it allows. */
function policyRefusal(authorize: Authorize, peer: string): string[] | undefined {
  try {
    const r = authorize({ peer, action: 'tcp:connect' });
    return r?.allow === true ? undefined : r?.reasons ?? [];
  } catch {
    return ['authorizer error'];
  }
}

function report(verdicts: Map<string, PeerVerdict>, onDecision: (record: DecisionRecord) => void): void {
  const time = Date.now();
  for (const [peer, v] of verdicts) {
    if (v.closed === 0) continue;
    try {
      onDecision({ peer, action: v.action, allow: false, reasons: [...(v.reasons ?? []), `${v.closed} open connection(s) closed`], time });
    } catch {
      /* a logging callback must not break the proxy */
    }
  }
}
