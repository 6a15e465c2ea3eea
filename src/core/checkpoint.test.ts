import { createHash, generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import {
  CHECKPOINT_MAX_EXTENSIONS,
  auditLogOrigin,
  cosignCheckpoint,
  formatCheckpoint,
  openCheckpoint,
  parseCheckpoint,
  signCheckpoint,
  verifyCosignature,
} from './checkpoint.js';
import { TesseraError } from './errors.js';
import { appendSignatures, cosignatureMessage, formatSignatureLine, noteKeyId, openNote, parseNote, parseSignatureLine, signNote } from './signed-note.js';

const CODE = 'TESSERA_AUDIT_CHECKPOINT_INVALID';
const ORIGIN = 'example.org/tessera/audit';
const EMPTY_ROOT = createHash('sha256').digest(); // RFC 9162 §2.1.1: the hash of an empty list.
const ROOT = createHash('sha256').update('root').digest();
const log = generateKeyPairSync('ed25519');
const w1 = { name: 'example.org/ns/ops/sa/witness-1', ...generateKeyPairSync('ed25519') };
const w2 = { name: 'witness.example/w2', ...generateKeyPairSync('ed25519') };

// C2SP tlog-checkpoint (the example at the top) and tlog-cosignature (its example note, and the signed
// message of §Ed25519 signed message). The keys are not published, so the signatures cannot be verified.
const SPEC_BODY = 'example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n';
const SPEC_LOG_LINE = '— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n';
const SPEC_COSIG_LINE = '— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n';

describe('checkpoint: published examples', () => {
  it('parses the C2SP checkpoint example', () => {
    const note = parseNote(`${SPEC_BODY}\n${SPEC_LOG_LINE}${SPEC_COSIG_LINE}`);
    const c = parseCheckpoint(note.text);
    expect(c).toMatchObject({ origin: 'example.com/behind-the-sofa', size: 20852163, extensions: [] });
    expect(c.rootHash.toString('base64')).toBe('CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=');
    expect(formatCheckpoint(c)).toBe(SPEC_BODY);
    expect(note.signatures.map((s) => [s.name, s.keyId, s.signature.length])).toEqual([
      ['example.com/behind-the-sofa', '033de0ae', 64],
      ['witness.example.com/w1', '8d66cf3f', 72],
    ]);
    expectTesseraError(() => openCheckpoint(`${SPEC_BODY}\n${SPEC_LOG_LINE}`, { origin: 'example.com/behind-the-sofa', logKey: log.publicKey }), CODE);
  });

  it('builds the tlog-cosignature signed message, whose timestamp is the one in the spec example line', () => {
    expect(cosignatureMessage(SPEC_BODY, 1679315147).toString('utf8')).toBe(
      'cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n',
    );
    expect(Number(parseSignatureLine(SPEC_COSIG_LINE).signature.readBigUInt64BE(0))).toBe(1679315147);
    // transparency-dev/formats note_cosigv1_test.go TestCosignatureTimestamp.
    const formats = parseSignatureLine('— w ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA==');
    expect(Number(formats.signature.readBigUInt64BE(0))).toBe(1727964367);
  });

  it('refuses the invalid checkpoints of transparency-dev/formats checkpoint_test.go, and its short hashes', () => {
    const h = 'dGhlIHZpZXcgZnJvbSB0aGUgdHJlZSB0b3BzIGlzIGdyZWF0IQ=='; // 37 bytes: not a SHA-256 root
    for (const t of ['Head\n9944\n', `\n9944\n${h}\n`, 'Log\n123\nYmFuYW5hcw==', `Log\nbananas\n${h}\n`, `Log\n-34\n${h}\n`, `Log\n3438945738945739845734895735\n${h}\n`, "Log\n123\nThisIsn'tBase64\n", 'Log\n123\nYmFuYW5hcw==\n', `Log\n9944\n${h}\n`]) {
      expectTesseraError(() => parseCheckpoint(t), CODE);
    }
    // Go's "valid with trailing newlines" (rest "\n\n\n"): tlog-checkpoint §Note text 4 says extension lines MUST be non-empty.
    expectTesseraError(() => parseCheckpoint(`${SPEC_BODY}\n\n\n`), CODE);
  });
});

describe('checkpoint: format and parse', () => {
  it('formats the empty tree and a tree with extension lines, and parses them back', () => {
    const empty = formatCheckpoint({ origin: ORIGIN, size: 0, rootHash: EMPTY_ROOT });
    expect(empty).toBe('example.org/tessera/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n');
    expect(parseCheckpoint(empty)).toEqual({ origin: ORIGIN, size: 0, rootHash: EMPTY_ROOT, extensions: [] });
    const ext = formatCheckpoint({ origin: ORIGIN, size: Number.MAX_SAFE_INTEGER, rootHash: ROOT, extensions: ['a b', '— x'] });
    expect(parseCheckpoint(ext)).toEqual({ origin: ORIGIN, size: 9007199254740991, rootHash: ROOT, extensions: ['a b', '— x'] });
  });

  it('accepts any non-empty origin when parsing (§Note text 1: clients MUST NOT assume its form) but writes only key names', () => {
    const b64 = ROOT.toString('base64');
    expect(parseCheckpoint(`my log+1\n1\n${b64}\n`).origin).toBe('my log+1');
    expect(parseCheckpoint(` x \n1\n${b64}\n`).origin).toBe(' x ');
    for (const origin of ['my log', 'a+b', '', ' x', 'x\u3000y', 'a\nb']) expectTesseraError(() => formatCheckpoint({ origin, size: 1, rootHash: ROOT }), CODE);
  });

  it('refuses every malformed line', () => {
    const b64 = ROOT.toString('base64');
    const bad: [string, string][] = [
      ['leading zero', `o\n01\n${b64}\n`],
      ['two zeros', `o\n00\n${b64}\n`],
      ['plus sign', `o\n+1\n${b64}\n`],
      ['minus zero', `o\n-0\n${b64}\n`],
      ['leading space', `o\n 1\n${b64}\n`],
      ['trailing space', `o\n1 \n${b64}\n`],
      ['exponent', `o\n1e3\n${b64}\n`],
      ['hex', `o\n0x10\n${b64}\n`],
      ['fraction', `o\n1.0\n${b64}\n`],
      ['2^53', `o\n9007199254740992\n${b64}\n`],
      ['2^63 - 1', `o\n9223372036854775807\n${b64}\n`],
      ['empty size', `o\n\n${b64}\n`],
      ['31-byte hash', `o\n1\n${ROOT.subarray(1).toString('base64')}\n`],
      ['33-byte hash', `o\n1\n${Buffer.concat([ROOT, Buffer.from([0])]).toString('base64')}\n`],
      ['unpadded hash', `o\n1\n${b64.replace(/=$/, '')}\n`],
      ['base64url hash', `o\n1\n${ROOT.toString('base64url')}=\n`],
      ['hash with a space', `o\n1\n ${b64}\n`],
      ['hex hash', `o\n1\n${ROOT.toString('hex')}\n`],
      ['empty origin', `\n1\n${b64}\n`],
      ['empty extension', `o\n1\n${b64}\nx\n\ny\n`],
      ['CRLF', `o\r\n1\r\n${b64}\r\n`],
      ['no final newline', `o\n1\n${b64}`],
      ['two lines', 'o\n1\n'],
      ['too many extensions', `o\n1\n${b64}\n${'x\n'.repeat(CHECKPOINT_MAX_EXTENSIONS + 1)}`],
      ['a lone surrogate', `o\ud800\n1\n${b64}\n`],
    ];
    for (const [what, text] of bad) expect(() => parseCheckpoint(text), what).toThrow(TesseraError);
    expect(parseCheckpoint(`o\n1\n${b64}\n${'x\n'.repeat(CHECKPOINT_MAX_EXTENSIONS)}`).extensions).toHaveLength(CHECKPOINT_MAX_EXTENSIONS);
    for (const x of [undefined, 3, {}, Buffer.from('o\n1\n')]) expectTesseraError(() => parseCheckpoint(x), CODE);
  });

  it('refuses to format what it could not parse back', () => {
    const ok = { origin: ORIGIN, size: 1, rootHash: ROOT };
    for (const c of [
      { ...ok, size: -1 },
      { ...ok, size: 1.5 },
      { ...ok, size: Number.NaN },
      { ...ok, size: 2 ** 53 },
      { ...ok, size: '1' as unknown as number },
      { ...ok, rootHash: ROOT.subarray(1) },
      { ...ok, rootHash: ROOT.toString('hex') as unknown as Uint8Array },
      { ...ok, extensions: [''] },
      { ...ok, extensions: ['a\nb'] },
      { ...ok, extensions: ['a\rb'] },
      { ...ok, extensions: Array.from({ length: CHECKPOINT_MAX_EXTENSIONS + 1 }, () => 'x') },
    ]) {
      expectTesseraError(() => formatCheckpoint(c), CODE);
    }
    expectTesseraError(() => formatCheckpoint(undefined as unknown as typeof ok), CODE);
  });

  it('names the origin after the trust domain', () => {
    expect(auditLogOrigin('example.org')).toBe(ORIGIN);
    expect(auditLogOrigin('spiffe://example.org')).toBe(ORIGIN);
    expectTesseraError(() => auditLogOrigin('Example.org'), 'TESSERA_SPIFFE_ID_INVALID');
  });

  it('round-trips any checkpoint, both ways (property)', () => {
    const origin = fc.string({ unit: 'binary', minLength: 1, maxLength: 30 }).filter((s) => !/[\p{White_Space}+\p{Cc}]/u.test(s));
    const ext = fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }).map((s) => s.replace(/[\u0000-\u001f]/g, '')).filter((s) => s.length > 0);
    fc.assert(
      fc.property(origin, fc.maxSafeNat(), fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.array(ext, { maxLength: 3 }), (o, size, hash, extensions) => {
        const text = formatCheckpoint({ origin: o, size, rootHash: hash, extensions });
        const c = parseCheckpoint(text);
        expect(c).toEqual({ origin: o, size, rootHash: Buffer.from(hash), extensions });
        expect(formatCheckpoint(c)).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it('never throws anything but TesseraError', () => {
    const b64 = ROOT.toString('base64');
    const pieces = fc.constantFrom('o', '\n', '0', '1', '01', ' ', b64, b64.slice(1), '=', '\r', '\u2014', '9007199254740992');
    fc.assert(
      fc.property(fc.oneof(fc.array(pieces, { maxLength: 8 }).map((p) => p.join('')), fc.string({ unit: 'binary' }), fc.anything()), (x) => {
        try {
          const c = parseCheckpoint(x);
          expect(c.rootHash).toHaveLength(32);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
        }
      }),
      { numRuns: 3000 },
    );
  });
});

describe('checkpoint: signing, opening, cosigning', () => {
  const checkpoint = { origin: ORIGIN, size: 7, rootHash: ROOT };
  const note = signCheckpoint(checkpoint, log.privateKey);
  const text = formatCheckpoint(checkpoint);
  const witnesses = [
    { name: w1.name, publicKey: w1.publicKey },
    { name: w2.name, publicKey: w2.publicKey },
  ];

  it('signs with the origin as key name and opens with the log key', () => {
    expect(note.startsWith(`${text}\n\u2014 ${ORIGIN} `)).toBe(true);
    expect(openCheckpoint(note, { origin: ORIGIN, logKey: log.publicKey })).toEqual({
      checkpoint: { ...checkpoint, extensions: [] },
      text,
      logKeyId: noteKeyId(ORIGIN, log.publicKey),
      cosignatures: [],
    });
  });

  it('refuses another log key, another origin, a non-checkpoint, and a note signed only by a witness', () => {
    expectTesseraError(() => openCheckpoint(note, { origin: ORIGIN, logKey: generateKeyPairSync('ed25519').publicKey }), CODE);
    expectTesseraError(() => openCheckpoint(note, { origin: 'other.org/tessera/audit', logKey: log.publicKey }), CODE);
    const lying = signNote('other.org/tessera/audit\n7\n' + ROOT.toString('base64') + '\n', [{ name: ORIGIN, privateKey: log.privateKey }]);
    expect(expectTesseraError(() => openCheckpoint(lying, { origin: ORIGIN, logKey: log.publicKey }), CODE).message).toMatch(/another origin/);
    const notCheckpoint = signNote('hello\n', [{ name: ORIGIN, privateKey: log.privateKey }]);
    expectTesseraError(() => openCheckpoint(notCheckpoint, { origin: ORIGIN, logKey: log.publicKey }), CODE);
    const witnessOnly = `${text}\n${cosignCheckpoint(text, w1, 1_700_000_000)}`;
    expect(expectTesseraError(() => openCheckpoint(witnessOnly, { origin: ORIGIN, logKey: log.publicKey, witnesses }), CODE).message).toMatch(/not signed by the log key/);
    expectTesseraError(() => openCheckpoint(note, { origin: 'bad origin', logKey: log.publicKey }), CODE);
  });

  it('adds cosignatures beside the log signature and verifies them with the witness keys', () => {
    const l1 = cosignCheckpoint(text, w1, 1_700_000_000);
    const l2 = cosignCheckpoint(text, w2, 1_700_000_005);
    const cosigned = appendSignatures(note, [l1, l2]);
    expect(verifyCosignature(text, l1, witnesses[0]!)).toEqual({ name: w1.name, keyId: noteKeyId(w1.name, w1.publicKey, 'cosignature/v1'), timestamp: 1_700_000_000 });
    const opened = openCheckpoint(cosigned, { origin: ORIGIN, logKey: log.publicKey, witnesses });
    expect(opened.cosignatures.map((c) => [c.name, c.timestamp])).toEqual([
      [w1.name, 1_700_000_000],
      [w2.name, 1_700_000_005],
    ]);
    // Without the witness keys the cosignatures are ignored; the log signature still opens it.
    expect(openCheckpoint(cosigned, { origin: ORIGIN, logKey: log.publicKey }).cosignatures).toEqual([]);
    // A plain note verifier of the same key does not take a cosignature (type 0x04 key IDs differ).
    expect(openNote(cosigned, [{ name: ORIGIN, publicKey: log.publicKey }, { name: w1.name, publicKey: w1.publicKey }]).verified).toHaveLength(1);
    expectTesseraError(() => openNote(cosigned, [{ name: w1.name, publicKey: w1.publicKey }]), CODE);
  });

  it('refuses a cosignature of another checkpoint, by another key, or as a log signature', () => {
    const l1 = cosignCheckpoint(text, w1, 1_700_000_000);
    const text8 = formatCheckpoint({ ...checkpoint, size: 8 });
    expectTesseraError(() => verifyCosignature(text8, l1, witnesses[0]!), CODE);
    expectTesseraError(() => verifyCosignature(text, l1, { name: w1.name, publicKey: w2.publicKey }), CODE);
    expectTesseraError(() => verifyCosignature(text, l1, witnesses[1]!), CODE);
    const logLine = note.slice(text.length + 1);
    expectTesseraError(() => verifyCosignature(text, logLine, { name: ORIGIN, publicKey: log.publicKey }), CODE);
    // A bad cosignature by a configured witness refuses the whole checkpoint (§Signatures).
    const forged = cosignCheckpoint(text8, w1, 1_700_000_000);
    expectTesseraError(() => openCheckpoint(appendSignatures(note, [forged]), { origin: ORIGIN, logKey: log.publicKey, witnesses }), CODE);
    // The timestamp is signed: changing it breaks the signature.
    const sig = parseSignatureLine(l1);
    sig.signature.writeBigUInt64BE(1_700_000_001n);
    expectTesseraError(() => verifyCosignature(text, formatSignatureLine(sig), witnesses[0]!), CODE);
  });

  it('covers extension lines (tlog-cosignature §Ed25519 signed message)', () => {
    const withExt = formatCheckpoint({ ...checkpoint, extensions: ['Extendo'] });
    const line = cosignCheckpoint(withExt, w1, 1);
    expect(verifyCosignature(withExt, line, witnesses[0]!).timestamp).toBe(1);
    expectTesseraError(() => verifyCosignature(withExt.replace('Extendo', 'Extend@'), line, witnesses[0]!), CODE);
  });

  it('bounds timestamps: whole seconds up to 2^53 - 1, and optionally not in the future', () => {
    for (const t of [-1, 1.5, 2 ** 53, Number.NaN]) expectTesseraError(() => cosignCheckpoint(text, w1, t), CODE);
    const big = parseSignatureLine(cosignCheckpoint(text, w1, 0));
    big.signature.writeBigUInt64BE(2n ** 63n - 1n);
    expect(expectTesseraError(() => verifyCosignature(text, formatSignatureLine(big), witnesses[0]!), CODE).message).toMatch(/beyond/);
    const now = 1_700_000_000;
    const soon = cosignCheckpoint(text, w1, now + 300);
    expect(verifyCosignature(text, soon, witnesses[0]!, { now }).timestamp).toBe(now + 300);
    expectTesseraError(() => verifyCosignature(text, cosignCheckpoint(text, w1, now + 301), witnesses[0]!, { now }), CODE);
    expectTesseraError(() => verifyCosignature(text, soon, witnesses[0]!, { now, maxFutureSeconds: 0 }), CODE);
  });

  it('refuses to cosign what is not a checkpoint, and bad cosigners', () => {
    expectTesseraError(() => cosignCheckpoint('hello\n', w1, 1), CODE);
    expectTesseraError(() => cosignCheckpoint(text, { name: 'bad name', privateKey: w1.privateKey }, 1), CODE);
    expectTesseraError(() => cosignCheckpoint(text, { name: w1.name, privateKey: w1.publicKey }, 1), CODE);
  });

  it('a single-byte change of a cosigned checkpoint is refused or loses a signature (property)', () => {
    const cosigned = Buffer.from(appendSignatures(note, [cosignCheckpoint(text, w1, 1_700_000_000)]), 'utf8');
    fc.assert(
      fc.property(fc.nat(cosigned.length - 1), fc.integer({ min: 1, max: 255 }), (at, delta) => {
        const m = Buffer.from(cosigned);
        m[at] = (m[at]! + delta) & 0xff;
        try {
          expect(openCheckpoint(m, { origin: ORIGIN, logKey: log.publicKey, witnesses }).cosignatures).toHaveLength(0);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('verifyCosignature never throws anything but TesseraError (property)', () => {
    const line = cosignCheckpoint(text, w1, 5);
    fc.assert(
      fc.property(fc.nat(line.length - 1), fc.string({ unit: 'binary', maxLength: 3 }), fc.anything(), (at, s, x) => {
        for (const f of [() => verifyCosignature(text, line.slice(0, at) + s + line.slice(at + 1), witnesses[0]!), () => verifyCosignature(x as string, line, witnesses[0]!), () => verifyCosignature(text, x as string, witnesses[0]!)]) {
          try {
            f();
          } catch (err) {
            expect(err).toBeInstanceOf(TesseraError);
          }
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('measures checkpoint signing, opening and cosigning (µs per operation)', () => {
    const n = 1000;
    const time = (f: () => unknown): number => {
      const t = process.hrtime.bigint();
      for (let i = 0; i < n; i++) f();
      return Number(process.hrtime.bigint() - t) / 1000 / n;
    };
    const line = cosignCheckpoint(text, w1, 1_700_000_000);
    const cosigned = appendSignatures(note, [line]);
    const r = {
      signCheckpoint: time(() => signCheckpoint(checkpoint, log.privateKey)),
      openCheckpoint: time(() => openCheckpoint(note, { origin: ORIGIN, logKey: log.publicKey })),
      'openCheckpoint+1 cosig': time(() => openCheckpoint(cosigned, { origin: ORIGIN, logKey: log.publicKey, witnesses })),
      cosignCheckpoint: time(() => cosignCheckpoint(text, w1, 1_700_000_000)),
      verifyCosignature: time(() => verifyCosignature(text, line, witnesses[0]!)),
      parseCheckpoint: time(() => parseCheckpoint(text)),
    };
    console.log(Object.entries(r).map(([k, v]) => `${k} ${v.toFixed(1)} µs`).join(', '));
    expect(Object.values(r).every((v) => v > 0)).toBe(true);
  });
});
