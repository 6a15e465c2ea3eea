/**
 * The control plane's Prometheus metrics (`tessera server --metrics-listen`): API requests by
 * route template and status class, SVID issuance by kind and outcome with its latency, decision
 * records ingested, the audit log's size and checkpoint age, checkpoint signings, the policy
 * bundle version and witness alarms. Names and labels are listed in the README's "Metrics" section.
 *
 * Label values are bounded: routes are fastify's route templates (`/v1/entries/:id`, never the raw
 * URL), `unmatched` for a 404 without a route; methods of unmatched requests are folded to `other`
 * unless standard; status codes are reduced to their class (`2xx` ... `5xx`).
 */
import type { FastifyInstance } from 'fastify';
import { Counter, Histogram, type Registry } from 'prom-client';
import { counterFrom, gaugeFrom, newRegistry } from '../common/metrics.js';
import type { SiemStats } from './audit/siem.js';
import type { AuditRecord, AuditTreeHead, CheckpointRecord } from './store/store.js';

/** The routes that issue SVIDs, and the kind each issues (join and renew: X.509-SVIDs). */
const ISSUING_ROUTES: Readonly<Record<string, 'join' | 'renew' | 'jwt'>> = {
  'POST /v1/agent/join': 'join',
  'POST /v1/svid/renew': 'renew',
  'POST /v1/svid/jwt': 'jwt',
};

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);
const STATUS_CLASSES = ['1xx', '1xx', '2xx', '3xx', '4xx', '5xx'];

/** What the metrics read from the control plane when Prometheus scrapes. */
export interface ControlPlaneSources {
  bundleVersion(): number;
  auditTreeHead(): Promise<AuditTreeHead>;
  latestCheckpoint(): Promise<CheckpointRecord | undefined>;
}

export class ControlPlaneMetrics {
  readonly registry: Registry;
  readonly #requests: Counter<'route' | 'method' | 'status_class'>;
  readonly #issued: Counter<'kind' | 'outcome'>;
  readonly #issueSeconds: Histogram<'kind'>;
  readonly #ingested: Counter<'outcome'>;
  readonly #checkpoints: Counter;
  readonly #witnessAlarms: Counter;
  readonly #bootstrapUses: Counter<'action'>;

