import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Server as HttpsServer } from 'node:https';
import { HARDENED_SERVER_OPTIONS, toTesseraError } from '../common/api/errors.js';
import Fastify, { type FastifyInstance } from 'fastify';
import { TesseraError, listenFailure } from '../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../core/files.js';
import { createLogger, type Logger } from '../core/log.js';
import { parseTrustDomain } from '../core/spiffe-id.js';
import { pemEncode } from '../core/x509.js';
import { bundleToJwks } from '../core/bundle.js';
import { AuditLog } from './audit/audit.js';
import { DEFAULTS } from './defaults.js';
import { auditRoutes } from './audit/routes.js';
import { DEFAULT_ALARM_RATE, witnessRoutes } from './audit/witness-routes.js';
import type { RateLimit } from '../core/rate-limit.js';
import { TransparencyLog } from './audit/tlog.js';
import { SiemExporter, type SiemExporterOptions } from './audit/siem.js';
import { CertificateAuthority } from './ca/ca.js';
import { KeyEncryptionKey } from '../common/kek.js';
import { caRoutes } from './ca/routes.js';
import type { ServerContext } from './context.js';
import { apiKeyRoutes } from './credentials/apikeys.js';
import { CredentialService } from './credentials/service.js';
import { registryRoutes } from './registry/routes.js';
import { RegistryService } from './registry/service.js';
import { SqliteStore } from './store/sqlite.js';
import { PostgresStore } from './store/postgres.js';
import { SUBSTORE_MIGRATIONS, postgresSubStores } from './store/substores-postgres.js';
import type { Store } from './store/store.js';
import { svidRoutes } from './svid/routes.js';
import { SvidService } from './svid/service.js';
import { PolicyService } from './policy/service.js';
import { policyRoutes } from './policy/routes.js';
import { DEFAULT_DECISION_SETTINGS, type DecisionSettings } from './policy/decisions.js';
import { DEFAULT_BUNDLE_POLL_SETTINGS, type BundlePollSettings } from './policy/poll-gate.js';
import { secretPolicyRoutes } from './secrets/routes.js';
import { SecretPolicyService } from './secrets/service.js';
import type { HealthResponse } from '../core/wire/control-plane.js';
import { ControlPlaneMetrics } from './metrics.js';
import { RiskService, type RiskSettings } from './risk/service.js';
import { riskRoutes } from './risk/routes.js';
import { Registry } from 'prom-client';
import { AdminService } from './grants/admins.js';
import { GrantService, MIN_GRANT_SECONDS } from './grants/grants.js';
import { auditExpired, grantRoutes } from './grants/routes.js';
import { CONTROL_PLANE_RISK_CONFIG, RiskEngineLink } from './risk/engine-link.js';
import { RiskConfigService } from './risk/config-service.js';
import { DEFAULT_TELEMETRY_SETTINGS, TelemetryService, type TelemetrySettings } from './telemetry/service.js';
import { telemetryRoutes } from './telemetry/routes.js';
import { AdminAuthorizer, DEFAULT_ADMIN_MFA_MAX_AGE_MS } from './authz/authorizer.js';
import { AdminPolicyService } from './authz/policy-service.js';
import { adminPolicyRoutes } from './authz/routes.js';
import { MapService } from './map/service.js';
import { mapRoutes } from './map/routes.js';
import { consoleRoutes, defaultConsoleDir, loadConsoleAssets } from './console/static.js';
import { buildLogin, buildPeople, type PeopleOptions } from './people/index.js';
import { loginRoutes } from './people/login-routes.js';
import { loginPages } from './people/login-pages.js';
import { authRoutes } from './people/auth-routes.js';
import { peopleAdminRoutes } from './people/routes.js';
import { peoplePages } from './people/pages.js';
import { DeviceService, type DeviceSettings } from './devices/service.js';
import { deviceRoutes } from './devices/routes.js';
import { GatewayService } from './gateways/service.js';
import { gatewayRoutes } from './gateways/routes.js';
import { FederationService, type FederationSettings } from './federation/service.js';
import { federationRoutes } from './federation/routes.js';
import { startBundleEndpoint } from './federation/endpoint.js';
import { ChangeFeed, DEFAULT_LEASE_SETTINGS, LeaderLease, type LeaseSettings } from './replica.js';

