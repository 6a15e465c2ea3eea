/**
 * Decision records shipped by enforcers (POST /v1/decisions): parsed strictly, limited per
 * identity, and accepted only for what the calling enforcer itself decided or refused.
 *
 * The enforcer of a record is always the caller (its SVID, which must belong to a live
 * registration entry): it is stored as the record's actor and as `detail.enforcer`; the body has
 * no way to name another. What an enforcer may claim, by record action (anything else it ships is
 * dropped, counted in the answer's `refused` and audited as `decision.refused`):
 *
 * | action                       | made by                       | resource must be                                         |
 * |------------------------------|-------------------------------|----------------------------------------------------------|
 * | `http:request`, `tcp:connect` | the inbound sidecar           | the caller itself (it decides about calls to itself)     |
 * | `secret:unseal`              | a key server                  | `spiffe://TD/tessera/secret/P`, P a secret policy whose record (any epoch) names the caller as a key server |
 * | `credential:derive`          | the control plane only        | never accepted from an enforcer                          |
 * | `tls:handshake`, `policy:bundle` (refusals) | the sidecar     | the caller itself                                        |
 * | `tls:upstream` (refusal)     | the outbound sidecar          | the upstream it expected: a SPIFFE ID of this trust domain |
 * | `gateway:request`            | a registered gateway          | `spiffe://TD/tessera/gateway/<its name>/app/<route>`, principal a person (`/user/...`) |
 *
 * The principal of a decision is the caller's verified peer, which only the enforcer knows: it is
 * taken as claimed, and a lying enforcer can only misreport calls to itself (and, in dry runs,
 * only fill its own share of the sample: see Store.sampleDecisions).
 */
import { TesseraError } from '../../core/errors.js';
import { RateLimiter, parseRateLimit, type RateLimit } from '../../core/rate-limit.js';
import { isSecretPolicyId } from '../../core/secrets/index.js';
import { isSpiffeId } from '../../core/spiffe-id.js';
import { gatewayAppPrefix, isUserId } from '../../core/wire/gateway.js';
import type { SecretPolicyService } from '../secrets/service.js';
import type { AuditRecord, DecisionSampleQuery } from '../store/store.js';
import { body, int } from '../../common/api/validate.js';

/** Settings of decision ingestion and replay (`tessera server --decision-rate-limit`, `--replay-limit`). */
export interface DecisionSettings {
  /** Records per second (and burst) each identity may ship. */
  rateLimit: RateLimit;
  /** How many recorded decisions a dry run replays. */
  replay: Pick<DecisionSampleQuery, 'perEnforcer' | 'maxTotal'>;
}

/** Records per batch, as before (an agent ships up to 500 at once). */
export const MAX_BATCH = 1000;

export const DEFAULT_DECISION_SETTINGS: DecisionSettings = {
  // 100 records/s sustained per identity, bursts of 5000 (an agent draining a spill file after an outage).
  rateLimit: { perSecond: 100, burst: 5000 },
  replay: { perEnforcer: 1000, maxTotal: 10_000 },
};

/**
 * The settings from `tessera server --decision-rate-limit PER_SECOND[:BURST]` and
 * `--replay-limit PER_ENFORCER:TOTAL`. Throws TESSERA_CONFIG_INVALID.
 */
export function parseDecisionSettings(rate: string, replay: string): DecisionSettings {
  const rateLimit = parseRateLimit(rate, '--decision-rate-limit');
  checkBurst(rateLimit);
  const m = /^(\d{1,7}):(\d{1,7})$/.exec(replay.trim());
  const perEnforcer = Number(m?.[1]);
  const maxTotal = Number(m?.[2]);
  if (!m || perEnforcer < 1 || maxTotal < perEnforcer || maxTotal > 1_000_000) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', '--replay-limit must be PER_ENFORCER:TOTAL with 1 <= PER_ENFORCER <= TOTAL <= 1000000, e.g. 1000:10000');
  }
  return { rateLimit, replay: { perEnforcer, maxTotal } };
}

