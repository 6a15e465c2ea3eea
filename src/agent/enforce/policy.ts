import { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomicAsync } from '../../core/files.js';
import type { Logger } from '../../core/log.js';
import { verifyPolicyBundle, type PolicyBundle, type SignedPolicyBundle } from '../../core/policy/bundle.js';
import { PolicyEngine, type Decision } from '../../core/policy/engine.js';
import { GrantClock } from '../../core/policy/grants.js';
import { DecisionLog, type DecisionRecord } from './decision-log.js';
import type { PolicyBundleResponse } from '../../core/wire/control-plane.js';
import type { DevicePostureContext } from '../../core/devices/posture.js';

export type Action = 'http:request' | 'tcp:connect' | 'secret:unseal' | 'credential:derive';

export interface AuthorizeRequest {
  /** The caller's verified SPIFFE ID. */
  principal: string;
  /** The serial of the caller's certificate (uppercase hex), checked against the revocation list. */
  serial?: string;
  action: Action;
  /** The SPIFFE ID of the workload being called (this agent's own, for inbound traffic). */
  resource: string;
  method?: string;
  path?: string;
  /** context.site of this decision: the site of the workload called, when one agent serves several (default: the enforcer's). */
  site?: string;
}

export interface PolicyEnforcerOptions {
  dir: string;
  /** This agent's SPIFFE ID (the resource of refusals it records about itself). */
  self?: string;
  /** The site this agent enforces in (context.site). */
  site: string;
  log: Logger;
  /** CA certificates (DER) of the current trust bundle: the bundle's signer must be one of them. */
  trustedCas: () => Buffer[];
  /**
   * Whether a trust domain is federated (issue 14): its workloads have no entity in our bundle, so they
   * are judged by Cedar as `Tessera::Workload::"<their ID>"` without attributes (default deny: only a
   * policy naming that ID permits anything). Their chain was checked against their own domain's bundle.
   */
  federated?: (trustDomain: string) => boolean;
  /** Long-polls the control plane for a bundle newer than `after`. */
  fetch: (after: number, timeoutSeconds: number) => Promise<PolicyBundleResponse>;
  /** Ships decision records (the decision log batches them). */
  ship: (records: DecisionRecord[]) => Promise<void>;
  allowSampleRate?: number;
  /** Most decision records waiting in memory to be shipped (DecisionLog `maxBuffer`, default 10,000). */
  decisionBuffer?: number;
  watchSeconds?: number;
  /**
   * Called with the audit checkpoint of every policy-stream answer that carries one, after the answer's
   * bundle was handled, and the audit log key of the bundle in force (the agent's witness).
   */
  onCheckpoint?: (checkpoint: NonNullable<PolicyBundleResponse['checkpoint']>, auditLogKey: string | undefined) => void;
}

const CACHE_FILE = 'policy-bundle.json';

/** Whether a peer is a live workload of the bundle in force (see {@link PolicyEnforcer.peerStatus}). */
export type PeerStanding = { ok: true } | { ok: false; reason: 'unknown' | 'revoked' | 'quarantined' };
const PEER_OK: PeerStanding = Object.freeze({ ok: true });
const PEER_UNKNOWN: PeerStanding = Object.freeze({ ok: false, reason: 'unknown' });
const PEER_REVOKED: PeerStanding = Object.freeze({ ok: false, reason: 'revoked' });
const PEER_QUARANTINED: PeerStanding = Object.freeze({ ok: false, reason: 'quarantined' });
// Refusals before Cedar: constant answers, no allocation per refused request.
const DENY_UNKNOWN: Decision = Object.freeze({ allow: false, reasons: Object.freeze(['unknown principal: no live entry']) as string[], errors: Object.freeze([]) as unknown as string[], cached: false });
const DENY_REVOKED: Decision = Object.freeze({ allow: false, reasons: Object.freeze(['revoked']) as string[], errors: Object.freeze([]) as unknown as string[], cached: false });
const DENY_RESOURCE_QUARANTINED: Decision = Object.freeze({ allow: false, reasons: Object.freeze(['resource quarantined']) as string[], errors: Object.freeze([]) as unknown as string[], cached: false });
const DENY_QUARANTINED: Decision = Object.freeze({ allow: false, reasons: Object.freeze(['quarantined']) as string[], errors: Object.freeze([]) as unknown as string[], cached: false });

