import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../../test/support/expect.js';
import { TesseraError } from '../errors.js';
import { signEnvelope } from '../signed-envelope.js';
import { createSelfSignedCa } from '../x509.js';
import {
  MAX_PROVISION_AUTHORIZATION_SECONDS, encodeProvisionAuthorization, signProvisionAuthorization, verifyProvisionAuthorization,
  type ProvisionAuthorization, type ProvisionRequestFacts,
} from './provision-authorization.js';

const TD = 'tessera.test';
const HOUR = 3600_000;
function ca(): { privateKey: ReturnType<typeof generateKeyPairSync>['privateKey']; certDer: Buffer } {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const certDer = createSelfSignedCa({ ...k, commonName: 'test CA', trustDomainUri: `spiffe://${TD}`, notBefore: new Date(now - HOUR), notAfter: new Date(now + HOUR) });
  return { privateKey: k.privateKey, certDer };
}
const caA = ca();
const caB = ca();
const NOW = 1_900_000_000;
const ALICE = `spiffe://${TD}/user/alice`;
const KS1 = `spiffe://${TD}/keyserver/1`;
const KS2 = `spiffe://${TD}/keyserver/2`;
const base: ProvisionAuthorization = { v: 1, jti: 'AAAAAAAAAAAAAAAAAAAAAAAA', caller: ALICE, serial: '0A1B2C', op: 'create', policy: 'db', epoch: 3, keyServers: [KS1, KS2], iat: NOW, exp: NOW + 90 };
const facts: ProvisionRequestFacts = { keyServer: KS1, caller: ALICE, serial: '0A1B2C', action: 'secret:share-install', policy: 'db', epoch: 3, now: NOW + 5 };
const header = (a: ProvisionAuthorization = base, signer = caA): string => encodeProvisionAuthorization(signProvisionAuthorization(a, signer));
const CODE = 'TESSERA_PROVISION_AUTHORIZATION_INVALID';

