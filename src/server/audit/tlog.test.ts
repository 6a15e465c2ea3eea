/**
 * The audit log as a transparency log over the real control plane (HTTPS + mTLS, real SQLite file):
 * a checkpoint signed by the log key appears within ~2 s of records arriving; inclusion and
 * consistency proofs from the API verify against signed checkpoints; a restart keeps the log key and
 * extends the same tree; bad parameters and unknown ids or sizes are refused with stable codes.
 */
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditLeafData } from '../../core/audit-leaf.js';
import { auditLogOrigin, openCheckpoint } from '../../core/checkpoint.js';
import { leafHash, rootOf, verifyConsistency, verifyInclusion } from '../../core/merkle.js';
import { parseVerifierKey } from '../../core/signed-note.js';
import type { AuditCheckpointResponse, AuditCheckpointsResponse, AuditConsistencyResponse, AuditInclusionResponse, AuditListResponse, AuditRecordView } from '../../core/wire/control-plane.js';
import { ControlPlane } from '../server.js';
import { errorCode, joinAgent, rawRequest, readAdminTls, startControlPlane, type TestControlPlane } from '../../../test/support/server.js';
import { ApiClient } from '../../common/api-client.js';
import { createLogger } from '../../core/log.js';

const TD = 'tessera.test';
const ORIGIN = auditLogOrigin(TD);

const fromB64 = (s: string): Buffer => Buffer.from(s, 'base64');

function leafOf(r: AuditRecordView): Buffer {
  return leafHash(auditLeafData({ ...r, ts: Date.parse(r.ts) }));
}

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the witness long poll at shutdown', () => {
  it('a policy long poll carrying the checkpoint, in flight when the control plane stops, ends without an internal error', async () => {
    const t = await startControlPlane({ trustDomain: TD });
    try {
      const { version } = await t.admin.call<{ version: number }>('GET', '/v1/policy/bundle');
      const polls = [0, 1].map((held) => t.admin.call('GET', `/v1/policy/bundle?after=${version}&timeout_seconds=30&witness=${held}`).catch(() => undefined));
      await new Promise((r) => setTimeout(r, 300));
      await t.close();
      await Promise.all(polls);
      // Its store is closed once the connections are: the woken handler must not read it.
      await new Promise((r) => setTimeout(r, 100));
      expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
    } finally {
      await t.close().catch(() => {});
    }
  });
});

