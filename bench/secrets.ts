/**
 * Blind-secrets benchmark, side by side in one run:
 *
 *   npx tsc -p tsconfig.json && node dist/bench/secrets.js [--seconds N] [--json]
 *
 * Rows:
 *   seal                       seal 64 B under a policy public key (offline, math only): ops/s
 *   unseal 2-of-3 / 3-of-5     the agent's whole unseal (src/agent/secrets/unseal.ts) over real mTLS on
 *                              loopback: signed record from the control plane (verified), blind,
 *                              n key servers asked in parallel (Cedar secret:unseal, evaluate + DLEQ
 *                              proof), t proofs verified, combine + unblind, open. Sequential calls,
 *                              kept-alive connections reused (the agent's control-plane client and a
 *                              KeyServerPool). p50/p99.
 *   math: agent 2-of-3 / 3-of-5 the agent's group operations alone (no network), from src/core/secrets
 *   math: key server           one key server's evaluate + prove
 *   central vault decrypt      the same mTLS stack (ApiClient, the agent's SVID) to a tiny HTTPS endpoint
 *                              on 127.0.0.1 holding an AES-256-GCM key and decrypting the posted ciphertext
 *
 * Everything runs in this process: a control plane (ControlPlane.start, port 0, temporary data
 * directory), five key server nodes (each its own Agent + policy enforcer + key server, like
 * test/secrets.e2e.test.ts), one agent. Aim (from the issue): 2-of-3 unseal p50 < 5 ms on loopback.
 * Every phase is bounded by --seconds; the whole run by a hard deadline. Temporary files are removed.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Agent } from '../src/agent/agent.js';
import { ApiClient } from '../src/agent/client.js';
import { KeyServerPool, unsealSealedText, type UnsealTls } from '../src/agent/secrets/unseal.js';
import { startKeyServerNode, type KeyServerNode } from '../src/cli/secrets.js';
import { silentLogger } from '../src/core/log.js';
import { blind, combineAndUnblind, evaluateAndProve, unsealContext } from '../src/core/secrets/blind.js';
import { openWithPoint, parseBlob, seal, sealedToText } from '../src/core/secrets/blob.js';
import { fakePolicy, type FakePolicy } from '../src/core/secrets/fixtures.js';
import { decodePoint, randomScalar, ready } from '../src/core/secrets/group.js';
import { split } from '../src/core/secrets/shamir.js';
import { ControlPlane } from '../src/server/server.js';
import { parseBenchArgs, type BenchArgs, type RateRow } from './args.js';

const TD = 'bench.test';
const AGENT_ID = `spiffe://${TD}/shop/orders`;
const KS = [1, 2, 3, 4, 5].map((i) => `spiffe://${TD}/keyserver/${i}`);
const AIM_P50_MS = 5;

interface Latency { name: string; n: number; p50Ms: number; p99Ms: number; meanMs: number; opsPerSecond: number; cpuMsPerOp: number }
type Rate = RateRow;

function parseArgs(argv: string[]): BenchArgs {
  return parseBenchArgs(argv, 'secrets', 2);
}

const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');
const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

/** A CPU-bound op, median of 5 rounds after a warm-up. */
function rate(name: string, seconds: number, op: () => number | void): Rate {
  const warmUntil = performance.now() + Math.max(50, seconds * 100);
  while (performance.now() < warmUntil) op();
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    let n = 0;
    let counted = 0;
    const end = performance.now() + (seconds * 1000) / 5;
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end && n > 0) break;
      const own = op();
      n += 1;
      counted += typeof own === 'number' ? own : (performance.now() - t0) * 1000;
    }
    rounds.push(counted / n);
  }
  rounds.sort((a, b) => a - b);
  return { name, usPerOp: rounds[2]!, opsPerSecond: 1e6 / rounds[2]! };
}

/** Sequential async calls for `seconds` after a warm-up; end-to-end latency of each. */
async function latency(name: string, seconds: number, op: () => Promise<void>): Promise<Latency> {
  const warmUntil = performance.now() + Math.max(200, seconds * 200);
  let w = 0;
  while (performance.now() < warmUntil || w < 10) { await op(); w += 1; }
  const times: number[] = [];
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    const t0 = performance.now();
    await op();
    times.push(performance.now() - t0);
  }
  const total = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  times.sort((a, b) => a - b);
  return { name, n: times.length, p50Ms: pct(times, 50), p99Ms: pct(times, 99), meanMs: times.reduce((a, b) => a + b, 0) / times.length, opsPerSecond: (times.length * 1000) / total, cpuMsPerOp: (cpu.user + cpu.system) / 1000 / times.length };
}

