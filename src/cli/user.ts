/**
 * `tessera user add|list|show|remove|disable|enable|logout-all|enrol-link`, `tessera group list` and
 * `tessera console link`: people, over the admin API (the admin credential, as every admin command).
 */
import type { Command } from 'commander';
import { parseDuration } from '../core/duration.js';
import { TesseraError } from '../core/errors.js';
import { output, table, withAdmin, type Run } from './context.js';

type Json = Record<string, unknown>;
interface UserView { username: string; spiffe_id: string; source: string; state: string; email: string | null; groups: string[]; created_at: string; disabled_reason: string | null; credentials?: { kind: string; created_at: string; last_used_at: string | null }[] }

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];
const enc = encodeURIComponent;

function ttlSeconds(v: unknown, flag: string): number | undefined {
  return v === undefined ? undefined : Math.round(parseDuration(String(v), flag) / 1000);
}

function showUser(u: UserView): string {
  const lines = [
    `${u.username}  ${u.spiffe_id}`, `  source: ${u.source}   state: ${u.state}${u.disabled_reason ? ` (${u.disabled_reason})` : ''}`,
    `  groups: ${u.groups.join(', ') || '-'}   email: ${u.email ?? '-'}`,
  ];
  if (u.credentials) lines.push(`  credentials: ${u.credentials.map((c) => `${c.kind} (last used ${c.last_used_at ?? 'never'})`).join(', ') || 'none (not enrolled)'}`);
  return lines.join('\n');
}

export function userCommands(program: Command, run: Run): void {
  const user = program.command('user').description('people: local users (enrolled with a passkey and TOTP) and users of the OIDC provider');

  user.command('add').description('add a local user and print its one-time enrolment link (passkey + TOTP)')
    .argument('<name>', 'username: a-z 0-9 . _ - (1..63); principal spiffe://<td>/user/<name>')
    .option('--group <group>', 'a group (repeatable)', collect, [])
    .option('--email <email>', 'email address')
    .option('--display-name <name>', 'name shown to the person')
    .option('--enrol-ttl <duration>', 'how long the enrolment link works (default 24h, at most 7d)')
    .action(run(async (g, name: string, o: Json) => {
      const body: Json = { username: name, groups: o.group };
      if (o.email !== undefined) body.email = o.email;
      if (o.displayName !== undefined) body.display_name = o.displayName;
      const ttl = ttlSeconds(o.enrolTtl, '--enrol-ttl');
      if (ttl !== undefined) body.enrol_ttl_seconds = ttl;
      const r = await withAdmin(g, (c) => c.call<{ user: UserView; enrolment_url: string; enrolment_expires_at: string }>('POST', '/v1/users', body));
      output(g, r, () => `user ${name} added: ${r.user.spiffe_id}\nenrolment link (one use, until ${r.enrolment_expires_at}; give it to ${name} only):\n${r.enrolment_url}`);
    }));

  user.command('enrol-link').description('a new one-time enrolment link (a new passkey and TOTP replace the old ones when it is used)')
    .argument('<name>').option('--enrol-ttl <duration>', 'how long the link works (default 24h)')
    .action(run(async (g, name: string, o: Json) => {
      const ttl = ttlSeconds(o.enrolTtl, '--enrol-ttl');
      const r = await withAdmin(g, (c) => c.call<{ enrolment_url: string; enrolment_expires_at: string }>('POST', `/v1/users/${enc(name)}/enrolment`, ttl === undefined ? {} : { enrol_ttl_seconds: ttl }));
      output(g, r, () => `enrolment link for ${name} (one use, until ${r.enrolment_expires_at}):\n${r.enrolment_url}`);
    }));

  user.command('list').description('list users').action(run(async (g) => {
    const r = await withAdmin(g, (c) => c.call<{ users: UserView[] }>('GET', '/v1/users'));
    output(g, r, () => table(['USER', 'SOURCE', 'STATE', 'GROUPS', 'EMAIL'], r.users.map((u) => [u.username, u.source, u.state, u.groups.join(',') || '-', u.email ?? '-'])));
  }));

  user.command('show').description('show a user (never its credentials, only their kinds)').argument('<name>').action(run(async (g, name: string) => {
    const r = await withAdmin(g, (c) => c.call<{ user: UserView }>('GET', `/v1/users/${enc(name)}`));
    output(g, r, () => showUser(r.user));
  }));

  user.command('remove').description('remove a user with its credentials and sessions').argument('<name>').action(run(async (g, name: string) => {
    const r = await withAdmin(g, (c) => c.call('POST', `/v1/users/${enc(name)}/remove`, {}));
    output(g, r, () => `user ${name} removed`);
  }));

  user.command('disable').description('disable a user: its sessions end, its sign-ins are refused').argument('<name>')
    .requiredOption('--reason <text>', 'why (printable ASCII, 1-256 characters; audited)')
    .action(run(async (g, name: string, o: Json) => {
      const r = await withAdmin(g, (c) => c.call<{ sessions_ended: number }>('POST', `/v1/users/${enc(name)}/disable`, { reason: o.reason }));
      output(g, r, () => `user ${name} disabled; ${r.sessions_ended} session(s) ended`);
    }));

  user.command('enable').description('enable a disabled user again').argument('<name>').action(run(async (g, name: string) => {
    const r = await withAdmin(g, (c) => c.call('POST', `/v1/users/${enc(name)}/enable`, {}));
    output(g, r, () => `user ${name} enabled`);
  }));

  user.command('logout-all').description('end every session of a user (logout everywhere)').argument('<name>').action(run(async (g, name: string) => {
    const r = await withAdmin(g, (c) => c.call<{ sessions_ended: number }>('POST', `/v1/users/${enc(name)}/logout-all`, {}));
    output(g, r, () => `${r.sessions_ended} session(s) of ${name} ended`);
  }));

  program.command('group').description('groups of people (local, or from the OIDC provider\'s claims)')
    .command('list').description('list groups and their members').action(run(async (g) => {
      const r = await withAdmin(g, (c) => c.call<{ groups: { name: string; source: string; members: string[] }[] }>('GET', '/v1/groups'));
      output(g, r, () => table(['GROUP', 'SOURCE', 'MEMBERS'], r.groups.map((x) => [x.name, x.source, x.members.join(',') || '-'])));
    }));

  program.command('console').description('the web console')
    .command('link').description('a one-time sign-in link for the console (a session WITHOUT MFA: admin actions then need a step-up)')
    .option('--user <name>', 'the user the link signs in (default "admin", a local user created if missing)')
    .option('--ttl <duration>', 'how long the link works (default 10m, at most 24h)', '10m')
    .action(run(async (g, o: Json) => {
      const ttl = ttlSeconds(o.ttl, '--ttl')!;
      if (ttl < 10 || ttl > 86_400) throw new TesseraError('TESSERA_CONFIG_INVALID', '--ttl must be from 10s to 24h');
      const r = await withAdmin(g, (c) => c.call<{ username: string; url: string; expires_at: string }>('POST', '/v1/console/links', { ttl_seconds: ttl, ...(o.user !== undefined ? { username: o.user } : {}) }));
      output(g, r, () => `one-time sign-in link for ${r.username} (until ${r.expires_at}):\n${r.url}`);
    }));
}
