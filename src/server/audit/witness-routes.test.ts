/**
 * The witnesses' routes against a real control plane (HTTPS + mTLS, SQLite file): the log key in the
 * CA-signed policy bundle, the checkpoint and consistency proof on the policy stream, alarms
 * (POST /v1/audit/alarms) and cosignatures (POST /v1/audit/cosignatures, served by GET
 * /v1/audit/checkpoint), with their refusals.
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from '../../common/api-client.js';
import { cosignCheckpoint, openCheckpoint } from '../../core/checkpoint.js';
import { encodeVerifierKey, parseNote, parseVerifierKey } from '../../core/signed-note.js';
import { noteHash, witnessStep } from '../../core/witness.js';
import type { AuditCheckpointResponse, PolicyBundleResponse, WitnessAlarmRequest } from '../../core/wire/control-plane.js';
import {
  agentClient, errorCode, joinAgent, rawJson, rejectionCode, startControlPlane, type JoinedAgent, type TestControlPlane,
} from '../../../test/support/server.js';

const TD = 'tessera.test';
/** Alarms each caller may send at once here (the malformed ones count too). */
const BURST = 40;
let t: TestControlPlane;
let agent: JoinedAgent;
let client: ApiClient;

beforeAll(async () => {
  t = await startControlPlane({ witnessAlarms: { burst: BURST } });
  agent = await joinAgent(t.cp, t.admin, `spiffe://${TD}/svc/witness`);
  client = agentClient(t.cp, agent);
});

afterAll(async () => {
  client?.close();
  await t?.close();
});

/** Adds audit records (entries) and signs a checkpoint of them. */
async function grow(n: number): Promise<number> {
  for (let i = 0; i < n; i++) await t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/grow/${Date.now()}-${Math.random().toString(36).slice(2)}` });
  await t.cp.ctx.audit.flush();
  await t.cp.ctx.tlog.checkpoint();
  return (await t.cp.ctx.tlog.latest()).size;
}

function payloadOf(res: PolicyBundleResponse): Record<string, unknown> {
  return JSON.parse(Buffer.from(res.bundle.payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}

function alarm(over: Partial<WitnessAlarmRequest> = {}): WitnessAlarmRequest {
  const note = 'tessera.test/tessera/audit\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— x y\n';
  return {
    kind: 'fork', message: 'the log shows another root for the same size', held: { size: 5, root_hash: 'A'.repeat(43) + '=' },
    seen: { size: 5, root_hash: 'B'.repeat(43) + '=' }, note, note_hash: noteHash(note), ...over,
  };
}

describe('the policy stream carries the log key and the latest checkpoint', () => {
  it('names the log key inside the signed bundle, and a checkpoint with a proof from the size held', async () => {
    const first = await grow(2);
    const plain = await client.call<PolicyBundleResponse>('GET', '/v1/policy/bundle?after=0');
    expect(plain.checkpoint).toBeUndefined();
    const logKey = (await t.admin.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint')).log_key;
    expect(payloadOf(plain).auditLogKey).toBe(logKey);

    const fresh = await client.call<PolicyBundleResponse>('GET', '/v1/policy/bundle?after=0&witness=0');
    expect(fresh.checkpoint?.consistency).toEqual([]);
    const v0 = witnessStep(undefined, logKey, fresh.checkpoint!.note, fresh.checkpoint!.consistency);
    expect(v0.ok && v0.state.size).toBeGreaterThanOrEqual(first);
    if (!v0.ok) return;

    const grown = await grow(3);
    const next = await client.call<PolicyBundleResponse>('GET', `/v1/policy/bundle?after=0&witness=${v0.state.size}`);
    const v1 = witnessStep(v0.state, logKey, next.checkpoint!.note, next.checkpoint!.consistency);
    expect(v1.ok && v1.advanced && v1.state.size).toBe(grown);

    // Held more than the log has: the latest checkpoint, no proof; the witness sees the rewind.
    const ahead = await client.call<PolicyBundleResponse>('GET', `/v1/policy/bundle?after=0&witness=${grown + 100}`);
    expect(ahead.checkpoint?.consistency).toEqual([]);
  });

  it('refuses a bad witness size before waiting', async () => {
    for (const q of ['witness=-1', 'witness=x', 'witness=1.5', 'witness=99999999999999999']) {
      const code = await rejectionCode(client.call('GET', `/v1/policy/bundle?after=0&timeout_seconds=30&${q}`));
      expect(`${q}: ${code}`).toBe(`${q}: TESSERA_BAD_REQUEST`);
    }
  });
});

describe('POST /v1/audit/alarms', () => {
  it('records an alarm from a live SVID as audit.witness_alarm with its details', async () => {
    const res = await client.call<{ recorded: boolean }>('POST', '/v1/audit/alarms', alarm());
    expect(res.recorded).toBe(true);
    const records = await t.admin.call<{ records: { actor: string; outcome: string; target: string; detail: Record<string, unknown> }[] }>(
      'GET', '/v1/audit?action=audit.witness_alarm&outcome=success');
    const rec = records.records.find((r) => r.actor === agent.spiffeId);
    expect(rec?.target).toBe('5 -> 5');
    expect(rec?.detail).toMatchObject({ kind: 'fork', held: { size: 5 }, seen: { size: 5 }, note_hash: alarm().note_hash });
    expect(t.logs.some((l) => l.includes('TESSERA_AUDIT_WITNESS_ALARM') && l.includes('"level":"error"'))).toBe(true);
    // Counted for Prometheus too.
    expect(await t.cp.ctx.metrics.registry.metrics()).toMatch(/^tessera_audit_witness_alarms_total [1-9]\d*$/m);
  });

  it('refuses malformed alarms with TESSERA_BAD_REQUEST', async () => {
    const bad: unknown[] = [
      null, [], 'x', {}, { ...alarm(), extra: 1 }, { ...alarm(), kind: 'other' }, { ...alarm(), message: '' }, { ...alarm(), message: 'x'.repeat(2000) },
      { ...alarm(), message: 'line\nbreak' }, { ...alarm(), held: { size: 'x', root_hash: '' } }, { ...alarm(), held: { size: 1 } },
      { ...alarm(), seen: { size: -2, root_hash: '' } }, { ...alarm(), seen: { size: 1, root_hash: 'short' } }, { ...alarm(), note: 7 },
      { ...alarm(), note_hash: 'ABC' }, { ...alarm(), note_hash: noteHash('another note') },
    ];
    for (const [i, body] of bad.entries()) {
      const res = await rawJson(t.cp.url, { method: 'POST', path: '/v1/audit/alarms', ca: t.adminTls.ca, cert: agent.certPem, key: agent.keyPem, json: body });
      expect(`${i}: ${res.status} ${errorCode(res)}`).toBe(`${i}: 400 TESSERA_BAD_REQUEST`);
    }
    const big = await rawJson(t.cp.url, { method: 'POST', path: '/v1/audit/alarms', ca: t.adminTls.ca, cert: agent.certPem, key: agent.keyPem, json: alarm({ note: 'x'.repeat(40_000) }) });
    expect(big.status).toBe(413);
  });

  it('needs a credential, and rate-limits each caller', async () => {
    const anon = await rawJson(t.cp.url, { method: 'POST', path: '/v1/audit/alarms', ca: t.adminTls.ca, json: alarm() });
    expect(anon.status).toBe(401);
    const other = await joinAgent(t.cp, t.admin, `spiffe://${TD}/svc/noisy`);
    const noisy = agentClient(t.cp, other);
    try {
      const codes: string[] = [];
      for (let i = 0; i < BURST + 2; i++) codes.push(await noisy.call('POST', '/v1/audit/alarms', alarm()).then(() => 'ok', (e: { code: string }) => e.code));
      expect(codes).toEqual([...Array<string>(BURST).fill('ok'), 'TESSERA_RATE_LIMITED', 'TESSERA_RATE_LIMITED']);
      // Another caller has its own bucket.
      expect((await client.call<{ recorded: boolean }>('POST', '/v1/audit/alarms', alarm())).recorded).toBe(true);
      await t.admin.call('POST', `/v1/entries/${encodeURIComponent(other.entryId)}/revoke`, { reason: 'test' });
      expect(await rejectionCode(noisy.call('POST', '/v1/audit/alarms', alarm()))).toBe('TESSERA_IDENTITY_REVOKED');
    } finally {
      noisy.close();
    }
  });
});

