/**
 * Named admins: one credential per person (`tessera admin add NAME`), each its own identity
 * `spiffe://<td>/tessera/admin/<NAME>`, so the audit log names the person behind every admin action
 * and the two-person rule of grants can tell two people apart. The bootstrap credential
 * (`spiffe://<td>/tessera/admin`, written into DATA_DIR/admin/ at start) stays an admin.
 *
 * The private key of a named admin never reaches the control plane: the CLI generates it where the
 * credential will live and sends a CSR; the control plane signs it. Removing an admin refuses its
 * certificates from the next request on (every process re-reads the list at least once a second).
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import type { Caller } from '../../common/api/auth.js';
import type { CertificateAuthority } from '../ca/ca.js';
import { MAX_ADMIN_SERIALS, type BundleAdmin } from '../../core/policy/bundle.js';
import type { Store } from '../store/store.js';

/** An admin name: what follows /tessera/admin/ in its SPIFFE ID. */
export const ADMIN_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** The name the bootstrap credential is listed under (it has no path segment of its own). */
export const BOOTSTRAP_ADMIN = 'bootstrap';
/** Longest life of a named admin's certificate (never past the signing CA's own expiry). */
export const ADMIN_CERT_TTL_MS = 30 * 86_400_000;
const PREFIX = 'admin:';

export interface AdminRecord {
  name: string;
  spiffeId: string;
  createdAt: number;
  createdBy: string;
  /** Certificates issued to this admin (add, renew), newest last: only these serials are accepted. */
  certs: { serial: string; notAfter: number }[];
  removedAt?: number;
  removedBy?: string;
  removedReason?: string;
}

export class AdminService {
  /** Live named admins by SPIFFE ID → their accepted serials. Rebuilt from the store. */
  #live = new Map<string, ReadonlySet<string>>();
  /** Identities of removed admins (their refusal says so). */
  #removed = new Set<string>();
  #snapshot = '';

  /**
   * `changed`: publishes a policy bundle after an admin is added, renewed or removed (the bundle lists
   * the live admins for the key servers, which follow it within a second).
   */
  constructor(
    private readonly store: Store, private readonly ca: CertificateAuthority,
    private readonly opts: { trustDomain: string; bootstrapId: string; now: () => number; changed?: () => Promise<unknown> },
  ) {}

  idOf(name: string): string {
    return `spiffe://${this.opts.trustDomain}/tessera/admin/${name}`;
  }