/** Beyond our refresh hint: a federated fetcher's own tick, a slow fetch and one retry. */
const ENDPOINT_SETTLE_MARGIN_MS = 10_000;

export interface ControlPlaneOptions {
  dataDir: string;
  /**
   * `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE`: the store is that PostgreSQL database instead of
   * DATA_DIR/tessera.db (the data directory still holds the KEK and the admin credential).
   */
  store?: string;
  trustDomain?: string;
  host?: string;
  port?: number;
  /** Base URL used as JWT `iss` and in OIDC discovery; default https://host:port. */
  publicUrl?: string;
  caTtlMs?: number;
  x509TtlSeconds?: number;
  jwtTtlSeconds?: number;
  bodyLimit?: number;
  /**
   * `leader` (default): this process owns its data directory (writes the admin and bundle files) and
   * competes for the leader lease in the store; the lease holder runs the single-writer duties (see
   * src/server/replica.ts), so any number of such replicas may share one store. A `follower` (the
   * other workers of `tessera server --workers`, sharing the leader's data directory) never leads.
   */
  role?: 'leader' | 'follower';
  /** The leader lease's timing (default DEFAULT_LEASE_SETTINGS: 8 s lease, held 6 s after each renewal, renewed every second). */
  lease?: Partial<LeaseSettings>;
  /** How often the change log is polled without a notification (ms, default 250). */
  changePollMs?: number;
  log?: Logger;
  env?: NodeJS.ProcessEnv;
  /** Decision ingestion and replay limits (default DEFAULT_DECISION_SETTINGS). */
  decisions?: Partial<DecisionSettings>;
  /** Telemetry ingestion: rate limit per identity and retention (default DEFAULT_TELEMETRY_SETTINGS). */
  telemetry?: Partial<TelemetrySettings>;
  /** Requests and open long polls per identity on GET /v1/policy/bundle (default DEFAULT_BUNDLE_POLL_SETTINGS). */
  bundlePolls?: Partial<BundlePollSettings>;
  /** Rate of witness alarms each caller may report (POST /v1/audit/alarms); default DEFAULT_ALARM_RATE. */
  witnessAlarms?: Partial<RateLimit>;
  /** Prometheus metrics to fill (the caller serves its registry); default: kept, not served. */
  metrics?: ControlPlaneMetrics;
  /** Ship every audit record to a syslog receiver (`--siem`); run by the leader only. */
  siem?: SiemExporterOptions;
  /**
   * Shortest just-in-time grant admins may request, in seconds (default MIN_GRANT_SECONDS, 60).
   * A server option, not a CLI flag: tests lower it to watch a grant expire.
   */
  grantMinSeconds?: number;
  /** How long ended grants stay listed before the leader deletes them (ms; default GRANT_RETENTION_MS, 30 days). */
  grantRetentionMs?: number;
  /** Step-up TTLs and the TTLs of states the risk engine sets (default DEFAULT_RISK_SETTINGS). */
  risk?: Partial<RiskSettings>;
  /** How old an MFA may be for an admin action (`--admin-mfa-max-age`); default DEFAULT_ADMIN_MFA_MAX_AGE_MS (15 min). */
  adminMfaMaxAgeMs?: number;
  /** The built web console served under /console/ (default dist/console of this checkout; see src/server/console/static.ts). */
  consoleDir?: string;
  /** People's sign-in (issue 12): the OIDC provider, session timeouts. */
  people?: PeopleOptions;
  /** Posture staleness, history kept per device, allowed clock skew (default DEFAULT_DEVICE_SETTINGS). */
  devices?: Partial<DeviceSettings>;
  /** Federation (issue 14): refresh bounds and our bundle's refresh hint (default DEFAULT_FEDERATION_SETTINGS). */
  federation?: Partial<FederationSettings>;
  /** An https_web bundle endpoint (`--bundle-endpoint`): its own listener with a Web PKI certificate. */
  bundleEndpoint?: { host: string; port: number; certPem: string; keyPem: string };
}

