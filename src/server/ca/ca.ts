import { EventEmitter } from 'node:events';
import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import type { BundleContent } from '../../core/bundle.js';
import { TesseraError, isTesseraError } from '../../core/errors.js';
import { signJwtSvid, type JwtSigningKey } from '../../core/jwt-svid.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode, type LeafSpec } from '../../core/x509.js';
import type { CaRecord, LeaseFence, Store } from '../store/store.js';
import type { KeyEncryptionKey } from '../../common/kek.js';

export interface CaOptions {
  trustDomain: string;
  /** Lifetime of each CA certificate. */
  caTtlMs: number;
  now?: () => number;
  /**
   * Replicas: the leader lease this process holds, if any. When set, activating a CA is a write
   * fenced by it (the store refuses it from a process whose lease lapsed) and `tick` activates
   * nothing without it.
   */
  fence?: () => LeaseFence | undefined;
}

interface LoadedCa {
  rec: CaRecord;
  key: KeyObject;
  issuer: CertificateIssuer;
  jwtKey: JwtSigningKey;
  jwtPublicKey: KeyObject;
}

/**
 * Backdating absorbs small clock differences between the control plane and its peers. A leaf is
 * backdated by at most a tenth of its lifetime so that "renew at half life" stays meaningful.
 */
const BACKDATE_MS = 10_000;

export interface CaSummary {
  id: string;
  state: CaRecord['state'];
  notBefore: string;
  notAfter: string;
  activateAt: string | null;
  jwtKid: string;
  inBundle: boolean;
}

/**
 * The trust domain's certificate authorities: one active CA signs, a prepared CA is published in the
 * bundle before it signs anything, and retired CAs stay in the bundle until their own expiry — so
 * everything they signed (capped at their notAfter) has expired before they are dropped.
 *
 * Schedule (as SPIRE does it): the next CA is prepared at 1/2 of the active CA's life and activated
 * at 5/6 of it; `rotate()` prepares one by hand with an explicit grace period.
 *
 * Emits `bundle` whenever the set of trusted authorities changes and `activated` when the signing CA
 * changes.
 */
export class CertificateAuthority extends EventEmitter {
  private cas: LoadedCa[] = [];
  private activeCa: LoadedCa | undefined;
  private sequence = 0;
  private readonly now: () => number;

  constructor(private readonly store: Store, private readonly kek: KeyEncryptionKey, private readonly opts: CaOptions) {
    super();
    this.setMaxListeners(0); // every bundle long-poll listens for one change
    this.now = opts.now ?? Date.now;
  }

  get trustDomain(): string {
    return this.opts.trustDomain;
  }

  /** Loads the CAs; a `leader` also creates the first one and runs the schedule once. */
  async init(leader = true): Promise<void> {
    const records = await this.store.listCas();
    this.cas = records.map((r) => this.load(r));
    this.sequence = Number((await this.store.getMeta('bundle_sequence')) ?? '0');
    if (!leader) {
      this.refreshActive();
      this.active(); // throws TESSERA_UNAVAILABLE until the leader has created the CA
      return;
    }
    if (!this.cas.some((c) => c.rec.state === 'active')) {
      const rec = await this.createCa('active', null).catch(async (err: unknown) => {
        // Another process created the first CA at the same moment (the store allows one active): use it.
        await this.sync();
        if (this.cas.some((c) => c.rec.state === 'active')) return undefined;
        throw err;
      });
      if (rec) {
        this.cas.push(this.load(rec));
        await this.bumpSequence();
      }
    }
    this.refreshActive();
    await this.tick();
  }

  /** Advances the schedule: activate due CAs, retire old ones, drop expired ones, prepare the next. */
  async tick(): Promise<void> {
    await this.sync();
    const now = this.now();
    let changed = false;
    let activated = false;
    let prepareFailed: unknown;
    const prepared = this.cas.find((c) => c.rec.state === 'prepared');
    if (prepared && prepared.rec.activateAt !== null && prepared.rec.activateAt <= now) {
      // One transaction in the store: the old CA retired, the prepared one active, the sequence bumped
      // (no reader ever sees no active CA or two), refused unless this process still holds the lease.
      const fence = this.opts.fence?.();
      if (this.opts.fence && fence === undefined) return;
      const sequence = await this.store.activateCa(prepared.rec.id, now, fence);
      if (sequence === undefined) {
        await this.sync();
        return;
      }
      for (const c of this.cas) if (c.rec.state === 'active') c.rec = { ...c.rec, state: 'retired', retiredAt: now };
      prepared.rec = { ...prepared.rec, state: 'active', activatedAt: now, retiredAt: null };
      this.refreshActive();
      await this.adopt(sequence);
      this.emit('bundle', this.sequence);
      activated = true;
    }
    for (const c of [...this.cas]) {
      if (c.rec.state === 'retired' && c.rec.notAfter <= now) {
        await this.store.deleteCa(c.rec.id);
        this.cas = this.cas.filter((x) => x !== c);
        changed = true;
      }
    }
    const active = this.active();
    const life = active.rec.notAfter - active.rec.notBefore;
    if (!this.cas.some((c) => c.rec.state === 'prepared') && now >= active.rec.notBefore + life / 2) {
      const activateAt = Math.max(now, active.rec.notBefore + (life * 5) / 6);
      // A hand rotation on another replica may have prepared one just now: then it stands. Anything
      // else (the store down) surfaces to the caller, which logs it and ticks again later, after the
      // sequence has been bumped for what this tick did change.
      try {
        this.cas.push(this.load(await this.createCa('prepared', activateAt)));
        changed = true;
      } catch (err) {
        if (!(isTesseraError(err) && err.code === 'TESSERA_CA_ROTATION_IN_PROGRESS')) prepareFailed = err;
      }
    }
    if (changed) await this.bumpSequence();
    if (activated) this.emit('activated', active.rec.id);
    if (prepareFailed !== undefined) throw prepareFailed;
  }

