/**
 * `tessera risk list|show|quarantine|step-up|release` (issue 11): risk states by hand, admin only.
 * The engine's commands (`tessera risk replay`) join the same `risk` group; `tessera risk config ...`
 * (riskConfigCommands) sets and versions the engine's configuration.
 */
import type { Command } from 'commander';
import { TesseraError } from '../core/errors.js';
import { formatDuration, parseDuration } from '../core/duration.js';
import { parseRiskConfig } from '../core/risk/config.js';
import type {
  RiskChangeResponse, RiskConfigHistoryResponse, RiskConfigResponse, RiskConfigRollbackRequest, RiskConfigSetRequest, RiskConfigVersionView, RiskListResponse, RiskReleaseRequest, RiskSetRequest,
  RiskShowResponse, RiskStateView,
} from '../core/wire/risk.js';
import { riskCommand } from './risk-group.js';
import { readRiskConfigFile } from './risk-replay.js';
import { output, table, withAdmin, type Run } from './context.js';

type Json = Record<string, unknown>;

/** Bounds of --ttl, as the control plane enforces them. */
const TTL_MIN_MS = 60_000;
const TTL_MAX_MS = 30 * 86_400_000;

function ttlSeconds(v: unknown): number {
  const ms = parseDuration(String(v), '--ttl');
  if (ms < TTL_MIN_MS || ms > TTL_MAX_MS || ms % 1000 !== 0) throw new TesseraError('TESSERA_CONFIG_INVALID', '--ttl must be whole seconds from 1m to 30d');
  return ms / 1000;
}

function score(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const s = String(v);
  if (!/^\d{1,3}$/.test(s) || Number(s) > 100) throw new TesseraError('TESSERA_CONFIG_INVALID', '--score must be a whole number from 0 to 100');
  return Number(s);
}

function reasonOf(o: Json): string {
  const r = String(o.reason ?? '');
  if (!/^[\x20-\x7e]{1,256}$/.test(r)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--reason must be printable text of 1 to 256 characters');
  return r;
}

function row(v: RiskStateView): string[] {
  return [v.spiffe_id, v.state, String(v.score), v.since, v.until ?? '-', v.set_by, v.reason];
}

function describe(v: RiskStateView): string {
  const lines = [
    `identity: ${v.spiffe_id}`, `state:    ${v.state}`, `score:    ${v.score}`, `since:    ${v.since}`,
    `until:    ${v.until ?? '-'}`, `set by:   ${v.set_by}${v.actor ? ` (${v.actor})` : ''}`, `reason:   ${v.reason || '-'}`,
  ];
  for (const r of v.reasons) lines.push(`  - ${r.signal}: ${r.text} (observed ${r.observed}, expected ${r.expected})`);
  return lines.join('\n');
}

function changed(res: RiskChangeResponse): string {
  const until = res.state.until ? ` until ${res.state.until} (${formatDuration(Date.parse(res.state.until) - Date.now())})` : '';
  return `${res.state.spiffe_id}: ${res.previous} -> ${res.state.state}${until}${res.bundle_version !== undefined ? `; in policy bundle ${res.bundle_version}` : ''}`;
}

/** Adds the hand-set risk commands to the `risk` group (made here unless the engine's commands made it). */
export function riskCommands(program: Command, run: Run): void {
  const risk = program.commands.find((c) => c.name() === 'risk') ?? program.command('risk').description('risk states of identities: quarantine, step-up (admin)');
  risk.command('list')
    .description('every identity stepped up, quarantined or scored: score, state, since, until, reasons')
    .action(run(async (g) => {
      const res = await withAdmin(g, (c) => c.call<RiskListResponse>('GET', '/v1/risk'));
      output(g, res, () => (res.identities.length ? table(['IDENTITY', 'STATE', 'SCORE', 'SINCE', 'UNTIL', 'SET BY', 'REASON'], res.identities.map(row)) : 'no identity has a risk state'));
    }));
  risk.command('show')
    .description('one identity\'s risk state and its history of changes')
    .argument('<id>', 'SPIFFE ID')
    .action(run(async (g, id: string) => {
      const res = await withAdmin(g, (c) => c.call<RiskShowResponse>('GET', `/v1/risk/${encodeURIComponent(id)}`));
      output(g, res, () => [describe(res.state), '', res.history.length
        ? table(['AT', 'FROM', 'TO', 'SCORE', 'SET BY', 'REASON'], res.history.map((h) => [h.at, h.previous, h.state, String(h.score), h.set_by, h.reason]))
        : 'no changes recorded'].join('\n'));
    }));
  for (const verb of ['quarantine', 'step-up'] as const) {
    risk.command(verb)
      .description(verb === 'quarantine'
        ? 'quarantine an identity by hand: every sidecar refuses its calls, key servers its unseals, the control plane its renewals and derived credentials, within a second, until release or the TTL'
        : 'step an identity up by hand: short-lived SVIDs, JWT-SVIDs and API keys, and its score visible to policies (context.risk), until release or the TTL')
      .argument('<id>', 'SPIFFE ID')
      .requiredOption('--ttl <duration>', 'how long, 1m to 30d (e.g. 30m, 12h, 7d)')
      .requiredOption('--reason <text>', 'why (printable text, up to 256 characters; audited, carried to agents)')
      .option('--score <n>', 'risk score 0-100 that policies see as context.risk (default: the current score)')
      .option('--force', 'allow a SPIFFE ID that has no registration entry (yet)')
      .action(run(async (g, id: string, o: Json) => {
        const req: RiskSetRequest = { ttl_seconds: ttlSeconds(o.ttl), reason: reasonOf(o) };
        const s = score(o.score);
        if (s !== undefined) req.score = s;
        if (o.force === true) req.force = true;
        const res = await withAdmin(g, (c) => c.call<RiskChangeResponse>('POST', `/v1/risk/${encodeURIComponent(id)}/${verb}`, req));
        output(g, res, () => changed(res));
      }));
  }
  risk.command('release')
    .description('end a step-up or quarantine now (admin only: an identity cannot release itself)')
    .argument('<id>', 'SPIFFE ID')
    .requiredOption('--reason <text>', 'why (printable text, up to 256 characters; audited)')
    .action(run(async (g, id: string, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<RiskChangeResponse>('POST', `/v1/risk/${encodeURIComponent(id)}/release`, { reason: reasonOf(o) } satisfies RiskReleaseRequest));
      output(g, res, () => changed(res));
    }));
}

