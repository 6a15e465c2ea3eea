/**
 * `tessera gateway ...`: the gateway for people. `run` starts one (its own agent, joined with a join
 * token for its registration entry); `add`, `list`, `remove` register gateways with the control plane
 * (admin).
 */
import type { Command } from 'commander';
import { Option } from 'commander';
import { parseDuration } from '../core/duration.js';
import { TesseraError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import type { AddGatewayRequest, AddGatewayResponse, GatewayListResponse, GatewayView } from '../core/wire/gateway.js';
import { parseRoute } from '../gateway/route-table.js';
import { output, table, withAdmin, type Run } from './context.js';
import { metricsListenOption, serveMetricsFlag } from './metrics.js';

type Json = Record<string, unknown>;

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

const seconds = (v: unknown, flag: string): number => Math.max(1, Math.round(parseDuration(String(v), flag) / 1000));

export function gatewayCommands(program: Command, run: Run, parseListen: (v: string) => { host: string; port: number }, untilSignal: (stop: () => Promise<void>) => Promise<void>): void {
  const gw = program.command('gateway').description('the gateway for people: signs people in, asks Cedar (gateway:request), forwards to internal web apps');

  metricsListenOption(gw.command('run')).description('run a gateway: its own agent (SVID), Cedar decisions from the signed bundle, HTTPS on --listen')
    .requiredOption('--name <name>', 'the gateway\'s registered name (tessera gateway add NAME)')
    .requiredOption('--data-dir <dir>', 'state directory (agent SVID, policy bundle cache, assertion signing keys 0600)')
    .option('--join-token <token>', 'one-time join token for the gateway\'s registration entry; or $TESSERA_JOIN_TOKEN')
    .option('--trust-bundle <file>', 'CA bundle to trust for the first connection')
    .requiredOption('--listen <host:port>', 'address to serve HTTPS on')
    .requiredOption('--tls-cert <file>', 'server certificate chain (PEM) for the hosts routed (a browser-trusted certificate, not the SVID)')
    .requiredOption('--tls-key <file>', 'its private key (PEM)')
    .requiredOption('--route <spec>', 'route [NAME:]HOST[/PREFIX]=http://127.0.0.1:PORT (repeatable; longest prefix wins)', collect)
    .option('--public-url <url>', 'the control plane\'s URL as browsers reach it (default --server)')
    .option('--session-idle <duration>', 'a gateway session unused this long ends', '15m')
    .option('--session-max <duration>', 'a gateway session ends this long after sign-in', '8h')
    .option('--session-check <duration>', 'how often (at most) a session is checked against the control plane: the bound of logout everywhere', '5s')
    .option('--step-up-max-age <duration>', 'MFA age required while the person\'s risk state is step-up', '5m')
    .option('--key-rotation <duration>', 'assertion signing key rotation period', '24h')
    .option('--no-device-cert', 'do not ask browsers for a device certificate')
    .option('--allow-sample-rate <fraction>', 'fraction of allowed decisions shipped to the audit log (denials always are)', '1')
    .option('--no-telemetry', 'ship no telemetry windows of people')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .addHelpText('after', '\nAlso required: --server https://HOST:PORT (the control plane URL). Register the gateway first: tessera gateway add NAME --spiffe-id ID --url https://HOST:PORT (one --url per host routed).')
    .action(run(async (g, o: Json) => {
      if (!g.server) throw new TesseraError('TESSERA_CONFIG_INVALID', 'the gateway needs --server https://HOST:PORT (the control plane URL)');
      const routes = (o.route as string[]).map(parseRoute);
      const listen = parseListen(String(o.listen));
      const rate = Number(o.allowSampleRate);
      if (!(rate >= 0 && rate <= 1)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--allow-sample-rate must be a number from 0 to 1');
      const log = createLogger({ level: o.logLevel as 'info', pretty: !g.json });
      const joinToken = (o.joinToken as string | undefined) ?? process.env.TESSERA_JOIN_TOKEN;
      // Listening before the join: a port in use fails the command before the one-time token is spent.
      // Loaded here, not at the top: every other `tessera` command would pay for them.
      const [{ startGatewayNode }, { GatewayMetrics }] = await Promise.all([import('../gateway/node.js'), import('../gateway/metrics.js')]);
      const metrics = o.metricsListen !== undefined ? new GatewayMetrics() : undefined;
      const metricsListener = await serveMetricsFlag(o.metricsListen, () => metrics!.registry, log, parseListen);
      const node = await startGatewayNode({
        serverUrl: g.server, dataDir: String(o.dataDir), name: String(o.name), listen, tlsCertFile: String(o.tlsCert), tlsKeyFile: String(o.tlsKey), routes, log,
        allowSampleRate: rate, keyRotationMs: parseDuration(String(o.keyRotation), '--key-rotation'),
        ...(o.publicUrl ? { publicUrl: String(o.publicUrl) } : {}),
        ...(joinToken ? { joinToken } : {}),
        ...(o.trustBundle ? { trustBundleFile: String(o.trustBundle) } : {}),
        ...(o.telemetry === false ? { telemetry: false as const } : {}),
        ...(metrics ? { metrics } : {}),
        server: {
          requestDeviceCert: o.deviceCert !== false, stepUpMaxAgeSeconds: seconds(o.stepUpMaxAge, '--step-up-max-age'),
          sessions: { idleMs: parseDuration(String(o.sessionIdle), '--session-idle'), absoluteMs: parseDuration(String(o.sessionMax), '--session-max'), checkMs: parseDuration(String(o.sessionCheck), '--session-check') },
        },
      }).catch(async (err: unknown) => {
        await metricsListener?.close();
        throw err;
      });
      log.info('gateway ready', { port: node.server.port, spiffe_id: node.agent.spiffeId, routes: routes.map((r) => `${r.name}=${r.host}${r.prefix}`).join(' ') });
      await untilSignal(async () => {
        await node.close();
        await metricsListener?.close();
      });
    }));

  const row = (v: GatewayView): string[] => [v.name, v.spiffe_id, v.urls.join(' '), v.created_at];
  gw.command('add').description('register a gateway (admin): the SPIFFE ID of its registration entry and the origins it serves')
    .argument('<name>', 'gateway name (a-z 0-9 -)')
    .requiredOption('--spiffe-id <id>', 'the SPIFFE ID of the gateway\'s registration entry (tessera entry create)')
    .requiredOption('--url <origin>', 'an https origin the gateway serves, e.g. https://wiki.example.com:8443 (repeatable: one per host routed)', collect)
    .action(run(async (g, name: string, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<AddGatewayResponse>('POST', '/v1/gateways', { name, spiffe_id: String(o.spiffeId), urls: o.url as string[] } satisfies AddGatewayRequest));
      output(g, res, () => `registered gateway ${res.gateway.name} (${res.gateway.spiffe_id}); redirect URIs: ${res.gateway.redirect_uris.join(' ')}`);
    }));
  gw.command('list').description('list registered gateways (admin)')
    .action(run(async (g) => {
      const res = await withAdmin(g, (c) => c.call<GatewayListResponse>('GET', '/v1/gateways'));
      output(g, res, () => (res.gateways.length === 0 ? 'no gateways' : table(['NAME', 'SPIFFE ID', 'URLS', 'CREATED'], res.gateways.map(row))));
    }));
  gw.command('remove').description('remove a gateway registration (admin): its codes and session checks are refused from then on')
    .argument('<name>', 'gateway name')
    .action(run(async (g, name: string) => {
      const res = await withAdmin(g, (c) => c.call<{ gateway: GatewayView }>('POST', `/v1/gateways/${encodeURIComponent(name)}/remove`, {}));
      output(g, res, () => `removed gateway ${res.gateway.name}`);
    }));
}
