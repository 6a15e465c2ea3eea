/**
 * `tessera risk list|show|quarantine|step-up|release` (issue 11): risk states by hand, admin only.
 * The engine's commands (`tessera risk replay`) join the same `risk` group.
 */
import type { Command } from 'commander';
import { TesseraError } from '../core/errors.js';
import { formatDuration, parseDuration } from '../core/duration.js';
import type { RiskChangeResponse, RiskListResponse, RiskReleaseRequest, RiskSetRequest, RiskShowResponse, RiskStateView } from '../core/wire/risk.js';
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