export { DEFAULTS };


/**
 * The control plane (`tessera server`): CA and bundle, registry and join tokens, derived
 * credentials, audit, behind one HTTPS API on which every non-public call needs a client cert.
 */
export class ControlPlane {
  readonly app: FastifyInstance;
  url = '';
  private tickTimer: NodeJS.Timeout | undefined;
  /** The checkpoint being signed, if any: one at a time, and stop() waits for it before closing the store. */
  private checkpointing: Promise<void> | undefined;
  /** The risk expiry pass under way, if any (one at a time; stop() waits for it). */
  private expiring: Promise<void> | undefined;
  private serverKey: KeyObject | undefined;
  /** The SIEM exporter, on the leader when `siem` is set (its `stats` are for metrics). */
  siem: SiemExporter | undefined;
  /** The https_web bundle endpoint, when `bundleEndpoint` is set. */
  bundleEndpoint: { port: number; close(): Promise<void> } | undefined;
  private serverCertNotBefore = 0;
  private serverCertNotAfter = 0;
  private serverCertCa = '';
  /** When the server certificate came from the previous CA because the active one is too fresh: when to move. */
  private serverCertSettlesAt = Infinity;

  /**
   * `store`: the services' store, public for tests that must write as an older control plane did;
   * routes never see it (ServerContext).
   */
  /** The change log feed that keeps this replica's caches in step with the store. */
  feed: ChangeFeed | undefined;
  private riskLink: RiskEngineLink | undefined;

  private constructor(private readonly opts: ControlPlaneOptions & typeof DEFAULTS, readonly ctx: ServerContext, readonly store: Store,
    /** The leader lease (undefined on a `--workers` follower, which never leads). */
    readonly lease: LeaderLease | undefined) {
    this.app = Fastify({
      https: this.tlsOptions(),
      bodyLimit: opts.bodyLimit,
      ...HARDENED_SERVER_OPTIONS,
      // An entry can be named by its SPIFFE ID (up to 2048 bytes, URL-encoded) in /v1/entries/:id.
      routerOptions: { maxParamLength: 8192 },
    });
  }

