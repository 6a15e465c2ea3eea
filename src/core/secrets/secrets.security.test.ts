/**
 * Negative paths of the secrets core that matter for security beyond correctness: error messages
 * carry no secret material, and refusals are typed.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { TesseraError } from '../errors.js';
import { blind, combineEvaluations, unsealContext } from './blind.js';
import { openWithPoint, parseBlob, parseSealedText, seal, sealedToText } from './blob.js';
import { fakePolicy } from './fixtures.js';
import { baseMul, decodeScalar, mul, randomScalar, ready } from './group.js';
import { refreshShares, split } from './shamir.js';

beforeAll(ready);

function errorOf(fn: () => unknown): TesseraError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TesseraError);
    return err as TesseraError;
  }
  throw new Error('expected a refusal');
}

/** Every encoding a secret could leak in: hex, base64, base64url, and the raw latin1 bytes. */
function forms(bytes: Uint8Array): string[] {
  const b = Buffer.from(bytes);
  return [b.toString('hex'), b.toString('base64'), b.toString('base64url'), b.toString('latin1')].map((s) => s.slice(0, 16));
}

describe('secrets: nothing secret in error messages', () => {
  it('blob, point, share, threshold and proof refusals mention no key, share, point, blob or plaintext', () => {
    const p = fakePolicy(3, 5, 'pci.card-keys', 3);
    const plain = Buffer.from('4111111111111111 exp 12/29 cvv 123');
    const blob = seal(plain, { id: p.id, epoch: p.epoch, publicKey: p.publicKey });
    const parsed = parseBlob(blob);
    const kR = mul(p.k, parsed.R);
    const wrong = baseMul(randomScalar());
    const tampered = Buffer.from(blob);
    tampered[tampered.length - 1] = tampered[tampered.length - 1]! ^ 1;
    const { B } = blind(parsed.R);
    const ctx = unsealContext(p.id, p.epoch);
    const share = p.servers[0]!.share;
    const badShare = { index: 1, value: p.servers[1]!.share.value };

    const errors = [
      errorOf(() => openWithPoint(parsed, wrong)),
      errorOf(() => openWithPoint(parseBlob(tampered), kR)),
      errorOf(() => parseSealedText(`${sealedToText(blob)}==`)),
      errorOf(() => parseBlob(blob.subarray(0, 40))),
      errorOf(() => combineEvaluations([p.servers[0]!.answer(B, ctx)], p.commitments, B, 3, ctx)),
      errorOf(() => refreshShares([badShare, ...p.servers.slice(1).map((s) => s.share)], p.commitments)),
      errorOf(() => decodeScalar(new Uint8Array(32).fill(0xff))),
      errorOf(() => split(new Uint8Array(32), 2, 3)),
      errorOf(() => mul(share.value, new Uint8Array(32))),
    ];
    const secrets = [p.k, share.value, badShare.value, kR, parsed.R, B, wrong, blob.subarray(20), plain, parsed.ciphertext];
    for (const err of errors) {
      expect(err.code).toMatch(/^TESSERA_/);
      for (const s of secrets) for (const f of forms(s)) expect(err.message).not.toContain(f);
      expect(err.message).not.toContain('4111');
      expect(Object.keys(JSON.parse(JSON.stringify(err)) as object).sort()).toEqual(['code', 'message']);
    }
  });

  it('a blob for one policy cannot be opened with another policy\'s evaluations, even with the same id', () => {
    const p = fakePolicy(2, 3, 'team-a', 1);
    const q = fakePolicy(2, 3, 'team-a', 1);
    const parsed = parseBlob(seal(Buffer.from('x'), { id: 'team-a', epoch: 1, publicKey: p.publicKey }));
    const { B } = blind(parsed.R);
    const ctx = unsealContext('team-a', 1);
    // q's servers answer honestly with q's key; checked against p's commitments, every proof fails.
    const evals = q.servers.map((s) => s.answer(B, ctx));
    expect(errorOf(() => combineEvaluations(evals, p.commitments, B, 2, ctx)).code).toBe('TESSERA_SECRET_THRESHOLD');
  });
});