describe('provisioning authorization', () => {
  it('verifies for the caller, serial, key server, policy, epoch and an action its op covers', () => {
    expect(verifyProvisionAuthorization(header(), [caB.certDer, caA.certDer], facts)).toEqual(base);
    expect(verifyProvisionAuthorization(header(), [caA.certDer], { ...facts, keyServer: KS2, action: 'secret:share-delete' }).jti).toBe(base.jti);
    const refresh = header({ ...base, op: 'refresh' });
    for (const action of ['secret:share-refresh', 'secret:share-commit', 'secret:share-abort'] as const) {
      expect(verifyProvisionAuthorization(refresh, [caA.certDer], { ...facts, action }).op).toBe('refresh');
    }
    // The share list (no policy in its path) is part of a refresh.
    const { policy: _p, epoch: _e, ...listFacts } = facts;
    expect(verifyProvisionAuthorization(refresh, [caA.certDer], { ...listFacts, action: 'secret:share-list' }).op).toBe('refresh');
  });

  it('refuses a wrong signer, a forged payload, and a signature made for another kind of object', () => {
    expectTesseraError(() => verifyProvisionAuthorization(header(base, caB), [caA.certDer], facts), CODE);
    const signed = signProvisionAuthorization(base, caA);
    const forged = Buffer.from(JSON.stringify({ ...base, caller: `spiffe://${TD}/user/mallory` })).toString('base64url');
    expectTesseraError(() => verifyProvisionAuthorization(encodeProvisionAuthorization({ ...signed, payload: forged }), [caA.certDer], { ...facts, caller: `spiffe://${TD}/user/mallory` }), CODE);
    // The same content under the generic envelope with another domain (e.g. a secret policy record's) does not verify.
    const other = signEnvelope(base, caA, { domain: 'tessera-secret-policy-v1\n', what: 'x', fail: (m) => new TesseraError('TESSERA_BAD_REQUEST', m), maxPayloadChars: 6000 });
    expectTesseraError(() => verifyProvisionAuthorization(encodeProvisionAuthorization(other), [caA.certDer], facts), CODE);
  });

  it('refuses expired, not yet valid, and too long-lived statements', () => {
    expectTesseraError(() => verifyProvisionAuthorization(header(), [caA.certDer], { ...facts, now: NOW + 90 + 31 }), CODE);
    expectTesseraError(() => verifyProvisionAuthorization(header(), [caA.certDer], { ...facts, now: NOW - 31 }), CODE);
    expectTesseraError(() => header({ ...base, exp: NOW + MAX_PROVISION_AUTHORIZATION_SECONDS + 1 }), CODE);
    expectTesseraError(() => header({ ...base, exp: NOW }), CODE);
  });

  it('refuses another caller, serial, key server, policy, epoch or operation', () => {
    const h = header();
    const cases: Partial<ProvisionRequestFacts>[] = [
      { caller: `spiffe://${TD}/user/bob` },
      { serial: '0A1B2D' },
      { serial: undefined },
      { keyServer: `spiffe://${TD}/keyserver/3` },
      { policy: 'other' },
      { epoch: 4 },
      { epoch: Number.NaN },
      { action: 'secret:share-refresh' },
      { action: 'secret:share-commit' },
      { action: 'secret:share-list' },
    ];
    for (const c of cases) expectTesseraError(() => verifyProvisionAuthorization(h, [caA.certDer], { ...facts, ...c }), CODE);
    expectTesseraError(() => verifyProvisionAuthorization(header({ ...base, op: 'retire' }), [caA.certDer], facts), CODE);
  });

  it('the DKG routes: covered by create (a new key) and refresh (a refresh or reshare of the epoch), never by retire', () => {
    for (const action of ['secret:dkg-start', 'secret:dkg-next', 'secret:dkg-commit', 'secret:dkg-abort'] as const) {
      expect(verifyProvisionAuthorization(header(), [caA.certDer], { ...facts, action }).op).toBe('create');
      expect(verifyProvisionAuthorization(header({ ...base, op: 'refresh' }), [caA.certDer], { ...facts, action }).op).toBe('refresh');
      expectTesseraError(() => verifyProvisionAuthorization(header({ ...base, op: 'retire' }), [caA.certDer], { ...facts, action }), CODE);
      expectTesseraError(() => verifyProvisionAuthorization(header(), [caA.certDer], { ...facts, action, epoch: 4 }), CODE);
    }
  });

  it('refuses any malformed header with its code, never another error', () => {
    const onlyCode = (fn: () => unknown): void => {
      try {
        fn();
      } catch (err) {
        expect(err).toBeInstanceOf(TesseraError);
        expect((err as TesseraError).code).toBe(CODE);
        return;
      }
      throw new Error('accepted a malformed header');
    };
    for (const bad of [undefined, '', 'not base64!', 'A'.repeat(9000), ['x'], Buffer.from('{}').toString('base64url')]) onlyCode(() => verifyProvisionAuthorization(bad, [caA.certDer], facts));
    fc.assert(fc.property(fc.jsonValue(), (v) => {
      onlyCode(() => verifyProvisionAuthorization(Buffer.from(JSON.stringify(v) ?? 'null').toString('base64url'), [caA.certDer], facts));
      // A genuinely signed envelope around arbitrary JSON is refused unless it is a statement.
      let signed: string | undefined;
      try {
        signed = encodeProvisionAuthorization(signEnvelope(v, caA, { domain: 'tessera-provision-authorization-v1\n', what: 'x', fail: (m) => new TesseraError(CODE, m), maxPayloadChars: 6000 }));
      } catch {
        return; // not canonical-JSON-able
      }
      onlyCode(() => verifyProvisionAuthorization(signed, [caA.certDer], facts));
    }), { numRuns: 300 });
    fc.assert(fc.property(fc.string(), (s) => onlyCode(() => verifyProvisionAuthorization(s, [caA.certDer], facts))), { numRuns: 300 });
  });
});