describe('transparency log API', () => {
  let t: TestControlPlane;
  let admin: ApiClient;

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    admin = t.admin;
  });
  afterAll(async () => {
    await t?.close();
    // Stopping waits for a checkpoint being signed: none fails on a closed store.
    expect(t.logs.filter((l) => l.includes('audit checkpoint failed') || l.includes('"internal error"'))).toEqual([]);
  });

  const checkpoint = (): Promise<AuditCheckpointResponse> => admin.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint');

  it('publishes a signed checkpoint at start, verifiable with the published log key', async () => {
    const res = await checkpoint();
    const vk = parseVerifierKey(res.log_key);
    expect(vk.name).toBe(ORIGIN);
    const opened = openCheckpoint(res.checkpoint.note, { origin: ORIGIN, logKey: vk.publicKey });
    expect(opened.checkpoint.size).toBe(res.checkpoint.size);
    expect(opened.checkpoint.rootHash.toString('base64')).toBe(res.checkpoint.root_hash);
    expect(res.checkpoint.origin).toBe(ORIGIN);
  });

  it('a checkpoint covering new records appears within ~2 s; proofs from the API verify against it', async () => {
    // A first batch and its checkpoint (the one signed at start covers the empty tree).
    await admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/tlog/first` });
    const before = (await waitFor('a first checkpoint', async () => {
      const c = await checkpoint();
      return c.checkpoint.size > 0 ? c : undefined;
    })).checkpoint.size;
    for (let i = 0; i < 5; i++) await admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/tlog/${i}` });
    const { records } = await admin.call<AuditListResponse>('GET', '/v1/audit?limit=10000');
    const last = records[records.length - 1]!.id;
    const started = Date.now();
    const cp = await waitFor('a checkpoint covering the new records', async () => {
      const c = await checkpoint();
      return c.checkpoint.size >= last ? c : undefined;
    });
    expect(Date.now() - started).toBeLessThan(3000);
    expect(cp.checkpoint.size).toBeGreaterThan(before);

    const logKey = parseVerifierKey(cp.log_key).publicKey;
    const root = openCheckpoint(cp.checkpoint.note, { origin: ORIGIN, logKey }).checkpoint.rootHash;
    // The whole tree, recomputed from the records as listed, gives the signed root.
    const all = (await admin.call<AuditListResponse>('GET', '/v1/audit?limit=10000')).records.filter((r) => r.id <= cp.checkpoint.size);
    expect(all.map((r) => r.id)).toEqual(Array.from({ length: cp.checkpoint.size }, (_, i) => i + 1));
    expect(rootOf(all.map(leafOf)).equals(root)).toBe(true);

    for (const id of [1, Math.ceil(last / 2), last]) {
      const p = await admin.call<AuditInclusionResponse>('GET', `/v1/audit/proof/inclusion?id=${id}`);
      expect(p.leaf_index).toBe(id - 1);
      expect(p.checkpoint.size).toBe(cp.checkpoint.size);
      expect(fromB64(p.leaf_hash).equals(leafOf(p.record))).toBe(true);
      expect(verifyInclusion(leafOf(p.record), p.leaf_index, p.checkpoint.size, p.proof.map(fromB64), root)).toBe(true);
      // A proof for another leaf does not verify for this one.
      expect(verifyInclusion(leafOf(all[(id % all.length)]!), p.leaf_index, p.checkpoint.size, p.proof.map(fromB64), root)).toBe(false);
    }

    // Against an earlier checkpoint (the one from start), and consistency between the two.
    const old = await admin.call<AuditInclusionResponse>('GET', `/v1/audit/proof/inclusion?id=1&size=${before}`);
    const oldRoot = fromB64(old.checkpoint.root_hash);
    expect(old.checkpoint.size).toBe(before);
    expect(verifyInclusion(leafOf(old.record), 0, before, old.proof.map(fromB64), oldRoot)).toBe(true);
    const c = await admin.call<AuditConsistencyResponse>('GET', `/v1/audit/proof/consistency?from=${before}&to=${cp.checkpoint.size}`);
    expect(verifyConsistency(before, cp.checkpoint.size, oldRoot, root, c.proof.map(fromB64))).toBe(true);
    expect(verifyConsistency(before, cp.checkpoint.size, Buffer.alloc(32), root, c.proof.map(fromB64))).toBe(false);
  });

  it('the proof reads are audited', async () => {
    await admin.call('GET', '/v1/audit/proof/inclusion?id=1');
    const { records } = await admin.call<AuditListResponse>('GET', '/v1/audit?action=audit.prove&limit=10000');
    expect(records.some((r) => r.target === '1' && r.outcome === 'success')).toBe(true);
  });

  it('lists stored checkpoints by size in pages (audited), and GET /v1/audit pages forward with until', async () => {
    for (let i = 0; i < 3; i++) {
      await admin.call('GET', '/v1/audit?limit=1');
      const size = (await admin.call<AuditListResponse>('GET', '/v1/audit?limit=1')).records[0]!.id;
      await waitFor('a checkpoint', async () => ((await checkpoint()).checkpoint.size >= size ? true : undefined));
    }
    const all = await admin.call<AuditCheckpointsResponse>('GET', '/v1/audit/checkpoints?limit=1000');
    expect(all.log_key).toBe((await checkpoint()).log_key);
    const sizes = all.checkpoints.map((c) => c.size);
    expect(sizes.length).toBeGreaterThanOrEqual(3);
    expect(sizes).toEqual([...new Set(sizes)].sort((a, b) => a - b));
    const vk = parseVerifierKey(all.log_key);
    for (const c of all.checkpoints) expect(openCheckpoint(c.note, { origin: ORIGIN, logKey: vk.publicKey }).checkpoint.size).toBe(c.size);
    const page = await admin.call<AuditCheckpointsResponse>('GET', `/v1/audit/checkpoints?after_size=${sizes[0]}&limit=2`);
    expect(page.checkpoints.map((c) => c.size)).toEqual(sizes.slice(1, 3));
    const { records } = await admin.call<AuditListResponse>('GET', '/v1/audit?action=audit.checkpoints&limit=10');
    expect(records.some((r) => r.detail.after_size === sizes[0] && r.outcome === 'success')).toBe(true);
    // `after` alone gives the newest records after it; with `until` a reader walks forward from 1.
    const window = await admin.call<AuditListResponse>('GET', '/v1/audit?after=1&until=3&limit=10000');
    expect(window.records.map((r) => r.id)).toEqual([2, 3]);
  });

  it('bad parameters → 400, unknown ids and sizes → 404, a non-admin caller → 403', async () => {
    const tls = t.adminTls;
    const size = (await checkpoint()).checkpoint.size;
    const cases: [string, number, string][] = [
      ['/v1/audit/proof/inclusion', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/inclusion?id=0', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/inclusion?id=-1', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/inclusion?id=abc', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/inclusion?id=1.5', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/inclusion?id=1&id=2', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/inclusion?id=1&size=x', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/inclusion?id=1&size=0', 400, 'TESSERA_BAD_REQUEST'],
      [`/v1/audit/proof/inclusion?id=${size + 1000}`, 404, 'TESSERA_NOT_FOUND'],
      ['/v1/audit/proof/inclusion?id=1&size=999999', 404, 'TESSERA_NOT_FOUND'],
      [`/v1/audit/proof/inclusion?id=${size}&size=1`, 404, 'TESSERA_NOT_FOUND'],
      ['/v1/audit/proof/consistency', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/consistency?from=1', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/proof/consistency?from=x&to=1', 400, 'TESSERA_BAD_REQUEST'],
      [`/v1/audit/proof/consistency?from=${size}&to=1`, 404, 'TESSERA_NOT_FOUND'],
      [`/v1/audit/proof/consistency?from=${size + 1}&to=${size}`, 400, 'TESSERA_AUDIT_RANGE'],
      ['/v1/audit/proof/consistency?from=1&to=999999', 404, 'TESSERA_NOT_FOUND'],
      ['/v1/audit/checkpoints?limit=0', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/checkpoints?limit=1001', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/checkpoints?after_size=-1', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit/checkpoints?after_size=1&after_size=2', 400, 'TESSERA_BAD_REQUEST'],
      ['/v1/audit?until=-1', 400, 'TESSERA_BAD_REQUEST'],
    ];
    for (const [path, status, code] of cases) {
      const res = await rawRequest(t.cp.url, { path, ...tls });
      expect(`${path} → ${res.status} ${errorCode(res)}`).toBe(`${path} → ${status} ${code}`);
    }
    const agent = await joinAgent(t.cp, admin, `spiffe://${TD}/tlog/reader`);
    for (const path of ['/v1/audit/checkpoint', '/v1/audit/checkpoints', '/v1/audit/proof/inclusion?id=1', '/v1/audit/proof/consistency?from=1&to=2']) {
      const res = await rawRequest(t.cp.url, { path, ca: tls.ca, cert: agent.certPem, key: agent.keyPem });
      expect(`${path} → ${res.status} ${errorCode(res)}`).toBe(`${path} → 403 TESSERA_FORBIDDEN`);
    }
  });
});

