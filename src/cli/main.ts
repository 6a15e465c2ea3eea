import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
import { parsePathAllowances } from '../agent/inbound/inbound.js';
import { findHaproxy } from '../agent/haproxy/find.js';
import { parseUnsealSpec } from '../agent/secrets/files.js';
import { parseHostPort, parseOutboundSpec } from '../agent/listen-spec.js';
import { loadNodeConfig } from '../agent/per-node/config.js';
import { TesseraError } from '../core/errors.js';
import { formatDuration, parseDuration } from '../core/duration.js';
import { createLogger } from '../core/log.js';
import { isPrimary, leaveCluster, reportListening, reportStartFailure, supervise, workerRole } from '../server/cluster.js';
import { DEFAULTS } from '../server/defaults.js';
import { DEFAULT_POSTURE_RATE_LIMIT, parsePostureRateLimit } from '../server/devices/limits.js';
import { storeOption } from '../server/store/store-url.js';
import { idCommands } from './id.js';
import { validateJwtCommand } from './jwt.js';
import { apikeyCommands } from './apikey.js';
import { auditCommands } from './audit.js';
import { telemetryCommands } from './telemetry.js';
import { riskCommands, riskConfigCommands } from './risk.js';
import { DEFAULT_DECISION_SETTINGS, parseDecisionSettings } from '../server/policy/decisions.js';
import { DEFAULT_BUNDLE_POLL_SETTINGS, parseBundlePollSettings } from '../server/policy/poll-gate.js';
import { policyCommands } from './policy.js';
import { adminCommands } from './admin.js';
import { grantCommands, parseGrantMin } from './grant.js';
import { secretCommands } from './secrets.js';
import { riskCommand } from './risk-group.js';
import { riskReplayCommand } from './risk-replay.js';
import { gatewayCommands } from './gateway.js';
import { k8sCommands } from './k8s.js';
import { federationCommands } from './federation.js';
import { deviceCommands } from './device.js';
import { DEFAULT_SERVER_DIR, svidClient } from '../admin/clients.js';
import type { CaListResponse, CaRotateRequest, CaRotateResponse, CreateApiKeyRequest, CreateApiKeyResponse, CreateEntryRequest, CreateTokenRequest, CreateTokenResponse, DeleteEntryResponse, EntryListResponse, EntryView, JwtSvidRequest, JwtSvidResponse, RevokeEntryRequest, RevokeEntryResponse } from '../core/wire/control-plane.js';
import { count, EXIT, output, reportError, table, withAdmin, type GlobalOptions } from './context.js';
import { metricsListenOption, serveMetricsFlag } from './metrics.js';
import { siemOptions } from './siem-options.js';
import { telemetryFlags, telemetryOption } from './telemetry-flags.js';
import { peopleOptions, withPeopleFlags } from './people-options.js';
import { userCommands } from './user.js';
import { loginCommands } from './login.js';
import { PRODUCT_VERSION } from '../core/audit-export.js';

type Json = Record<string, unknown>;

function seconds(value: string | undefined, what: string): number | undefined {
  return value === undefined ? undefined : Math.max(1, Math.round(parseDuration(value, what) / 1000));
}