  static async start(options: ControlPlaneOptions): Promise<ControlPlane> {
    const opts = { ...DEFAULTS, ...stripUndefined(options), dataDir: options.dataDir };
    const log = options.log ?? createLogger();
    ensurePrivateDir(opts.dataDir);
    const kek = KeyEncryptionKey.load(opts.dataDir, options.env);
    const store: Store = options.store !== undefined
      ? await PostgresStore.open(options.store, {
        migrations: SUBSTORE_MIGRATIONS, subStores: postgresSubStores, onError: (err) => log.warn('PostgreSQL connection lost', { error: err.message }),
      })
      : new SqliteStore(join(opts.dataDir, 'tessera.db'));
    try {
      const stored = await store.getMeta('trust_domain');
      const trustDomain = parseTrustDomain(options.trustDomain ?? stored ?? DEFAULTS.trustDomain);
      if (stored && stored !== trustDomain) {
        throw new TesseraError('TESSERA_CONFIG_INVALID', `this data directory belongs to trust domain ${stored}, not ${trustDomain}`);
      }
      if (!stored) await store.setMeta('trust_domain', trustDomain);
      const lease = opts.role === 'follower' ? undefined : new LeaderLease(store, { ...DEFAULT_LEASE_SETTINGS, ...options.lease }, log);
      const ca = new CertificateAuthority(store, kek, { trustDomain, caTtlMs: opts.caTtlMs, ...(lease ? { fence: () => lease.fence() } : {}) });
      await initCa(ca, lease, log);
      const audit = new AuditLog(store, { onError: (err) => log.error('audit write failed; will retry', { error: String(err) }) });
      const tlog = new TransparencyLog(store, kek, trustDomain, audit);
      await tlog.init();
      // The bundle carries the log key: agents witnessing checkpoints trust it through the CA.
      // Grants go into the bundle; approving one publishes a bundle (hence the late-bound `policy`).
      const grants: GrantService = new GrantService(store, { now: Date.now, minSeconds: options.grantMinSeconds ?? MIN_GRANT_SECONDS,
        ...(options.grantRetentionMs !== undefined ? { retentionMs: options.grantRetentionMs } : {}), changed: (): Promise<number> => policy.grantsChanged() });
      // Named admins go into the bundle too, for the key servers (hence the late-bound `admins`).
      const admins: AdminService = new AdminService(store, ca, { trustDomain, bootstrapId: `spiffe://${trustDomain}/tessera/admin`, now: Date.now, changed: () => policy.entriesChanged() });
      const policy: PolicyService = new PolicyService(store, ca, { auditLogKey: tlog.verifierKey, grants: (now) => grants.forBundle(now), admins: (now) => admins.forBundle(now) });
      await policy.init();
      const firstCheckpoint = lease?.held() ? await tlog.checkpoint() : undefined;
      const now = Date.now;
      const risk = new RiskService({
        store, audit, now, serverId: `spiffe://${trustDomain}/tessera/server`, publish: () => policy.riskChanged(), ...(options.risk ? { settings: options.risk } : {}),
      });
      await policy.setRiskSource((at) => risk.listed(at));
      const adminPolicy = new AdminPolicyService(store, now);
      // Without a listener nobody reads them: a bare registry, without the default process metrics' timers.
      const metrics = options.metrics ?? new ControlPlaneMetrics(new Registry());
      const adminAuthz = new AdminAuthorizer({
        trustDomain, bootstrapId: `spiffe://${trustDomain}/tessera/admin`, mfaMaxAgeMs: options.adminMfaMaxAgeMs ?? DEFAULT_ADMIN_MFA_MAX_AGE_MS,
        policies: adminPolicy, admins, riskScore: async (id) => (await risk.standing(id)).score, log, metrics, now,
      });
      const registry = new RegistryService({ store, policy, trustDomain, now, defaults: { x509TtlSeconds: opts.x509TtlSeconds, jwtTtlSeconds: opts.jwtTtlSeconds } });
      const people = buildPeople({ store: store.people, kek, trustDomain, now, issuer: () => ctx.issuer, options: options.people });
      const ctx: ServerContext = {
        ca, policy, registry, audit, tlog, log, trustDomain,
        svids: new SvidService({ store, ca, registry, policy, trustDomain, now, risk, issuer: () => ctx.issuer }),
        credentials: new CredentialService({ store, registry, policy, trustDomain, now, risk }),
        risk,
        riskConfig: new RiskConfigService(store, CONTROL_PLANE_RISK_CONFIG),
        secrets: new SecretPolicyService(store, ca, now),
        adminId: `spiffe://${trustDomain}/tessera/admin`,
        admins,
        adminAuthz,
        adminPolicy,
        grants,
        serverId: `spiffe://${trustDomain}/tessera/server`,
        issuer: opts.publicUrl ?? '',
        metrics,
        // Unseal telemetry is taken only from key servers that a secret-policy record names.
        telemetry: new TelemetryService(store, { ...DEFAULT_TELEMETRY_SETTINGS, ...options.telemetry }, Date.now, (id) => ctx.secrets.isKeyServer(id),
          async (id) => (await ctx.gateways.ofIdentity(id))?.name),
        map: new MapService({ store, risk, registry, now }),
        ...people,
        ...buildLogin({ store: store.login, ca, users: people.users, trustDomain, now, options: options.people }),
        devices: new DeviceService({ store, ca, policy, trustDomain, now, ...(options.devices ? { settings: options.devices } : {}) }),
        gateways: new GatewayService({ store: store.gateways, trustDomain, now }),
        federation: new FederationService({ store: store.federation, trustDomain, now, log, ...(options.federation ? { settings: options.federation } : {}) }),
      };
      await ctx.federation.sync();
      ctx.metrics.watch({ bundleVersion: () => ctx.policy.current().version, auditTreeHead: () => store.auditTreeHead(), latestCheckpoint: () => store.getCheckpoint() });
      if (firstCheckpoint) ctx.metrics.checkpointSigned();
      // Person certificates from `tessera login` are admin principals judged by the admin policy.
      ctx.adminAuthz.usePeople({
        principalOfCert: (caller) => ctx.personCerts.principalOf(caller),
        anyUser: async () => (await ctx.users.list(1)).length > 0,
      });
      await ctx.personCerts.sync();
      await ctx.admins.sync();
      await ctx.adminAuthz.sync();
      const cp = new ControlPlane(opts, ctx, store, lease);
      if (opts.siem) ctx.metrics.watchSiem(() => cp.siem?.stats);
      await cp.listen();
      return cp;
    } catch (err) {
      await store.close();
      throw err;
    }
  }