describe('transparency log across a restart', () => {
  it('a clean stop signs a last checkpoint: no record is left unsigned', async () => {
    const t = await startControlPlane({ trustDomain: TD });
    const dataDir = t.dataDir;
    let second: ControlPlane | undefined;
    try {
      // Records written just before the stop, inside the 1 s checkpoint tick.
      for (let i = 0; i < 5; i++) await t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/stop/e${i}` });
      t.admin.close();
      await t.cp.stop();
      second = await ControlPlane.start({ trustDomain: TD, env: {}, dataDir, host: '127.0.0.1', port: 0, role: 'follower', log: createLogger({ write: () => {} }) });
      const head = await second.store.auditTreeHead();
      const latest = await second.store.getCheckpoint();
      expect(head.size).toBeGreaterThanOrEqual(5);
      expect(latest?.size).toBe(head.size);
      expect(latest?.rootHash.equals(head.rootHash)).toBe(true);
    } finally {
      await second?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('keeps the log key, resumes the tree and signs a checkpoint consistent with the one before', async () => {
    const t = await startControlPlane({ trustDomain: TD });
    const dataDir = t.dataDir;
    let second: ControlPlane | undefined;
    let client: ApiClient | undefined;
    try {
      await t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/restart/a` });
      const first = await waitFor('a checkpoint', async () => {
        const c = await t.admin.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint');
        return c.checkpoint.size >= 2 ? c : undefined;
      });
      t.admin.close();
      await t.cp.stop();
      second = await ControlPlane.start({ trustDomain: TD, env: {}, dataDir, host: '127.0.0.1', port: 0, log: createLogger({ write: () => {} }) });
      client = new ApiClient(second.url, readAdminTls(second));
      await client.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/restart/b` });
      const later = await waitFor('a larger checkpoint', async () => {
        const c = await client!.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint');
        return c.checkpoint.size > first.checkpoint.size + 1 ? c : undefined;
      });
      expect(later.log_key).toBe(first.log_key);
      const logKey = parseVerifierKey(later.log_key).publicKey;
      const a = openCheckpoint(first.checkpoint.note, { origin: ORIGIN, logKey }).checkpoint;
      const b = openCheckpoint(later.checkpoint.note, { origin: ORIGIN, logKey }).checkpoint;
      const c = await client.call<AuditConsistencyResponse>('GET', `/v1/audit/proof/consistency?from=${a.size}&to=${b.size}`);
      expect(verifyConsistency(a.size, b.size, a.rootHash, b.rootHash, c.proof.map(fromB64))).toBe(true);
    } finally {
      client?.close();
      await second?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
