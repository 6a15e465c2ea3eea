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
import { StateDir } from '../agent/svid/state.js';
import { CaBundlePatcher, KubeClient, type KubeApiOptions } from './cabundle.js';
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
  /**
   * Keep the MutatingWebhookConfiguration's caBundle equal to the agent's trust bundle through the
   * Kubernetes API (cabundle.ts); absent: never touched (caBundle is then the operator's to patch).
   */
  caBundle?: { configuration: string; kube: KubeApiOptions; retryMinMs?: number; retryMaxMs?: number; resyncMs?: number };
}

export interface WebhookNode {
  agent: Agent;
  webhook: WebhookServer;
  registrar: Registrar;
  /** The caBundle patcher, when `caBundle` was given. */
  caBundle?: CaBundlePatcher;
  close(): Promise<void>;
}

export async function startWebhookNode(opts: WebhookNodeOptions): Promise<WebhookNode> {
  const { log } = opts;
  ensurePrivateDir(opts.dataDir);
  // Before the agent joins (its join token is one-time): a bad --kube-api fails here.
  const kube = opts.caBundle ? new KubeClient(opts.caBundle.kube) : undefined;
  const registrar = new Registrar(opts.admin, { stateFile: join(opts.dataDir, 'webhook-pods.json'), tokenTtlSeconds: opts.tokenTtlSeconds, log });
  const agent = new Agent({
    serverUrl: opts.serverUrl, dataDir: join(opts.dataDir, 'agent'), log,
    ...(opts.joinToken ? { joinToken: opts.joinToken } : {}),
    ...(opts.trustBundleFile ? { trustBundleFile: opts.trustBundleFile } : {}),
  });
  await agent.start();
  let caBundle: CaBundlePatcher | undefined;
  if (opts.caBundle && kube) {
    const { configuration, retryMinMs, retryMaxMs, resyncMs } = opts.caBundle;
    const initialSequence = new StateDir(join(opts.dataDir, 'agent')).readState()?.bundleSequence;
    caBundle = new CaBundlePatcher({
      source: agent, kube, configuration, log,
      ...(initialSequence !== undefined ? { initialSequence } : {}),
      ...(retryMinMs !== undefined ? { retryMinMs } : {}),
      ...(retryMaxMs !== undefined ? { retryMaxMs } : {}),
      ...(resyncMs !== undefined ? { resyncMs } : {}),
    });
    caBundle.start();
  }
  let webhook: WebhookServer;
  try {
    webhook = await startWebhook({
      listen: opts.listen, tls: agent, dnsName: opts.dnsName, inject: opts.inject, namespaces: opts.namespaces, registrar, clientAuth: opts.clientAuth, log,
      ...(opts.maxBodyBytes !== undefined ? { maxBodyBytes: opts.maxBodyBytes } : {}),
      ...(caBundle ? { health: () => ({ ca_bundle: caBundleHealth(caBundle!) }) } : {}),
    });
  } catch (err) {
    caBundle?.stop();
    await agent.stop();
    throw err;
  }
  return {
    agent, webhook, registrar,
    ...(caBundle ? { caBundle } : {}),
    async close() {
      caBundle?.stop();
      await webhook.close();
      await agent.stop();
      opts.admin.close?.();
    },
  };
}

/** The patcher's status as /healthz shows it (unauthenticated: the API's message stays in the logs). */
function caBundleHealth(p: CaBundlePatcher): Record<string, unknown> {
  const s = p.current();
  return {
    in_step: s.inStep, bundle_sequence: s.sequence ?? null, patches: s.patches, last_patched_at: s.lastPatchedAt ?? null,
    last_error: s.lastError ? { at: s.lastError.at, status: s.lastError.status, reason: s.lastError.reason } : null,
  };
}