  get port(): number {
    const addr = this.app.server.address();
    return typeof addr === 'object' && addr ? addr.port : 0;
  }

  get dataDir(): string {
    return this.opts.dataDir;
  }

  /** Directory holding the admin credential, the bundle and the server URL for the CLI. */
  get adminDir(): string {
    return join(this.opts.dataDir, 'admin');
  }

  /** Whether this replica holds the leader lease now. */
  leading(): boolean {
    return this.lease?.held() ?? false;
  }

  async stop(): Promise<void> {
    if (this.tickTimer) clearInterval(this.tickTimer);
    await this.feed?.stop();
    await this.siem?.stop();
    await this.bundleEndpoint?.close();
    await this.app.close();
    await this.expiring;
    await this.ctx.audit.flush();
    await this.checkpointing;
    // A clean stop leaves no unsigned tail: the leader signs the records of its last second.
    if (this.leading()) {
      await this.ctx.tlog.checkpoint().then((cp) => { if (cp) this.ctx.metrics.checkpointSigned(); },
        (err: unknown) => this.ctx.log.error('final audit checkpoint failed', { error: String(err) }));
    }
    // Given up, not left to lapse: another replica takes over at its next try.
    await this.lease?.stop();
    await this.store.close();
  }

  private async listen(): Promise<void> {
    const { app, ctx } = this;
    app.removeContentTypeParser(['text/plain']);
    app.setErrorHandler((err: Error, req, reply) => {
      const e = toTesseraError(err);
      if (e.code === 'TESSERA_INTERNAL') ctx.log.error('internal error', { route: req.routeOptions.url, error: err.message, stack: err.stack });
      void reply.code(e.status).type('application/json').send({ error: e.toJSON() });
    });
    app.setNotFoundHandler((_req, reply) => {
      void reply.code(404).send({ error: new TesseraError('TESSERA_NOT_FOUND').toJSON() });
    });
    ctx.metrics.observeApi(app);
    app.get('/healthz', async () => ({
      status: 'ok', trust_domain: ctx.trustDomain, bundle_sequence: ctx.ca.bundleSequence(), leader: this.leading(), replica: this.lease?.holder ?? 'follower',
    }) satisfies HealthResponse);
    registryRoutes(app, ctx);
    svidRoutes(app, ctx);
    apiKeyRoutes(app, ctx);
    caRoutes(app, ctx);
    auditRoutes(app, ctx);
    witnessRoutes(app, ctx, { ...DEFAULT_ALARM_RATE, ...this.opts.witnessAlarms });
    policyRoutes(app, ctx, { ...DEFAULT_DECISION_SETTINGS, ...this.opts.decisions }, { ...DEFAULT_BUNDLE_POLL_SETTINGS, ...this.opts.bundlePolls });
    secretPolicyRoutes(app, ctx);
    grantRoutes(app, ctx);
    telemetryRoutes(app, ctx);
    riskRoutes(app, ctx, ctx.risk);
    adminPolicyRoutes(app, ctx);
    mapRoutes(app, ctx);
    consoleRoutes(app, loadConsoleAssets(this.opts.consoleDir ?? defaultConsoleDir()));
    ctx.signInLimits.install(app);
    authRoutes(app, ctx);
    loginRoutes(app, ctx);
    loginPages(app);
    peopleAdminRoutes(app, ctx, this.store.people);
    peoplePages(app);
    deviceRoutes(app, ctx);
    gatewayRoutes(app, ctx, ctx.gateways);
    federationRoutes(app, ctx);

    await app.listen({ host: this.opts.host, port: this.opts.port }).catch((err: unknown) => {
      throw listenFailure(err, 'the control plane', `${this.opts.host}:${this.opts.port}`);
    });
    if (this.opts.bundleEndpoint) {
      const be = this.opts.bundleEndpoint;
      this.bundleEndpoint = await startBundleEndpoint({ ...be, bundle: () => JSON.stringify(ownBundle(ctx)) });
    }
    const hostPart = this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host;
    this.url = `https://${hostPart}:${this.port}`;
    if (!ctx.issuer) ctx.issuer = this.url;
    // A replica that owns its data directory writes the CLI's files there (every replica, leader or not).
    const owner = this.opts.role !== 'follower';
    const leading = (): boolean => this.leading();
    if (owner) {
      // server.json (written last by writeAdminFiles) says the admin directory is complete: the
      // bundle goes first, so a reader that waits for server.json never finds it missing.
      ensurePrivateDir(this.adminDir);
      this.writeBundleFiles();
      this.writeAdminFiles();
    }
    ctx.ca.on('bundle', () => {
      this.refreshTls();
      if (owner) this.writeBundleFiles();
    });
    ctx.ca.on('activated', () => {
      this.refreshTls();
      void ctx.policy.resign().catch((err: unknown) => ctx.log.error('policy bundle re-signing failed', { error: String(err) }));
      if (owner) {
        this.writeAdminFiles();
        ctx.log.info('CA activated', { ca: ctx.ca.active().rec.id });
      }
    });
    // What other replicas change reaches this one through the store's change log (a NOTIFY on
    // PostgreSQL, else the next poll): admins and their removal, person certificates, the admin
    // policy, federated bundles, the CA bundle and the policy bundle (revocations, quarantines and
    // grants are in it).
    this.feed = new ChangeFeed({
      store: this.store, log: ctx.log, pollMs: this.opts.changePollMs ?? 250,
      ...(this.opts.store !== undefined ? { listenUrl: this.opts.store } : {}),
      // Each cache follows on its own: one that fails (and is retried at the next poke) does not keep
      // the others, the CA among them, behind.
      sync: async () => {
        let failed: unknown;
        for (const step of [ctx.admins, ctx.personCerts, ctx.adminAuthz, ctx.federation, ctx.ca, ctx.policy]) {
          try {
            await step.sync();
          } catch (err) {
            failed ??= err;
          }
        }
        if (failed !== undefined) throw failed;
      },
    });
    await this.feed.start();
    ctx.metrics.watchReplica({ leading, notifications: () => this.feed?.notifications ?? 0, catchUps: () => this.feed?.catchUps ?? 0 });
    this.lease?.on('acquired', () => void this.takeDuties());
    this.lease?.on('lost', () => void this.dropDuties());
    this.lease?.start();
    if (this.leading()) await this.takeDuties();
    // The lease holder runs the single-writer duties, each tick, each only while it holds the lease:
    // the CA schedule, audit checkpoints (at most one a tick, when the tree grew), grant expiry,
    // the risk engine and risk expiry, federation fetches, change-log pruning.
    let lastPrune = 0;
    this.tickTimer = setInterval(() => {
      if (leading() && !this.checkpointing) {
        this.checkpointing = ctx.tlog.checkpoint().then((cp) => { if (cp) ctx.metrics.checkpointSigned(); }, (err: unknown) => ctx.log.error('audit checkpoint failed', { error: String(err) }))
          .finally(() => { this.checkpointing = undefined; });
      }
      // Ended grants past their retention are deleted (their history stays in the audit log).
      if (leading()) {
        ctx.grants.sweep().then((ended) => auditExpired(ctx, ended)).then(() => ctx.grants.prune()).then((pruned) => {
          if (pruned.length > 0) ctx.log.info('ended grants deleted after their retention', { count: pruned.length });
        }).catch((err: unknown) => ctx.log.error('grant upkeep failed', { error: String(err) }));
      }
      // The leader's risk engine reads the telemetry stored since its last step and acts on it.
      if (leading()) ctx.riskEngine?.step().catch((err: unknown) => ctx.log.error('risk engine step failed', { error: String(err) }));
      // The leader ends step-ups and quarantines at their TTL (audited, published).
      if (leading() && !this.expiring) {
        this.expiring = ctx.risk.expire().then(() => undefined, (err: unknown) => ctx.log.error('risk expiry failed', { error: String(err) }))
          .finally(() => { this.expiring = undefined; });
      }
      // Federated bundles: the leader fetches the endpoints (everyone follows through the change feed).
      if (leading()) ctx.federation.tick();
      if (leading() && Date.now() - lastPrune > 60_000) {
        lastPrune = Date.now();
        this.store.pruneChanges(Date.now() - 3_600_000).catch((err: unknown) => ctx.log.error('change log pruning failed', { error: String(err) }));
      }
      (leading() ? ctx.ca.tick().then(() => ctx.policy.sync()) : Promise.resolve()).then(() => {
        // Renew the server's own certificate at half life, like any SVID.
        const now = Date.now();
        if (now > (this.serverCertNotBefore + this.serverCertNotAfter) / 2 || now >= this.serverCertSettlesAt) this.refreshTls();
      }).catch((err: unknown) => ctx.log.error('CA schedule failed', { error: String(err) }));
    }, 1000);
    this.tickTimer.unref();
    ctx.log.info('control plane listening', { url: this.url, trust_domain: ctx.trustDomain });
  }