  /** Prepares the next CA by hand; it is published now and signs from `now + graceMs`. */
  async rotate(graceMs: number): Promise<CaSummary> {
    await this.sync();
    if (this.cas.some((c) => c.rec.state === 'prepared')) {
      throw new TesseraError('TESSERA_CA_ROTATION_IN_PROGRESS');
    }
    const loaded = this.load(await this.createCa('prepared', this.now() + graceMs));
    this.cas.push(loaded);
    await this.bumpSequence();
    return this.summarize(loaded);
  }

  active(): LoadedCa {
    if (!this.activeCa) throw new TesseraError('TESSERA_UNAVAILABLE', 'no active CA');
    return this.activeCa;
  }

  list(): CaSummary[] {
    return this.cas.map((c) => this.summarize(c));
  }

  bundleSequence(): number {
    return this.sequence;
  }

  bundle(): BundleContent {
    const live = this.cas.filter((c) => c.rec.notAfter > this.now());
    return {
      trustDomain: this.opts.trustDomain,
      x509Authorities: live.map((c) => c.rec.certDer),
      jwtAuthorities: live.map((c) => ({ kid: c.jwtKey.kid, publicKey: c.jwtPublicKey })),
      sequence: this.sequence,
      refreshHintSeconds: 60,
    };
  }

  bundlePem(): string {
    return this.bundle().x509Authorities.map((d) => pemEncode(d, 'CERTIFICATE')).join('');
  }

  /**
   * Issues a leaf from the active CA. notAfter is capped at the CA's own notAfter so that a retired
   * CA can be dropped once it expires.
   */
  issue(spec: Omit<LeafSpec, 'notBefore' | 'notAfter'>, ttlMs: number, o: { settleMs?: number } = {}): { der: Buffer; notBefore: Date; notAfter: Date; caId: string; settlesAt?: number } {
    const now = this.now();
    const { ca, settlesAt } = this.signerFor(now, o.settleMs ?? 0);
    const notBefore = new Date(Math.max(now - Math.min(BACKDATE_MS, ttlMs / 10), ca.rec.notBefore));
    const notAfter = new Date(Math.min(now + ttlMs, ca.rec.notAfter));
    const der = ca.issuer.issueLeaf({ ...spec, notBefore, notAfter });
    return { der, notBefore, notAfter, caId: ca.rec.id, ...(settlesAt !== undefined ? { settlesAt } : {}) };
  }

  /**
   * The active CA, unless it was published less than `settleMs` ago: then relying parties that fetch
   * our bundle on their own schedule (federated trust domains reading the https_spiffe bundle endpoint,
   * whose certificate this signs) may not hold it yet, and a chain from it would lock them out for
   * good. Until it settles, the CA it replaced signs instead, while that one stays valid for a minute
   * more; `settlesAt` says when to issue again.
   */
  private signerFor(now: number, settleMs: number): { ca: LoadedCa; settlesAt?: number } {
    const active = this.active();
    const settlesAt = active.rec.createdAt + settleMs;
    if (settlesAt <= now) return { ca: active };
    const previous = this.cas
      .filter((c) => c.rec.state === 'retired' && c.rec.notAfter > now + 60_000)
      .sort((x, y) => (y.rec.activatedAt ?? 0) - (x.rec.activatedAt ?? 0))[0];
    return previous ? { ca: previous, settlesAt } : { ca: active };
  }

  signJwt(sub: string, aud: string[], ttlSeconds: number, iss?: string): { token: string; expiresAt: Date } {
    const ca = this.active();
    const ttl = Math.min(ttlSeconds, Math.floor((ca.rec.notAfter - this.now()) / 1000));
    return signJwtSvid(ca.jwtKey, { sub, aud, ttlSeconds: Math.max(ttl, 1), ...(iss ? { iss } : {}), now: this.now() });
  }

