import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SqliteStore } from '../store/sqlite.js';
import { CertificateAuthority } from './ca.js';
import { KeyEncryptionKey } from '../../common/kek.js';

const HOUR = 3600_000;

describe('CertificateAuthority schedule (fake clock, real SQLite)', () => {
  let dir: string;
  let store: SqliteStore;
  let now: number;
  const clock = (): number => now;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-ca-'));
    store = new SqliteStore(join(dir, 'tessera.db'));
    now = Date.now();
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function make(kek = KeyEncryptionKey.load(dir, {})): CertificateAuthority {
    return new CertificateAuthority(store, kek, { trustDomain: 'example.org', caTtlMs: 24 * HOUR, now: clock });
  }

  it('creates one active CA with the SPIFFE signing-certificate shape', async () => {
    const ca = make();
    await ca.init();
    const cert = new X509Certificate(ca.bundle().x509Authorities[0]!);
    expect(cert.ca).toBe(true);
    expect(cert.subjectAltName).toBe('URI:spiffe://example.org');
    expect(ca.list()).toHaveLength(1);
    expect(ca.list()[0]!.state).toBe('active');
  });

  it('prepares the next CA at half life, activates it at 5/6, and drops the old one only after its expiry', async () => {
    const ca = make();
    await ca.init();
    const first = ca.active().rec.id;
    const firstDer = ca.active().rec.certDer;
    const seq0 = ca.bundleSequence();

    now += 11 * HOUR;
    await ca.tick();
    expect(ca.list()).toHaveLength(1);

    now += 1 * HOUR + 1; // half life
    await ca.tick();
    expect(ca.list().map((c) => c.state)).toEqual(['active', 'prepared']);
    expect(ca.bundle().x509Authorities).toHaveLength(2);
    expect(ca.bundleSequence()).toBe(seq0 + 1);
    expect(ca.active().rec.id).toBe(first); // published, not yet signing

    now += 8 * HOUR + 1; // 5/6 of the first CA's life
    await ca.tick();
    expect(ca.active().rec.id).not.toBe(first);
    expect(ca.list().find((c) => c.id === first)?.state).toBe('retired');
    expect(ca.bundle().x509Authorities).toHaveLength(2);

    // A leaf from the new CA is verifiable by it; the old CA remains trusted until it expires.
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const leaf = ca.issue({ publicKey, uriSans: ['spiffe://example.org/w'] }, HOUR);
    expect(new X509Certificate(leaf.der).verify(new X509Certificate(ca.active().rec.certDer).publicKey)).toBe(true);

    now += 4 * HOUR; // past the first CA's notAfter (and the second CA's half life: a third is prepared)
    await ca.tick();
    expect(ca.list().some((c) => c.id === first)).toBe(false);
    expect(ca.bundle().x509Authorities.some((d) => d.equals(firstDer))).toBe(false);
    expect(ca.list().map((c) => c.state)).toEqual(['active', 'prepared']);
  });

  it('caps a leaf at the CA expiry and backdates it by at most a tenth of its TTL', async () => {
    const ca = make();
    await ca.init();
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const capped = ca.issue({ publicKey, uriSans: ['spiffe://example.org/w'] }, 48 * HOUR);
    expect(capped.notAfter.getTime()).toBeLessThanOrEqual(ca.active().rec.notAfter);
    const short = ca.issue({ publicKey, uriSans: ['spiffe://example.org/w'] }, 20_000);
    expect(now - short.notBefore.getTime()).toBeLessThanOrEqual(2000);
  });

  it('with settleMs, a CA published too recently does not sign yet: the one it replaced does, until it settles or nears expiry', async () => {
    const ca = make();
    await ca.init();
    const first = ca.active().rec.id;
    const firstCert = new X509Certificate(ca.active().rec.certDer);
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spec = { publicKey, uriSans: ['spiffe://example.org/tessera/server'] };
    // Nothing replaced yet: the active CA signs whatever its age.
    expect(ca.issue(spec, HOUR, { settleMs: 48 * HOUR })).not.toHaveProperty('settlesAt');

    const rotated = await ca.rotate(0);
    now += 1000;
    await ca.tick();
    expect(ca.active().rec.id).toBe(rotated.id);
    const settleMs = 310_000;
    const early = ca.issue(spec, HOUR, { settleMs });
    expect(early.caId).toBe(first);
    expect(early.settlesAt).toBe(ca.active().rec.createdAt + settleMs);
    expect(new X509Certificate(early.der).verify(firstCert.publicKey)).toBe(true);
    // Without settleMs (every SVID), the active CA signs at once.
    expect(ca.issue(spec, HOUR).caId).toBe(rotated.id);

    now = early.settlesAt!;
    const settled = ca.issue(spec, HOUR, { settleMs });
    expect(settled.caId).toBe(rotated.id);
    expect(settled).not.toHaveProperty('settlesAt');

    // A previous CA with under a minute left never signs: the fresh one does.
    await ca.rotate(0);
    now += 1000;
    await ca.tick();
    const third = ca.active().rec.id;
    expect(ca.issue(spec, HOUR, { settleMs }).caId).toBe(rotated.id);
    now = Date.parse(ca.list().find((c) => c.id === rotated.id)!.notAfter) - 59_000;
    expect(ca.issue(spec, HOUR, { settleMs: 48 * HOUR }).caId).toBe(third);
  });

  it('another process changing the CAs between this one\'s read and its own change: the skipped sequence makes it reload', async () => {
    const b = make();
    await b.init();
    const first = b.active().rec.id;
    now += 13 * HOUR;
    await b.rotate(0);
    now += 1000;
    await b.tick(); // the second CA signs; the first is retired until its expiry at 24 h
    const a = make();
    await a.init(false);
    now += 11 * HOUR; // past the first CA's expiry, before the second's half life
    // B rotates by hand; just before its insert, A (the leader) drops the expired first CA.
    const racing = new Proxy(store, {
      get(target, prop, receiver) {
        if (prop !== 'insertCa') return Reflect.get(target, prop, receiver) as unknown;
        return async (rec: Parameters<SqliteStore['insertCa']>[0]) => {
          await a.tick();
          return target.insertCa(rec);
        };
      },
    });
    const b2 = new CertificateAuthority(racing, KeyEncryptionKey.load(dir, {}), { trustDomain: 'example.org', caTtlMs: 24 * HOUR, now: clock });
    await b2.init(false);
    expect(b2.list().some((c) => c.id === first)).toBe(true);
    await b2.rotate(60_000);
    expect(a.list().some((c) => c.id === first)).toBe(false);
    // B saw A's deletion: its list and bundle match the store's.
    expect(b2.list().some((c) => c.id === first)).toBe(false);
    expect(b2.list().map((c) => c.id).sort()).toEqual((await store.listCas()).map((c) => c.id).sort());
    expect(b2.bundleSequence()).toBe(Number(await store.getMeta('bundle_sequence')));
  });

  it('refuses a second manual rotation while one is prepared', async () => {
    const ca = make();
    await ca.init();
    await ca.rotate(60_000);
    await expect(ca.rotate(60_000)).rejects.toMatchObject({ code: 'TESSERA_CA_ROTATION_IN_PROGRESS' });
  });

  it('at half life, a rotation another replica prepared first stands; any other store failure surfaces from tick', async () => {
    const a = make();
    await a.init();
    const b = make(); // a second replica on the same store
    await b.init();
    now += 12 * HOUR + 1;
    await a.rotate(HOUR); // prepared by hand on A while B has not seen it yet
    // B ticks before it has seen A's bundle change: its own prepare loses to the store's unique index.
    const getMeta = store.getMeta.bind(store);
    const seen = String(b.bundleSequence());
    store.getMeta = (key: string) => (key === 'bundle_sequence' ? Promise.resolve(seen) : getMeta(key));
    try {
      await expect(b.tick()).resolves.toBeUndefined();
    } finally {
      store.getMeta = getMeta;
    }
    expect(b.list().filter((c) => c.state === 'prepared')).toHaveLength(0);
    await b.tick();
    expect(b.list().filter((c) => c.state === 'prepared')).toHaveLength(1);
    expect((await store.listCas()).filter((c) => c.state === 'prepared')).toHaveLength(1);

  });

  it('a store failure while preparing the next CA surfaces from tick, and the next tick prepares it', async () => {
    const ca = make();
    await ca.init();
    now += 12 * HOUR + 1;
    const insert = store.insertCa.bind(store);
    store.insertCa = () => Promise.reject(new Error('store unavailable'));
    try {
      await expect(ca.tick()).rejects.toThrow('store unavailable');
    } finally {
      store.insertCa = insert;
    }
    expect(ca.list().map((c) => c.state)).toEqual(['active']);
    await ca.tick();
    expect(ca.list().map((c) => c.state)).toEqual(['active', 'prepared']);
  });

  it('reloads its CAs and bundle sequence from the store after a restart', async () => {
    const kek = KeyEncryptionKey.load(dir, {});
    const a = make(kek);
    await a.init();
    await a.rotate(1000);
    const again = make(kek);
    await again.init();
    expect(again.list().map((c) => c.id)).toEqual(a.list().map((c) => c.id));
    expect(again.bundleSequence()).toBe(a.bundleSequence());
  });

  it('keeps CA keys sealed at rest and refuses to start with the wrong key-encryption key', async () => {
    const ca = make();
    await ca.init();
    expect(statSync(join(dir, 'kek.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'tessera.db')).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'tessera.db-wal')).mode & 0o777).toBe(0o600);
    await store.close();
    // The database file holds no PKCS#8 private key structure in the clear.
    const db = readFileSync(join(dir, 'tessera.db'));
    expect(db.includes(Buffer.from('-----BEGIN'))).toBe(false);
    store = new SqliteStore(join(dir, 'tessera.db'));
    const wrong = KeyEncryptionKey.load(dir, { TESSERA_KEK: 'ab'.repeat(32) });
    await expect(make(wrong).init()).rejects.toMatchObject({ code: 'TESSERA_KEK_INVALID' });
  });

  it('validates TESSERA_KEK', () => {
    expect(() => KeyEncryptionKey.load(dir, { TESSERA_KEK: 'short' })).toThrowError(expect.objectContaining({ code: 'TESSERA_CONFIG_INVALID' }));
    expect(KeyEncryptionKey.load(dir, { TESSERA_KEK: Buffer.alloc(32, 7).toString('base64') }).source).toBe('env');
  });
});
