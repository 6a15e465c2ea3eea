import { EventEmitter } from 'node:events';
import { PolicyEngine, type Decision, type DecisionRequest } from '../../core/policy/engine.js';
import { policyHash, signPolicyBundle, type BundleAdmin, type PolicyBundle, type SignedPolicyBundle } from '../../core/policy/bundle.js';
import type { BundleGrant } from '../../core/policy/grants.js';
import { TESSERA_SCHEMA } from '../../core/policy/schema.js';
import { LIMITS, type RevokedIdentity, type RiskListed } from '../../core/policy/types.js';
import type { CertificateAuthority } from '../ca/ca.js';
import { isPolicyAction, type PolicyAction } from '../../core/policy/types.js';
import type { DecisionSampleQuery, PolicyVersionRecord, Store } from '../store/store.js';
import { MAX_REPLAYED_DETAIL_CHARS } from './decisions.js';
import type { PolicyDryRun as DryRun, PolicyFlip as Flip } from '../../core/wire/control-plane.js';

/** Longest a dry run replays before it stops and says so (`truncated`). */
const REPLAY_BUDGET_MS = 10_000;
/** Flip groups listed in a dry run's answer (the largest first); `flip_groups` counts them all. */
const MAX_FLIPS_LISTED = 1000;
/** A recorded principal longer than any SPIFFE ID, or a larger context, is not a decision an enforcer made. */
const MAX_REPLAYED_CONTEXT_ENTRIES = 32;

/** Meta key of the bundle counter: bumped by every policy or registry change, in any process. */
const BUNDLE_VERSION = 'policy_bundle_version';
/**
 * How long a deleted entry stays on the revocation list after its last SVID expired (and how long
 * an expired serial stays listed): covers clocks that disagree. After that its certificates are
 * refused as expired anyway, and its SPIFFE ID, having no entry, as unknown.
 */
export const REVOCATION_GRACE_MS = 60 * 60 * 1000;

/** A group of replayed decisions that would change, and what a dry run answers: wire types (POST /v1/policies). */
export type { PolicyFlip as Flip, PolicyDryRun as DryRun } from '../../core/wire/control-plane.js';

type ReplayContext = Record<string, string | number | boolean>;

/** The recorded request of a decision record's detail, if it is one the engine can be asked. */
function replayable(detail: unknown): { principal: string; action: PolicyAction; context: ReplayContext } | undefined {
  if (typeof detail !== 'object' || detail === null) return undefined;
  const { principal, action, context } = detail as Record<string, unknown>;
  if (typeof principal !== 'string' || principal.length === 0 || principal.length > 2048 || !isPolicyAction(action)) return undefined;
  if (context === undefined) return { principal, action, context: {} };
  if (typeof context !== 'object' || context === null || Array.isArray(context)) return undefined;
  const entries = Object.entries(context);
  if (entries.length > MAX_REPLAYED_CONTEXT_ENTRIES) return undefined;
  for (const [, v] of entries) if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') return undefined;
  return { principal, action, context: context as ReplayContext };
}

function isoTime(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
}

/**
 * The Policy Administration Point: versioned Cedar policy (every change a new version with author,
 * reason and hash; rollback is a new version with old content), compiled with the registry's entity
 * attributes into one bundle signed by the active CA, which agents fetch, verify and enforce.
 *
 * The bundle's `version` is a counter that grows with every policy or entry change, so agents can
 * refuse any older bundle (no rollback by replay); the policy version is carried in its `reason`
 * line and in `policyVersion`.
 */
export class PolicyService extends EventEmitter {
  private signed: SignedPolicyBundle | undefined;
  private bundleVersion = 0;
  /**
   * The control plane's own decisions (credential:derive) over the current bundle: compiled at most
   * once per rebuild, on the first decision after it (entry changes need not pay for it).
   */
  private engine: PolicyEngine | null | undefined;
  private bundle: PolicyBundle | undefined;

  /** The bundle's risk list (step-up and quarantined identities): RiskService.listed, set once it exists. */
  private riskSource: ((now: number) => Promise<RiskListed[]>) | undefined;

  /** `auditLogKey`: the audit log's verifier key, carried in every bundle for the agents' witnesses. */
  constructor(private readonly store: Store, private readonly ca: CertificateAuthority, private readonly opts: { auditLogKey?: string; grants?: (now: number) => Promise<BundleGrant[]>; admins?: (now: number) => Promise<BundleAdmin[]> } = {}) {
    super();
    this.setMaxListeners(0);
  }

  async init(): Promise<void> {
    if ((await this.store.getMeta(BUNDLE_VERSION)) === undefined) await this.store.incrementMeta(BUNDLE_VERSION);
    await this.rebuild();
  }

  /** The current signed bundle and its version. */
  current(): { version: number; signed: SignedPolicyBundle } {
    return { version: this.bundleVersion, signed: this.signed! };
  }

