/**
 * The key server's one operation, free of any transport so it can be tested directly and mounted
 * later inside the control plane: answer a blinded point B with k_i·B and a DLEQ proof, for a caller
 * the policy allows, at a bounded rate per identity.
 *
 * Never logged or audited: B, Z, the proof, the share, or anything derived from them. An audit event
 * names who asked under which policy and epoch, and the outcome.
 */
import { TesseraError, isTesseraError, type ErrorCode } from '../core/errors.js';
import { decodePoint, evaluateAndProve, isSecretPolicyId, unsealContext, type Evaluation } from '../core/secrets/index.js';
import { RateLimiter, type RateLimit } from '../core/rate-limit.js';
import type { ShareStore } from './store.js';

export { RateLimiter, type RateLimit };

export interface KeyCaller {
  spiffeId: string;
  /** The caller's certificate serial (uppercase hex), checked against the revocation list. */
  serial?: string;
}

export interface EvaluateRequest {
  policy: string;
  epoch: number;
  /** The share generation of the caller's policy record; absent: the current one. */
  generation?: number;
  B: Uint8Array;
}

export interface KeyAuditEvent {
  at: string;
  action: 'secret:evaluate' | 'secret:share-install' | 'secret:share-refresh' | 'secret:share-commit' | 'secret:share-abort' | 'secret:share-delete'
    | 'secret:dkg-start' | 'secret:dkg-next' | 'secret:dkg-commit' | 'secret:dkg-abort';
  actor: string;
  policy: string;
  epoch: number;
  outcome: 'allowed' | 'denied' | 'error';
  code?: ErrorCode;
  /** The jti of the provisioning authorization the caller presented (a person's certificate), if any. */
  authorization?: string;
  /** DKG routes: the session id (random, public). */
  session?: string;
  /** DKG: the dealers a finished session left out (indices; the reasons are in the relay's result). */
  excluded?: number[];
}

export interface KeyServiceOptions {
  store: ShareStore;
  /**
   * Whether `caller` may unseal under `policy` (the process wires it to Cedar: action `secret:unseal`).
   * `'quarantined'`: refused because the caller is quarantined (the bundle's risk list), answered
   * with TESSERA_IDENTITY_QUARANTINED so the caller and its operators see why, as sidecars do.
   */
  authorize: (caller: KeyCaller, policy: string) => boolean | 'quarantined';
  onAudit?: (event: KeyAuditEvent) => void;
  rateLimit?: RateLimit;
  /** Milliseconds; for tests. */
  now?: () => number;
}

export const DEFAULT_RATE_LIMIT: RateLimit = { perSecond: 20, burst: 40 };
export class KeyService {
  private readonly limiter: RateLimiter;
  private readonly now: () => number;

  constructor(private readonly opts: KeyServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.limiter = new RateLimiter(opts.rateLimit ?? DEFAULT_RATE_LIMIT, this.now);
  }

  /**
   * Order of checks: rate limit, request shape, authorization (before existence, so a caller who
   * may not unseal learns nothing about which policies or epochs exist), share lookup, then B.
   */
  evaluate(caller: KeyCaller, req: EvaluateRequest): Evaluation & { generation: number } {
    const policy = isSecretPolicyId(req.policy) ? req.policy : '(invalid)';
    const epoch = Number.isInteger(req.epoch) ? req.epoch : -1;
    try {
      if (!this.limiter.take(caller.spiffeId)) throw new TesseraError('TESSERA_RATE_LIMITED');
      const context = unsealContext(req.policy, req.epoch);
      const verdict = this.opts.authorize(caller, req.policy);
      if (verdict === 'quarantined') throw new TesseraError('TESSERA_IDENTITY_QUARANTINED', 'the caller is quarantined: no unseal until it is released');
      if (verdict !== true) throw new TesseraError('TESSERA_FORBIDDEN', 'the caller may not unseal under this policy');
      const share = req.generation === undefined ? this.opts.store.get(req.policy, req.epoch) : this.opts.store.getGeneration(req.policy, req.epoch, req.generation);
      if (share === undefined) {
        const cur = this.opts.store.get(req.policy, req.epoch);
        if (cur === undefined) throw new TesseraError('TESSERA_NOT_FOUND', 'no key share for this policy and epoch');
        throw new TesseraError('TESSERA_SECRET_STALE', `this key server holds share generation ${cur.generation}, not ${String(req.generation)}: fetch the policy record again`);
      }
      const B = decodePoint(req.B);
      const ev = evaluateAndProve(share, B, context, share.K);
      this.audit(caller, policy, epoch, 'allowed');
      return { ...ev, generation: share.generation };
    } catch (err) {
      const code: ErrorCode = isTesseraError(err) ? err.code : 'TESSERA_INTERNAL';
      this.audit(caller, policy, epoch, code === 'TESSERA_FORBIDDEN' || code === 'TESSERA_IDENTITY_QUARANTINED' ? 'denied' : 'error', code);
      if (isTesseraError(err)) throw err;
      throw new TesseraError('TESSERA_INTERNAL');
    }
  }

  private audit(caller: KeyCaller, policy: string, epoch: number, outcome: KeyAuditEvent['outcome'], code?: ErrorCode): void {
    const ev: KeyAuditEvent = { at: new Date(this.now()).toISOString(), action: 'secret:evaluate', actor: caller.spiffeId, policy, epoch, outcome };
    if (code !== undefined) ev.code = code;
    try {
      this.opts.onAudit?.(ev);
    } catch {
      // An audit sink failure must not turn into an answer that leaks anything; the sink reports its own errors.
    }
  }
}
