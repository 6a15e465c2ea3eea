/**
 * `tessera k8s webhook` as a process: its own Agent (joined with a join token for the webhook's
 * entry, which carries a `dns:` selector so its SVID names the Service), the admin client the
 * registrar creates entries and join tokens with, and the HTTPS webhook serving the SVID.
 *
 * Importing src/agent here is intended, as for the gateway and key server nodes: the webhook runs an
 * agent for its identity. The webhook proper (webhook.ts, inject.ts, registrar.ts) takes interfaces.
 */
import { join } from 'node:path';
import { Agent } from '../agent/agent.js';
import type { Logger } from '../core/log.js';
import { ensurePrivateDir } from '../core/files.js';
import type { WebhookClientAuth } from './client-auth.js';
import type { InjectConfig } from './inject.js';
import { Registrar, type AdminCaller } from './registrar.js';
import { startWebhook, type WebhookServer } from './webhook.js';

export interface WebhookNodeOptions {
  serverUrl: string;
  dataDir: string;
  listen: { host: string; port: number };
  dnsName: string;
  inject: InjectConfig;
  namespaces: ReadonlySet<string>;
  /** Who may call `/mutate` (the API server's client certificate). */
  clientAuth: WebhookClientAuth;
  /** The scoped admin credential's client (entry.create/show/delete, token.create). */
  admin: AdminCaller & { close?(): void };
  tokenTtlSeconds: number;
  log: Logger;
  joinToken?: string;
  trustBundleFile?: string;
  maxBodyBytes?: number;
}

export interface WebhookNode {
  agent: Agent;
  webhook: WebhookServer;
  registrar: Registrar;
  close(): Promise<void>;
}

export async function startWebhookNode(opts: WebhookNodeOptions): Promise<WebhookNode> {
  const { log } = opts;
  ensurePrivateDir(opts.dataDir);
  const registrar = new Registrar(opts.admin, { stateFile: join(opts.dataDir, 'webhook-pods.json'), tokenTtlSeconds: opts.tokenTtlSeconds, log });
  const agent = new Agent({
    serverUrl: opts.serverUrl, dataDir: join(opts.dataDir, 'agent'), log,
    ...(opts.joinToken ? { joinToken: opts.joinToken } : {}),
    ...(opts.trustBundleFile ? { trustBundleFile: opts.trustBundleFile } : {}),
  });
  await agent.start();
  let webhook: WebhookServer;
  try {
    webhook = await startWebhook({
      listen: opts.listen, tls: agent, dnsName: opts.dnsName, inject: opts.inject, namespaces: opts.namespaces, registrar, clientAuth: opts.clientAuth, log,
      ...(opts.maxBodyBytes !== undefined ? { maxBodyBytes: opts.maxBodyBytes } : {}),
    });
  } catch (err) {
    await agent.stop();
    throw err;
  }
  return {
    agent, webhook, registrar,
    async close() {
      await webhook.close();
      await agent.stop();
      opts.admin.close?.();
    },
  };
}
