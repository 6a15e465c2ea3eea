/**
 * The client-side checks of `tessera audit checkpoint` / `tessera audit prove`, on real answers of a
 * real control plane, then on tampered copies: each tampering is caught with a stable code, and
 * arbitrary garbage in the answer is a TesseraError, never a crash.
 */
import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { startControlPlane, type TestControlPlane } from '../../test/support/server.js';
import { auditLogOrigin, signCheckpoint } from '../core/checkpoint.js';
import { isTesseraError } from '../core/errors.js';
import { encodeVerifierKey } from '../core/signed-note.js';
import type { AuditCheckpointResponse, AuditConsistencyResponse, AuditInclusionResponse } from '../core/wire/control-plane.js';
import { checkCheckpointResponse, checkConsistencyResponse, checkInclusionResponse } from './audit-proof.js';

const TD = 'tessera.test';
let t: TestControlPlane;
let cp: AuditCheckpointResponse;
let inc: AuditInclusionResponse;
const ID = 3;

beforeAll(async () => {
  t = await startControlPlane({ trustDomain: TD });
  for (let i = 0; i < 6; i++) await t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/proof/${i}` });
  const until = Date.now() + 5000;
  do {
    cp = await t.admin.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint');
    if (cp.checkpoint.size >= 6) break;
    await new Promise((r) => setTimeout(r, 50));
  } while (Date.now() < until);
  inc = await t.admin.call<AuditInclusionResponse>('GET', `/v1/audit/proof/inclusion?id=${ID}`);
});
afterAll(async () => {
  await t?.close();
});

const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

describe('checkCheckpointResponse / checkInclusionResponse', () => {
  it('accept the real answers, with the server key or the same key pinned', () => {
    expect(cp.checkpoint.size).toBeGreaterThanOrEqual(6);
    const c = checkCheckpointResponse(cp);
    expect(c.pinned).toBe(false);
    expect(c.checkpoint.origin).toBe(auditLogOrigin(TD));
    expect(checkCheckpointResponse(cp, cp.log_key).pinned).toBe(true);
    const p = checkInclusionResponse(inc, ID, cp.log_key);
    expect(p.leafIndex).toBe(ID - 1);
    expect(p.leafHash.toString('base64')).toBe(inc.leaf_hash);
  });

  it('catch every tampering', () => {
    const other = generateKeyPairSync('ed25519');
    const otherKey = encodeVerifierKey(auditLogOrigin(TD), other.publicKey);
    // Pinned key differs from the server's.
    expectTesseraError(() => checkCheckpointResponse(cp, otherKey), 'TESSERA_AUDIT_PROOF_INVALID');
    // A note signed by another key, with that key named by the server: refused once the real key is pinned.
    const forged = clone(cp);
    forged.checkpoint.note = signCheckpoint({ origin: auditLogOrigin(TD), size: 1, rootHash: Buffer.alloc(32) }, other.privateKey);
    forged.log_key = otherKey;
    expectTesseraError(() => checkCheckpointResponse(forged, cp.log_key), 'TESSERA_AUDIT_PROOF_INVALID');
    forged.log_key = cp.log_key;
    expectTesseraError(() => checkCheckpointResponse(forged), 'TESSERA_AUDIT_CHECKPOINT_INVALID');
    // Fields that disagree with the note.
    const size = clone(cp);
    size.checkpoint.size += 1;
    expectTesseraError(() => checkCheckpointResponse(size), 'TESSERA_AUDIT_PROOF_INVALID');

    const cases: [string, (r: AuditInclusionResponse) => void][] = [
      ['edited actor', (r) => { r.record.actor = 'spiffe://tessera.test/mallory'; }],
      ['edited time', (r) => { r.record.ts = new Date(Date.parse(r.record.ts) + 1).toISOString(); }],
      ['edited detail', (r) => { r.record.detail = { ...r.record.detail, extra: 1 }; }],
      ['another record', (r) => { r.record.id = ID + 1; }],
      ['wrong leaf index', (r) => { r.leaf_index = ID; }],
      ['leaf hash of another record', (r) => { r.leaf_hash = Buffer.alloc(32, 1).toString('base64'); }],
      ['a proof hash flipped', (r) => { const h = Buffer.from(r.proof[0]!, 'base64'); h[0]! ^= 1; r.proof[0] = h.toString('base64'); }],
      ['a proof hash dropped', (r) => { r.proof.pop(); }],
      ['a proof hash added', (r) => { r.proof.push(Buffer.alloc(32).toString('base64')); }],
      ['proof not base64', (r) => { r.proof[0] = '!!'; }],
      ['proof not a list', (r) => { (r as unknown as { proof: unknown }).proof = 'x'; }],
    ];
    for (const [what, tamper] of cases) {
      const r = clone(inc);
      tamper(r);
      let code = 'accepted';
      try { checkInclusionResponse(r, ID); } catch (err) { code = isTesseraError(err) ? err.code : `crash: ${String(err)}`; }
      expect(`${what}: ${code}`).toBe(`${what}: TESSERA_AUDIT_PROOF_INVALID`);
    }
    // Asking about another id than the answer's.
    expectTesseraError(() => checkInclusionResponse(inc, ID + 1), 'TESSERA_AUDIT_PROOF_INVALID');
  });

  it('on arbitrary answers throws a TesseraError, nothing else', () => {
    const onlyTessera = (fn: () => unknown): void => {
      try { fn(); } catch (err) { expect(isTesseraError(err)).toBe(true); }
    };
    fc.assert(fc.property(fc.anything(), fc.anything(), (a, b) => {
      onlyTessera(() => checkCheckpointResponse(a as never));
      onlyTessera(() => checkInclusionResponse(a as never, 1));
      onlyTessera(() => checkInclusionResponse({ ...clone(inc), record: b } as never, ID));
      onlyTessera(() => checkInclusionResponse({ ...clone(inc), checkpoint: { ...clone(inc.checkpoint), note: b } } as never, ID));
    }), { numRuns: 300 });
    const keys = Object.keys(inc) as (keyof AuditInclusionResponse)[];
    fc.assert(fc.property(fc.constantFrom(...keys), fc.jsonValue(), (k, v) => {
      onlyTessera(() => checkInclusionResponse({ ...clone(inc), [k]: v } as never, ID));
    }), { numRuns: 300 });
  });
});

describe('checkConsistencyResponse', () => {
  it('accepts a real proof between two signed sizes and catches a changed hash, size or older note', async () => {
    const older = cp;
    await t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://${TD}/proof/later` });
    let newer = older;
    const until = Date.now() + 5000;
    while (newer.checkpoint.size <= older.checkpoint.size && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
      newer = await t.admin.call<AuditCheckpointResponse>('GET', '/v1/audit/checkpoint');
    }
    expect(newer.checkpoint.size).toBeGreaterThan(older.checkpoint.size);
    const res = await t.admin.call<AuditConsistencyResponse>('GET', `/v1/audit/proof/consistency?from=${older.checkpoint.size}&to=${newer.checkpoint.size}`);
    const ok = checkConsistencyResponse(older, res, older.log_key);
    expect([ok.older.size, ok.checkpoint.size, ok.pinned]).toEqual([older.checkpoint.size, newer.checkpoint.size, true]);
    expect(res.proof.length).toBeGreaterThan(0);
    for (let i = 0; i < res.proof.length; i++) {
      const bad = clone(res);
      const h = Buffer.from(bad.proof[i]!, 'base64');
      h[0] = h[0]! ^ 1;
      bad.proof[i] = h.toString('base64');
      expectTesseraError(() => checkConsistencyResponse(older, bad), 'TESSERA_AUDIT_PROOF_INVALID');
    }
    expectTesseraError(() => checkConsistencyResponse(older, { ...clone(res), from: res.from - 1 }), 'TESSERA_AUDIT_PROOF_INVALID');
    expectTesseraError(() => checkConsistencyResponse(older, { ...clone(res), proof: res.proof.slice(1) }), 'TESSERA_AUDIT_PROOF_INVALID');
    const otherKey = encodeVerifierKey(auditLogOrigin(TD), generateKeyPairSync('ed25519').publicKey);
    expectTesseraError(() => checkConsistencyResponse(older, res, otherKey), 'TESSERA_AUDIT_PROOF_INVALID');
    // The older checkpoint's note re-signed by another key is refused under the newer one's key.
    const other = generateKeyPairSync('ed25519');
    const forged = clone(older);
    forged.checkpoint.note = signCheckpoint({ origin: auditLogOrigin(TD), size: older.checkpoint.size, rootHash: Buffer.from(older.checkpoint.root_hash, 'base64') }, other.privateKey);
    forged.log_key = encodeVerifierKey(auditLogOrigin(TD), other.publicKey);
    expect(() => checkConsistencyResponse(forged, res)).toThrow();
  });
});