/** A full batch must be able to pass, or an agent holding one would retry it forever. */
function checkBurst(limit: RateLimit): void {
  if (limit.burst < MAX_BATCH) throw new TesseraError('TESSERA_CONFIG_INVALID', `the decision rate limit's burst must be at least ${MAX_BATCH} (one full batch)`);
}

/**
 * Body limit of POST /v1/decisions: a batch of up to 1000 records (~300 bytes each) does not fit
 * the API's default 64 KiB, and a batch refused as too large would be spilled and retried forever.
 */
export const DECISIONS_BODY_LIMIT = 1024 * 1024;

const DECISION_ACTIONS = new Set(['http:request', 'tcp:connect', 'secret:unseal', 'credential:derive', 'gateway:request']);
/**
 * Refusals agents record before (or instead of) a policy decision, and their audit actions: a
 * caller's handshake refused by the inbound proxy, a server refused by the outbound proxy (wrong
 * SPIFFE ID, untrusted), a policy bundle refused by the enforcer (bad signature, older version).
 */
const REFUSALS: Record<string, string> = {
  'tls:handshake': 'connection.refused',
  'tls:upstream': 'upstream.refused',
  'policy:bundle': 'policy.bundle.refused',
};
/** Context limits of one record: what an agent records (site, time, hour, risk, method, path) fits easily. */
const MAX_CONTEXT_ENTRIES = 16;
const CONTEXT_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;
/** The agent clips context strings to this (src/agent/enforce/policy.ts). */
const MAX_CONTEXT_STRING = 2048;
/** Names and string values of one context together: bounds the stored size of every record. */
const MAX_CONTEXT_CHARS = 4096;
const MAX_REASONS = 16;
const MAX_REASON_CHARS = 256;
/**
 * The longest stored detail a dry run loads (JSON characters). Every record accepted here is far
 * smaller (~11 KB at most, with every string escaped); larger rows can only predate these limits.
 */
export const MAX_REPLAYED_DETAIL_CHARS = 64 * 1024;

type Scalar = string | number | boolean;

function bad(i: number, message: string): TesseraError {
  return new TesseraError('TESSERA_BAD_REQUEST', `decision ${i}: ${message}`);
}

function forbidden(i: number, message: string): TesseraError {
  return new TesseraError('TESSERA_FORBIDDEN', `decision ${i}: ${message}`);
}

function contextOf(v: unknown, i: number): Record<string, Scalar> {
  if (v === undefined) return {};
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(i, '"context" must be an object');
  const entries = Object.entries(v as Record<string, unknown>);
  if (entries.length > MAX_CONTEXT_ENTRIES) throw bad(i, `"context" has more than ${MAX_CONTEXT_ENTRIES} entries`);
  let chars = 0;
  const out: Record<string, Scalar> = {};
  for (const [name, value] of entries) {
    if (!CONTEXT_NAME.test(name)) throw bad(i, 'context names are identifiers of up to 64 characters');
    if (typeof value === 'string') {
      if (value.length > MAX_CONTEXT_STRING) throw bad(i, `context strings are at most ${MAX_CONTEXT_STRING} characters`);
      chars += value.length;
    } else if (!(typeof value === 'number' && Number.isFinite(value)) && typeof value !== 'boolean') {
      throw bad(i, 'decision context values must be short scalars');
    }
    chars += name.length;
    out[name] = value;
  }
  if (chars > MAX_CONTEXT_CHARS) throw bad(i, `the context holds more than ${MAX_CONTEXT_CHARS} characters`);
  return out;
}

/** A record as shipped, checked for shape (not yet for what the caller may claim). */
interface Shipped {
  ts: number;
  principal: string;
  action: string;
  resource: string;
  context: Record<string, Scalar>;
  allow: boolean;
  reasons: string[];
  /** The audit action of a refusal; undefined for a decision. */
  refusal: string | undefined;
}

