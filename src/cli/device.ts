import { existsSync, readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { Option } from 'commander';
import { parseDuration } from '../core/duration.js';
import { TesseraError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { postureReportJson } from '../core/devices/posture.js';
import type {
  CreateDeviceTokenRequest, CreateDeviceTokenResponse, DeviceListResponse, DeviceShowResponse, DeviceView, RevokeDeviceRequest, RevokeDeviceResponse,
} from '../core/wire/devices.js';
import { DeviceAgent } from '../device/agent.js';
import { enrollDevice, loadDevice, mergeFacts, readPostureFile, renewDevice, sendPosture } from '../device/device.js';
import { collectPosture } from '../device/posture-linux.js';
import { output, table, withAdmin, type Run } from './context.js';

type Json = Record<string, unknown>;

function seconds(v: string, what: string): number {
  return Math.max(1, Math.round(parseDuration(v, what) / 1000));
}

/** `--attr k=v` (repeatable) into an object; names and values are checked by the control plane. */
function attrs(list: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list ?? []) {
    const i = item.indexOf('=');
    if (i <= 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `--attr must be NAME=VALUE, got ${JSON.stringify(item.slice(0, 64))}`);
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return out;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

function deviceRow(d: DeviceView): string[] {
  const p = d.posture;
  return [d.device_id, d.owner ?? '-', d.state, d.state === 'live' ? p.posture_state : '-', d.last_report_at ?? '-', d.cert_not_after];
}

const DEVICE_COLUMNS = ['DEVICE', 'OWNER', 'STATE', 'POSTURE', 'LAST REPORT', 'CERT EXPIRES'];

function describeDevice(d: DeviceShowResponse): string {
  const lines = [table(DEVICE_COLUMNS, [deviceRow(d)]), `spiffe id: ${d.spiffe_id}`];
  if (Object.keys(d.attributes).length > 0) lines.push(`attributes: ${Object.entries(d.attributes).map(([k, v]) => `${k}=${v}`).join(', ')}`);
  if (d.revoked_at) lines.push(`revoked: ${d.revoked_at} (${d.revoked_reason ?? ''})`);
  lines.push(`context.device: ${JSON.stringify(d.posture)}`);
  if (d.report) {
    lines.push('reported facts:');
    for (const [name, f] of Object.entries(d.report.facts)) lines.push(`  ${name.padEnd(15)} ${f.value === null ? 'unknown' : String(f.value)}  (observed ${f.observed_at})`);
  }
  lines.push(`reports kept: ${d.history.length}`);
  return lines.join('\n');
}

function bundleFrom(o: Json): string {
  const file = o.trustBundle as string | undefined;
  if (!file) throw new TesseraError('TESSERA_CONFIG_INVALID', 'enrolment needs --trust-bundle FILE: the control plane\'s bundle.pem (DATA_DIR/bundle.pem), trusted for the first connection');
  if (!existsSync(file)) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `trust bundle not found at ${file}`);
  return readFileSync(file, 'utf8');
}

/**
 * `tessera device ...`: admin commands (token create, list, show, revoke) and the device's own
 * (enroll, renew, report, run, posture).
 */
export function deviceCommands(program: Command, run: Run): void {
  const device = program.command('device').description('devices: enrolment tokens, device identities, posture reports, revocation');

  device.command('token').description('device enrolment tokens (admin)').command('create')
    .description('create a single-use device enrolment token (shown once; only its hash is stored)')
    .option('--name <id>', 'the device id: spiffe://<td>/device/<id> (a-z 0-9 . _ -; default a random dev-...)')
    .option('--owner <user>', 'username of the device\'s owner')
    .option('--ttl <duration>', 'how long the token stays usable (at most 7d)', '1h')
    .option('--cert-ttl <duration>', 'lifetime of each device certificate (1m to 30d)', '24h')
    .option('--attr <name=value>', 'a label (repeatable)', collect)
    .action(run(async (g, o: Json) => {
      const req: CreateDeviceTokenRequest = {
        ttl_seconds: seconds(String(o.ttl), '--ttl'), cert_ttl_seconds: seconds(String(o.certTtl), '--cert-ttl'), attributes: attrs(o.attr as string[] | undefined),
        ...(o.name !== undefined ? { device_id: String(o.name) } : {}), ...(o.owner !== undefined ? { owner: String(o.owner) } : {}),
      };
      const res = await withAdmin(g, (c) => c.call<CreateDeviceTokenResponse>('POST', '/v1/devices/tokens', req));
      output(g, res, () => `${res.token}\n# single use, for ${res.spiffe_id}, expires ${res.expires_at} (ref ${res.token_ref})`);
    }));

  device.command('list').description('list devices: state, posture, last report (admin)')
    .action(run(async (g) => {
      const res = await withAdmin(g, (c) => c.call<DeviceListResponse>('GET', '/v1/devices'));
      output(g, res, () => (res.devices.length === 0 ? 'no devices' : table(DEVICE_COLUMNS, res.devices.map(deviceRow))));
    }));

  device.command('show').description('show one device: its posture as policies see it, the latest report\'s facts (admin)')
    .argument('<id>', 'device id or SPIFFE ID')
    .action(run(async (g, id: string) => {
      const res = await withAdmin(g, (c) => c.call<DeviceShowResponse>('GET', `/v1/devices/${encodeURIComponent(id)}`));
      output(g, res, () => describeDevice(res));
    }));

  device.command('revoke').description('revoke a device: its renewals and reports are refused, and every agent refuses it (bundle revocation list)')
    .argument('<id>', 'device id or SPIFFE ID')
    .requiredOption('--reason <text>', 'why (printable text, up to 256 characters; audited, travels in the bundle)')
    .action(run(async (g, id: string, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<RevokeDeviceResponse>('POST', `/v1/devices/${encodeURIComponent(id)}/revoke`, { reason: String(o.reason) } satisfies RevokeDeviceRequest));
      output(g, res, () => `revoked ${res.spiffe_id} at ${res.revoked_at ?? ''}; in policy bundle ${res.bundle_version}`);
    }));

  device.command('enroll').description('enrol this device: generate its key here (0600, never sent), obtain spiffe://<td>/device/<id>')
    .requiredOption('--data-dir <dir>', 'device state directory (device.key, device.pem, bundle.pem, device.json)')
    .option('--token <token>', 'the one-time enrolment token; or $TESSERA_DEVICE_TOKEN')
    .option('--trust-bundle <file>', 'the control plane\'s CA bundle (its DATA_DIR/bundle.pem), trusted for this first connection')
    .addHelpText('after', '\nAlso required: --server https://HOST:PORT (the control plane URL).')
    .action(run(async (g, o: Json) => {
      if (!g.server) throw new TesseraError('TESSERA_CONFIG_INVALID', 'enrolment needs --server https://HOST:PORT (the control plane URL)');
      const token = (o.token as string | undefined) ?? process.env.TESSERA_DEVICE_TOKEN;
      if (!token) throw new TesseraError('TESSERA_CONFIG_INVALID', 'enrolment needs --token TOKEN (or $TESSERA_DEVICE_TOKEN)');
      const d = await enrollDevice({ serverUrl: g.server, token, dataDir: String(o.dataDir), trustBundlePem: bundleFrom(o) });
      const res = { spiffe_id: d.state.spiffeId, device_id: d.state.deviceId, not_after: new Date(d.notAfter).toISOString(), data_dir: d.dir };
      output(g, res, () => `enrolled as ${res.spiffe_id}; certificate valid until ${res.not_after}; key and certificate in ${res.data_dir}`);
    }));

  device.command('renew').description('renew the device certificate now (same key)')
    .requiredOption('--data-dir <dir>', 'device state directory')
    .action(run(async (g, o: Json) => {
      const d = await renewDevice(loadDevice(String(o.dataDir)));
      const res = { spiffe_id: d.state.spiffeId, serial: d.serial, not_after: new Date(d.notAfter).toISOString() };
      output(g, res, () => `renewed ${res.spiffe_id}; certificate valid until ${res.not_after}`);
    }));

  device.command('posture').description('print the posture facts this machine shows now (nothing is sent)')
    .option('--posture-file <file>', 'facts from an MDM or a test, laid over the collected ones')
    .action(run(async (g, o: Json) => {
      const facts = mergeFacts(await collectPosture(), o.postureFile ? readPostureFile(String(o.postureFile)) : undefined);
      const json = postureReportJson({ deviceId: 'spiffe://local/device/local', reportedAt: Date.now(), facts }).facts;
      output(g, json, () => Object.entries(json).map(([k, f]) => `${k.padEnd(15)} ${f.value === null ? 'unknown' : String(f.value)}`).join('\n'));
    }));

  device.command('report').description('send one signed posture report now')
    .requiredOption('--data-dir <dir>', 'device state directory')
    .option('--posture-file <file>', 'facts from an MDM or a test, laid over the collected ones')
    .action(run(async (g, o: Json) => {
      const supplied = o.postureFile ? readPostureFile(String(o.postureFile)) : undefined;
      const res = await sendPosture(loadDevice(String(o.dataDir)), mergeFacts(await collectPosture(), supplied));
      output(g, res, () => `posture accepted at ${res.received_at}: ${res.posture.posture_state}`);
    }));

  device.command('run').description('run the device agent: renew the certificate at half life, send signed posture reports on a schedule')
    .requiredOption('--data-dir <dir>', 'device state directory')
    .option('--interval <duration>', 'between posture reports', '5m')
    .option('--posture-file <file>', 'facts from an MDM or a test, read again at every report and laid over the collected ones')
    .addOption(new Option('--log-level <level>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'))
    .action(run(async (g, o: Json) => {
      const log = createLogger({ level: o.logLevel as 'info', pretty: !g.json });
      const intervalMs = parseDuration(String(o.interval), '--interval');
      if (intervalMs < 1000 || intervalMs > 86_400_000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--interval must be from 1s to 24h');
      if (o.postureFile) readPostureFile(String(o.postureFile));
      const agent = new DeviceAgent({ dataDir: String(o.dataDir), intervalMs, log, ...(o.postureFile ? { postureFile: String(o.postureFile) } : {}) });
      agent.start();
      // Not the shared untilSignal: that one keeps the process alive until a signal, and a revoked
      // device's agent must end by itself (exit status 1, TESSERA_IDENTITY_REVOKED).
      let signalled = false;
      const onSignal = (): void => {
        if (signalled) return;
        signalled = true;
        void agent.stop();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      await agent.done;
      if (!signalled) throw new TesseraError('TESSERA_IDENTITY_REVOKED', 'this device is revoked: the agent stopped');
    }));
}