/** `--policy-watch`: whole seconds, 1 to 60 (the control plane holds a long poll at most 60 s). */
function policyWatch(value: string): number {
  const ms = parseDuration(value, '--policy-watch');
  if (ms < 1000 || ms % 1000 !== 0 || ms > 60_000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--policy-watch must be whole seconds from 1s to 60s, e.g. 25s');
  return ms / 1000;
}

function parseListen(value: string): { host: string; port: number } {
  return parseHostPort(value, '--listen');
}

function fraction(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new TesseraError('TESSERA_CONFIG_INVALID', '--allow-sample must be a number from 0 to 1');
  return n;
}

/** The `tessera agent` flags a sidecar and a node agent (every workload of it) share. */
function agentSettings(o: Json) {
  return {
    allowSampleRate: fraction(String(o.allowSample)),
    decisionBuffer: count('--decision-buffer', 10_000_000)(String(o.decisionBuffer)),
    inboundLimits: {
      refusalRecordsPerSecond: count('--refusal-sample', 1_000_000)(String(o.refusalSample)),
      maxConnections: count('--max-connections', 1_000_000)(String(o.maxConnections)),
    },
    policyWatchSeconds: policyWatch(String(o.policyWatch)),
    telemetry: telemetryOption(o),
  };
}

function entryRow(e: EntryView): string[] {
  const attrs = Object.entries(e.attributes ?? {}).map(([k, v]) => `${k}=${String(v)}`).join(',');
  return [String(e.id), String(e.spiffe_id), attrs || '-', e.selectors.join(',') || '-', formatDuration(Number(e.x509_ttl_seconds) * 1000),
    e.revoked_at ? `revoked ${String(e.revoked_at)}` : 'live'];
}

const ENTRY_COLUMNS = ['ID', 'SPIFFE ID', 'ATTRIBUTES', 'SELECTORS', 'X509 TTL', 'STATE'];

function describeEntry(e: EntryView): string {
  return table(ENTRY_COLUMNS, [entryRow(e)]) + (e.revoked_reason ? `\nrevoked: ${String(e.revoked_reason)}` : '');
}

/** Wraps an action: global options, errors with stable codes and exit statuses. */
function run<A extends unknown[]>(fn: (g: GlobalOptions, ...args: A) => Promise<void>) {
  return async (...args: A): Promise<void> => {
    const cmd = args[args.length - 1] as Command;
    const g = cmd.optsWithGlobals<GlobalOptions>();
    try {
      await fn(g, ...args);
    } catch (err) {
      process.exitCode = reportError(err, Boolean(g.json));
    }
  };
}

/** `--admin-mfa-max-age`: 1 second to 24 hours. */
function adminMfaMaxAge(value: string): number {
  const ms = parseDuration(value, '--admin-mfa-max-age');
  if (ms > 86_400_000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--admin-mfa-max-age must be at most 24h');
  return ms;
}

export function buildProgram(): Command {
  const program = new Command('tessera')
    .description('Tessera: workload identity (SPIFFE), mTLS and policy for applications across clouds, data centres and edge sites.')
    .version(PRODUCT_VERSION)
    .option('--json', 'print machine-readable JSON')
    .option('--admin-dir <dir>', `admin credential directory (default $TESSERA_ADMIN_DIR or ${DEFAULT_SERVER_DIR}/admin)`)
    .option('--server <url>', 'control plane URL (default: from the admin directory); several replicas comma-separated, https://A:8443,https://B:8443: used in turn when one cannot be reached')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  withPeopleFlags(metricsListenOption(program.command('server')))
    .description('run the control plane: CA, registry, join tokens, derived credentials and audit, on an HTTPS API')
    .option('--data-dir <dir>', 'state directory (SQLite database, sealed CA keys, admin credential)', DEFAULT_SERVER_DIR)
    .option('--store <url>', 'keep the control plane\'s data in PostgreSQL instead of DATA_DIR/tessera.db: postgres://USER[:PASSWORD]@HOST:PORT/DATABASE (default $TESSERA_STORE); the KEK and admin credential stay in --data-dir')
    .option('--listen <host:port>', 'address to listen on', `${DEFAULTS.host}:${DEFAULTS.port}`)
    .option('--trust-domain <name>', `trust domain, fixed at first start (default ${DEFAULTS.trustDomain})`)
    .option('--ca-ttl <duration>', 'lifetime of each CA certificate', '24h')
    .option('--svid-ttl <duration>', 'default X.509-SVID lifetime for new entries', '1h')
    .option('--jwt-ttl <duration>', 'default JWT-SVID lifetime for new entries', '5m')
    .option('--public-url <url>', 'external base URL: JWT issuer and OIDC discovery (default https://HOST:PORT)')
    .option('--workers <n>', 'processes serving the API on one port and store (one leader runs the CA schedule)', '1')
    .option('--decision-rate-limit <rate>', 'decision records each identity may ship, per worker: PER_SECOND[:BURST] (BURST >= 1000)',
      `${DEFAULT_DECISION_SETTINGS.rateLimit.perSecond}:${DEFAULT_DECISION_SETTINGS.rateLimit.burst}`)
    .option('--bundle-rate-limit <rate>', 'policy bundle requests (agents\' long polls) each identity may make, per worker: PER_SECOND[:BURST]',
      `${DEFAULT_BUNDLE_POLL_SETTINGS.rateLimit.perSecond}:${DEFAULT_BUNDLE_POLL_SETTINGS.rateLimit.burst}`)
    .option('--bundle-max-polls <n>', 'policy bundle long polls each identity may hold open at once, per worker', String(DEFAULT_BUNDLE_POLL_SETTINGS.maxPolls))
    .option('--grant-retention <duration>', 'how long ended just-in-time grants (expired, denied, revoked) stay listed before they are deleted; the audit log keeps their history', '30d')
    .option('--replay-limit <limits>', 'decisions a policy dry run replays: PER_ENFORCER:TOTAL',
      `${DEFAULT_DECISION_SETTINGS.replay.perEnforcer}:${DEFAULT_DECISION_SETTINGS.replay.maxTotal}`)
    .option('--admin-mfa-max-age <duration>', 'how old a person\'s MFA may be for an admin action; older: TESSERA_MFA_REQUIRED (step up)', '15m')
    .option('--grant-min <duration>', 'shortest just-in-time grant an admin may request: whole seconds, 1s to 1h (default 1m)')
    .option('--siem <url>', 'ship every audit record to a syslog receiver: syslog+tls://HOST:PORT (RFC 5425) or syslog+tcp://HOST:PORT; at least once, from a stored cursor')
    .option('--siem-ca <file>', 'PEM CA certificate(s) the receiver\'s certificate must chain to (syslog+tls; default: the system roots); its name must match HOST')
    .option('--siem-cert <file>', 'client certificate (PEM) for a receiver that asks for one (with --siem-key)')
    .option('--siem-key <file>', 'client private key (PEM) for --siem-cert')
    .option('--device-posture-stale <duration>', 'a device\'s posture older than this is "stale" in context.device (default 2x the device agent\'s 5m interval)', '10m')
    .option('--device-posture-rate-limit <rate>', 'posture reports each device may send, per worker: PER_SECOND[:BURST]; more are refused (429 TESSERA_RATE_LIMITED) before they are audited',
      `${DEFAULT_POSTURE_RATE_LIMIT.perSecond}:${DEFAULT_POSTURE_RATE_LIMIT.burst}`)
    .option('--bundle-endpoint <host:port>', 'also serve our SPIFFE bundle on an https_web bundle endpoint here (GET /), with --bundle-endpoint-cert and --bundle-endpoint-key (a Web PKI certificate)')
    .option('--bundle-endpoint-cert <file>', 'PEM certificate chain of the https_web bundle endpoint')
    .option('--bundle-endpoint-key <file>', 'PEM private key of the https_web bundle endpoint')
    .option('--federation-refresh-hint <duration>', 'spiffe_refresh_hint of the bundle we serve (how often federated domains re-fetch it)', '5m')
    .option('--federation-refresh-min <duration>', 'refresh federated bundles no more often than this, whatever their hint', '5s')
    .option('--federation-refresh-max <duration>', 'refresh federated bundles at least this often, whatever their hint', '1h')
    .option('--siem-settle <duration>', 'a record counts as delivered once written this long ago on a connection still up (default 3s)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .addHelpText('after', '\nThe key-encryption key for CA keys comes from $TESSERA_KEK (32 bytes, hex or base64) or DATA_DIR/kek.key (created 0600).\nThe admin credential for this CLI is written to DATA_DIR/admin/.')
    .action(run(async (g, o: Json) => {
      const { host, port } = parseListen(String(o.listen));
      const log = createLogger({ level: o.logLevel as 'info', pretty: !g.json });
      const workers = Number(o.workers);
      if (!Number.isInteger(workers) || workers < 1 || workers > 64) throw new TesseraError('TESSERA_CONFIG_INVALID', '--workers must be an integer from 1 to 64');
      const decisions = parseDecisionSettings(String(o.decisionRateLimit), String(o.replayLimit));
      const bundlePolls = parseBundlePollSettings(String(o.bundleRateLimit), String(o.bundleMaxPolls));
      // Each worker counts its own requests: one listener would show one worker's (to be aggregated later).
      if (workers > 1 && o.metricsListen !== undefined) throw new TesseraError('TESSERA_CONFIG_INVALID', '--metrics-listen needs --workers 1 (metrics of several workers are not aggregated yet)');
      const siem = siemOptions(o);
      const grantMinSeconds = o.grantMin !== undefined ? parseGrantMin(String(o.grantMin)) : undefined;
      const people = peopleOptions(o);
      const postureRateLimit = parsePostureRateLimit(String(o.devicePostureRateLimit));
      const store = storeOption(o.store, process.env.TESSERA_STORE);
      if (workers > 1 && isPrimary()) {
        await supervise(workers, log);
        return;
      }
      const role = workerRole() ?? 'leader';
      // Loaded here, not at the top: every CLI process (each admin command) would pay for them.
      const [{ ControlPlane }, { ControlPlaneMetrics }] = await Promise.all([import('../server/server.js'), import('../server/metrics.js')]);
      const metrics = o.metricsListen !== undefined ? new ControlPlaneMetrics() : undefined;
      const metricsListener = await serveMetricsFlag(o.metricsListen, () => metrics!.registry, log, parseListen);
      const cp = await ControlPlane.start({
        dataDir: String(o.dataDir), host, port, log: role === 'leader' ? log : log.child({ worker: process.pid }), role,
        ...(store !== undefined ? { store } : {}),
        ...(o.trustDomain ? { trustDomain: String(o.trustDomain) } : {}),
        ...(o.publicUrl ? { publicUrl: String(o.publicUrl) } : {}),
        caTtlMs: parseDuration(String(o.caTtl), '--ca-ttl'),
        x509TtlSeconds: seconds(String(o.svidTtl), '--svid-ttl')!,
        jwtTtlSeconds: seconds(String(o.jwtTtl), '--jwt-ttl')!,
        decisions,
        adminMfaMaxAgeMs: adminMfaMaxAge(String(o.adminMfaMaxAge)),
        ...(grantMinSeconds !== undefined ? { grantMinSeconds } : {}),
        bundlePolls,
        grantRetentionMs: parseDuration(String(o.grantRetention), '--grant-retention'),
        devices: { postureStaleMs: parseDuration(String(o.devicePostureStale), '--device-posture-stale'), postureRateLimit },
        ...(siem ? { siem } : {}),
        ...(people ? { people } : {}),
        federation: {
          refreshHintSeconds: seconds(String(o.federationRefreshHint), '--federation-refresh-hint')!,
          minRefreshSeconds: seconds(String(o.federationRefreshMin), '--federation-refresh-min')!,
          maxRefreshSeconds: seconds(String(o.federationRefreshMax), '--federation-refresh-max')!,
        },
        ...bundleEndpointOption(o, parseListen),
        ...(metrics ? { metrics } : {}),
      }).catch(async (err: unknown) => {
        await metricsListener?.close();
        // A worker of --workers N: its primary reports the error once, with its code and status.
        if (reportStartFailure(err)) return undefined;
        throw err;
      });
      if (cp === undefined) return;
      if (role === 'leader') log.info('admin credential written', { dir: cp.adminDir });
      reportListening();
      await untilSignal(async () => {
        await cp.stop();
        await metricsListener?.close();
      });
      leaveCluster();
    }));

  telemetryFlags(metricsListenOption(program.command('agent')), 'the proxies\' counts')
    .description('run an agent: join with a one-time token, keep the SVID fresh, follow the trust bundle')
    .requiredOption('--data-dir <dir>', 'agent state directory (svid.pem, svid.key, bundle.pem); with --node, the node\'s (DIR/node, DIR/workloads/NAME)')
    .option('--node <file>', 'one agent for every workload of this host: a JSON file listing them (name, join token file, inbound, outbounds, unseal; see README "One agent per node"), instead of the per-workload flags')
    .option('--join-token <token>', 'one-time join token (only needed until the agent has an identity); or $TESSERA_JOIN_TOKEN')
    .option('--trust-bundle <file>', 'CA bundle to trust for the first connection (the server\'s DATA_DIR/bundle.pem)')
    .option('--inbound <host:port>', 'inbound mTLS proxy: listen here, authorize every caller with the policy, forward to --app')
    .option('--app <host:port>', 'the application behind the inbound proxy (plain, loopback)')
    .addOption(new Option('--mode <mode>', 'inbound proxy mode: http (decision per request) or tcp (decision per connection)').choices(['http', 'tcp']).default('http'))
    .addOption(new Option('--data-plane <kind>', 'who terminates the inbound mTLS: node (the agent) or haproxy (Debian\'s HAProxy run by the agent, deciding every request with the agent over SPOE; http mode only)').choices(['node', 'haproxy']).default('node'))
    .option('--inbound-allow <shapes>', 'http mode: also accept these request path shapes the proxy refuses by default (400 TESSERA_PROXY_PATH_REFUSED), comma-separated: semicolon (`;` in segments), empty-segments (`//`)')
    .option('--outbound <spec...>', 'outbound proxy LISTEN=TARGET@SPIFFE_ID: the app talks plain to LISTEN, the agent calls TARGET over mTLS as this workload. LISTEN unix:PATH (secure: only processes matching the entry\'s unix: selectors) or HOST:PORT (ANY local user can use it)')
    .option('--workload-api-socket <path>', 'serve the SPIFFE Workload API on this Unix socket')
    .option('--allow-sample <fraction>', 'fraction of allowed decisions recorded in the audit log (denials always are)', '0.01')
    .option('--decision-buffer <records>', 'decision records kept in memory waiting to be shipped; more are dropped and counted (a warning every 10 s)', '10000')
    .option('--refusal-sample <per-second>', 'inbound refusals before any decision (failed handshakes, refused identities) recorded per second and code; the rest are counted', '10')
    .option('--max-connections <n>', 'inbound caller connections accepted at once', '10000')
    .option('--unseal <spec...>', 'open a sealed file for the app: SEALED_FILE=OUTPUT_PATH (written 0600; retried with backoff until it succeeds)')
    .option('--policy-watch <duration>', 'long-poll period of the policy stream, 1s to 60s: a new policy arrives at once, but the audit checkpoint the agent witnesses rides on each answer, so this is how late it sees the log', '25s')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .addHelpText('after', '\nAlso required: --server https://HOST:PORT (the control plane URL).\n\n'
      + 'Outbound listeners: on a Unix socket (--outbound unix:/run/tessera/orders.sock=10.0.0.7:9443@spiffe://td/orders)\n'
      + 'only a process whose uid/gid (SO_PEERCRED) match the entry\'s unix: selectors is carried, the same check as\n'
      + 'the Workload API; others are refused before a byte is sent. On TCP (127.0.0.1:7001=...) ANY local user can\n'
      + 'connect and make mTLS calls as this workload: use it only on a host where every local user is trusted.')
    .action(run(async (g, o: Json) => {
      if (!g.server) throw new TesseraError('TESSERA_CONFIG_INVALID', 'the agent needs --server https://HOST:PORT (the control plane URL)');
      const log = createLogger({ level: o.logLevel as 'info', pretty: !g.json });
      if (o.node !== undefined) return runNodeAgent(g.server, o, log);
      const joinToken = (o.joinToken as string | undefined) ?? process.env.TESSERA_JOIN_TOKEN;
      const unsealSpecs = ((o.unseal as string[] | undefined) ?? []).map(parseUnsealSpec);
      // Every flag is checked before the node starts: a bad flag must not spend the one-time join token.
      const sidecar = {
        ...agentSettings(o),
        ...(o.inbound ? { inbound: { listen: parseHostPort(o.inbound, '--inbound'), app: parseHostPort(o.app, '--app'), mode: o.mode as 'http' | 'tcp', dataPlane: dataPlane(o), ...(o.inboundAllow ? { allowPath: parsePathAllowances(String(o.inboundAllow)) } : {}) } } : {}),
        outbounds: ((o.outbound as string[] | undefined) ?? []).map((spec) => parseOutboundSpec(spec, '--outbound')),
        ...(o.workloadApiSocket ? { workloadApiSocket: String(o.workloadApiSocket) } : {}),
        // HAProxy keeps dying: stop the agent with an error status rather than run without an inbound.
        onFatal: () => {
          process.exitCode = 1;
          process.kill(process.pid, 'SIGTERM');
        },
      };
      const [{ startAgentNode }, { AgentMetrics }] = await Promise.all([import('../agent/node.js'), import('../agent/metrics.js')]);
      const metrics = o.metricsListen !== undefined ? new AgentMetrics() : undefined;
      const metricsListener = await serveMetricsFlag(o.metricsListen, () => metrics!.registry, log, parseListen);
      const node = await startAgentNode({
        serverUrl: g.server, dataDir: String(o.dataDir), log, sidecar, unseal: unsealSpecs,
        ...(joinToken ? { joinToken } : {}),
        ...(o.trustBundle ? { trustBundleFile: String(o.trustBundle) } : {}),
        ...(metrics ? { metrics } : {}),
      }).catch(async (err: unknown) => {
        await metricsListener?.close();
        throw err;
      });
      await untilSignal(async () => {
        await node.close();
        await metricsListener?.close();
      });
    }));

  /** `tessera agent --node FILE`: the whole file is checked before anything starts (join tokens are single use). */
  async function runNodeAgent(server: string, o: Json, log: ReturnType<typeof createLogger>): Promise<void> {
    const perWorkload = (['joinToken', 'inbound', 'app', 'outbound', 'unseal', 'workloadApiSocket', 'inboundAllow'] as const).filter((k) => o[k] !== undefined);
    if (perWorkload.length > 0) {
      const flag = perWorkload[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      throw new TesseraError('TESSERA_CONFIG_INVALID', `--${flag} cannot be used with --node: each workload's settings are in the node config file`);
    }
    if (o.dataPlane === 'haproxy') throw new TesseraError('TESSERA_CONFIG_INVALID', '--data-plane haproxy is not supported with --node yet: a node agent\'s inbounds run on the Node data plane');
    const config = loadNodeConfig(String(o.node));
    // Every flag is checked before anything listens or joins.
    const settings = {
      serverUrl: server, dataDir: String(o.dataDir), log, config,
      ...(o.trustBundle ? { trustBundleFile: String(o.trustBundle) } : {}),
      ...agentSettings(o),
    };
    const [{ startNodeAgent }, { AgentMetrics }] = await Promise.all([import('../agent/per-node/node-agent.js'), import('../agent/metrics.js')]);
    const metrics = o.metricsListen !== undefined ? new AgentMetrics() : undefined;
    const metricsListener = await serveMetricsFlag(o.metricsListen, () => metrics!.registry, log, parseListen);
    const node = await startNodeAgent({ ...settings, ...(metrics ? { metrics } : {}) }).catch(async (err: unknown) => {
      await metricsListener?.close();
      throw err;
    });
    await untilSignal(async () => {
      await node.close();
      await metricsListener?.close();
    });
  }

  const entry = program.command('entry').description('manage registration entries (admin)');
  entry.command('create')
    .description('register a workload identity')
    .requiredOption('--spiffe-id <id>', 'SPIFFE ID, e.g. spiffe://tessera.test/payments/api')
    .option('--selector <type:value...>', 'selectors that identify the workload, e.g. unix:uid:1000')
    .option('--app <name>', 'attribute: application').option('--site <name>', 'attribute: site')
    .option('--compliance <level>', 'attribute: compliance level').option('--location <where>', 'attribute: location')
    .option('--env <env>', 'attribute: environment')
    .option('--x509-ttl <duration>', 'X.509-SVID lifetime (default: the server\'s)')
    .option('--jwt-ttl <duration>', 'JWT-SVID lifetime (default: the server\'s)')
    .option('--apikey-max-ttl <duration>', 'longest lifetime of this identity\'s API keys (default 1d, at most 7d)')
    .action(run(async (g, o: Json) => {
      const attributes = Object.fromEntries(['app', 'site', 'compliance', 'location', 'env'].filter((k) => o[k] !== undefined).map((k) => [k, o[k]]));
      const x509 = seconds(o.x509Ttl as string | undefined, '--x509-ttl');
      const jwt = seconds(o.jwtTtl as string | undefined, '--jwt-ttl');
      const res = await withAdmin(g, (c) => c.call<EntryView>('POST', '/v1/entries', {
        spiffe_id: o.spiffeId as string, selectors: (o.selector as string[] | undefined) ?? [], attributes,
        ...(x509 ? { x509_ttl_seconds: x509 } : {}), ...(jwt ? { jwt_ttl_seconds: jwt } : {}),
        ...(o.apikeyMaxTtl ? { apikey_max_ttl_seconds: seconds(String(o.apikeyMaxTtl), '--apikey-max-ttl') } : {}),
      } satisfies CreateEntryRequest));
      output(g, res, () => describeEntry(res));
    }));
  entry.command('list').description('list registration entries').action(run(async (g) => {
    const res = await withAdmin(g, (c) => c.call<EntryListResponse>('GET', '/v1/entries'));
    output(g, res, () => (res.entries.length ? table(ENTRY_COLUMNS, res.entries.map(entryRow)) : 'no entries'));
  }));
  entry.command('show').description('show one entry').argument('<id>', 'entry id or SPIFFE ID').action(run(async (g, id: string) => {
    const res = await withAdmin(g, (c) => c.call<EntryView>('GET', `/v1/entries/${encodeURIComponent(id)}`));
    output(g, res, () => describeEntry(res));
  }));
  entry.command('delete').description('delete an entry: its SPIFFE ID and every SVID it was issued are revoked at once, everywhere')
    .argument('<id>', 'entry id or SPIFFE ID').action(run(async (g, id: string) => {
      const res = await withAdmin(g, (c) => c.call<DeleteEntryResponse>('DELETE', `/v1/entries/${encodeURIComponent(id)}`));
      output(g, res, () => `deleted ${String(res.spiffe_id)} (${String(res.deleted)}); revoked in policy bundle ${String(res.bundle_version)}`);
    }));
  entry.command('revoke').description('revoke an entry: kept, but its current and future SVIDs are refused everywhere (within a second)')
    .argument('<id>', 'entry id or SPIFFE ID')
    .requiredOption('--reason <text>', 'why (printable text, up to 256 characters; audited and shown to operators)')
    .action(run(async (g, id: string, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<RevokeEntryResponse>('POST', `/v1/entries/${encodeURIComponent(id)}/revoke`, { reason: o.reason as string } satisfies RevokeEntryRequest));
      output(g, res, () => `revoked ${String(res.spiffe_id)} (${String(res.id)}) at ${String(res.revoked_at)}; in policy bundle ${String(res.bundle_version)}`);
    }));

  program.command('token').description('join tokens (admin)').command('create')
    .description('create a single-use join token bound to one entry (shown once)')
    .requiredOption('--entry <id>', 'entry id or SPIFFE ID')
    .option('--ttl <duration>', 'how long the token stays usable', '10m')
    .action(run(async (g, o: Json) => {
      const ttl = seconds(String(o.ttl), '--ttl');
      const res = await withAdmin(g, (c) => c.call<CreateTokenResponse>('POST', '/v1/tokens', { entry_id: o.entry as string, ttl_seconds: ttl } satisfies CreateTokenRequest));
      output(g, res, () => `${String(res.token)}\n# single use, for ${String(res.spiffe_id)}, expires ${String(res.expires_at)} (ref ${String(res.token_ref)})`);
    }));

  const ca = program.command('ca').description('certificate authorities (admin)');
  ca.command('list').description('list CAs and the bundle').action(run(async (g) => {
    const res = await withAdmin(g, (c) => c.call<CaListResponse>('GET', '/v1/ca'));
    output(g, res, () => `trust domain ${res.trust_domain}, bundle sequence ${res.bundle_sequence}\n${table(['ID', 'STATE', 'NOT AFTER', 'ACTIVATES', 'IN BUNDLE'],
      res.authorities.map((a) => [String(a.id), String(a.state), String(a.notAfter), String(a.activateAt ?? '-'), a.inBundle ? 'yes' : 'no']))}`);
  }));
  ca.command('rotate').description('prepare the next CA: published in the bundle now, signing after the grace period')
    .option('--grace <duration>', 'time for every agent to learn the new CA before it signs', '10m')
    .action(run(async (g, o: Json) => {
      const grace = Math.round(parseDuration(String(o.grace), '--grace') / 1000);
      const res = await withAdmin(g, (c) => c.call<CaRotateResponse>('POST', '/v1/ca/rotate', { grace_seconds: grace } satisfies CaRotateRequest));
      output(g, res, () => `prepared CA ${String(res.prepared.id)}; it signs from ${String(res.prepared.activateAt)}`);
    }));

  const svid = program.command('svid').description('derived credentials, requested with an agent\'s SVID');
  svid.command('jwt').description('mint a JWT-SVID for an audience (prints the token)')
    .requiredOption('--agent-dir <dir>', 'the agent\'s data directory (its SVID authenticates the request)')
    .requiredOption('--audience <aud...>', 'audience(s) the token is for')
    .option('--ttl <duration>', 'lifetime (capped by the entry\'s JWT TTL)')
    .action(run(async (g, o: Json) => {
      const client = svidClient(String(o.agentDir), g.server);
      try {
        const ttl = seconds(o.ttl as string | undefined, '--ttl');
        const res = await client.call<JwtSvidResponse>('POST', '/v1/svid/jwt', { audience: o.audience as string[], ...(ttl ? { ttl_seconds: ttl } : {}) } satisfies JwtSvidRequest);
        output(g, res, () => String(res.token));
      } finally {
        client.close();
      }
    }));
  svid.command('apikey').description('create a scoped, expiring API key (shown once)')
    .requiredOption('--agent-dir <dir>', 'the agent\'s data directory')
    .requiredOption('--scope <scope...>', 'scopes, e.g. orders:read')
    .option('--ttl <duration>', 'lifetime (at most the entry\'s API key bound, default 1d)')
    .action(run(async (g, o: Json) => {
      const client = svidClient(String(o.agentDir), g.server);
      try {
        const ttl = seconds(o.ttl as string | undefined, '--ttl');
        const res = await client.call<CreateApiKeyResponse>('POST', '/v1/apikeys', { scopes: o.scope as string[], ...(ttl ? { ttl_seconds: ttl } : {}) } satisfies CreateApiKeyRequest);
        output(g, res, () => `${String(res.api_key)}\n# scopes ${(res.scopes as string[]).join(',')}, expires ${String(res.expires_at)}`);
      } finally {
        client.close();
      }
    }));

  validateJwtCommand(svid, run);
  idCommands(program, run);
  policyCommands(program, run);
  apikeyCommands(program, run);
  auditCommands(program, run);
  adminCommands(program, run);
  grantCommands(program, run);
  userCommands(program, run);
  loginCommands(program, run);
  telemetryCommands(program, run);
  riskCommands(program, run);
  riskConfigCommands(program, run);
  riskReplayCommand(riskCommand(program), run);
  secretCommands(program, run, parseListen, untilSignal);
  deviceCommands(program, run);
  gatewayCommands(program, run, parseListen, untilSignal);
  k8sCommands(program, run, parseListen, untilSignal);
  federationCommands(program, run);
  return program;
}

/** `--data-plane`: haproxy runs the inbound in http mode only, and needs HAProxy installed. */
function dataPlane(o: Json): 'node' | 'haproxy' {
  if (o.dataPlane !== 'haproxy') return 'node';
  if (o.mode !== 'http') throw new TesseraError('TESSERA_CONFIG_INVALID', '--data-plane haproxy runs the inbound proxy in http mode only (--mode http)');
  if (findHaproxy() === undefined) throw new TesseraError('TESSERA_CONFIG_INVALID', '--data-plane haproxy needs HAProxy installed (Debian: apt-get install haproxy)');
  return 'haproxy';
}

/** Keeps the process alive until SIGINT/SIGTERM, then stops cleanly. */
function untilSignal(stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => {}, 1 << 30);
    let stopping = false;
    // Handlers stay installed: a second signal (Ctrl-C reaches a whole process group, then a
    // supervisor sends SIGTERM) must not kill the process in the middle of its clean stop.
    const onSignal = (): void => {
      if (stopping) return;
      stopping = true;
      clearInterval(keepAlive);
      stop().then(resolve, resolve);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with exit code 0.
      return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    return reportError(err, argv.includes('--json'));
  }
  return Number(process.exitCode ?? 0);
}

const code = await main(process.argv);
process.exitCode = code;

/** --bundle-endpoint with its certificate and key files (all three or none). */
function bundleEndpointOption(o: Json, listen: (v: string) => { host: string; port: number }): { bundleEndpoint?: { host: string; port: number; certPem: string; keyPem: string } } {
  const given = [o.bundleEndpoint, o.bundleEndpointCert, o.bundleEndpointKey].filter((v) => v !== undefined).length;
  if (given === 0) return {};
  if (given !== 3) throw new TesseraError('TESSERA_CONFIG_INVALID', '--bundle-endpoint needs --bundle-endpoint-cert and --bundle-endpoint-key');
  const read = (f: unknown, flag: string): string => {
    try {
      return readFileSync(String(f), 'utf8');
    } catch {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `${flag}: cannot read ${String(f)}`);
    }
  };
  return { bundleEndpoint: { ...listen(String(o.bundleEndpoint)), certPem: read(o.bundleEndpointCert, '--bundle-endpoint-cert'), keyPem: read(o.bundleEndpointKey, '--bundle-endpoint-key') } };
}
