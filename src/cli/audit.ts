import { Option, type Command } from 'commander';
import { readFileSync } from 'node:fs';
import { checkCheckpointResponse, checkConsistencyResponse, checkInclusionResponse } from '../admin/audit-proof.js';
import { runWitness } from '../admin/audit-witness.js';
import { apiSource, dbSource, type DbSource } from '../admin/audit-sources.js';
import { parseSavedCheckpoint, tamperedError, verifyAuditLog, type SavedCheckpoint, type VerifyResult } from '../admin/audit-verify.js';
import { verifyCosignature } from '../core/checkpoint.js';
import { TesseraError } from '../core/errors.js';
import { parseNote, parseVerifierKey } from '../core/signed-note.js';
import type { AuditCheckpointResponse, AuditConsistencyResponse, AuditInclusionResponse, AuditListResponse } from '../core/wire/control-plane.js';
import { EXIT, count, output, table, withAdmin, type GlobalOptions, type Run } from './context.js';
import { tailCommand } from './tail.js';

type Json = Record<string, unknown>;

/** The served cosignatures, each checked over the checkpoint text with the witness key it names. */
function checkCosignatures(res: AuditCheckpointResponse): { name: string; key_id: string; timestamp: number; witness_key: string; verified: boolean }[] {
  const list = Array.isArray(res.cosignatures) ? res.cosignatures : [];
  const text = parseNote(res.checkpoint.note).text;
  return list.map((c) => {
    let verified = false;
    try {
      const vk = parseVerifierKey(c.witness_key);
      verified = vk.type === 'cosignature/v1' && verifyCosignature(text, c.line, { name: vk.name, publicKey: vk.publicKey }).keyId === c.key_id;
    } catch {
      verified = false;
    }
    return { name: String(c.name), key_id: String(c.key_id), timestamp: Number(c.timestamp), witness_key: String(c.witness_key), verified };
  });
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
    .description('show the latest (or size-N) signed checkpoint of the audit log (checks its signature and the witnesses\' cosignatures) and the log key')
    .option('--size <n>', 'the checkpoint of this tree size instead of the latest')
    .option('--log-key <key>', 'the log\'s verifier key to check against (default: the one the server names)')
    .action(run(async (g, o: Json) => {
      const q = o.size !== undefined ? `?size=${count('--size', Number.MAX_SAFE_INTEGER)(String(o.size))}` : '';
      const res = await withAdmin(g, (c) => c.call<AuditCheckpointResponse>('GET', `/v1/audit/checkpoint${q}`));
      const checked = checkCheckpointResponse(res, o.logKey as string | undefined);
      const cosignatures = checkCosignatures(res);
      output(g, { ...res, verified: true, pinned: checked.pinned, cosignatures }, () => [
        `checkpoint: size ${checked.checkpoint.size}, root ${checked.checkpoint.rootHash.toString('base64')}`,
        `signed at:  ${res.checkpoint.created_at}`,
        `log key:    ${res.log_key}`,
        `signature:  verified with ${checked.pinned ? 'the pinned' : 'the server\'s'} log key ${checked.logKeyId}`,
        ...(cosignatures.length === 0 ? ['cosigned:   by no witness'] : cosignatures.map((c) =>
          `cosigned:   by ${c.name} (key ${c.key_id}) at ${new Date(c.timestamp * 1000).toISOString()}: ${c.verified ? 'verified' : 'DOES NOT VERIFY'}`)),
        '',
        res.checkpoint.note.trimEnd(),
      ].join('\n'));
    }));
  audit.command('witness')
    .description('witness the audit log: check the latest checkpoint is consistent with the one in the state file, keep the newer one, optionally cosign it. Exit 0 when consistent; 1 with TESSERA_AUDIT_WITNESS_ALARM on a fork, rewind, bad signature or changed log key (the state file is kept, the alarm reported)')
    .requiredOption('--state <file>', 'the witness state file (created 0600 on the first run; pins the log key)')
    .option('--log-key <key>', 'the log\'s verifier key to pin on the first run (default: the one the server names)')
    .option('--cosign-key <file>', 'Ed25519 key (PKCS#8 PEM) to cosign the checkpoint with (C2SP tlog-cosignature); created 0600 when absent')
    .option('--name <name>', 'the witness\'s name in its cosignatures, e.g. example.org/witness/site-b (with --cosign-key)')
    .action(run(async (g, o: Json) => {
      const r = await withAdmin(g, (c) => runWitness(c, {
        stateFile: String(o.state),
        ...(o.logKey !== undefined ? { logKey: String(o.logKey) } : {}),
        ...(o.cosignKey !== undefined ? { cosignKeyFile: String(o.cosignKey) } : {}),
        ...(o.name !== undefined ? { name: String(o.name) } : {}),
      }));
      output(g, r, () => [
        r.result === 'created' ? `first run: holding size ${r.size}, root ${r.root_hash} (log key pinned in ${r.state_file})`
          : r.result === 'advanced' ? `consistent: size ${r.from} -> ${r.size}, root ${r.root_hash}` : `unchanged: size ${r.size}, root ${r.root_hash}`,
        ...(r.cosignature ? [
          `cosigned:   as ${r.cosignature.name} (key ${r.cosignature.key_id}), stored by the control plane`,
          `${r.cosignature.key_created ? 'new witness key' : 'witness key'}: ${r.cosignature.witness_key}`,
        ] : []),
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
  audit.command('consistency').argument('<from>', 'the size of the older signed checkpoint').argument('[to]', 'the size of the newer signed checkpoint (default: the latest)')
    .description('prove that the audit log of size TO extends the signed log of size FROM (both sizes of signed checkpoints), checking both signatures and the proof locally')
    .option('--log-key <key>', 'the log\'s verifier key to check against (default: the one the server names)')
    .action(run(async (g, fromText: string, toText: string | undefined, o: Json) => {
      const from = count('FROM', Number.MAX_SAFE_INTEGER)(fromText);
      const pinned = o.logKey as string | undefined;
      const { older, res } = await withAdmin(g, async (c) => {
        const newer = await c.call<AuditCheckpointResponse>('GET', toText === undefined ? '/v1/audit/checkpoint' : `/v1/audit/checkpoint?size=${count('TO', Number.MAX_SAFE_INTEGER)(toText)}`);
        const to = newer.checkpoint.size;
        if (from > to) throw new TesseraError('TESSERA_AUDIT_RANGE', `FROM (${from}) must not exceed TO (${to})`);
        return {
          older: await c.call<AuditCheckpointResponse>('GET', `/v1/audit/checkpoint?size=${from}`),
          res: await c.call<AuditConsistencyResponse>('GET', `/v1/audit/proof/consistency?from=${from}&to=${to}`),
        };
      });
      const checked = checkConsistencyResponse(older, res, pinned);
      output(g, { ...res, verified: true, pinned: checked.pinned }, () => [
        `the log of size ${checked.checkpoint.size} extends the log of size ${checked.older.size}`,
        `proof: ${res.proof.length} hashes, from root ${checked.older.rootHash.toString('base64')} to root ${checked.checkpoint.rootHash.toString('base64')}`,
        `signatures: both verified with ${checked.pinned ? 'the pinned' : 'the server\'s'} log key ${checked.logKeyId}`,
      ].join('\n'));
    }));
  audit.command('verify')
    .description('recompute the audit log\'s Merkle tree from its records and check every signed checkpoint; exit 1 (TESSERA_AUDIT_TAMPERED) naming the first bad record id or tree size')
    .option('--db <file>', 'read the control plane\'s SQLite file offline (read-only; no server, no KEK) instead of the admin API')
    .option('--from-checkpoint <file>', 'also prove the log extends this checkpoint saved earlier: `tessera audit checkpoint --json` output (pins its log key) or a bare signed note')
    .option('--log-key <key>', 'the log\'s verifier key to check against (default: the saved checkpoint\'s, else the one the server or database names: unpinned)')
    .action(run(async (g, o: Json) => {
      let saved: SavedCheckpoint | undefined;
      if (o.fromCheckpoint !== undefined) {
        let text: string;
        try {
          text = readFileSync(String(o.fromCheckpoint), 'utf8');
        } catch (err) {
          throw new TesseraError('TESSERA_CONFIG_INVALID', `--from-checkpoint: cannot read ${String(o.fromCheckpoint)}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
        }
        saved = parseSavedCheckpoint(text);
      }
      const started = Date.now();
      let shown = started;
      const onProgress = g.json ? undefined : (n: number): void => {
        // Only for long runs, at most once a second, on stderr (stdout stays the result).
        if (Date.now() - shown < 1000) return;
        shown = Date.now();
        process.stderr.write(`verify: ${n} records read (${((shown - started) / 1000).toFixed(0)} s)\n`);
      };
      const opts = { ...(o.logKey !== undefined ? { logKey: String(o.logKey) } : {}), ...(saved ? { saved } : {}), ...(onProgress ? { onProgress } : {}) };
      let result: VerifyResult;
      if (o.db !== undefined) {
        const src: DbSource = dbSource(String(o.db));
        try {
          result = await verifyAuditLog(src, opts);
        } finally {
          src.close();
        }
      } else {
        result = await withAdmin(g, async (c) => verifyAuditLog(await apiSource(c, 'the control plane'), opts));
      }
      if (!result.ok) {
        const err = tamperedError(result);
        if (g.json) {
          process.stdout.write(`${JSON.stringify({ ...result, error: err.toJSON() }, null, 2)}\n`);
          process.exitCode = EXIT.failed;
          return;
        }
        process.stdout.write(`${verifyReport(result)}\n`);
        throw err;
      }
      output(g, result, () => verifyReport(result));
    }));
}

/** The human report of `tessera audit verify`. */
function verifyReport(r: VerifyResult): string {
  const keyId = r.log_key.split('+')[1] ?? '?';
  const lines = [
    r.ok ? `audit log verified (${r.source}): ${r.records} records, root ${r.root}` : `audit log does NOT verify (${r.source}): ${r.problem_count} problem${r.problem_count === 1 ? '' : 's'}`,
    `checkpoints: ${r.checkpoints} signed checkpoint${r.checkpoints === 1 ? '' : 's'} checked; intact up to size ${r.verified_size}${r.unsigned ? ` (${r.unsigned} record${r.unsigned === 1 ? '' : 's'} after the last checkpoint, not yet signed)` : ''}`,
    `log key: ${keyId} (${r.pinned ? 'pinned' : 'NOT pinned: the key the log names; pin it with --log-key or --from-checkpoint'})`,
  ];
  if (r.from_checkpoint) lines.push(`saved checkpoint: size ${r.from_checkpoint.size}: ${r.from_checkpoint.extended ? 'the log extends it' : 'NOT extended by the log'}`);
  for (const p of r.problems) lines.push(`  ${p.kind.padEnd(10)} ${p.id !== undefined ? `id ${p.id}` : p.size !== undefined ? `size ${p.size}` : ''}`.padEnd(26) + p.message);
  if (r.problem_count > r.problems.length) lines.push(`  ... ${r.problem_count - r.problems.length} more`);
  return lines.join('\n');
}