  /**
   * Decides a request the control plane itself enforces (`credential:derive`) with the current
   * policy and entities. Denies (fail closed) when the current policy could not be loaded.
   */
  decide(req: DecisionRequest): Decision {
    if (this.engine === undefined) this.engine = compileEngine(this.bundle!);
    if (this.engine === null) return { allow: false, reasons: [], errors: ['request: the current policy cannot be loaded'], cached: false };
    return this.engine.decide(req);
  }

  /** Follows changes made by another process on the same store (cheap when nothing changed). */
  async sync(): Promise<void> {
    const stored = Number((await this.store.getMeta(BUNDLE_VERSION)) ?? '0');
    if (stored !== this.bundleVersion) await this.rebuild();
  }

  /** Validates and stores a new policy version, then publishes it. Throws TESSERA_POLICY_INVALID. */
  async apply(input: { policies: Record<string, string>; schema?: Record<string, unknown>; author: string; reason: string }): Promise<PolicyVersionRecord> {
    const schema = input.schema ?? (TESSERA_SCHEMA as Record<string, unknown>);
    PolicyEngine.compile({ policies: input.policies, schema });
    const rec = await this.store.insertPolicyVersion({
      createdAt: Date.now(), author: input.author, reason: input.reason, hash: policyHash(input.policies, schema), policies: input.policies, schema,
    });
    await this.publish();
    return rec;
  }

  /** Stored policy versions, newest first, without their content. */
  history(limit: number): Promise<Omit<PolicyVersionRecord, 'policies' | 'schema'>[]> {
    return this.store.listPolicyVersions(limit);
  }

  /** One stored policy version with its content, if it exists. */
  version(version: number): Promise<PolicyVersionRecord | undefined> {
    return this.store.getPolicyVersion(version);
  }

  async rollback(version: number, author: string, reason: string): Promise<PolicyVersionRecord | undefined> {
    const old = await this.store.getPolicyVersion(version);
    if (!old) return undefined;
    return this.apply({ policies: old.policies, schema: old.schema, author, reason: `rollback to v${version}: ${reason}` });
  }

  /**
   * Registration entries changed (created, deleted, revoked): their attributes and the revocation
   * list are part of the bundle. Returns the new bundle version, which agents long-polling the
   * bundle receive at once.
   */
  async entriesChanged(): Promise<number> {
    await this.publish();
    return this.bundleVersion;
  }

  /** Just-in-time grants changed (approved, revoked, ended): publishes the next bundle; returns its version. */
  grantsChanged(): Promise<number> {
    return this.entriesChanged();
  }

  /**
   * Where the bundle's risk list comes from (the RiskService); rebuilds the bundle so that it is
   * in force from the start.
   */
  async setRiskSource(source: (now: number) => Promise<RiskListed[]>): Promise<void> {
    this.riskSource = source;
    await this.rebuild();
  }

  /** An identity's risk state changed: publishes a new bundle (its risk list) at once; returns its version. */
  async riskChanged(): Promise<number> {
    await this.publish();
    return this.bundleVersion;
  }

  /**
   * Replays a sample of recorded decisions (Store.sampleDecisions: no identity can flood the
   * others out) against a candidate policy set and reports exactly which would change, grouped by
   * (principal, action, resource, context). The records are whatever enforcers shipped: each is
   * checked before it is replayed, the replay yields to the event loop as it goes and stops at
   * REPLAY_BUDGET_MS, and only the MAX_FLIPS_LISTED largest groups are listed.
   */
  async dryRun(policies: Record<string, string>, schema: Record<string, unknown> | undefined, sample: Pick<DecisionSampleQuery, 'perEnforcer' | 'maxTotal'>): Promise<DryRun> {
    const compiled = PolicyEngine.compile({ policies, schema: schema ?? (TESSERA_SCHEMA as Record<string, unknown>) });
    // Grants stay in force whatever the policy: replay with them (each within its window at the recorded time).
    const engine = new PolicyEngine(compiled, await this.entities(), { grants: this.bundle?.grants ?? [] });
    const { records, enforcers, oversized } = await this.store.sampleDecisions({ ...sample, maxDetailChars: MAX_REPLAYED_DETAIL_CHARS });
    const deadline = Date.now() + REPLAY_BUDGET_MS;
    const flips = new Map<string, Flip>();
    let replayed = 0;
    let skipped = oversized;
    let flipped = 0;
    let from = Infinity;
    let to = -Infinity;
    let truncated = false;
    for (const [i, r] of records.entries()) {
      if (i % 256 === 255) {
        await new Promise((resolve) => setImmediate(resolve));
        if (Date.now() > deadline) {
          truncated = true;
          break;
        }
      }
      const d = replayable(r.detail);
      if (!d) {
        skipped += 1;
        continue;
      }
      replayed += 1;
      from = Math.min(from, r.ts);
      to = Math.max(to, r.ts);
      const before = r.outcome === 'success' ? 'allow' : 'deny';
      const decision = engine.decide({ principal: d.principal, action: d.action, resource: r.target, context: d.context });
      const after = decision.allow ? 'allow' : 'deny';
      if (before === after) continue;
      flipped += 1;
      const key = JSON.stringify([d.principal, d.action, r.target, d.context]);
      const f = flips.get(key);
      if (f) f.count += 1;
      else flips.set(key, { principal: d.principal, action: d.action, resource: r.target, context: d.context, before, after, count: 1 });
    }
    const listed = [...flips.values()].sort((a, b) => b.count - a.count).slice(0, MAX_FLIPS_LISTED);
    return {
      replayed, skipped, truncated, enforcers, flipped, flip_groups: flips.size, flips: listed,
      span: replayed > 0 ? { from: isoTime(from), to: isoTime(to) } : null,
    };
  }