function parseRecord(v: unknown, i: number): Shipped {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(i, 'must be an object');
  const b = v as Record<string, unknown>;
  for (const key of Object.keys(b)) {
    if (!['ts', 'principal', 'action', 'resource', 'context', 'allow', 'reasons'].includes(key)) throw bad(i, `unknown field "${key.slice(0, 64)}"`);
  }
  const { principal, resource, action } = b;
  if (typeof action !== 'string') throw bad(i, '"action" must be a string');
  // A refusal before any policy decision has no authenticated principal: principal "-".
  const refusal = principal === '-' ? REFUSALS[action] : undefined;
  if (!refusal && (typeof principal !== 'string' || !isSpiffeId(principal) || !DECISION_ACTIONS.has(action))) throw bad(i, 'invalid principal or action');
  if (typeof resource !== 'string' || !isSpiffeId(resource)) throw bad(i, '"resource" must be a SPIFFE ID');
  if (typeof b.allow !== 'boolean') throw bad(i, '"allow" must be a boolean');
  const ts = int(b, 'ts', { min: 0, max: 8.64e15 })!;
  const reasons = Array.isArray(b.reasons)
    ? b.reasons.slice(0, MAX_REASONS).filter((r): r is string => typeof r === 'string').map((r) => r.slice(0, MAX_REASON_CHARS))
    : [];
  return { ts, principal: principal as string, action, resource, context: contextOf(b.context, i), allow: b.allow, reasons, refusal };
}

/**
 * Parses, limits and authorizes shipped decision batches. One per control-plane process: the
 * rate limit is per process (with `--workers N` an identity gets N times the rate at most).
 */
export class DecisionIngest {
  private readonly limiter: RateLimiter;
  private readonly secretPrefix: string;

  /** `gatewayOf`: the registered gateway named by an identity (gateway:request records come only from it). */
  constructor(private readonly trustDomain: string, private readonly secrets: SecretPolicyService, settings: DecisionSettings = DEFAULT_DECISION_SETTINGS,
    private readonly gatewayOf?: (spiffeId: string) => Promise<string | undefined>) {
    checkBurst(settings.rateLimit);
    this.limiter = new RateLimiter(settings.rateLimit);
    this.secretPrefix = `spiffe://${trustDomain}/tessera/secret/`;
  }

  /**
   * The audit records of one batch shipped by `enforcer`. A malformed batch is refused whole
   * (TESSERA_BAD_REQUEST), so is one over the rate limit (TESSERA_RATE_LIMITED, with
   * `retryAfterSeconds`). Records the caller may not claim are dropped and reported in `refused`
   * (one audit record `decision.refused` for the batch), not refused with the batch: an honest
   * key server records decisions about policies it does not serve (a caller may ask for any), and
   * an agent would otherwise retry such a batch forever.
   */
  async accept(enforcer: string, input: unknown): Promise<{ records: AuditRecord[]; refused: number; refusal?: AuditRecord }> {
    const b = body(input, ['decisions']);
    if (!Array.isArray(b.decisions) || b.decisions.length > MAX_BATCH) throw new TesseraError('TESSERA_BAD_REQUEST', `"decisions" must be a list of at most ${MAX_BATCH} records`);
    const cost = Math.max(1, b.decisions.length);
    if (!this.limiter.take(enforcer, cost)) {
      const err = new TesseraError('TESSERA_RATE_LIMITED', `this identity ships more than ${this.limiter.limit.perSecond} decision records per second; retry later`);
      throw Object.assign(err, { retryAfterSeconds: this.limiter.retryAfterSeconds(enforcer, cost) });
    }
    const shipped = b.decisions.map(parseRecord);
    const keyServers = new Map<string, Set<string>>();
    const records: AuditRecord[] = [];
    let refusal: { count: number; first: TesseraError; resource: string } | undefined;
    for (const [i, r] of shipped.entries()) {
      const problem = await this.claimProblem(enforcer, r, i, keyServers);
      if (problem === undefined) records.push(this.toAudit(enforcer, r));
      else if (refusal) refusal.count += 1;
      else refusal = { count: 1, first: problem, resource: r.resource };
    }
    if (!refusal) return { records, refused: 0 };
    return {
      records, refused: refusal.count,
      refusal: {
        ts: Date.now(), actor: enforcer, action: 'decision.refused', target: refusal.resource, outcome: 'denied', code: 'TESSERA_FORBIDDEN',
        detail: { enforcer, count: refusal.count, reason: refusal.first.message },
      },
    };
  }