  /** Re-reads the admin list (at start, after each change, and every tick: other processes change it too). */
  async sync(): Promise<void> {
    const rows = await this.store.listMeta(PREFIX);
    const snapshot = rows.map((r) => r.value).join('\n');
    if (snapshot === this.#snapshot) return;
    const live = new Map<string, ReadonlySet<string>>();
    const removed = new Set<string>();
    for (const r of rows) {
      const a = JSON.parse(r.value) as AdminRecord;
      if (a.removedAt !== undefined) removed.add(a.spiffeId);
      else live.set(a.spiffeId, new Set(a.certs.map((c) => c.serial)));
    }
    this.#live = live;
    this.#removed = removed;
    this.#snapshot = snapshot;
  }

  /**
   * Whether `caller` holds an admin credential now: the bootstrap identity, or a named admin not
   * removed presenting a certificate issued to it. Refusal codes: TESSERA_ADMIN_REVOKED for a
   * removed admin or a serial never issued to it, TESSERA_FORBIDDEN for any other identity.
   */
  check(caller: Caller): void {
    if (caller.spiffeId === this.opts.bootstrapId) return;
    const serials = this.#live.get(caller.spiffeId);
    if (serials?.has(caller.serial)) return;
    if (serials !== undefined || this.#removed.has(caller.spiffeId)) throw new TesseraError('TESSERA_ADMIN_REVOKED');
    throw new TesseraError('TESSERA_FORBIDDEN', 'this operation needs an admin credential');
  }

  /** Named admins not removed (as of the last sync). */
  namedAdmins(): number {
    return this.#live.size;
  }

  isAdmin(caller: Caller): boolean {
    try {
      this.check(caller);
      return true;
    } catch {
      return false;
    }
  }

  /** The bundle's `admins`: live named admins and the serials of their unexpired certificates, by SPIFFE ID. */
  async forBundle(now: number): Promise<BundleAdmin[]> {
    return (await this.list()).filter((a) => a.removedAt === undefined)
      .map((a) => ({ id: a.spiffeId, serials: a.certs.filter((c) => c.notAfter > now).map((c) => c.serial).slice(-MAX_ADMIN_SERIALS) }))
      .filter((a) => a.serials.length > 0)
      .sort((x, y) => (x.id < y.id ? -1 : x.id > y.id ? 1 : 0));
  }

  async list(): Promise<AdminRecord[]> {
    return (await this.store.listMeta(PREFIX)).map((r) => JSON.parse(r.value) as AdminRecord);
  }

  /**
   * Issues the first credential of a new admin (a name never used, or one removed before: its old
   * certificates stay refused, only the new one is accepted).
   */
  async add(name: string, publicKey: KeyObject, by: string): Promise<{ admin: AdminRecord; der: Buffer; notAfter: Date }> {
    checkName(name);
    const key = PREFIX + name;
    const old = await this.store.getMeta(key);
    if (old !== undefined && (JSON.parse(old) as AdminRecord).removedAt === undefined) throw new TesseraError('TESSERA_CONFLICT', `admin ${name} exists`);
    const spiffeId = this.idOf(name);
    const issued = this.issue(spiffeId, name, publicKey);
    const admin: AdminRecord = { name, spiffeId, createdAt: this.opts.now(), createdBy: by, certs: [issued.cert] };
    const ok = old === undefined ? (await this.store.setMetaIfAbsent(key, JSON.stringify(admin))) === JSON.stringify(admin) : await this.store.replaceMeta(key, old, JSON.stringify(admin));
    if (!ok) throw new TesseraError('TESSERA_CONFLICT', `admin ${name} exists`);
    await this.sync();
    await this.opts.changed?.();
    return { admin, der: issued.der, notAfter: issued.notAfter };
  }

  /** A new certificate for a live named admin (asked by that admin with its current credential). */
  async renew(spiffeId: string, publicKey: KeyObject): Promise<{ admin: AdminRecord; der: Buffer; notAfter: Date }> {
    const name = spiffeId.slice(this.idOf('').length);
    if (!spiffeId.startsWith(this.idOf('')) || !ADMIN_NAME.test(name)) {
      throw new TesseraError('TESSERA_FORBIDDEN', 'only a named admin renews its credential (the bootstrap credential is renewed by the server)');
    }
    const key = PREFIX + name;
    const old = await this.store.getMeta(key);
    const rec = old === undefined ? undefined : (JSON.parse(old) as AdminRecord);
    if (rec === undefined || rec.removedAt !== undefined) throw new TesseraError('TESSERA_ADMIN_REVOKED');
    const issued = this.issue(spiffeId, name, publicKey);
    const now = this.opts.now();
    // Expired certificates leave the list; a handful of live ones may overlap during a switch.
    const admin: AdminRecord = { ...rec, certs: [...rec.certs.filter((c) => c.notAfter > now).slice(-4), issued.cert] };
    if (!(await this.store.replaceMeta(key, old!, JSON.stringify(admin)))) throw new TesseraError('TESSERA_CONFLICT', `admin ${name} changed meanwhile: try again`);
    await this.sync();
    await this.opts.changed?.();
    return { admin, der: issued.der, notAfter: issued.notAfter };
  }

  /** Removes (revokes) a named admin: its certificates are refused from now on. */
  async remove(name: string, by: string, reason: string): Promise<AdminRecord> {
    if (name === BOOTSTRAP_ADMIN) throw new TesseraError('TESSERA_BAD_REQUEST', 'the bootstrap admin cannot be removed (it is the server\'s own credential in DATA_DIR/admin/)');
    checkName(name);
    const key = PREFIX + name;
    const old = await this.store.getMeta(key);
    const rec = old === undefined ? undefined : (JSON.parse(old) as AdminRecord);
    if (rec === undefined) throw new TesseraError('TESSERA_NOT_FOUND', `no admin ${name}`);
    if (rec.removedAt !== undefined) throw new TesseraError('TESSERA_CONFLICT', `admin ${name} was already removed`);
    const admin: AdminRecord = { ...rec, removedAt: this.opts.now(), removedBy: by, removedReason: reason };
    if (!(await this.store.replaceMeta(key, old!, JSON.stringify(admin)))) throw new TesseraError('TESSERA_CONFLICT', `admin ${name} changed meanwhile: try again`);
    await this.sync();
    await this.opts.changed?.();
    return admin;
  }

  private issue(spiffeId: string, name: string, publicKey: KeyObject): { der: Buffer; notAfter: Date; cert: { serial: string; notAfter: number } } {
    const active = this.ca.active().rec;
    const ttl = Math.min(ADMIN_CERT_TTL_MS, active.notAfter - this.opts.now());
    const issued = this.ca.issue({ publicKey, uriSans: [spiffeId], subject: { commonName: `tessera-admin-${name}` } }, ttl);
    const serial = new X509Certificate(issued.der).serialNumber.toUpperCase();
    return { der: issued.der, notAfter: issued.notAfter, cert: { serial, notAfter: issued.notAfter.getTime() } };
  }
}

function checkName(name: string): void {
  if (!ADMIN_NAME.test(name) || name === BOOTSTRAP_ADMIN) {
    throw new TesseraError('TESSERA_BAD_REQUEST', `admin name must be 1..63 of a-z 0-9 . _ - starting with a letter or digit, and not "${BOOTSTRAP_ADMIN}"`);
  }
}