  /**
   * The active CA's key and certificate, for signing other control-plane objects (policy bundles)
   * that agents verify against their trust bundle. The key never leaves this process.
   */
  signingMaterial(): { privateKey: KeyObject; certDer: Buffer } {
    const ca = this.active();
    return { privateKey: ca.key, certDer: ca.rec.certDer };
  }

  private refreshActive(): void {
    this.activeCa = this.cas.find((c) => c.rec.state === 'active');
  }

  private async bumpSequence(): Promise<void> {
    // Atomic in the store: several control-plane processes may share it.
    await this.adopt(await this.store.incrementMeta('bundle_sequence'));
    this.emit('bundle', this.sequence);
  }

  /**
   * Takes the bundle sequence this process's own change produced. One that skipped a number means
   * another process changed the CAs since this one last read them: reload them now, or `sync()` would
   * take the sequence as seen and never pick that change up.
   */
  private async adopt(sequence: number): Promise<void> {
    if (sequence === this.sequence + 1) {
      this.sequence = sequence;
      return;
    }
    await this.sync();
  }

  /**
   * Picks up changes made by another control-plane process sharing the store (a CA prepared,
   * activated or dropped there): cheap when nothing changed (one meta read).
   */
  async sync(): Promise<void> {
    const stored = Number((await this.store.getMeta('bundle_sequence')) ?? '0');
    if (stored === this.sequence) return;
    const previousActive = this.activeCa?.rec.id;
    const loaded = new Map(this.cas.map((c) => [c.rec.id, c]));
    this.cas = (await this.store.listCas()).map((rec) => {
      const known = loaded.get(rec.id);
      return known ? { ...known, rec } : this.load(rec);
    });
    this.sequence = stored;
    this.refreshActive();
    this.emit('bundle', this.sequence);
    if (this.activeCa?.rec.id !== previousActive) this.emit('activated', this.activeCa?.rec.id);
  }

  private summarize(c: LoadedCa): CaSummary {
    return {
      id: c.rec.id,
      state: c.rec.state,
      notBefore: new Date(c.rec.notBefore).toISOString(),
      notAfter: new Date(c.rec.notAfter).toISOString(),
      activateAt: c.rec.activateAt === null ? null : new Date(c.rec.activateAt).toISOString(),
      jwtKid: c.jwtKey.kid,
      inBundle: c.rec.notAfter > this.now(),
    };
  }

  private load(rec: CaRecord): LoadedCa {
    const key = createPrivateKey({ key: this.kek.open(rec.keySealed, `ca:${rec.id}`), format: 'der', type: 'pkcs8' });
    const jwtPriv = createPrivateKey({ key: this.kek.open(rec.jwtKeySealed, `jwt:${rec.id}`), format: 'der', type: 'pkcs8' });
    return {
      rec,
      key,
      issuer: new CertificateIssuer({ certDer: rec.certDer, privateKey: key }),
      jwtKey: { kid: rec.jwtKid, privateKey: jwtPriv, alg: 'ES256' },
      jwtPublicKey: createPublicKey(jwtPriv),
    };
  }

  private async createCa(state: 'active' | 'prepared', activateAt: number | null): Promise<CaRecord> {
    const id = randomUUID();
    const now = this.now();
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwt = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const notBefore = now - BACKDATE_MS;
    const notAfter = now + this.opts.caTtlMs;
    const certDer = createSelfSignedCa({
      privateKey, publicKey, commonName: `Tessera CA ${id.slice(0, 8)}`, organization: this.opts.trustDomain,
      trustDomainUri: `spiffe://${this.opts.trustDomain}`, notBefore: new Date(notBefore), notAfter: new Date(notAfter), pathLen: 0,
    });
    const rec: CaRecord = {
      id, state, certDer,
      keySealed: this.kek.seal(privateKey.export({ format: 'der', type: 'pkcs8' }), `ca:${id}`),
      jwtKid: randomBytes(16).toString('base64url'),
      jwtKeySealed: this.kek.seal(jwt.privateKey.export({ format: 'der', type: 'pkcs8' }), `jwt:${id}`),
      notBefore, notAfter, createdAt: now, activateAt,
      activatedAt: state === 'active' ? now : null, retiredAt: null,
    };
    try {
      await this.store.insertCa(rec);
    } catch (err) {
      // The store holds one prepared CA at most, whichever process prepared it.
      if (state === 'prepared' && (await this.store.listCas()).some((c) => c.state === 'prepared')) throw new TesseraError('TESSERA_CA_ROTATION_IN_PROGRESS');
      throw err;
    }
    return rec;
  }
}