  constructor(registry: Registry = newRegistry()) {
    this.registry = registry;
    const registers = [registry];
    this.#requests = new Counter({ name: 'tessera_api_requests_total', help: 'Control plane API requests by route template, method and status class', labelNames: ['route', 'method', 'status_class'], registers });
    this.#issued = new Counter({ name: 'tessera_svid_issuance_total', help: 'SVID issuance requests by kind (join, renew: X.509-SVIDs; jwt) and outcome (success, denied: 4xx, error: 5xx)', labelNames: ['kind', 'outcome'], registers });
    this.#issueSeconds = new Histogram({
      name: 'tessera_svid_issuance_duration_seconds', help: 'Time to answer an SVID issuance request, by kind', labelNames: ['kind'], registers,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    });
    this.#ingested = new Counter({ name: 'tessera_decisions_ingested_total', help: 'Decision records shipped by enforcers and stored, by outcome (allow, deny, refusal: refused before a decision; rate_limited: not stored)', labelNames: ['outcome'], registers });
    this.#checkpoints = new Counter({ name: 'tessera_audit_checkpoints_signed_total', help: 'Audit log checkpoints signed by this process (the leader)', registers });
    this.#bootstrapUses = new Counter({ name: 'tessera_admin_bootstrap_uses_total', help: 'Admin actions performed with the bootstrap admin credential (break-glass), by admin action', labelNames: ['action'], registers });
    this.#witnessAlarms = new Counter({ name: 'tessera_audit_witness_alarms_total', help: 'Witness alarms reported to this control plane (audit.witness_alarm records)', registers });
    for (const kind of Object.values(ISSUING_ROUTES)) {
      for (const outcome of ['success', 'denied', 'error']) this.#issued.inc({ kind, outcome }, 0);
    }
    for (const outcome of ['allow', 'deny', 'refusal', 'rate_limited']) this.#ingested.inc({ outcome }, 0);
  }

  /** Reads bundle version, audit log size and checkpoint age from `src` at each scrape. */
  watch(src: ControlPlaneSources): void {
    gaugeFrom(this.registry, 'tessera_policy_bundle_version', 'Version of the signed policy bundle the control plane serves', () => src.bundleVersion());
    gaugeFrom(this.registry, 'tessera_audit_log_records', 'Records in the audit log (the Merkle tree\'s size)', async () => (await src.auditTreeHead()).size);
    gaugeFrom(this.registry, 'tessera_audit_checkpoint_age_seconds', 'Seconds since the latest signed audit checkpoint (absent before the first)', async () => {
      const cp = await src.latestCheckpoint();
      return cp === undefined ? undefined : (Date.now() - cp.createdAt) / 1000;
    });
  }

  /** Replicas: whether this process holds the leader lease, and how its change feed woke (read at each scrape). */
  watchReplica(src: { leading: () => boolean; notifications: () => number; catchUps: () => number }): void {
    gaugeFrom(this.registry, 'tessera_leader', '1 while this replica holds the leader lease (runs the single-writer duties), 0 otherwise', () => Number(src.leading()));
    counterFrom(this.registry, 'tessera_change_notifications_total', 'Change-log notifications (LISTEN/NOTIFY) this replica received', () => src.notifications());
    counterFrom(this.registry, 'tessera_change_catchups_total', 'Times this replica found the change log moved and reloaded what it caches', () => src.catchUps());
  }

  /** The SIEM exporter's counts (`--siem`), read at each scrape; absent on a process that does not export. */
  watchSiem(siem: () => SiemStats | undefined): void {
    counterFrom(this.registry, 'tessera_siem_records_sent_total', 'Audit records written to the SIEM receiver by this process (resends included)', () => siem()?.sent ?? 0);
    counterFrom(this.registry, 'tessera_siem_records_resent_total', 'Audit records written again after a disconnect, within this process', () => siem()?.resent ?? 0);
    counterFrom(this.registry, 'tessera_siem_connect_failures_total', 'Failed or lost connections to the SIEM receiver', () => siem()?.failures ?? 0);
    gaugeFrom(this.registry, 'tessera_siem_connected', '1 while connected to the SIEM receiver, 0 otherwise (absent when not exporting)', () => { const st = siem(); return st ? Number(st.connected) : undefined; });
    gaugeFrom(this.registry, 'tessera_siem_cursor', 'Id of the last audit record acknowledged by the SIEM export (settled; stored)', () => siem()?.cursor);
  }

  /** Counts every API response (fastify onResponse: after it was sent, off the request's path). */
  observeApi(app: FastifyInstance): void {
    app.addHook('onResponse', async (req, reply) => {
      const template = req.routeOptions.url;
      const method = template === undefined && !METHODS.has(req.method) ? 'other' : req.method;
      const status = reply.statusCode;
      this.#requests.inc({ route: template ?? 'unmatched', method, status_class: STATUS_CLASSES[Math.floor(status / 100)] ?? 'other' });
      if (template === undefined) return;
      const kind = ISSUING_ROUTES[`${method} ${template}`];
      if (kind === undefined) return;
      this.#issued.inc({ kind, outcome: status < 400 ? 'success' : status < 500 ? 'denied' : 'error' });
      this.#issueSeconds.observe({ kind }, reply.elapsedTime / 1000);
    });
  }

  /** Records stored from one POST /v1/decisions, and those refused by the rate limit. */
  decisionsIngested(records: readonly AuditRecord[], rateLimited: number): void {
    let allow = 0;
    let deny = 0;
    let refusal = 0;
    for (const r of records) {
      if (r.action !== 'decision') refusal++;
      else if (r.outcome === 'success') allow++;
      else deny++;
    }
    if (allow) this.#ingested.inc({ outcome: 'allow' }, allow);
    if (deny) this.#ingested.inc({ outcome: 'deny' }, deny);
    if (refusal) this.#ingested.inc({ outcome: 'refusal' }, refusal);
    if (rateLimited) this.#ingested.inc({ outcome: 'rate_limited' }, rateLimited);
  }

  checkpointSigned(): void {
    this.#checkpoints.inc();
  }

  /** One audit.witness_alarm record stored (a witness reported a forked, rewound or re-keyed log). */
  recordWitnessAlarm(): void {
    this.#witnessAlarms.inc();
  }

  /** One admin action performed with the bootstrap credential (`action`: `admin:<op>`). */
  bootstrapAdminUsed(action: string): void {
    this.#bootstrapUses.inc({ action });
  }
}