describe('POST /v1/audit/cosignatures', () => {
  const witness = (name: string): { name: string; key: KeyObject; vkey: string } => {
    const key = generateKeyPairSync('ed25519').privateKey;
    return { name, key, vkey: encodeVerifierKey(name, key, 'cosignature/v1') };
  };
  const now = (): number => Math.floor(Date.now() / 1000);

  it('stores a valid cosignature and serves it appended to the note and listed', async () => {
    const size = await grow(1);
    const w = witness('example.org/witness/site-b');
    const latest = await t.admin.call<AuditCheckpointResponse>('GET', `/v1/audit/checkpoint?size=${size}`);
    const text = parseNote(latest.checkpoint.note).text;
    const stored = await t.admin.call<{ stored: boolean; key_id: string }>('POST', '/v1/audit/cosignatures', { size, witness_key: w.vkey, line: cosignCheckpoint(text, { name: w.name, privateKey: w.key }, now() - 10) });
    expect(stored.stored).toBe(true);
    // A newer one replaces it; an older one does not.
    const newer = cosignCheckpoint(text, { name: w.name, privateKey: w.key }, now());
    await t.admin.call('POST', '/v1/audit/cosignatures', { size, witness_key: w.vkey, line: newer });
    await t.admin.call('POST', '/v1/audit/cosignatures', { size, witness_key: w.vkey, line: cosignCheckpoint(text, { name: w.name, privateKey: w.key }, now() - 100) });

    const served = await t.admin.call<AuditCheckpointResponse>('GET', `/v1/audit/checkpoint?size=${size}`);
    expect(served.cosignatures).toEqual([{ name: w.name, key_id: stored.key_id, witness_key: w.vkey, timestamp: expect.any(Number), line: newer }]);
    const vk = parseVerifierKey(served.log_key);
    const opened = openCheckpoint(served.checkpoint.note, { origin: vk.name, logKey: vk.publicKey, witnesses: [{ name: w.name, publicKey: parseVerifierKey(w.vkey).publicKey }] });
    expect(opened.cosignatures).toEqual([{ name: w.name, keyId: stored.key_id, timestamp: served.cosignatures![0]!.timestamp }]);
    expect(served.checkpoint.note.endsWith(newer)).toBe(true);
  });

  it('refuses bad cosignatures, unknown sizes and non-admin callers with stable codes', async () => {
    const size = (await t.cp.ctx.tlog.latest()).size;
    const text = parseNote((await t.cp.ctx.tlog.latest()).note).text;
    const w = witness('example.org/witness/c');
    const line = cosignCheckpoint(text, { name: w.name, privateKey: w.key }, now());
    const post = (body: unknown): Promise<string> => rejectionCode(t.admin.call('POST', '/v1/audit/cosignatures', body));
    expect(await rejectionCode(client.call('POST', '/v1/audit/cosignatures', { size, witness_key: w.vkey, line }))).toBe('TESSERA_FORBIDDEN');
    expect(await post({ size: size + 1000, witness_key: w.vkey, line })).toBe('TESSERA_NOT_FOUND');
    expect(await post({ size, witness_key: 'nope', line })).toBe('TESSERA_AUDIT_CHECKPOINT_INVALID');
    expect(await post({ size, witness_key: encodeVerifierKey(w.name, w.key), line })).toBe('TESSERA_AUDIT_CHECKPOINT_INVALID');
    expect(await post({ size, witness_key: witness('example.org/witness/c').vkey, line })).toBe('TESSERA_AUDIT_CHECKPOINT_INVALID');
    expect(await post({ size, witness_key: w.vkey, line: 'garbage' })).toBe('TESSERA_AUDIT_CHECKPOINT_INVALID');
    expect(await post({ size, witness_key: w.vkey, line: cosignCheckpoint(text, { name: w.name, privateKey: w.key }, now() + 3600) })).toBe('TESSERA_AUDIT_CHECKPOINT_INVALID');
    const older = await t.cp.store.getCheckpoint(1);
    if (older && older.size !== size) {
      const otherText = parseNote(older.note).text;
      expect(await post({ size, witness_key: w.vkey, line: cosignCheckpoint(otherText, { name: w.name, privateKey: w.key }, now()) })).toBe('TESSERA_AUDIT_CHECKPOINT_INVALID');
    }
    const logName = witness('tessera.test/tessera/audit');
    expect(await post({ size, witness_key: logName.vkey, line: cosignCheckpoint(text, { name: logName.name, privateKey: logName.key }, now()) })).toBe('TESSERA_AUDIT_CHECKPOINT_INVALID');
    for (const body of [{}, { size, witness_key: w.vkey }, { size: -1, witness_key: w.vkey, line }, { size, witness_key: w.vkey, line, extra: 1 }]) {
      expect(await post(body)).toBe('TESSERA_BAD_REQUEST');
    }
    const anon = await rawJson(t.cp.url, { method: 'POST', path: '/v1/audit/cosignatures', ca: t.adminTls.ca, json: { size, witness_key: w.vkey, line } });
    expect(anon.status).toBe(401);
    expect(await rejectionCode(t.admin.call('GET', '/v1/audit/checkpoint?size=x'))).toBe('TESSERA_BAD_REQUEST');
    expect(await rejectionCode(t.admin.call('GET', `/v1/audit/checkpoint?size=${size + 1000}`))).toBe('TESSERA_NOT_FOUND');
    expect(await rejectionCode(client.call('GET', '/v1/audit/checkpoint'))).toBe('TESSERA_FORBIDDEN');
    // Nothing refused was stored.
    expect((await t.admin.call<AuditCheckpointResponse>('GET', `/v1/audit/checkpoint?size=${size}`)).cosignatures?.some((c) => c.name === w.name)).toBe(false);
  });

  it('keeps at most 32 witnesses per checkpoint', async () => {
    const size = await grow(1);
    const text = parseNote((await t.cp.ctx.tlog.latest()).note).text;
    const codes: string[] = [];
    for (let i = 0; i < 33; i++) {
      const w = witness(`example.org/witness/w${i}`);
      codes.push(await t.admin.call('POST', '/v1/audit/cosignatures', { size, witness_key: w.vkey, line: cosignCheckpoint(text, { name: w.name, privateKey: w.key }, now()) })
        .then(() => 'ok', (e: { code: string }) => e.code));
    }
    expect(codes.filter((c) => c === 'ok')).toHaveLength(32);
    expect(codes[32]).toBe('TESSERA_BAD_REQUEST');
    const served = await t.admin.call<AuditCheckpointResponse>('GET', `/v1/audit/checkpoint?size=${size}`);
    expect(served.cosignatures).toHaveLength(32);
  });
});