/** The bundle's identities, as sets built once per bundle: the per-request check is two lookups. */
interface Identities {
  live: ReadonlySet<string>;
  revokedIds: ReadonlySet<string>;
  revokedSerials: ReadonlySet<string>;
  /** Quarantined SPIFFE IDs → end of the quarantine (ms): refused until then, even cut off from the control plane. */
  quarantined: ReadonlyMap<string, number>;
  /** Risk scores of stepped-up and quarantined identities (context.risk); everyone else is 0. */
  scores: ReadonlyMap<string, number>;
}
/**
 * Longest context string shipped in a decision record: the control plane refuses a batch holding a
 * longer one (a request path can be far longer), and a refused batch would block the decision log.
 */
const MAX_RECORDED_STRING = 2048;

/**
 * The Policy Enforcement Point's brain: holds the last good signed policy bundle (verified against
 * the trust bundle, never older than the one it has), decides locally with a decision cache, and
 * records decisions (denials always, allows sampled). Default deny until a bundle has been loaded;
 * a bad or older bundle from the control plane is refused and the last good one stays in force,
 * also across restarts (it is cached on disk).
 */
export class PolicyEnforcer extends EventEmitter {
  private engine: PolicyEngine | undefined;
  private bundle: PolicyBundle | undefined;
  /** The signed form of `bundle`, as cached on disk. */
  private signed: SignedPolicyBundle | undefined;
  private identities: Identities | undefined;
  /** `context.time` of decisions: minute buckets split at every grant start and expiry of the bundle. */
  private clock = new GrantClock([]);
  private cachePending: SignedPolicyBundle | undefined;
  private cacheWriting: Promise<void> | undefined;
  /** Sites of the bundle's entities, built at the first siteOf() after a bundle is installed. */
  private sites: Map<string, string> | undefined;
  private stopped = false;
  readonly decisions: DecisionLog;

  constructor(private readonly opts: PolicyEnforcerOptions) {
    super();
    this.decisions = new DecisionLog({
      dir: opts.dir, ship: opts.ship, log: opts.log,
      ...(opts.allowSampleRate !== undefined ? { allowSampleRate: opts.allowSampleRate } : {}),
      ...(opts.decisionBuffer !== undefined ? { maxBuffer: opts.decisionBuffer } : {}),
    });
  }

  get version(): number {
    return this.bundle?.version ?? 0;
  }

  /** The audit log's verifier key named by the bundle in force (CA-signed), if any. */
  get auditLogKey(): string | undefined {
    return this.bundle?.auditLogKey;
  }

  /** Loads the cached bundle (if it still verifies) and starts following the control plane. */
  start(): void {
    const file = join(this.opts.dir, CACHE_FILE);
    if (existsSync(file)) {
      try {
        this.load(JSON.parse(readFileSync(file, 'utf8')) as SignedPolicyBundle, 'cache');
      } catch (err) {
        this.opts.log.warn('cached policy bundle refused; waiting for the control plane (deny all meanwhile)', { error: (err as Error).message });
      }
    }
    // Records spilled by an earlier run go out as soon as the control plane takes them.
    void this.decisions.flush();
    void this.watch();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([this.decisions.stop(), this.cached()]);
  }

  /** Resolves once the bundle in force is in the on-disk cache (written off the install's path). */
  cached(): Promise<void> {
    return this.cacheWriting ?? Promise.resolve();
  }

  /**
   * Queues `signed` for the on-disk cache (the copy a restart starts from). Installing a bundle does
   * not wait for the disk: the write and its fsync run on the thread pool, one at a time, and only
   * the newest bundle waiting is written. A failed write is logged; the bundle stays in force.
   */
  private saveCache(signed: SignedPolicyBundle): void {
    this.cachePending = signed;
    this.cacheWriting ??= (async () => {
      while (this.cachePending !== undefined) {
        const next = this.cachePending;
        this.cachePending = undefined;
        try {
          await writeFileAtomicAsync(join(this.opts.dir, CACHE_FILE), JSON.stringify(next), 0o600);
        } catch (err) {
          this.opts.log.warn('policy bundle cache not written', { error: (err as Error).message });
        }
      }
      this.cacheWriting = undefined;
    })();
  }

