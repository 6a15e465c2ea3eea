import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { TesseraError } from '../errors.js';
import { createSelfSignedCa } from '../x509.js';
import { randomScalar, ready, split } from './index.js';
import { signEnvelope } from '../signed-envelope.js';
import { SECRET_POLICY_DOMAIN, checkSecretPolicy, signSecretPolicy, verifySecretPolicy, type SecretPolicyRecord } from './policy-record.js';

const TD = 'tessera.test';
const HOUR = 3600_000;
function ca(): { privateKey: ReturnType<typeof generateKeyPairSync>['privateKey']; certDer: Buffer } {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const certDer = createSelfSignedCa({ ...k, commonName: 'test CA', trustDomainUri: `spiffe://${TD}`, notBefore: new Date(now - HOUR), notAfter: new Date(now + HOUR) });
  return { privateKey: k.privateKey, certDer };
}
const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');

let record: SecretPolicyRecord;
const caA = ca();
const caB = ca();

beforeAll(async () => {
  await ready();
  const s = split(randomScalar(), 2, 3);
  record = {
    id: 'db', epoch: 1, t: 2, n: 3, generation: 1, commitments: s.commitments.map(b64u), createdAt: new Date().toISOString(),
    servers: [1, 2, 3].map((i) => ({ url: `https://127.0.0.1:${9000 + i}`, spiffeId: `spiffe://${TD}/tessera/keyserver/${i}`, index: i })),
  };
});

describe('signed secret-policy records', () => {
  it('round-trips through sign and verify', () => {
    const signed = signSecretPolicy(record, caA);
    expect(verifySecretPolicy(JSON.parse(JSON.stringify(signed)), [caB.certDer, caA.certDer])).toEqual(record);
  });

  it('refuses a tampered payload, signature, signer, or a CA outside the trust bundle', () => {
    const signed = signSecretPolicy(record, caA);
    const forged = Buffer.from(JSON.stringify({ ...record, t: 1, commitments: record.commitments.slice(0, 1) })).toString('base64url');
    expectTesseraError(() => verifySecretPolicy({ ...signed, payload: forged }, [caA.certDer]), 'TESSERA_SECRET_POLICY_INVALID');
    const sig = Buffer.from(signed.signature, 'base64url');
    sig[5] = sig[5]! ^ 1;
    expectTesseraError(() => verifySecretPolicy({ ...signed, signature: sig.toString('base64url') }, [caA.certDer]), 'TESSERA_SECRET_POLICY_INVALID');
    expectTesseraError(() => verifySecretPolicy(signed, [caB.certDer]), 'TESSERA_SECRET_POLICY_INVALID');
    expectTesseraError(() => verifySecretPolicy({ ...signed, extra: 1 }, [caA.certDer]), 'TESSERA_SECRET_POLICY_INVALID');
    // Re-signed by another CA: valid only if that CA is trusted.
    const other = signSecretPolicy(record, caB);
    expectTesseraError(() => verifySecretPolicy(other, [caA.certDer]), 'TESSERA_SECRET_POLICY_INVALID');
  });

  it('refuses a key that is not the signer certificate\'s', () => {
    expectTesseraError(() => signSecretPolicy(record, { privateKey: caB.privateKey, certDer: caA.certDer }), 'TESSERA_SECRET_POLICY_INVALID');
  });

  it('reads a record signed before share generations existed as generation 1', () => {
    const { generation: _omitted, ...old } = record;
    // Signed as the previous version did: the payload has no generation field.
    const signed = signEnvelope(old, caA, { domain: SECRET_POLICY_DOMAIN, what: 'record', fail: (m) => new TesseraError('TESSERA_SECRET_POLICY_INVALID', m), maxPayloadChars: 1 << 18 });
    expect(JSON.parse(Buffer.from(signed.payload, 'base64url').toString('utf8'))).not.toHaveProperty('generation');
    expect(verifySecretPolicy(signed, [caA.certDer]).generation).toBe(1);
    expect(verifySecretPolicy(signSecretPolicy({ ...record, generation: 7 }, caA), [caA.certDer]).generation).toBe(7);
  });

  it('validates strictly', () => {
    const bad: unknown[] = [
      { ...record, t: 4 },
      { ...record, t: 3 },
      { ...record, n: 256 },
      { ...record, id: 'Bad/Id' },
      { ...record, epoch: -1 },
      { ...record, commitments: [record.commitments[0], b64u(new Uint8Array(32))] },
      { ...record, commitments: [record.commitments[0], 'x'] },
      { ...record, servers: record.servers.slice(0, 2) },
      { ...record, servers: record.servers.map((s) => ({ ...s, index: 1 })) },
      { ...record, servers: record.servers.map((s, i) => (i === 0 ? { ...s, index: 4 } : s)) },
      { ...record, servers: record.servers.map((s, i) => (i === 0 ? { ...s, url: 'http://127.0.0.1:1' } : s)) },
      { ...record, servers: record.servers.map((s, i) => (i === 0 ? { ...s, spiffeId: 'not-an-id' } : s)) },
      { ...record, servers: record.servers.map((s, i) => (i === 0 ? { ...s, extra: true } : s)) },
      { ...record, createdAt: 'yesterday' },
      { ...record, more: 1 },
      { ...record, generation: 0 },
      { ...record, generation: 1.5 },
      { ...record, generation: '2' },
    ];
    for (const b of bad) {
      expectTesseraError(() => checkSecretPolicy(b), 'TESSERA_SECRET_POLICY_INVALID');
      expectTesseraError(() => signSecretPolicy(b as SecretPolicyRecord, caA), 'TESSERA_SECRET_POLICY_INVALID');
    }
  });

  it('on arbitrary JSON (as envelope, or signed as payload) throws only TesseraError', () => {
    const onlyTessera = (fn: () => unknown): void => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(TesseraError);
        expect((err as TesseraError).code).toBe('TESSERA_SECRET_POLICY_INVALID');
      }
    };
    fc.assert(fc.property(fc.jsonValue(), (v) => {
      onlyTessera(() => verifySecretPolicy(v, [caA.certDer]));
      onlyTessera(() => checkSecretPolicy(v));
      // A validly signed envelope around arbitrary JSON is still refused unless it is a record.
      const payload = Buffer.from(JSON.stringify(v) ?? 'null').toString('base64url');
      onlyTessera(() => verifySecretPolicy({ payload, alg: 'ES256', signer: 'a'.repeat(64), signature: 'A'.repeat(86) }, [caA.certDer]));
    }), { numRuns: 300 });
    fc.assert(fc.property(fc.record({ payload: fc.string(), alg: fc.constantFrom('ES256', 'none'), signer: fc.string(), signature: fc.string() }), (env) => {
      onlyTessera(() => verifySecretPolicy(env, [caA.certDer]));
    }), { numRuns: 200 });
  });
});
