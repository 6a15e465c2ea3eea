/**
 * Person certificates (`tessera login`, issue 12): short-lived X509-SVIDs `spiffe://<td>/user/<name>`
 * for a key the CLI generated, each recorded with the MFA time of the sign-in that approved it. The
 * admin API accepts one only while it is live: issued here, not revoked (logout, logout everywhere,
 * the user disabled or removed) and not expired. Decisions are synchronous (AdminAuthorizer's
 * principalOfCert), so the live set is held in memory: changed at once by this process, re-read
 * from the store every tick for the changes of other processes (like the named admins' list).
 */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import type { Caller } from '../../common/api/auth.js';
import type { AdminPrincipal } from '../authz/principal.js';
import type { CertificateAuthority } from '../ca/ca.js';
import type { LoginStore, UserCertRecord, UserRecord } from '../store/store.js';

interface LiveCert {
  username: string; spiffeId: string; groups: string[]; mfaAt: number | null; notAfter: number;
  /** Set when this process issued it: its place in this process's issue order (see sync). */
  issuedSeq?: number;
}

export class PersonCerts {
  #live = new Map<string, LiveCert>();
  /** Serials revoked by this process since the last sync (a sync that began before them must not bring them back). */
  #revokedHere = new Set<string>();
  /** Certificates this process issued so far: a sync keeps those issued after it read the store. */
  #issued = 0;

  constructor(private readonly store: LoginStore, private readonly ca: CertificateAuthority, private readonly opts: { trustDomain: string; now: () => number }) {}

  private get prefix(): string {
    return `spiffe://${this.opts.trustDomain}/user/`;
  }

  /** Re-reads the live certificates (at start and every tick). */
  async sync(): Promise<void> {
    const revokedBefore = new Set(this.#revokedHere);
    const issuedBefore = this.#issued;
    const rows = await this.store.liveUserCerts(this.opts.now());
    const live = new Map<string, LiveCert>();
    for (const r of rows) {
      if (this.#revokedHere.has(r.serial)) continue;
      live.set(r.serial, { username: r.username, spiffeId: r.spiffeId, groups: r.groups, mfaAt: r.mfaAt, notAfter: r.notAfter });
    }
    for (const [serial, c] of this.#live) {
      if (!live.has(serial) && c.issuedSeq !== undefined && c.issuedSeq > issuedBefore && !this.#revokedHere.has(serial)) live.set(serial, c);
    }
    this.#live = live;
    for (const s of revokedBefore) this.#revokedHere.delete(s);
  }

  /**
   * The admin principal of a person certificate, or undefined when `caller` is not under
   * `spiffe://<td>/user/`. A person certificate that is not live (revoked, expired, never issued
   * by `tessera login`, its user disabled or removed) is refused: TESSERA_LOGIN_REVOKED.
   */
  principalOf(caller: Caller): AdminPrincipal | undefined {
    if (!caller.spiffeId.startsWith(this.prefix)) return undefined;
    const c = this.#live.get(caller.serial);
    if (c === undefined || c.spiffeId !== caller.spiffeId || c.notAfter <= this.opts.now()) throw new TesseraError('TESSERA_LOGIN_REVOKED');
    return { kind: 'user', spiffeId: c.spiffeId, name: c.username, groups: [...c.groups], via: 'cert', ...(c.mfaAt !== null ? { mfaAt: c.mfaAt } : {}) };
  }

  /** The stored record of a live certificate (whoami). */
  async record(serial: string): Promise<UserCertRecord | undefined> {
    return this.#live.has(serial) ? this.store.getUserCert(serial) : undefined;
  }

  /** Issues and records a person certificate for `publicKey` (the CSR's, checked by the caller). */
  async issue(user: UserRecord, publicKey: KeyObject, o: { ttlMs: number; mfaAt: number | null; flow: 'browser' | 'device'; clientIp: string }): Promise<{ der: Buffer; rec: UserCertRecord }> {
    if (user.state !== 'active') throw new TesseraError('TESSERA_USER_DISABLED');
    const now = this.opts.now();
    const active = this.ca.active().rec;
    const ttl = Math.min(o.ttlMs, active.notAfter - Date.now());
    if (ttl < 60_000) throw new TesseraError('TESSERA_UNAVAILABLE', 'the signing CA expires within a minute: retry after its rotation');
    const issued = this.ca.issue({ publicKey, uriSans: [user.spiffeId] }, ttl);
    const serial = new X509Certificate(issued.der).serialNumber.toUpperCase();
    const rec: UserCertRecord = {
      serial, username: user.username, spiffeId: user.spiffeId, groups: [...user.groups], mfaAt: o.mfaAt, issuedAt: now,
      notAfter: issued.notAfter.getTime(), flow: o.flow, clientIp: o.clientIp, revokedAt: null, revokedReason: null,
    };
    await this.store.insertUserCert(rec);
    this.#live.set(serial, { username: user.username, spiffeId: user.spiffeId, groups: [...user.groups], mfaAt: o.mfaAt, notAfter: rec.notAfter, issuedSeq: ++this.#issued });
    return { der: issued.der, rec };
  }

  /** Revokes one certificate (`tessera logout`, a replayed login code); false when it was not live. */
  async revoke(serial: string, reason: string): Promise<boolean> {
    this.#live.delete(serial);
    this.#revokedHere.add(serial);
    return this.store.revokeUserCert(serial, this.opts.now(), reason);
  }

  /** Revokes every certificate of the user (logout everywhere, disabled, removed); returns how many. */
  async revokeAll(username: string, reason: string): Promise<number> {
    for (const [serial, c] of this.#live) {
      if (c.username === username) {
        this.#live.delete(serial);
        this.#revokedHere.add(serial);
      }
    }
    return this.store.revokeUserCerts(username, this.opts.now(), reason);
  }
}