  /**
   * Becoming the leader: the risk engine (its state rebuilt from the stored telemetry) and the SIEM
   * exporter (one cursor, in the store) start here; the tick's duties start by themselves.
   */
  private async takeDuties(): Promise<void> {
    const { ctx } = this;
    try {
      // One link per process (it listens to the risk service's changes); rebuilt from the store at each term.
      this.riskLink ??= new RiskEngineLink({ store: this.store, risk: ctx.risk, log: ctx.log, config: ctx.riskConfig });
      await this.riskLink.init();
      if (this.leading()) ctx.riskEngine = this.riskLink;
    } catch (err) {
      ctx.log.error('risk engine start failed', { error: String(err) });
    }
    if (this.opts.siem && this.leading() && !this.siem) {
      this.siem = new SiemExporter(this.store, ctx.audit, this.opts.siem, ctx.log);
      this.siem.start();
      ctx.log.info('SIEM export started', { destination: this.siem.destination });
    }
  }

  /** No longer the leader: stop at once what runs outside the tick. */
  private async dropDuties(): Promise<void> {
    this.ctx.riskEngine = undefined;
    const siem = this.siem;
    this.siem = undefined;
    await siem?.stop();
  }

  /** TLS material: a server certificate from the active CA and every bundle CA as client roots. */
  private tlsOptions(): { key: string; cert: string; ca: string; requestCert: true; rejectUnauthorized: false; minVersion: 'TLSv1.2' } {
    const { ca, serverId } = this.ctx;
    this.serverKey ??= generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const ttlMs = Math.min(3600_000, ca.active().rec.notAfter - Date.now());
    const hosts = [this.opts.host, '127.0.0.1', '::1'].filter((h, i, a) => a.indexOf(h) === i && /^[\d.:]+$/.test(h));
    const issued = ca.issue({
      publicKey: createPublicKey(this.serverKey), uriSans: [serverId], dnsSans: ['localhost'], ipSans: hosts, subject: { commonName: 'tessera-server' },
    }, ttlMs, { settleMs: this.endpointSettleMs() });
    this.serverCertSettlesAt = issued.settlesAt ?? Infinity;
    this.serverCertNotBefore = issued.notBefore.getTime();
    this.serverCertNotAfter = issued.notAfter.getTime();
    this.serverCertCa = issued.caId;
    return {
      key: this.serverKey.export({ format: 'pem', type: 'pkcs8' }) as string,
      cert: pemEncode(issued.der, 'CERTIFICATE'),
      ca: ca.bundlePem(),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
    };
  }

