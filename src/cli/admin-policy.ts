/**
 * `tessera admin policy show|set|history|rollback`: the admin policy (who may perform which admin
 * action), Cedar validated against the admin schema, versioned and audited like the risk config.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { TesseraError } from '../core/errors.js';
import { compileAdminPolicy } from '../core/policy/admin-engine.js';
import type { AdminPolicyHistoryResponse, AdminPolicyResponse, AdminPolicyRollbackRequest, AdminPolicySetRequest, AdminPolicyVersionView } from '../core/wire/admin.js';
import { output, table, withAdmin, type Run } from './context.js';

type Json = Record<string, unknown>;

function reasonOf(o: Json): string {
  const r = String(o.reason ?? '');
  if (!/^[\x20-\x7e]{1,256}$/.test(r)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--reason must be printable text of 1 to 256 characters');
  return r;
}

function readPolicyFile(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

export function adminPolicyCommands(admin: Command, run: Run): void {
  const policy = admin.command('policy').description('the admin policy: which person, group or named admin may perform which admin action (Cedar; versioned, audited)');

  policy.command('show')
    .description('the admin policy in force (Cedar text) and its version; version 0 is the built-in default')
    .option('--schema', 'print the admin schema (entity types, admin actions, context) instead')
    .action(run(async (g, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<AdminPolicyResponse>('GET', '/v1/admin/policy'));
      output(g, res, () => (o.schema ? res.schema : [
        `version: ${res.version}`, `created: ${res.version === 0 ? '-' : res.created_at}`, `author:  ${res.author || '-'}`,
        `reason:  ${res.reason}`, `hash:    ${res.hash}`, `fresh MFA: at most ${res.mfa_max_age_seconds}s old (--admin-mfa-max-age)`, '', res.policy,
      ].join('\n')));
    }));

  policy.command('set')
    .description('validate FILE (Cedar, against the admin schema: `tessera admin policy show --schema`) and make it the admin policy in force')
    .argument('<file>', 'Cedar policy file (- for stdin)')
    .requiredOption('--reason <text>', 'why (printable text, up to 256 characters; stored with the version, audited)')
    .action(run(async (g, file: string, o: Json) => {
      const text = readPolicyFile(file);
      const reason = reasonOf(o);
      // Checked here first: a mistake is reported before anything is sent (the server checks again).
      compileAdminPolicy(text);
      const res = await withAdmin(g, (c) => c.call<AdminPolicyVersionView>('PUT', '/v1/admin/policy', { policy: text, reason } satisfies AdminPolicySetRequest));
      output(g, res, () => `admin policy v${res.version} in force (hash ${res.hash.slice(0, 12)}); every control-plane process uses it within a second`);
    }));

  policy.command('history')
    .description('the stored versions, newest first')
    .option('--limit <n>', 'how many (1-1000)', '20')
    .action(run(async (g, o: Json) => {
      const limit = String(o.limit);
      if (!/^\d{1,4}$/.test(limit) || Number(limit) < 1 || Number(limit) > 1000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--limit must be a whole number from 1 to 1000');
      const res = await withAdmin(g, (c) => c.call<AdminPolicyHistoryResponse>('GET', `/v1/admin/policy/history?limit=${limit}`));
      output(g, res, () => (res.versions.length
        ? table(['VERSION', 'CREATED', 'AUTHOR', 'HASH', 'REASON'], res.versions.map((v) => [String(v.version), v.created_at, v.author || '-', v.hash.slice(0, 12), v.reason]))
        : 'no admin policy versions yet: the built-in default (v0) is in force'));
    }));

  policy.command('rollback')
    .description('make an earlier version (0: the built-in default) the admin policy in force again, as a new version')
    .argument('<version>', 'version to restore')
    .requiredOption('--reason <text>', 'why (printable text, up to 256 characters; audited)')
    .action(run(async (g, version: string, o: Json) => {
      if (!/^\d{1,9}$/.test(version)) throw new TesseraError('TESSERA_CONFIG_INVALID', 'VERSION must be a whole number');
      const res = await withAdmin(g, (c) => c.call<AdminPolicyVersionView>('POST', '/v1/admin/policy/rollback', { version: Number(version), reason: reasonOf(o) } satisfies AdminPolicyRollbackRequest));
      output(g, res, () => `admin policy v${version} restored as v${res.version}`);
    }));
}