  /**
   * Whether `spiffeId` (presenting the certificate `serial`) is a live workload of the bundle in
   * force: `revoked` when the serial is on the revocation list, or the ID is listed and no live
   * entity carries it; `unknown` when the bundle has no entity for it (never judged as a workload
   * without attributes: DESIGN.md, "Revocation and quarantine"); also `unknown` before any bundle
   * is loaded (default deny); `quarantined` when the bundle's risk list quarantines a live ID and
   * its quarantine has not ended on this agent's clock (an agent cut off from the control plane
   * keeps refusing until then: fail closed; the control plane releases it at the same time).
   * Cheap: two or three set lookups, a clock read only for a quarantined ID. The 'policy' event
   * fires whenever a new bundle, and so a new revocation or risk list, is installed.
   */
  peerStatus(spiffeId: string, serial?: string): PeerStanding {
    const ids = this.identities;
    if (ids === undefined) return PEER_UNKNOWN;
    if (serial !== undefined && ids.revokedSerials.size > 0 && ids.revokedSerials.has(serial)) return PEER_REVOKED;
    if (ids.live.has(spiffeId)) return this.isQuarantined(spiffeId) ? PEER_QUARANTINED : PEER_OK;
    if (ids.revokedIds.has(spiffeId)) return PEER_REVOKED;
    const foreign = this.opts.federated;
    if (foreign !== undefined && spiffeId.startsWith('spiffe://')) {
      const slash = spiffeId.indexOf('/', 9);
      if (slash > 9 && foreign(spiffeId.slice(9, slash))) return this.isQuarantined(spiffeId) ? PEER_QUARANTINED : PEER_OK;
    }
    return PEER_UNKNOWN;
  }

  /**
   * The `site` attribute of `spiffeId`'s entity in the bundle in force, if it has one (telemetry
   * names both ends' sites; called once per edge and window, not per request).
   */
  siteOf(spiffeId: string): string | undefined {
    if (this.sites === undefined && this.bundle !== undefined) {
      this.sites = new Map();
      for (const e of this.bundle.entities) if (e.attrs.site !== undefined) this.sites.set(e.id, e.attrs.site);
    }
    return this.sites?.get(spiffeId);
  }

  /**
   * Whether `spiffeId` presenting a certificate of `serial` is a live named admin in the bundle in
   * force (its `admins`): key servers let those provision shares. No bundle: false (fail closed).
   * Called per provisioning request only (rare): a scan, no index.
   */
  isNamedAdmin(spiffeId: string, serial: string | undefined): boolean {
    if (serial === undefined) return false;
    return this.bundle?.admins?.some((a) => a.id === spiffeId && a.serials.includes(serial)) ?? false;
  }

  /**
   * When the next grant of the bundle in force starts or ends (ms), if one is ahead: a decision
   * cached by the minute (the HAProxy data plane's) must be dropped then, or an allow could outlive
   * its grant until the minute ends.
   */
  nextGrantBoundary(nowMs = Date.now()): number | undefined {
    return this.clock.nextBound(nowMs);
  }

  /** Whether the bundle in force quarantines `spiffeId` now (see {@link peerStatus}). */
  isQuarantined(spiffeId: string): boolean {
    const q = this.identities?.quarantined;
    if (q === undefined || q.size === 0) return false;
    const until = q.get(spiffeId);
    return until !== undefined && Date.now() < until;
  }

  authorize(req: AuthorizeRequest): Decision {
    return this.decide(req.principal, req.serial, req.action, req.resource, req.method, req.path, req.site);
  }

  /**
   * {@link authorize} with its fields as arguments: the sidecar's proxies call this once per
   * request, with nothing allocated but the decision's context (and a decision record when the
   * decision log keeps one: denials always, allows sampled).
   */
  decide(principal: string, serial: string | undefined, action: Action, resource: string, method?: string, path?: string, site?: string): Decision {
    const now = Date.now();
    const scores = this.identities?.scores;
    // `time` is rounded to the minute: at seconds resolution every decision would be unique and
    // the cache useless; a minute is fine for time-of-day rules (which can also use `hour`). It is
    // never rounded back across a grant's start or expiry (GrantClock): grants are exact to the second.
    const time = this.clock.time(now);
    const risk = scores !== undefined && scores.size > 0 ? scores.get(principal) ?? 0 : 0;
    const context: Record<string, string | number> = action === 'http:request'
      ? { site: site ?? this.opts.site, time, hour: utcHour(now), risk, method: method ?? '', path: path ?? '' }
      : { site: site ?? this.opts.site, time, hour: utcHour(now), risk };
    let decision: Decision;
    let status: PeerStanding;
    if (!this.engine) {
      decision = { allow: false, reasons: ['no policy bundle loaded: default deny'], errors: [], cached: false };
    } else if (!(status = this.peerStatus(principal, serial)).ok) {
      // Refused before Cedar: an identity without a live entry is not a workload.
      decision = status.reason === 'revoked' ? DENY_REVOKED : status.reason === 'quarantined' ? DENY_QUARANTINED : DENY_UNKNOWN;
    } else if (this.isQuarantined(resource)) {
      // Calls into a quarantined workload are refused too (its own inbound, when the caller's sidecar did not stop them).
      decision = DENY_RESOURCE_QUARANTINED;
    } else {
      decision = this.engine.decide({ principal, action, resource, context });
    }
    // The record is only built when the log keeps it (a sampled-out allow costs one random draw).
    if (this.decisions.keeps(decision.allow)) {
      this.decisions.push({ ts: now, principal, action, resource, context: recordable(context), allow: decision.allow, reasons: decision.reasons });
    }
    return decision;
  }