  /**
   * This certificate is also the https_spiffe bundle endpoint's (SPIFFE_Federation.md §5.2.2): a
   * federated trust domain checks it with the copy of our bundle it fetched last, at our refresh hint.
   * A CA becomes its signer only once it has been published for a hint and a margin (a hand rotation
   * with a short grace activates sooner); until then the CA it replaced signs it.
   */
  private endpointSettleMs(): number {
    return this.ctx.federation.settings.refreshHintSeconds * 1000 + ENDPOINT_SETTLE_MARGIN_MS;
  }

  private refreshTls(): void {
    (this.app.server as HttpsServer).setSecureContext(this.tlsOptions());
    this.ctx.log.debug('TLS context rebuilt', { ca: this.serverCertCa });
  }

  private writeBundleFiles(): void {
    const pem = this.ctx.ca.bundlePem();
    writeFileAtomic(join(this.opts.dataDir, 'bundle.pem'), pem);
    writeFileAtomic(join(this.adminDir, 'bundle.pem'), pem);
  }

  /**
   * The admin credential for the CLI: a client certificate for spiffe://<td>/tessera/admin valid
   * until the active CA expires, re-issued at start and whenever the signing CA changes.
   */
  /**
   * The bootstrap admin credential, re-issued at each start and CA activation. The key already in the
   * directory is kept (a P-256 key), so that only admin.pem changes, in one atomic rename: a CLI reading
   * the pair meanwhile gets the old or the new certificate, both for the key it reads. (A new key, then
   * the certificate, in two writes, gave "key values mismatch" to a reader in between.)
   */
  private writeAdminFiles(): void {
    const { ca, adminId } = this.ctx;
    ensurePrivateDir(this.adminDir);
    const keyFile = join(this.adminDir, 'admin.key');
    let privateKey = readP256Key(keyFile);
    if (privateKey === undefined) {
      privateKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      writeFileAtomic(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600);
    }
    const issued = ca.issue({ publicKey: createPublicKey(privateKey), uriSans: [adminId], subject: { commonName: 'tessera-admin' } }, ca.active().rec.notAfter - Date.now());
    writeFileAtomic(join(this.adminDir, 'admin.pem'), pemEncode(issued.der, 'CERTIFICATE'), 0o600);
    writeFileAtomic(join(this.adminDir, 'server.json'), `${JSON.stringify({ url: this.url, trust_domain: this.ctx.trustDomain }, null, 2)}\n`);
  }
}


