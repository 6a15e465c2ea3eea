/**
 * Federation through a node agent (issue 14): alpha's workloads run under one `tessera agent --node`
 * (startNodeAgent), beta's client under its own sidecar; the two control planes federate both ways
 * over https_spiffe. The node's one bundle stream (its first workload's agent) brings beta's bundle,
 * which every workload of the node adopts — not only the first — so the API, the node's second
 * workload, accepts beta's client where alpha's Cedar policy names it and refuses another beta
 * workload (default deny). Removing the federation refuses beta's client again.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseNodeConfig } from '../src/agent/per-node/config.js';
import { startNodeAgent, type NodeAgent } from '../src/agent/per-node/node-agent.js';
import { createLogger } from '../src/core/log.js';
import { Fabric, federate, outboundTo, plainGet, type Workload } from './support/fabric.js';
import { freePort, waitFor } from './support/process.js';

const A = 'alpha-node.test';
const B = 'beta-node.test';
const BATCH_A = `spiffe://${A}/shop/batch`;
const API_A = `spiffe://${A}/shop/api`;
const CLIENT_B = `spiffe://${B}/partner/client`;
const OTHER_B = `spiffe://${B}/partner/other`;
const FAST = { federation: { minRefreshSeconds: 1, maxRefreshSeconds: 2, refreshHintSeconds: 1 } };
const log = createLogger({ level: 'error' });

let a: Fabric;
let b: Fabric;
let node: NodeAgent;
let clientB: Workload;
let otherB: Workload;

const holds = (agent: { federatedBundles(): ReadonlyMap<string, unknown> }, td: string): boolean => agent.federatedBundles().has(td);

beforeAll(async () => {
  a = await Fabric.start({ name: 'fedna-a', server: { trustDomain: A, ...FAST } });
  b = await Fabric.start({ name: 'fedna-b', server: { trustDomain: B, ...FAST }, entries: { [CLIENT_B]: {}, [OTHER_B]: {} } });
  await a.admin.call('POST', '/v1/policies', { reason: 'federation through a node agent', files: {
    'partner.cedar': `permit (principal == Tessera::Workload::"${CLIENT_B}", action == Tessera::Action::"http:request", resource == Tessera::Workload::"${API_A}");`,
  } });
  for (const id of [BATCH_A, API_A]) await a.admin.call('POST', '/v1/entries', { spiffe_id: id, selectors: [`unix:uid:${process.getuid!()}`] });
  await federate(a, b, B);
  await federate(b, a, A);
  const token = async (id: string): Promise<string> => (await a.admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id, ttl_seconds: 120 })).token;
  const app = await a.httpApp();
  const apiIn = await freePort();
  const config = parseNodeConfig(JSON.stringify({
    workloads: [
      // The first workload follows the node's bundle stream; the API is the second.
      { name: 'batch', join_token: await token(BATCH_A) },
      { name: 'api', join_token: await token(API_A), inbound: { listen: `127.0.0.1:${apiIn}`, app: `127.0.0.1:${app}` } },
    ],
  }));
  node = await startNodeAgent({ serverUrl: a.url, dataDir: join(a.dir, 'node'), config, log, trustBundleFile: a.bundleFile, agent: { watchSeconds: 2 } });
  clientB = await b.workload('client-b', CLIENT_B, { outbounds: outboundTo(apiIn, API_A) });
  otherB = await b.workload('other-b', OTHER_B, { outbounds: outboundTo(apiIn, API_A) });
  await waitFor('beta\'s bundle at every workload of the node, alpha\'s at beta\'s clients', () =>
    node.workloads.every((w) => holds(w.agent, B)) && holds(clientB.agent, A) && holds(otherB.agent, A), 20_000, 100);
  const { version } = await a.admin.call<{ version: number }>('GET', '/v1/policy/bundle');
  await waitFor('the policy at the node', () => node.enforcer.version >= version, 10_000, 50);
  await waitFor('policies at beta', () => b.workloads.every((w) => w.sidecar.enforcer.version > 0), 10_000, 50);
}, 60_000);

afterAll(async () => {
  await node?.close();
  await a?.close();
  await b?.close();
});

describe('federation through a node agent', () => {
  it('the node\'s second workload accepts the foreign client its policy names, and refuses another of that domain', async () => {
    expect(node.workloads[1]!.agent.spiffeId).toBe(API_A);
    expect(await plainGet(clientB.sidecar.outbounds[0]!.port, '/hello')).toBe(200);
    expect(await plainGet(otherB.sidecar.outbounds[0]!.port, '/hello')).toBe(403);
  });

  it('removing the federation drops beta\'s bundle from every workload of the node and refuses the client again', async () => {
    await a.admin.call('POST', `/v1/federation/${B}/remove`, {});
    await waitFor('the node to drop beta\'s bundle', () => node.workloads.every((w) => !holds(w.agent, B)), 15_000, 100);
    expect(await plainGet(clientB.sidecar.outbounds[0]!.port, '/hello')).not.toBe(200);
  }, 30_000);
});
