import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { adminClient } from '../admin/clients.js';
import { readPolicyDir } from '../admin/policy-dir.js';
import { parseCases, runCases } from '../core/policy/cases.js';
import type { ApplyPolicyRequest, ApplyPolicyResponse, PolicyDryRun, PolicyHistoryResponse, PolicyVersionResponse, RollbackPolicyRequest, RollbackPolicyResponse } from '../core/wire/control-plane.js';
import { output, table, type Run } from './context.js';

type Json = Record<string, unknown>;

/** A dry-run answer, from this control plane or an older one (which left some fields out). */
type Replay = Pick<PolicyDryRun, 'replayed' | 'flips'> & Partial<PolicyDryRun>;

/** What was replayed: how many decisions, from how many enforcers, over which time span. */
function replayLine(res: Replay): string {
  const span = res.span ? ` made ${res.span.from} .. ${res.span.to}` : '';
  const from = res.enforcers !== undefined ? ` from ${res.enforcers} enforcer${res.enforcers === 1 ? '' : 's'}` : '';
  const notes = [
    res.skipped ? `${res.skipped} unreadable records skipped` : '',
    res.truncated ? 'stopped at the time budget: not every sampled decision was replayed' : '',
  ].filter(Boolean);
  return `replayed ${res.replayed} recorded decisions${from}${span}${notes.length ? ` (${notes.join('; ')})` : ''}`;
}

function flipsText(res: Replay): string {
  if (res.flips.length === 0) return `${replayLine(res)}: none would change`;
  const more = res.flip_groups !== undefined && res.flip_groups > res.flips.length ? `\n(the ${res.flips.length} largest of ${res.flip_groups} groups shown)` : '';
  return `${replayLine(res)}; ${res.flipped ?? ''}${res.flipped !== undefined ? ' ' : ''}would change:\n${table(['BEFORE', 'AFTER', 'COUNT', 'PRINCIPAL', 'ACTION', 'RESOURCE', 'CONTEXT'],
    res.flips.map((f) => [String(f.before), String(f.after), String(f.count), String(f.principal), String(f.action), String(f.resource),
      Object.entries((f.context as Json) ?? {}).filter(([k]) => k === 'method' || k === 'path' || k === 'site').map(([k, v]) => `${k}=${String(v)}`).join(' ')]))}${more}`;
}

export function policyCommands(program: Command, run: Run): void {
  const policy = program.command('policy').description('Cedar policy as code: apply, test, diff, history, rollback');

  policy.command('apply').description('validate and apply a directory of .cedar files (+ schema.json) as a new policy version')
    .requiredOption('-f, --file <dir>', 'policy directory (e.g. policies/ in a Git checkout)')
    .option('--reason <text>', 'why (recorded with the version)', 'applied with tessera policy apply')
    .option('--dry-run', 'show which recent decisions would flip, apply nothing')
    .action(run(async (g, o: Json) => {
      const { policies, schema } = readPolicyDir(String(o.file));
      const client = adminClient(g);
      try {
        const res = await client.call<ApplyPolicyResponse>('POST', '/v1/policies', {
          files: policies, ...(schema ? { schema } : {}), reason: String(o.reason), ...(o.dryRun ? { dry_run: true } : {}),
        } satisfies ApplyPolicyRequest);
        output(g, res, () => (!('version' in res) ? `dry run: nothing applied\n${flipsText(res)}`
          : `applied policy v${res.version} (${Object.keys(policies).length} files, hash ${res.hash.slice(0, 12)}); bundle ${res.bundle_version} is on its way to the agents\n${flipsText(res)}`));
      } finally {
        client.close();
      }
    }));

  policy.command('diff').description('replay recently recorded decisions against a candidate policy directory and show what would flip')
    .requiredOption('-f, --file <dir>', 'candidate policy directory')
    .action(run(async (g, o: Json) => {
      const { policies, schema } = readPolicyDir(String(o.file));
      const client = adminClient(g);
      try {
        const res = await client.call<ApplyPolicyResponse>('POST', '/v1/policies', { files: policies, ...(schema ? { schema } : {}), reason: 'diff', dry_run: true } satisfies ApplyPolicyRequest);
        output(g, res, () => flipsText(res));
      } finally {
        client.close();
      }
    }));

  policy.command('test').description('run a file of expected decisions against a policy directory (offline); exit 1 on any mismatch')
    .requiredOption('-f, --file <cases>', 'cases file (YAML or JSON): entities + cases with expect: allow|deny')
    .option('-p, --policies <dir>', 'policy directory', 'policies')
    .action(run(async (g, o: Json) => {
      const { policies, schema } = readPolicyDir(String(o.policies));
      const cases = parseCases(readFileSync(String(o.file), 'utf8'));
      // Loaded here, not at the top: Cedar's WebAssembly is not needed by the other commands.
      const [{ PolicyEngine }, { TESSERA_SCHEMA }] = await Promise.all([import('../core/policy/engine.js'), import('../core/policy/schema.js')]);
      const engine = new PolicyEngine(PolicyEngine.compile({ policies, schema: schema ?? (TESSERA_SCHEMA as Record<string, unknown>) }), cases.entities ?? []);
      const results = runCases(engine, cases);
      const failed = results.filter((r) => !r.pass);
      output(g, { passed: results.length - failed.length, failed: failed.length, results }, () => [
        ...results.map((r) => `${r.pass ? 'ok  ' : 'FAIL'}  ${r.name}: expected ${r.expected}, got ${r.actual}${r.reasons.length ? ` (${r.reasons.join(', ')})` : ''}`),
        `${results.length - failed.length} passed, ${failed.length} failed`,
      ].join('\n'));
      if (failed.length > 0) process.exitCode = 1;
    }));

  policy.command('history').description('list policy versions (newest first)')
    .option('--limit <n>', 'how many', '20')
    .action(run(async (g, o: Json) => {
      const client = adminClient(g);
      try {
        const res = await client.call<PolicyHistoryResponse>('GET', `/v1/policies?limit=${encodeURIComponent(String(o.limit))}`);
        output(g, res, () => (res.versions.length ? table(['VERSION', 'CREATED', 'AUTHOR', 'HASH', 'REASON'],
          res.versions.map((v) => [String(v.version), String(v.createdAt), String(v.author), String(v.hash).slice(0, 12), String(v.reason)])) : 'no policy versions yet (everything is denied)'));
      } finally {
        client.close();
      }
    }));

  policy.command('show').description('print one policy version').argument('<version>', 'version number')
    .action(run(async (g, version: string) => {
      const client = adminClient(g);
      try {
        const res = await client.call<PolicyVersionResponse>('GET', `/v1/policies/${encodeURIComponent(version)}`);
        output(g, res, () => Object.entries(res.policies).map(([f, t]) => `// ${f}\n${t.trimEnd()}`).join('\n\n'));
      } finally {
        client.close();
      }
    }));

  policy.command('rollback').description('make an earlier version current again (as a new version)').argument('<version>', 'version to restore')
    .requiredOption('--reason <text>', 'why')
    .action(run(async (g, version: string, o: Json) => {
      const client = adminClient(g);
      try {
        const res = await client.call<RollbackPolicyResponse>('POST', '/v1/policies/rollback', { version: Number(version), reason: String(o.reason) } satisfies RollbackPolicyRequest);
        output(g, res, () => `policy v${version} restored as v${String(res.version)}`);
      } finally {
        client.close();
      }
    }));
}
