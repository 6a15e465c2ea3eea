/**
 * One enrolled identity floods the policy bundle stream (GET /v1/policy/bundle) of a real control
 * plane with its default limits: proofs for made-up audit sizes and long polls, over 32 keep-alive
 * connections. Checked: the flood is refused with 429 (TESSERA_RATE_LIMITED, TESSERA_POLL_LIMIT) and
 * Retry-After; other identities' sidecars still get a policy change promptly (a call through them
 * turns from 403 to 200; the time is printed); an honest policy watch of the flooding identity backs
 * off instead of polling in a tight loop, and catches up once the flood ends.
 *
 *   client ─plain→ frontend outbound ─mTLS→ orders inbound (http) ─plain→ app;   mallory ⇉ control plane
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PolicyEnforcer } from '../src/agent/enforce/policy.js';
import { silentLogger } from '../src/core/log.js';
import type { PolicyBundleResponse } from '../src/core/wire/control-plane.js';
import { DEFAULT_BUNDLE_POLL_SETTINGS } from '../src/server/policy/poll-gate.js';
import { Fabric, inboundTo, outboundTo, plainGet, type Workload } from './support/fabric.js';
import { waitFor } from './support/process.js';

const TD = 'tessera.test';
const FRONTEND = `spiffe://${TD}/shop/frontend`;
const ORDERS = `spiffe://${TD}/shop/orders`;
const MALLORY = `spiffe://${TD}/shop/mallory`;
const CONNECTIONS = 32;
const FLOOD_MS = 6_000;

/**
 * The attacker: FLOOD_CONNECTIONS keep-alive connections with mallory's SVID, half asking for proofs
 * from made-up audit sizes, half opening long polls, for FLOOD_MS; prints the answers' codes as JSON.
 */
const FLOOD_SCRIPT = `
import { Agent, request } from 'node:https';
const env = process.env;
const agent = new Agent({ keepAlive: true, maxSockets: Number(env.FLOOD_CONNECTIONS), ca: env.FLOOD_CA, cert: env.FLOOD_CERT, key: env.FLOOD_KEY });
const counts = {};
let retryAfterMissing = 0;
const end = Date.now() + Number(env.FLOOD_MS);
const one = (path) => new Promise((resolve) => {
  const req = request(env.FLOOD_URL + path, { agent }, (res) => {
    let text = '';
    res.on('data', (d) => { text += d; });
    res.on('end', () => {
      let code = String(res.statusCode);
      if (res.statusCode === 429) {
        try { code = JSON.parse(text).error.code; } catch { code = '429 unparsed'; }
        if (!(Number(res.headers['retry-after']) >= 1)) retryAfterMissing += 1;
      }
      counts[code] = (counts[code] ?? 0) + 1;
      resolve();
    });
  });
  req.on('error', () => { counts.error = (counts.error ?? 0) + 1; resolve(); });
  req.end();
});
await Promise.all(Array.from({ length: Number(env.FLOOD_CONNECTIONS) }, async (_, i) => {
  for (let n = 0; Date.now() < end; n++) {
    await one(i % 2 === 0 ? '/v1/policy/bundle?witness=' + (1000000 + ((i * 7919 + n) % 100000)) : '/v1/policy/bundle?after=1000000&timeout_seconds=5');
  }
}));
agent.destroy();
console.log(JSON.stringify({ counts, retryAfterMissing }));
`;

