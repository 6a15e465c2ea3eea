import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { TesseraError } from './errors.js';
import {
  NOTE_MAX_BYTES,
  NOTE_MAX_SIGNATURES,
  appendSignatures,
  encodeVerifierKey,
  noteKeyId,
  openNote,
  parseNote,
  parseSignatureLine,
  parseVerifierKey,
  serializeNote,
  signNote,
  signatureLine,
} from './signed-note.js';

const CODE = 'TESSERA_AUDIT_CHECKPOINT_INVALID';

/** An Ed25519 private key from its 32-byte seed (PKCS#8, RFC 8410). */
function keyFromSeed(seed: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
}

// golang.org/x/mod/sumdb/note, note.go package documentation and note_test.go (TestSign, TestOpen,
// TestNewVerifier): the signer key "PRIVATE+KEY+PeterNeumann+c74f20a3+<base64(0x01 ‖ seed)>", its
// verifier key, the signed note it produces (Ed25519 is deterministic), and a second signer's vkey/line.
const PETER_SKEY_B64 = 'AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz';
const PETER_VKEY = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
const ENOCH_VKEY = 'EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop';
const TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const PETER_SIG = '— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';
const ENOCH_SIG = '— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n';
const peterKey = keyFromSeed(Buffer.from(PETER_SKEY_B64, 'base64').subarray(1));
const peter = parseVerifierKey(PETER_VKEY);
const enoch = parseVerifierKey(ENOCH_VKEY);

// C2SP signed-note §Note: the example note (its key is not published, so it can only be parsed).
const QUASIMODO = 'Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n';

const alice = { name: 'example.org/tessera/audit', ...generateKeyPairSync('ed25519') };
const bob = { name: 'witness.example/b', ...generateKeyPairSync('ed25519') };

