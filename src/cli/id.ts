/**
 * `tessera id validate ID [--json]`: asks the system's own SPIFFE ID parser (src/core/spiffe-id.ts,
 * the one the control plane, the agents and the key servers use) whether ID is a valid SPIFFE ID.
 * Valid: exit 0 and the trust domain and path. Invalid: TESSERA_SPIFFE_ID_INVALID with the rule it
 * breaks, exit 1 ("failed", like every other refused input of the CLI; 2 is kept for bad flags).
 */
import type { Command } from 'commander';
import { parseSpiffeId } from '../core/spiffe-id.js';
import { output, type Run } from './context.js';

export function idCommands(program: Command, run: Run): void {
  const id = program.command('id').description('SPIFFE IDs');
  id.command('validate')
    .description('validate a SPIFFE ID with Tessera\'s own parser; prints its trust domain and path (exit 1 and the reason if invalid)')
    .argument('<id>', 'the SPIFFE ID, e.g. spiffe://tessera.test/payments/api')
    .action(run(async (g, value: string) => {
      const parsed = parseSpiffeId(value);
      // The trust-domain ID is a valid SPIFFE ID but names no workload: no entry or SVID can carry it.
      const workload = parsed.path !== '';
      const res = { valid: true, spiffe_id: parsed.id, trust_domain: parsed.trustDomain, path: parsed.path, workload };
      output(g, res, () => [
        `valid SPIFFE ID`,
        `trust domain  ${parsed.trustDomain}`,
        `path          ${workload ? parsed.path : '(none: this is the trust-domain ID, which names no workload)'}`,
      ].join('\n'));
    }));
}