  /**
   * Whether the bundle in force lists `spiffeId` (or the certificate `serial`) as revoked: a device a
   * gateway sees in a client certificate is not a workload (it has no entity), so only the revocation
   * list applies. No bundle: true (fail closed).
   */
  isRevoked(spiffeId: string, serial?: string): boolean {
    const ids = this.identities;
    if (ids === undefined) return true;
    return (serial !== undefined && ids.revokedSerials.has(serial)) || ids.revokedIds.has(spiffeId);
  }

  /** The risk list's state and score of `spiffeId` (people too): `normal` and 0 when not listed. */
  riskOf(spiffeId: string): { state: 'normal' | 'step-up' | 'quarantined'; score: number } {
    const score = this.identities?.scores.get(spiffeId) ?? 0;
    if (this.isQuarantined(spiffeId)) return { state: 'quarantined', score };
    const listed = this.bundle?.risk?.find((r) => r.id === spiffeId && r.state === 'step-up');
    return { state: listed ? 'step-up' : 'normal', score };
  }

  /**
   * Decides a person's request through a gateway (`gateway:request`, see PolicyEngine.decidePerson):
   * default deny without a bundle, refused when the person is quarantined, else Cedar with `site`,
   * `time`, `hour` and `risk` filled in here. `stepUpSeconds`: the MFA age the determining permits ask
   * for (`@stepup`). Recorded like every decision (`resource` the app's SPIFFE ID, the device flattened).
   */
  decidePerson(req: { user: string; groups: readonly string[]; app: string; appId: string; method: string; path: string; device: DevicePostureContext }): Decision & { stepUpSeconds?: number } {
    const now = Date.now();
    const context = {
      method: req.method, path: req.path, site: this.opts.site, time: this.clock.time(now), hour: new Date(now).getUTCHours(),
      risk: this.identities?.scores.get(req.user) ?? 0, device: req.device,
    };
    let decision: Decision & { stepUpSeconds?: number };
    if (!this.engine) decision = { allow: false, reasons: ['no policy bundle loaded: default deny'], errors: [], cached: false };
    else if (this.isQuarantined(req.user)) decision = DENY_QUARANTINED;
    else {
      decision = this.engine.decidePerson({ user: req.user, groups: req.groups, app: req.app, context });
      const stepUp = decision.allow ? this.engine.stepUpSeconds(decision.reasons) : undefined;
      if (stepUp !== undefined) decision = { ...decision, stepUpSeconds: stepUp };
    }
    const recorded: Record<string, string | number> = { app: req.app, method: req.method, path: req.path, site: context.site, time: context.time, hour: context.hour, risk: context.risk, device_state: req.device.posture_state };
    if (req.device.id !== undefined) recorded.device = req.device.id;
    this.decisions.record({ ts: now, principal: req.user, action: 'gateway:request', resource: req.appId, context: recordable(recorded), allow: decision.allow, reasons: decision.reasons });
    return decision;
  }

  /**
   * Records a connection refused before any policy decision (no client certificate, untrusted,
   * expired or not-yet-valid SVID, other trust domain): always shipped, like a denial.
   */
  recordRefusal(resource: string, code: string, reason: string, kind: 'tls:handshake' | 'tls:upstream' | 'policy:bundle' = 'tls:handshake', site = this.opts.site): void {
    this.decisions.record({
      ts: Date.now(), principal: '-', action: kind, resource, context: { site, code, reason: reason.slice(0, 256) }, allow: false, reasons: [code],
    });
  }