describe('signed-note: published vectors', () => {
  it('reproduces the Go sumdb/note signed note byte for byte and opens it', () => {
    expect(signNote(TEXT, [{ name: 'PeterNeumann', privateKey: peterKey }])).toBe(`${TEXT}\n${PETER_SIG}`);
    expect(openNote(`${TEXT}\n${PETER_SIG}`, [peter])).toEqual({ text: TEXT, verified: [{ name: 'PeterNeumann', keyId: 'c74f20a3', type: 'ed25519' }], ignored: [] });
  });

  it('computes the Go key IDs and verifier keys', () => {
    expect(noteKeyId('PeterNeumann', peterKey)).toBe('c74f20a3');
    expect(encodeVerifierKey('PeterNeumann', peterKey)).toBe(PETER_VKEY);
    expect(encodeVerifierKey('EnochRoot', enoch.publicKey)).toBe(ENOCH_VKEY);
    expect(peter).toMatchObject({ name: 'PeterNeumann', keyId: 'c74f20a3', type: 'ed25519' });
  });

  it('opens the two-signature note of TestOpen: both verified, or one verified and one ignored', () => {
    const note = `${TEXT}\n${PETER_SIG}${ENOCH_SIG}`;
    expect(openNote(note, [peter, enoch]).verified.map((v) => v.keyId)).toEqual(['c74f20a3', 'af0cfe78']);
    expect(openNote(note, [peter])).toMatchObject({ verified: [{ name: 'PeterNeumann' }], ignored: [{ name: 'EnochRoot', keyId: 'af0cfe78' }] });
    expectTesseraError(() => openNote(note, []), CODE);
    // The same verifier twice is one verifier.
    expect(openNote(note, [enoch, peter, enoch]).verified).toHaveLength(2);
  });

  it('refuses the bad messages of TestOpen', () => {
    for (const msg of [
      TEXT,
      `${TEXT}\n`,
      `${TEXT}\n${PETER_SIG.slice(0, -1)}`,
      `\x01${TEXT}\n${PETER_SIG}`,
      `${TEXT}\n— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=`,
      `${TEXT}\n${PETER_SIG}Unexpected line.\n`,
      `${TEXT}\n${PETER_SIG.repeat(101)}`,
      `${TEXT}\n${PETER_SIG.slice(0, 60)}ABCD${PETER_SIG.slice(60)}`,
    ]) {
      expectTesseraError(() => openNote(msg, [peter]), CODE);
    }
    expectTesseraError(() => openNote(Buffer.concat([Buffer.from([0xff]), Buffer.from(`${TEXT}\n${PETER_SIG}`)]), [peter]), CODE);
  });

  it('refuses every truncation and every one-character change of the Go verifier key (TestNewVerifier)', () => {
    for (let i = 0; i <= PETER_VKEY.length; i++) {
      for (let j = i + 1; j <= PETER_VKEY.length; j++) {
        if (i !== 0 || j !== PETER_VKEY.length) expectTesseraError(() => parseVerifierKey(PETER_VKEY.slice(i, j)), CODE);
      }
    }
    for (let i = 0; i < PETER_VKEY.length; i++) {
      const k = PETER_VKEY.slice(0, i) + String.fromCharCode(PETER_VKEY.charCodeAt(i) + 1) + PETER_VKEY.slice(i + 1);
      expectTesseraError(() => parseVerifierKey(k), CODE);
    }
    // Wrong key length and unknown algorithm, each with a matching key ID (note_test.go).
    expectTesseraError(() => parseVerifierKey('PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=='), CODE);
    expectTesseraError(() => parseVerifierKey('PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'), CODE);
  });

  it('parses the verifier keys of transparency-dev/formats note_cosigv1_test.go (types 0x01 and 0x04)', () => {
    expect(parseVerifierKey('TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6')).toMatchObject({ name: 'TEST', keyId: '7997405c', type: 'ed25519' });
    const remora = parseVerifierKey('remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2');
    expect(remora).toMatchObject({ name: 'remora.n621.de', keyId: 'da77ade7', type: 'cosignature/v1' });
    expect(encodeVerifierKey(remora.name, remora.publicKey, 'cosignature/v1')).toBe('remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2');
    for (const bad of ['bananas.sigstore.dev+12344556', 'rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!', 'rekor.sigstore.dev+12345678+AwEB']) {
      expectTesseraError(() => parseVerifierKey(bad), CODE);
    }
    // Uppercase hex is what Go's ParseUint also reads, but never what it writes: refused here.
    expectTesseraError(() => parseVerifierKey(PETER_VKEY.replace('c74f20a3', 'C74F20A3')), CODE);
  });

  it('parses the C2SP example note (blank line inside the text) and refuses it without its key', () => {
    const parsed = parseNote(QUASIMODO);
    expect(parsed.text).toBe('Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n');
    expect(parsed.signatures).toHaveLength(1);
    expect(parsed.signatures[0]).toMatchObject({ name: 'quasimodo.example/salvatore' });
    expect(serializeNote(parsed)).toBe(QUASIMODO);
    expectTesseraError(() => openNote(QUASIMODO, [peter]), CODE);
  });
});

