import type { Command } from 'commander';
import { adminClient, svidClient } from '../admin/clients.js';
import type { ApiKeyListResponse, ApiKeyView, RevokeApiKeyRequest } from '../core/wire/control-plane.js';
import { output, table, type GlobalOptions, type Run } from './context.js';

type Json = Record<string, unknown>;

/** The admin credential, or a workload's SVID (`--agent-dir`: that workload's own keys only). */
function clientFor(g: GlobalOptions, agentDir: unknown): ReturnType<typeof adminClient> {
  return agentDir === undefined ? adminClient(g) : svidClient(String(agentDir), g.server);
}

/** `tessera apikey list|revoke`: API keys are kept after revocation, for the audit trail. */
export function apikeyCommands(program: Command, run: Run): void {
  const apikey = program.command('apikey').description('API keys derived from SVIDs: list and revoke (admin, or a workload for its own keys)');

  apikey.command('list').description('list API keys, newest first (never the key itself)')
    .option('--owner <spiffe-id>', 'only the keys of this identity')
    .option('--limit <n>', 'how many (1-1000)', '100')
    .option('--agent-dir <dir>', 'act as this agent\'s workload (its own keys) instead of the admin')
    .action(run(async (g, o: Json) => {
      const q = new URLSearchParams({ limit: String(o.limit) });
      if (o.owner !== undefined) q.set('owner', String(o.owner));
      const client = clientFor(g, o.agentDir);
      try {
        const res = await client.call<ApiKeyListResponse>('GET', `/v1/apikeys?${q}`);
        output(g, res, () => (res.api_keys.length === 0 ? 'no API keys' : table(['ID', 'OWNER', 'SCOPES', 'STATE', 'EXPIRES'],
          res.api_keys.map((k) => [String(k.id), String(k.owner), k.scopes.join(','), String(k.state), String(k.expires_at)]))));
      } finally {
        client.close();
      }
    }));

  apikey.command('revoke').description('revoke an API key now (verification refuses it from then on)')
    .argument('<key-id>', 'the key id (16 hex digits, the part after tak_)')
    .option('--reason <text>', 'why (recorded with the key and in the audit log)')
    .option('--agent-dir <dir>', 'act as this agent\'s workload (its own keys) instead of the admin')
    .action(run(async (g, id: string, o: Json) => {
      const client = clientFor(g, o.agentDir);
      try {
        const res = await client.call<ApiKeyView>('POST', `/v1/apikeys/${encodeURIComponent(id)}/revoke`, (o.reason === undefined ? {} : { reason: String(o.reason) }) satisfies RevokeApiKeyRequest);
        output(g, res, () => `revoked ${String(res.id)} (${String(res.owner)}) at ${String(res.revoked_at)}`);
      } finally {
        client.close();
      }
    }));
}
