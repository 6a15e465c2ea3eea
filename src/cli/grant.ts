/** `tessera grant request|approve|deny|list|revoke`: just-in-time grants with a two-person rule. */
import type { Command } from 'commander';
import { parseDuration } from '../core/duration.js';
import { TesseraError } from '../core/errors.js';
import { output, table, withAdmin, type Run } from './context.js';

type Json = Record<string, unknown>;
interface GrantView {
  id: string; state: string; principal: string; action: string; resource: string; duration_seconds: number;
  requested_by: string; decided_by: string | null; start: string | null; expiry: string | null; reason: string; bundle_version?: number;
}
const STATES = ['pending', 'scheduled', 'active', 'expired', 'denied', 'revoked'];

/**
 * `tessera server --grant-min D`: the shortest grant admins may request, whole seconds from 1 s to
 * 1 h (default 1 min). Shorter than the default only for demos and tests that watch a grant expire.
 */
export function parseGrantMin(text: string): number {
  const ms = parseDuration(text, '--grant-min');
  if (ms % 1000 !== 0 || ms > 3_600_000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--grant-min must be whole seconds from 1s to 1h');
  return ms / 1000;
}

function line(g: GrantView): string {
  const window = g.start ? ` from ${g.start} until ${String(g.expiry)}` : ` for ${g.duration_seconds}s`;
  return `${g.id} ${g.state}: ${g.principal} may ${g.action} on ${g.resource}${window}`;
}

export function grantCommands(program: Command, run: Run): void {
  const grant = program.command('grant').description('just-in-time grants: requested by one admin, approved by another, honoured by agents only inside their window');

  grant.command('request').description('request a grant (pending until another admin approves it; lapses after 24 h)')
    .requiredOption('--principal <id>', 'who gets it: a SPIFFE ID or Tessera::Workload::"<SPIFFE ID>"')
    .requiredOption('--action <action>', 'http:request, tcp:connect, secret:unseal or credential:derive')
    .requiredOption('--resource <id>', 'on what: a SPIFFE ID or Tessera::Workload::"<SPIFFE ID>"')
    .requiredOption('--for <duration>', 'how long, counted from approval or --start: 1m to 7d (e.g. 30m)')
    .option('--start <time>', 'scheduled start, ISO 8601 with a zone, in the future (default: at approval)')
    .requiredOption('--reason <text>', 'why (audited, shown to the approver)')
    .action(run(async (g, o: Json) => {
      const ms = parseDuration(String(o.for), '--for');
      if (ms % 1000 !== 0) throw new TesseraError('TESSERA_CONFIG_INVALID', '--for must be whole seconds');
      const res = await withAdmin(g, (c) => c.call<GrantView>('POST', '/v1/grants', {
        principal: String(o.principal), action: String(o.action), resource: String(o.resource), duration_seconds: ms / 1000,
        ...(o.start !== undefined ? { start: String(o.start) } : {}), reason: String(o.reason),
      }));
      output(g, res, () => `${line(res)}\nanother admin approves it with: tessera grant approve ${res.id}`);
    }));

  grant.command('approve').description('approve a pending grant (not your own): it enters the next policy bundle')
    .argument('<grant>', 'grant id (g-...)')
    .action(run(async (g, id: string) => {
      const res = await withAdmin(g, (c) => c.call<GrantView>('POST', `/v1/grants/${encodeURIComponent(id)}/approve`, {}));
      output(g, res, () => `${line(res)}\napproved; bundle ${String(res.bundle_version)} is on its way to the agents`);
    }));

  grant.command('deny').description('deny a pending grant (not your own)')
    .argument('<grant>', 'grant id (g-...)')
    .requiredOption('--reason <text>', 'why (audited)')
    .action(run(async (g, id: string, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<GrantView>('POST', `/v1/grants/${encodeURIComponent(id)}/deny`, { reason: String(o.reason) }));
      output(g, res, () => line(res));
    }));

  grant.command('revoke').description('revoke a pending, scheduled or active grant: it leaves the next bundle')
    .argument('<grant>', 'grant id (g-...)')
    .requiredOption('--reason <text>', 'why (audited)')
    .action(run(async (g, id: string, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<GrantView>('POST', `/v1/grants/${encodeURIComponent(id)}/revoke`, { reason: String(o.reason) }));
      output(g, res, () => line(res));
    }));

  grant.command('list').description('list grants')
    .option('--state <state>', `only these: ${STATES.join('|')}`)
    .action(run(async (g, o: Json) => {
      if (o.state !== undefined && !STATES.includes(String(o.state))) throw new TesseraError('TESSERA_CONFIG_INVALID', `--state must be one of ${STATES.join(', ')}`);
      const q = o.state !== undefined ? `?state=${String(o.state)}` : '';
      const res = await withAdmin(g, (c) => c.call<{ grants: GrantView[] }>('GET', `/v1/grants${q}`));
      output(g, res, () => (res.grants.length === 0 ? 'no grants' : table(['ID', 'STATE', 'PRINCIPAL', 'ACTION', 'RESOURCE', 'START', 'EXPIRY', 'REQUESTED BY', 'DECIDED BY'],
        res.grants.map((x) => [x.id, x.state, x.principal, x.action, x.resource, x.start ?? '-', x.expiry ?? `(${x.duration_seconds}s)`, x.requested_by, x.decided_by ?? '-']))));
    }));
}