/** The agent's part of one in-memory unseal (parse, blind, t verifies, combine + unblind, open), in µs. */
function agentMath(p: FakePolicy, blob: Uint8Array): number {
  const t0 = performance.now();
  const parsed = parseBlob(blob);
  const blinded = blind(parsed.R);
  const context = unsealContext(parsed.policyId, parsed.epoch);
  const t1 = performance.now();
  const evals = p.servers.slice(0, p.t).map((s) => s.answer(blinded.B, context));
  const t2 = performance.now();
  const { point } = combineAndUnblind(evals, p.commitments, blinded, p.t, context);
  openWithPoint(parsed, point);
  const t3 = performance.now();
  return (t1 - t0 + (t3 - t2)) * 1000;
}

async function main(): Promise<void> {
  const { seconds, json } = parseArgs(process.argv.slice(2));
  // Hard bound: setup + 6 measured phases with warm-ups, generously.
  const deadline = setTimeout(() => {
    process.stderr.write('bench/secrets: deadline exceeded\n');
    cleanup().finally(() => process.exit(3));
  }, (120 + seconds * 20) * 1000);
  deadline.unref();
  await ready();

  const dir = mkdtempSync(join(tmpdir(), 'tessera-bench-secrets-'));
  let cp: ControlPlane | undefined;
  let admin: ApiClient | undefined;
  const nodes: KeyServerNode[] = [];
  let agent: Agent | undefined;
  let pool: KeyServerPool | undefined;
  let vault: Server | undefined;
  let vaultClient: ApiClient | undefined;
  let cleaned = false;
  async function cleanup(): Promise<void> {
    if (cleaned) return;
    cleaned = true;
    vaultClient?.close();
    pool?.close();
    if (vault) { vault.closeAllConnections(); await new Promise<void>((r) => vault!.close(() => r())); }
    await agent?.stop().catch(() => {});
    for (const n of nodes) await n.close().catch(() => {});
    admin?.close();
    await cp?.stop().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  }

  try {
    // --- control plane, key servers, agent --------------------------------------------------
    cp = await ControlPlane.start({ trustDomain: TD, env: {}, log: silentLogger, dataDir: join(dir, 'cp'), host: '127.0.0.1', port: 0 });
    const rd = (n: string): string => readFileSync(join(cp!.adminDir, n), 'utf8');
    const adminTls = { ca: rd('bundle.pem'), cert: rd('admin.pem'), key: rd('admin.key') };
    admin = new ApiClient(cp.url, adminTls);
    const bundleFile = join(cp.adminDir, 'bundle.pem');
    const token = async (id: string): Promise<string> => (await admin!.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id, ttl_seconds: 300 })).token;
    for (const id of KS) await admin.call('POST', '/v1/entries', { spiffe_id: id, attributes: { app: 'keyserver' } });
    await admin.call('POST', '/v1/entries', { spiffe_id: AGENT_ID, attributes: { app: 'orders', compliance: 'pci' } });
    for (let i = 0; i < KS.length; i++) {
      nodes.push(await startKeyServerNode({
        serverUrl: cp.url, dataDir: join(dir, `ks${i + 1}`), listen: { host: '127.0.0.1', port: 0 }, log: silentLogger,
        joinToken: await token(KS[i]!), trustBundleFile: bundleFile, env: {}, policyWatchSeconds: 2,
        // The default per-caller limit (20/s) is a production guard; the bench measures the path itself.
        rateLimit: { perSecond: 1e6, burst: 1e6 },
      }));
    }
    const cedar = ['b23', 'b35'].map((p) => `@id("bench-${p}")\npermit (principal, action == Tessera::Action::"secret:unseal", resource == Tessera::Workload::"spiffe://${TD}/tessera/secret/${p}") when { principal has compliance && principal.compliance == "pci" };\n`).join('\n');
    const applied = await admin.call<{ bundle_version: number }>('POST', '/v1/policies', { files: { 'secrets.cedar': cedar }, reason: 'bench' });
    const until = Date.now() + 30_000;
    while (!nodes.every((n) => n.sidecar.enforcer.version >= applied.bundle_version)) {
      if (Date.now() > until) throw new Error('key servers did not load the policy');
      await new Promise((r) => setTimeout(r, 50));
    }

    // --- deal the two policies (what `tessera secret policy create` does) ---------------------
    const publicKeys: Record<string, Uint8Array> = {};
    for (const [id, t, n] of [['b23', 2, 3], ['b35', 3, 5]] as const) {
      const k = randomScalar();
      const sharing = split(k, t, n);
      k.fill(0);
      const commitments = sharing.commitments.map(b64u);
      const servers = nodes.slice(0, n).map((node, i) => ({ url: node.keyServer.url, spiffeId: KS[i]!, index: i + 1 }));
      await Promise.all(servers.map(async (s, i) => {
        const share = sharing.shares[i]!;
        const c = new ApiClient(s.url, { ...adminTls, serverId: s.spiffeId });
        try {
          await c.call('PUT', `/v1/shares/${id}/1`, { t, n, index: share.index, value: b64u(share.value), commitments });
        } finally {
          c.close();
        }
      }));
      await admin.call('POST', '/v1/secret-policies', { id, epoch: 1, t, n, commitments, servers });
      publicKeys[id] = decodePoint(sharing.commitments[0]!);
    }

    agent = new Agent({ serverUrl: cp.url, dataDir: join(dir, 'agent'), log: silentLogger, trustBundleFile: bundleFile, joinToken: await token(AGENT_ID) });
    await agent.start();
    const cur = agent.current()!;
    const tls: UnsealTls = { certPem: cur.certPem, keyPem: cur.key.export({ format: 'pem', type: 'pkcs8' }) as string, bundlePem: cur.bundlePem };
    const trustedCas = agent.trustedCas();
    pool = new KeyServerPool();
    const plain = randomBytes(64);
    const sealedText = (id: string): string => sealedToText(seal(plain, { id, epoch: 1, publicKey: publicKeys[id]! }));
    const text23 = sealedText('b23');
    const text35 = sealedText('b35');
    const a = agent;
    const p = pool;
    const unsealOp = (text: string) => async (): Promise<void> => {
      const res = await unsealSealedText({ text, call: (m, path, body) => a.call(m, path, body), tls, trustedCas, pool: p });
      if (!res.plaintext.equals(plain)) throw new Error('unseal returned the wrong plaintext');
      if (res.bad.length > 0) throw new Error(`key servers failed: ${res.bad.map((b) => b.code).join(',')}`);
    };

    // --- central vault: one HTTPS endpoint with an AES-256-GCM key, same mTLS ------------------
    const ks1 = nodes[0]!.agent.current()!;
    const aesKey = randomBytes(32);
    vault = createHttpsServer({
      cert: ks1.certPem, key: ks1.key.export({ format: 'pem', type: 'pkcs8' }) as string, ca: ks1.bundlePem,
      requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', keepAliveTimeout: 60_000,
    }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { iv: string; ct: string; tag: string };
          const d = createDecipheriv('aes-256-gcm', aesKey, Buffer.from(body.iv, 'base64url'));
          d.setAuthTag(Buffer.from(body.tag, 'base64url'));
          const out = Buffer.concat([d.update(Buffer.from(body.ct, 'base64url')), d.final()]);
          const payload = Buffer.from(JSON.stringify({ plaintext: out.toString('base64url') }));
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': payload.length }).end(payload);
        } catch {
          res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"code":"TESSERA_SECRET_BLOB_INVALID"}}');
        }
      });
    });
    await new Promise<void>((r) => vault!.listen(0, '127.0.0.1', () => r()));
    const vaultPort = (vault.address() as { port: number }).port;
    vaultClient = new ApiClient(`https://127.0.0.1:${vaultPort}`, { ca: tls.bundlePem, cert: tls.certPem, key: tls.keyPem, serverId: KS[0]! }, 10_000);
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', aesKey, iv);
    const ct = Buffer.concat([c.update(plain), c.final()]);
    const vaultBody = { iv: b64u(iv), ct: b64u(ct), tag: b64u(c.getAuthTag()) };
    const vc = vaultClient;
    const vaultOp = async (): Promise<void> => {
      const res = await vc.call<{ plaintext: string }>('POST', '/decrypt', vaultBody);
      if (!Buffer.from(res.plaintext, 'base64url').equals(plain)) throw new Error('vault returned the wrong plaintext');
    };

    // --- measure ----------------------------------------------------------------------------
    const f23 = fakePolicy(2, 3);
    const f35 = fakePolicy(3, 5);
    const blob23 = seal(plain, { id: f23.id, epoch: 1, publicKey: f23.publicKey });
    const blob35 = seal(plain, { id: f35.id, epoch: 1, publicKey: f35.publicKey });
    const s1 = f23.servers[0]!;
    const Bx = blind(parseBlob(blob23).R).B;
    const ctx = unsealContext(f23.id, 1);
    const rates: Rate[] = [
      rate('seal, 64 B (offline)', seconds, () => void seal(plain, { id: 'b23', epoch: 1, publicKey: publicKeys.b23! })),
      rate('math: agent, 2-of-3 unseal', seconds, () => agentMath(f23, blob23)),
      rate('math: agent, 3-of-5 unseal', seconds, () => agentMath(f35, blob35)),
      rate('math: one key server evaluate + prove', seconds, () => void evaluateAndProve(s1.share, Bx, ctx, s1.K)),
    ];
    const lats: Latency[] = [];
    lats.push(await latency('unseal 2-of-3, mTLS loopback', seconds, unsealOp(text23)));
    lats.push(await latency('unseal 3-of-5, mTLS loopback', seconds, unsealOp(text35)));
    lats.push(await latency('central vault decrypt, mTLS loopback', seconds, vaultOp));

    const u23 = lats[0]!;
    const verdict = { aimP50Ms: AIM_P50_MS, p50Ms: u23.p50Ms, met: u23.p50Ms < AIM_P50_MS };
    const setup = { node: process.version, cores: availableParallelism(), seconds, keyServers: KS.length, sequential: true, plaintextBytes: plain.length };
    if (json) {
      process.stdout.write(`${JSON.stringify({ setup, rates, latencies: lats, verdict }, null, 2)}\n`);
    } else {
      const w = Math.max(...rates.map((r) => r.name.length), ...lats.map((l) => l.name.length));
      process.stdout.write(`blind secrets, Node ${process.version}, one process, loopback, sequential calls, --seconds ${seconds}\n\n`);
      process.stdout.write(`${'row'.padEnd(w)}  ${'p50 ms'.padStart(8)}  ${'p99 ms'.padStart(8)}  ${'ops/s'.padStart(9)}  ${'n'.padStart(7)}  ${'CPU ms/op'.padStart(9)}\n`);
      for (const l of lats) process.stdout.write(`${l.name.padEnd(w)}  ${l.p50Ms.toFixed(2).padStart(8)}  ${l.p99Ms.toFixed(2).padStart(8)}  ${Math.round(l.opsPerSecond).toLocaleString('en-US').padStart(9)}  ${String(l.n).padStart(7)}  ${l.cpuMsPerOp.toFixed(2).padStart(9)}\n`);
      process.stdout.write(`\n${'operation (no network)'.padEnd(w)}  ${'µs/op'.padStart(8)}  ${''.padStart(8)}  ${'ops/s'.padStart(9)}\n`);
      for (const r of rates) process.stdout.write(`${r.name.padEnd(w)}  ${r.usPerOp.toFixed(1).padStart(8)}  ${''.padStart(8)}  ${Math.round(r.opsPerSecond).toLocaleString('en-US').padStart(9)}\n`);
      const math23 = (rates[1]!.usPerOp + rates[3]!.usPerOp) / 1000;
      process.stdout.write(`\n2-of-3 unseal: p50 ${u23.p50Ms.toFixed(2)} ms vs the math floor ≈ ${math23.toFixed(2)} ms (agent + one key server on the critical path) ` +
        `and a central vault decrypt p50 ${lats[2]!.p50Ms.toFixed(2)} ms\n`);
      process.stdout.write(`(one process on ${availableParallelism()} cores: the agent, the control plane and every key server share one thread, so an unseal's latency here\n` +
        ` is about the CPU of all parties added up (CPU ms/op, this process); on separate hosts the servers' work runs in parallel.)\n`);
      process.stdout.write(`verdict: 2-of-3 unseal p50 ${u23.p50Ms.toFixed(2)} ms ${verdict.met ? '<' : '>='} ${AIM_P50_MS} ms aim: ${verdict.met ? 'MET' : 'NOT MET'}\n`);
    }
  } finally {
    await cleanup();
    clearTimeout(deadline);
  }
}

await main();