  /** Why `enforcer` may not ship `r` (TESSERA_FORBIDDEN), or undefined if it may. */
  private async claimProblem(enforcer: string, r: Shipped, i: number, keyServers: Map<string, Set<string>>): Promise<TesseraError | undefined> {
    try {
      await this.checkClaim(enforcer, r, i, keyServers);
      return undefined;
    } catch (err) {
      if (err instanceof TesseraError && err.code === 'TESSERA_FORBIDDEN') return err;
      throw err;
    }
  }

  private async checkClaim(enforcer: string, r: Shipped, i: number, keyServers: Map<string, Set<string>>): Promise<void> {
    switch (r.action) {
      case 'http:request':
      case 'tcp:connect':
      case 'tls:handshake':
      case 'policy:bundle':
        if (r.resource !== enforcer) throw forbidden(i, `an enforcer records ${r.action} only about itself (resource must be its own SPIFFE ID)`);
        return;
      case 'tls:upstream':
        if (!r.resource.startsWith(`spiffe://${this.trustDomain}/`)) throw forbidden(i, 'a refused upstream must be a workload of this trust domain');
        return;
      case 'secret:unseal': {
        const policy = r.resource.startsWith(this.secretPrefix) ? r.resource.slice(this.secretPrefix.length) : '';
        if (!isSecretPolicyId(policy)) throw forbidden(i, `secret:unseal decisions are about ${this.secretPrefix}<policy>`);
        let servers = keyServers.get(policy);
        if (!servers) {
          servers = await this.secrets.keyServers(policy);
          keyServers.set(policy, servers);
        }
        if (!servers.has(enforcer)) throw forbidden(i, `only a key server of secret policy ${policy} records its secret:unseal decisions`);
        return;
      }
      case 'gateway:request': {
        // A gateway for people records its decisions about people (principal in the /user tree) and
        // its own apps (spiffe://<td>/tessera/gateway/<its name>/app/<route>).
        const name = await this.gatewayOf?.(enforcer);
        const prefix = name === undefined ? undefined : gatewayAppPrefix(this.trustDomain, name);
        if (prefix === undefined || !r.resource.startsWith(prefix) || r.resource.length === prefix.length || !isUserId(this.trustDomain, r.principal)) {
          throw forbidden(i, 'gateway:request decisions come from a registered gateway, about people and its own apps');
        }
        return;
      }
      default:
        // credential:derive: decided and recorded by the control plane itself.
        throw forbidden(i, `${r.action} decisions are recorded by the control plane, not shipped`);
    }
  }

  private toAudit(enforcer: string, r: Shipped): AuditRecord {
    if (r.refusal) {
      return {
        ts: r.ts, actor: enforcer, action: r.refusal, target: r.resource, outcome: 'denied', code: String(r.context.code ?? 'TESSERA_AUTH_INVALID').slice(0, 64),
        detail: { enforcer, reason: r.context.reason, site: r.context.site },
      };
    }
    return {
      ts: r.ts, actor: enforcer, action: 'decision', target: r.resource, outcome: r.allow ? 'success' : 'denied', code: r.allow ? 'ALLOW' : 'DENY',
      principal: r.principal,
      detail: { enforcer, principal: r.principal, action: r.action, context: r.context, reasons: r.reasons },
    };
  }
}
