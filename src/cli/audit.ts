import { Option, type Command } from 'commander';
import { adminClient } from '../admin/clients.js';
import { checkCheckpointResponse, checkInclusionResponse } from '../admin/audit-proof.js';
import type { AuditCheckpointResponse, AuditInclusionResponse, AuditListResponse } from '../core/wire/control-plane.js';
import { count, output, table, type GlobalOptions, type Run } from './context.js';
import { tailCommand } from './tail.js';

type Json = Record<string, unknown>;

async function withAdmin<T>(g: GlobalOptions, fn: (c: ReturnType<typeof adminClient>) => Promise<T>): Promise<T> {
  const client = adminClient(g);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

/** `tessera audit ...`: the audit log as a transparency log (records, checkpoints, proofs). */
export function auditCommands(program: Command, run: Run): void {
  const audit = program.command('audit').description('audit log (admin)');
  audit.command('list')
    .description('show recent audit records')
    .option('--limit <n>', 'how many records', '50')
    .option('--action <action>', 'only this action, e.g. svid.join')
    .addOption(new Option('--outcome <outcome>', 'only this outcome').choices(['denied', 'success']))
    .action(run(async (g, o: Json) => {
      const q = new URLSearchParams({ limit: String(o.limit) });
      if (o.action) q.set('action', String(o.action));
      if (o.outcome) q.set('outcome', String(o.outcome));
      const res = await withAdmin(g, (c) => c.call<AuditListResponse>('GET', `/v1/audit?${q}`));
      output(g, res, () => table(['ID', 'TIME', 'ACTION', 'OUTCOME', 'CODE', 'ACTOR', 'TARGET'],
        res.records.map((r) => [String(r.id), String(r.ts), String(r.action), String(r.outcome), String(r.code), String(r.actor), String(r.target)])));
    }));
  tailCommand(audit);
  audit.command('checkpoint')
    .description('show the latest signed checkpoint of the audit log (checks its signature) and the log key')
    .option('--log-key <key>', 'the log\'s verifier key to check against (default: the one the server names)')
    .action(run(async (g, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint'));
      const checked = checkCheckpointResponse(res, o.logKey as string | undefined);
      output(g, { ...res, verified: true, pinned: checked.pinned }, () => [
        `checkpoint: size ${checked.checkpoint.size}, root ${checked.checkpoint.rootHash.toString('base64')}`,
        `signed at:  ${res.checkpoint.created_at}`,
        `log key:    ${res.log_key}`,
        `signature:  verified with ${checked.pinned ? 'the pinned' : 'the server\'s'} log key ${checked.logKeyId}`,
        '',
        res.checkpoint.note.trimEnd(),
      ].join('\n'));
    }));
  audit.command('prove').argument('<id>', 'the audit record id')
    .description('prove that an audit record is in the latest signed checkpoint, checking the proof locally')
    .option('--size <n>', 'prove against the checkpoint of this tree size instead of the latest')
    .option('--log-key <key>', 'the log\'s verifier key to check against (default: the one the server names)')
    .action(run(async (g, idText: string, o: Json) => {
      const id = count('ID', Number.MAX_SAFE_INTEGER)(idText);
      const q = new URLSearchParams({ id: String(id) });
      if (o.size !== undefined) q.set('size', String(count('--size', Number.MAX_SAFE_INTEGER)(String(o.size))));
      const res = await withAdmin(g, (c) => c.call<AuditInclusionResponse>('GET', `/v1/audit/proof/inclusion?${q}`));
      const checked = checkInclusionResponse(res, id, o.logKey as string | undefined);
      output(g, { ...res, verified: true, pinned: checked.pinned }, () => [
        `record ${id} (${res.record.action} by ${res.record.actor}, ${res.record.outcome}) is leaf ${checked.leafIndex} of the checkpoint of size ${checked.checkpoint.size}`,
        `proof: ${res.proof.length} hashes, verified against root ${checked.checkpoint.rootHash.toString('base64')}`,
        `signature: verified with ${checked.pinned ? 'the pinned' : 'the server\'s'} log key ${checked.logKeyId}`,
      ].join('\n'));
    }));
}