function versionLine(v: RiskConfigVersionView): string[] {
  return [String(v.version), v.created_at, v.author || '-', v.hash.slice(0, 12), v.reason];
}

/** `tessera risk config show|set|history|rollback`: the engine's thresholds and weights, versioned and audited like policy. */
export function riskConfigCommands(program: Command, run: Run): void {
  const config = riskCommand(program).command('config').description('the risk engine\'s thresholds, weights and actions: versioned, audited, set by an admin');
  config.command('show')
    .description('the configuration in force (every key, JSON form) and its version; version 0 is the built-in default')
    .action(run(async (g) => {
      const res = await withAdmin(g, (c) => c.call<RiskConfigResponse>('GET', '/v1/risk/config'));
      output(g, res, () => [
        `version: ${res.version}${res.engine_version !== undefined && res.engine_version !== res.version ? ` (the engine still runs v${res.engine_version}; it switches within a second)` : ''}`,
        `created: ${res.version === 0 ? '-' : res.created_at}`, `author:  ${res.author || '-'}`, `reason:  ${res.reason}`, `hash:    ${res.hash}`,
        JSON.stringify(res.config, null, 2),
      ].join('\n'));
    }));
  config.command('set')
    .description('validate FILE (JSON; keys as in README "The risk engine"; missing keys take the defaults) and make it the new version in force')
    .argument('<file>', 'risk configuration, JSON')
    .requiredOption('--reason <text>', 'why (printable text, up to 256 characters; stored with the version, audited)')
    .action(run(async (g, file: string, o: Json) => {
      const obj = await readRiskConfigFile(file, file);
      // Checked here first: a mistake is reported before anything is sent (the server checks again).
      parseRiskConfig(obj);
      const res = await withAdmin(g, (c) => c.call<RiskConfigVersionView>('PUT', '/v1/risk/config', { config: obj as Json, reason: reasonOf(o) } satisfies RiskConfigSetRequest));
      output(g, res, () => `risk config v${res.version} in force (hash ${res.hash.slice(0, 12)}); the engine switches within a second`);
    }));
  config.command('history')
    .description('the stored versions, newest first')
    .option('--limit <n>', 'how many (1-1000)', '20')
    .action(run(async (g, o: Json) => {
      const limit = String(o.limit);
      if (!/^\d{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > 1000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--limit must be a whole number from 1 to 1000');
      const res = await withAdmin(g, (c) => c.call<RiskConfigHistoryResponse>('GET', `/v1/risk/config/history?limit=${limit}`));
      output(g, res, () => (res.versions.length
        ? table(['VERSION', 'CREATED', 'AUTHOR', 'HASH', 'REASON'], res.versions.map(versionLine))
        : 'no risk config versions yet: the built-in default (v0) is in force'));
    }));
  config.command('rollback')
    .description('make an earlier version (0: the built-in default) current again, as a new version')
    .argument('<version>', 'version to restore')
    .requiredOption('--reason <text>', 'why (printable text, up to 256 characters; audited)')
    .action(run(async (g, version: string, o: Json) => {
      if (!/^\d{1,9}$/.test(version)) throw new TesseraError('TESSERA_CONFIG_INVALID', 'VERSION must be a whole number');
      const res = await withAdmin(g, (c) => c.call<RiskConfigVersionView>('POST', '/v1/risk/config/rollback', { version: Number(version), reason: reasonOf(o) } satisfies RiskConfigRollbackRequest));
      output(g, res, () => `risk config v${version} restored as v${res.version}`);
    }));
}