/** A P-256 private key from a PEM file, or undefined (no file, unreadable, another kind of key). */
function readP256Key(file: string): KeyObject | undefined {
  try {
    if (!existsSync(file)) return undefined;
    const key = createPrivateKey(readFileSync(file));
    return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1' ? key : undefined;
  } catch {
    return undefined;
  }
}

/** Our SPIFFE bundle as a bundle endpoint serves it: JWK Set with sequence and refresh hint. */
export function ownBundle(ctx: ServerContext): ReturnType<typeof bundleToJwks> {
  return { ...bundleToJwks(ctx.ca.bundle()), spiffe_refresh_hint: ctx.federation.settings.refreshHintSeconds };
}

/**
 * Loads the CAs. The leader creates the first one; another replica starting before it has waits
 * (up to 30 s) for it, and takes the lease itself if the leader went away meanwhile.
 */
async function initCa(ca: CertificateAuthority, lease: LeaderLease | undefined, log: Logger): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (let waited = false; ; waited = true) {
    const leading = lease ? await lease.renew() : false;
    try {
      await ca.init(leading);
      return;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== 'TESSERA_UNAVAILABLE' || Date.now() > deadline) throw err;
      if (!waited) log.info('waiting for the leader replica to create the trust domain\'s first CA');
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export function dataDirInitialized(dataDir: string): boolean {
  return existsSync(join(dataDir, 'tessera.db'));
}