describe('signed-note: signing and opening', () => {
  it('signs with several keys, opens with any of them, and ignores a line by the same name with another key', () => {
    const note = signNote('hello\n', [alice, bob]);
    expect(openNote(note, [alice]).ignored).toEqual([{ name: bob.name, keyId: noteKeyId(bob.name, bob.publicKey) }]);
    expect(openNote(note, [alice, bob]).verified).toHaveLength(2);
    // Same name as alice, other key: a different key ID, so alice's line is unknown to it (§Signatures).
    const other = { name: alice.name, publicKey: generateKeyPairSync('ed25519').publicKey };
    expect(openNote(note, [other, bob]).ignored).toHaveLength(1);
    // A raw 32-byte public key works like the KeyObject.
    expect(openNote(note, [{ name: alice.name, publicKey: parseVerifierKey(encodeVerifierKey(alice.name, alice.publicKey)).publicKey }]).verified).toHaveLength(1);
  });

  it('accepts text with blank lines, ending in a blank line, or just a newline; bytes and strings alike', () => {
    for (const text of ['\n', 'a\n\nb\n', 'a\n\n', 'é ☃ 𝄞 \u2014 x\n']) {
      const note = signNote(text, [alice]);
      expect(openNote(note, [alice]).text).toBe(text);
      expect(openNote(Buffer.from(note, 'utf8'), [alice]).text).toBe(text);
    }
  });

  it('refuses a known key whose signature fails, even when another verifies (§Signatures)', () => {
    const good = signNote('hello\n', [alice]);
    const forged = signatureLine('other\n', bob);
    expectTesseraError(() => openNote(`${good}${forged}`, [alice, bob]), CODE);
    expect(openNote(`${good}${forged}`, [alice]).verified).toHaveLength(1);
  });

  it('refuses a line by a key ID of another type (a cosignature key is not a note key)', () => {
    const note = signNote('hello\n', [alice]);
    expectTesseraError(() => openNote(note, [{ ...alice, type: 'cosignature/v1' }]), CODE);
  });

  it('refuses repeated (name, key ID) lines, even identical ones (stricter than Go)', () => {
    const note = signNote('hello\n', [alice]);
    const line = note.slice('hello\n\n'.length);
    expectTesseraError(() => parseNote(note + line), CODE);
    expectTesseraError(() => openNote(`${TEXT}\n${PETER_SIG}${PETER_SIG}`, [peter]), CODE);
    expectTesseraError(() => signNote('hello\n', [alice, alice]), CODE);
  });

  it('refuses malformed notes, each rule', () => {
    const note = signNote('hello\n', [alice]);
    const sig = note.slice('hello\n\n'.length);
    const b64 = sig.slice(sig.lastIndexOf(' ') + 1, -1);
    const cases: [string, string | Uint8Array][] = [
      ['empty', ''],
      ['no blank line', `hello\n${sig}`],
      ['no signature', 'hello\n\n'],
      ['no final newline', note.slice(0, -1)],
      ['CRLF', note.replace(/\n/g, '\r\n')],
      ['a CR in the text', `hel\rlo\n\n${sig}`],
      ['a tab', `hel\tlo\n\n${sig}`],
      ['a NUL', `hello\u0000\n\n${sig}`],
      ['a hyphen for the em dash', `hello\n\n- ${alice.name} ${b64}\n`],
      ['an en dash', `hello\n\n\u2013 ${alice.name} ${b64}\n`],
      ['no space after the dash', `hello\n\n\u2014${alice.name} ${b64}\n`],
      ['two spaces', `hello\n\n\u2014 ${alice.name}  ${b64}\n`],
      ['trailing space', `hello\n\n\u2014 ${alice.name} ${b64} \n`],
      ['a plus in the name', `hello\n\n\u2014 a+b ${b64}\n`],
      ['a no-break space in the name', `hello\n\n\u2014 a\u00a0b ${b64}\n`],
      ['no name', `hello\n\n\u2014  ${b64}\n`],
      ['unpadded base64', `hello\n\n\u2014 ${alice.name} ${b64.replace(/=+$/, '')}\n`],
      ['base64url', `hello\n\n\u2014 ${alice.name} ${b64.replace(/\+/g, '-').replace(/\//g, '_')}A\n`],
      ['non-canonical padding bits', `hello\n\n\u2014 ${alice.name} AAAAAB==\n`],
      ['a 4-byte signature', `hello\n\n\u2014 ${alice.name} AAAAAA==\n`],
      ['a blank line between signatures', `${note}\n${sig}`],
      ['a lone surrogate', `hel\ud800lo\n\n${sig}`],
      ['invalid UTF-8', Buffer.concat([Buffer.from('hel'), Buffer.from([0xc3, 0x28]), Buffer.from(`lo\n\n${sig}`)])],
      ['overlong UTF-8', Buffer.concat([Buffer.from([0xc0, 0xaf]), Buffer.from(`\n\n${sig}`)])],
      ['an encoded surrogate', Buffer.concat([Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(`\n\n${sig}`)])],
      ['101 signatures', `hello\n\n${Array.from({ length: 101 }, (_, i) => `\u2014 k${i} ${b64}\n`).join('')}`],
      ['over 1 MiB', `${'a'.repeat(NOTE_MAX_BYTES)}\n\n${sig}`],
      ['over 1 MiB in UTF-8 bytes only', `${'é'.repeat(NOTE_MAX_BYTES / 2)}\n\n${sig}`],
      ['over 1 MiB of bytes', Buffer.alloc(NOTE_MAX_BYTES + 1, 0x61)],
    ];
    for (const [what, input] of cases) {
      const err = expectTesseraError(() => openNote(input, [alice]), CODE);
      expect(err.message, what).not.toContain(b64);
    }
    for (const input of [undefined, null, 42, {}, ['a']]) expectTesseraError(() => parseNote(input as unknown as string), CODE);
  });

  it('accepts exactly 100 signatures and a BOM as ordinary text', () => {
    const keys = Array.from({ length: NOTE_MAX_SIGNATURES }, (_, i) => ({ name: `k${i}`, ...generateKeyPairSync('ed25519') }));
    const note = signNote('hello\n', keys);
    expect(openNote(note, [keys[99]!]).ignored).toHaveLength(99);
    const bom = signNote('\ufeffhello\n', [alice]);
    expect(openNote(Buffer.from(bom, 'utf8'), [alice]).text).toBe('\ufeffhello\n');
  });

  it('refuses bad input to the signer and bad verifier lists', () => {
    for (const text of ['', 'no newline', 'a\r\n', 'a\u0001\n', `${'a'.repeat(NOTE_MAX_BYTES)}\n`]) expectTesseraError(() => signNote(text, [alice]), CODE);
    expectTesseraError(() => signNote('a\n', []), CODE);
    expectTesseraError(() => signNote('a\n', [{ name: 'bad name', privateKey: alice.privateKey }]), CODE);
    expectTesseraError(() => signNote('a\n', [{ name: 'x', privateKey: alice.publicKey }]), CODE);
    expectTesseraError(() => signNote('a\n', [{ name: 'x', privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey }]), CODE);
    const note = signNote('a\n', [alice]);
    expectTesseraError(() => openNote(note, [{ name: alice.name, publicKey: new Uint8Array(31) }]), CODE);
    expectTesseraError(() => openNote(note, [{ name: '', publicKey: alice.publicKey }]), CODE);
    expectTesseraError(() => openNote(note, 'x' as unknown as []), CODE);
    expectTesseraError(() => noteKeyId('a b', alice.publicKey), CODE);
  });

  it('appends signature lines, replacing one by the same key', () => {
    const note = signNote('hello\n', [alice]);
    const b1 = signatureLine('hello\n', bob, 'cosignature/v1', 1000);
    const b2 = signatureLine('hello\n', bob, 'cosignature/v1', 2000);
    const once = appendSignatures(note, [b1]);
    expect(once).toBe(note + b1);
    expect(appendSignatures(once, [b2])).toBe(note + b2);
    const opened = openNote(appendSignatures(once, [b2]), [alice, { ...bob, type: 'cosignature/v1' }]);
    expect(opened.verified.map((v) => v.timestamp)).toEqual([undefined, 2000]);
    expectTesseraError(() => appendSignatures(note, ['not a line']), CODE);
    expectTesseraError(() => appendSignatures(note, [`${b1}${b2}`]), CODE);
  });

  it('parses a signature line with or without its newline', () => {
    const line = signatureLine('x\n', alice);
    expect(parseSignatureLine(line)).toEqual(parseSignatureLine(line.slice(0, -1)));
    expect(parseSignatureLine(line).signature).toHaveLength(64);
  });
});