  private async entities(): Promise<PolicyBundle['entities']> {
    return (await this.store.listEntries()).filter((e) => !e.revokedAt).map((e) => ({ id: e.spiffeId, attrs: { ...e.attributes } }));
  }

  /**
   * The revocation list, bounded to what a bundle may carry (LIMITS): newest revocations first,
   * each with its newest unexpired serials. What falls off is an old revocation (its ID, with no
   * entry, is still refused as unknown) or an old serial of an identity listed many times.
   */
  private async revoked(now: number): Promise<RevokedIdentity[]> {
    const byId = new Map<string, RevokedIdentity>();
    let serialBudget: number = LIMITS.maxRevokedSerials;
    for (const r of await this.store.listRevocations(now, REVOCATION_GRACE_MS)) {
      let item = byId.get(r.spiffeId);
      if (!item) {
        if (byId.size >= LIMITS.maxRevoked) continue;
        // Rows come newest first: the first one for an ID gives its time and reason.
        item = { id: r.spiffeId, serials: [], at: new Date(r.revokedAt).toISOString(), reason: r.reason };
        byId.set(r.spiffeId, item);
      }
      for (const s of r.serials) {
        if (item.serials.length >= LIMITS.maxSerialsPerRevoked || serialBudget === 0) break;
        item.serials.push(s.serial);
        serialBudget--;
      }
    }
    return [...byId.values()];
  }

  /** The `risk` field of a bundle: omitted when nobody is listed (agents before issue 11 refuse the field). */
  private async riskList(now: number): Promise<{ risk?: RiskListed[] }> {
    const risk = this.riskSource === undefined ? [] : await this.riskSource(now);
    return risk.length > 0 ? { risk } : {};
  }

  private async publish(): Promise<void> {
    await this.store.incrementMeta(BUNDLE_VERSION);
    await this.rebuild();
  }

  private async rebuild(): Promise<void> {
    const version = Number((await this.store.getMeta(BUNDLE_VERSION)) ?? '1');
    const latest = await this.store.latestPolicyVersion();
    const now = Date.now();
    const schema = latest?.schema ?? (TESSERA_SCHEMA as Record<string, unknown>);
    const policies = latest?.policies ?? {};
    const bundle: PolicyBundle = {
      version,
      createdAt: new Date(now).toISOString(),
      author: latest?.author ?? 'tessera',
      reason: latest ? `policy v${latest.version}: ${latest.reason}` : 'no policy yet: everything is denied',
      hash: policyHash(policies, schema),
      policies,
      schema,
      entities: await this.entities(),
      revoked: await this.revoked(now),
      ...(await this.riskList(now)),
      ...(this.opts.auditLogKey !== undefined ? { auditLogKey: this.opts.auditLogKey } : {}),
    };
    // Approved just-in-time grants, each with its window (none: no `grants` field, as before).
    const grants = (await this.opts.grants?.(now)) ?? [];
    if (grants.length > 0) bundle.grants = grants;
    // Live named admins with their certificates' serials, for the key servers (none: no field).
    const admins = (await this.opts.admins?.(now)) ?? [];
    if (admins.length > 0) bundle.admins = admins;
    this.signed = signPolicyBundle(bundle, this.ca.signingMaterial());
    this.bundle = bundle;
    this.engine = undefined;
    const changed = version !== this.bundleVersion;
    this.bundleVersion = version;
    if (changed) this.emit('bundle', version);
  }

  /** Re-signs the current bundle (after a CA activation) without changing its version. */
  async resign(): Promise<void> {
    await this.rebuild();
  }
}

/** An engine over the bundle, or null (deny everything) when a stored version no longer loads. */
function compileEngine(bundle: PolicyBundle): PolicyEngine | null {
  try {
    return new PolicyEngine(PolicyEngine.compile({ policies: bundle.policies, schema: bundle.schema }), bundle.entities, { grants: bundle.grants ?? [] });
  } catch {
    return null;
  }
}