  /** Verifies and installs a bundle; throws (and keeps the current one) if it is bad or older. */
  load(signed: SignedPolicyBundle, source: 'cache' | 'server'): void {
    const bundle = verifyPolicyBundle(signed, this.opts.trustedCas(), { minVersion: this.version });
    // The same version and policy: only a re-signature, unless the log key changed (a bundle signed
    // before the control plane carried the key, then the same bundle with it).
    if (this.bundle && bundle.version === this.bundle.version && bundle.hash === this.bundle.hash && bundle.auditLogKey === this.bundle.auditLogKey) {
      // The same bundle re-signed by a newly active CA: cache that copy, which stays verifiable
      // at the next start after the old CA has left the trust bundle.
      if (source === 'server' && signed.signer !== this.signed?.signer) {
        this.signed = signed;
        this.saveCache(signed);
      }
      return;
    }
    const grants = bundle.grants ?? [];
    const engine = new PolicyEngine(PolicyEngine.compile({ policies: bundle.policies, schema: bundle.schema }), bundle.entities, { grants });
    const revokedSerials = new Set<string>();
    for (const r of bundle.revoked) for (const s of r.serials) revokedSerials.add(s);
    const quarantined = new Map<string, number>();
    const scores = new Map<string, number>();
    for (const r of bundle.risk ?? []) {
      if (r.state === 'quarantined') quarantined.set(r.id, r.until);
      if (r.score > 0) scores.set(r.id, r.score);
    }
    this.identities = { live: new Set(bundle.entities.map((e) => e.id)), revokedIds: new Set(bundle.revoked.map((r) => r.id)), revokedSerials, quarantined, scores };
    this.clock = new GrantClock(grants);
    this.engine = engine;
    this.bundle = bundle;
    this.sites = undefined;
    this.signed = signed;
    if (source === 'server') this.saveCache(signed);
    this.emit('policy', { version: bundle.version, hash: bundle.hash, reason: bundle.reason, source, revoked: bundle.revoked.length, quarantined: quarantined.size });
  }

  private async watch(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      try {
        const res = await this.opts.fetch(this.version, this.opts.watchSeconds ?? 25);
        // An unchanged answer still carries the current bundle: take it if a new CA re-signed it.
        if (res.changed || !this.bundle || res.bundle?.signer !== this.signed?.signer) {
          try {
            this.load(res.bundle, 'server');
          } catch (err) {
            this.opts.log.error('policy bundle refused; keeping the last good one', { error: (err as Error).message, current: this.version });
            this.emit('refused', { error: err });
            this.recordRefusal(this.opts.self ?? '-', (err as { code?: string }).code ?? 'TESSERA_POLICY_BUNDLE_INVALID', (err as Error).message, 'policy:bundle');
            await sleep(1000);
          }
        }
        if (res.checkpoint !== undefined && this.opts.onCheckpoint) {
          try {
            this.opts.onCheckpoint(res.checkpoint, this.auditLogKey);
          } catch (err) {
            this.opts.log.warn('audit checkpoint not witnessed', { error: (err as Error).message });
          }
        }
        failures = 0;
      } catch (err) {
        if (this.stopped) return;
        failures += 1;
        this.opts.log.debug('policy watch failed; will retry', { error: (err as Error).message });
        await sleep(retryDelayMs(failures, (err as { retryAfterSeconds?: number }).retryAfterSeconds));
      }
    }
  }
}

/** The context as recorded: strings clipped to what the control plane accepts (the decision saw them whole). */
function recordable(context: Record<string, string | number>): Record<string, string | number> {
  let out = context;
  for (const k in context) {
    const v = context[k];
    if (typeof v === 'string' && v.length > MAX_RECORDED_STRING) {
      if (out === context) out = { ...context };
      out[k] = v.slice(0, MAX_RECORDED_STRING);
    }
  }
  return out;
}

/** The UTC hour (0–23) of `ms` since the epoch (no Date allocated: the epoch is a UTC midnight and UTC has no leap seconds in ms). */
export function utcHour(ms: number): number {
  return Math.floor(ms / 3_600_000) % 24;
}

/**
 * The wait before the next poll after `failures` failures in a row: doubling from 500 ms to 30 s, and
 * never less than a 429's Retry-After (RFC 9110 §10.2.3; the control plane limits polls per identity),
 * itself capped at 5 minutes so a bogus header cannot park the agent's policy stream for hours.
 */
export function retryDelayMs(failures: number, retryAfterSeconds: number | undefined): number {
  const backoff = Math.min(30_000, 250 * 2 ** Math.min(Math.max(failures, 1), 7));
  if (retryAfterSeconds === undefined || !Number.isFinite(retryAfterSeconds) || retryAfterSeconds <= 0) return backoff;
  return Math.max(backoff, Math.min(retryAfterSeconds * 1000, 300_000));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref?.());
}