describe('a flood of the policy bundle stream from one identity', () => {
  let f: Fabric;
  let frontend: Workload;
  let orders: Workload;
  let mallory: Workload;
  let outPort = 0;

  beforeAll(async () => {
    f = await Fabric.start({
      name: 'bundle-flood', server: { trustDomain: TD }, sidecar: { policyWatchSeconds: 5 },
      entries: { [FRONTEND]: { app: 'frontend' }, [ORDERS]: { app: 'orders' }, [MALLORY]: { app: 'mallory' } },
    });
    const appPort = await f.httpApp();
    orders = await f.workload('orders', ORDERS, { inbound: inboundTo(appPort) });
    frontend = await f.workload('frontend', FRONTEND, { outbounds: outboundTo(orders.sidecar.inbound!.port, ORDERS) });
    outPort = frontend.sidecar.outbounds[0]!.port;
    mallory = await f.workload('mallory', MALLORY);
    await waitFor('the sidecars to hold a bundle', () => f.workloads.every((w) => w.sidecar.enforcer.version > 0), 10_000);
  }, 60_000);

  afterAll(async () => {
    await f?.close();
  });

  it('refuses the flood with 429s; the others get a policy change at once; the flooder\'s honest watch backs off', async () => {
    // No policy yet: the frontend is denied.
    expect(await plainGet(outPort, '/orders/1')).toBe(403);
    const tls = { ca: readFileSync(f.bundleFile, 'utf8'), cert: readFileSync(join(f.dir, 'mallory', 'svid.pem'), 'utf8'), key: readFileSync(join(f.dir, 'mallory', 'svid.key'), 'utf8') };

    // An honest policy watch of mallory's own identity (1 s long polls), counting its requests.
    let honestCalls = 0;
    const honestDir = join(f.dir, 'mallory-honest');
    mkdirSync(honestDir, { recursive: true });
    const honest = new PolicyEnforcer({
      dir: honestDir, site: 'default', log: silentLogger, trustedCas: () => mallory.agent.trustedCas(), watchSeconds: 1,
      fetch: (after, timeout) => {
        honestCalls += 1;
        return mallory.agent.call<PolicyBundleResponse>('GET', `/v1/policy/bundle?after=${after}&timeout_seconds=${timeout}`, undefined, { timeoutMs: (timeout + 10) * 1000 });
      },
      ship: async () => {},
    });

    // The flood runs in a child process (an attacker elsewhere): this process's event loop serves the
    // control plane and the sidecars.
    const flood = spawn(process.execPath, ['--input-type=module', '-e', FLOOD_SCRIPT], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FLOOD_URL: f.url, FLOOD_MS: String(FLOOD_MS), FLOOD_CONNECTIONS: String(CONNECTIONS), FLOOD_CA: tls.ca, FLOOD_CERT: tls.cert, FLOOD_KEY: tls.key },
    });
    let floodOut = '';
    flood.stdout!.on('data', (d: Buffer) => { floodOut += d.toString(); });
    flood.stderr!.on('data', (d: Buffer) => { floodOut += d.toString(); });
    const floodDone = once(flood, 'exit');
    const floodStart = Date.now();
    honest.start();
    try {
      await new Promise((r) => setTimeout(r, 1_000));
      const applied = await f.admin.call<{ bundle_version: number }>('POST', '/v1/policies', {
        files: { 'calls.cedar': `permit (principal == Tessera::Workload::"${FRONTEND}", action == Tessera::Action::"http:request", resource == Tessera::Workload::"${ORDERS}");` },
        reason: 'frontend calls orders',
      });
      // From the API's answer (the apply itself compiles the policy, which the flood does not touch).
      const since = Date.now();
      const installed = waitFor('the callee to install the bundle', () => orders.sidecar.enforcer.version >= applied.bundle_version, 5_000, 5).then(() => Date.now() - since);
      await waitFor('the frontend to be allowed through the sidecars', async () => (await plainGet(outPort, '/orders/1')) === 200, 5_000, 10);
      const ms = Date.now() - since;
      console.log(`[bundle-flood] during a ${CONNECTIONS}-connection flood: bundle installed at the callee ${await installed} ms after the apply's answer, first allowed call ${ms} ms`);
      // Generous: 2 shared cores; unloaded it is tens of milliseconds.
      expect(ms).toBeLessThan(3_000);
      expect(orders.sidecar.enforcer.version).toBeGreaterThanOrEqual(applied.bundle_version);
      expect(frontend.sidecar.enforcer.version).toBeGreaterThanOrEqual(applied.bundle_version);
      await new Promise((r) => setTimeout(r, Math.max(0, FLOOD_MS - (Date.now() - floodStart))));
    } finally {
      await Promise.race([floodDone, new Promise((r) => setTimeout(r, FLOOD_MS + 20_000))]);
      if (flood.exitCode === null) flood.kill('SIGKILL');
    }
    const floodSeconds = (Date.now() - floodStart) / 1000;
    const line = floodOut.split('\n').find((l) => l.startsWith('{'));
    expect(line, floodOut.slice(0, 2000)).toBeDefined();
    const { counts, retryAfterMissing } = JSON.parse(line!) as { counts: Record<string, number>; retryAfterMissing: number };
    console.log(`[bundle-flood] ${floodSeconds.toFixed(1)} s of flood: ${JSON.stringify(counts)}; the honest watch made ${honestCalls} requests`);
    // Refused with both codes, each with a Retry-After; a token bucket's worth (the burst, then the rate) answered.
    expect(counts.TESSERA_RATE_LIMITED ?? 0).toBeGreaterThan(100);
    expect(counts.TESSERA_POLL_LIMIT ?? 0).toBeGreaterThan(100);
    expect(retryAfterMissing).toBe(0);
    const { rateLimit } = DEFAULT_BUNDLE_POLL_SETTINGS;
    expect(counts['200'] ?? 0).toBeLessThanOrEqual(rateLimit.burst + rateLimit.perSecond * Math.ceil(floodSeconds) + 5);
    expect(counts['500'] ?? 0).toBe(0);
    // Backoff: at least 500 ms after each refusal, so a few requests a second at most, never a tight loop.
    expect(honestCalls).toBeLessThanOrEqual(3 * Math.ceil(floodSeconds) + 5);
    // Once the flood ends, the honest watch catches up with the change.
    try {
      await waitFor('the flooder\'s honest watch to catch up', () => honest.version >= f.cp.ctx.policy.current().version, 40_000, 50);
    } finally {
      await honest.stop();
    }
  }, 90_000);
});