describe('signed-note: properties', () => {
  const textArb = fc
    .array(fc.oneof(fc.string({ unit: 'binary', maxLength: 12 }), fc.constantFrom('\n', '\n\n', '\u2014 ', ' ', '+', '=', 'é')), { maxLength: 8 })
    .map((parts) => `${parts.join('').replace(/[\u0000-\u0009\u000b-\u001f]/g, '')}\n`);
  const keys = [alice, bob, { name: 'c', ...generateKeyPairSync('ed25519') }];

  it('any note openNote accepts re-encodes to the same bytes', () => {
    fc.assert(
      fc.property(textArb, fc.subarray(keys, { minLength: 1 }), fc.nat(2), (text, signers, extra) => {
        const unknown = Array.from({ length: extra }, (_, i) => signatureLine(text, { name: `u${i}`, privateKey: bob.privateKey }));
        const note = `${signNote(text, signers)}${unknown.join('')}`;
        const opened = openNote(Buffer.from(note, 'utf8'), keys);
        expect(opened.text).toBe(text);
        expect(opened.verified).toHaveLength(signers.length);
        expect(Buffer.from(serializeNote(parseNote(note)), 'utf8').equals(Buffer.from(note, 'utf8'))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('whatever parseNote accepts serializes back to the input (mutated and random inputs)', () => {
    const seedNote = signNote('a\n\nb\n', [alice, bob]);
    const pieces = fc.constantFrom('\n', '\n\n', '\u2014 ', ' ', 'a', 'AAAA', 'AAAAAA==', '=', '+', seedNote, seedNote.slice(9));
    fc.assert(
      fc.property(fc.array(pieces, { maxLength: 10 }), (parts) => {
        const input = parts.join('');
        let parsed;
        try {
          parsed = parseNote(input);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
          return;
        }
        expect(serializeNote(parsed)).toBe(input);
      }),
      { numRuns: 2000 },
    );
  });

  it('any single-byte change of a singly signed note is refused', () => {
    const note = Buffer.from(signNote('example.org/tessera/audit\n42\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n', [alice]), 'utf8');
    fc.assert(
      fc.property(fc.nat(note.length - 1), fc.integer({ min: 1, max: 255 }), (at, delta) => {
        const m = Buffer.from(note);
        m[at] = (m[at]! + delta) & 0xff;
        expectTesseraError(() => openNote(m, [alice]), CODE);
      }),
      { numRuns: 3000 },
    );
  });

  it('a single-byte change of a doubly signed note is refused or loses the changed signature', () => {
    const note = Buffer.from(signNote('hello\n', [alice, bob]), 'utf8');
    fc.assert(
      fc.property(fc.nat(note.length - 1), fc.integer({ min: 1, max: 255 }), (at, delta) => {
        const m = Buffer.from(note);
        m[at] = (m[at]! + delta) & 0xff;
        try {
          expect(openNote(m, [alice, bob]).verified.length).toBeLessThan(2);
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('the parsers never throw anything but TesseraError', () => {
    const anyInput = fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.uint8Array({ maxLength: 200 }), fc.anything());
    fc.assert(
      fc.property(anyInput, (x) => {
        // The test's own text form of x must not throw (fc.anything() makes objects without toString).
        let asText = '';
        try {
          asText = String(x);
        } catch {
          asText = '';
        }
        for (const f of [
          () => parseNote(x as string),
          () => openNote(x as string, [alice]),
          () => parseVerifierKey(x),
          () => parseSignatureLine(x),
          () => openNote(`hello\n\n${asText}\n`, [alice]),
          () => parseVerifierKey(`${PETER_VKEY.slice(0, 22)}${asText}`),
        ]) {
          try {
            f();
          } catch (err) {
            expect(err).toBeInstanceOf(TesseraError);
          }
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('signed-note: cost', () => {
  it('measures sign and open (µs per operation)', () => {
    const text = 'example.org/tessera/audit\n123456\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n';
    const n = 2000;
    let note = '';
    let t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) note = signNote(text, [alice]);
    const signUs = Number(process.hrtime.bigint() - t) / 1000 / n;
    t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) openNote(note, [alice]);
    const openUs = Number(process.hrtime.bigint() - t) / 1000 / n;
    console.log(`signNote ${signUs.toFixed(1)} µs, openNote ${openUs.toFixed(1)} µs`);
    expect(openNote(note, [alice]).verified).toHaveLength(1);
  });
});
