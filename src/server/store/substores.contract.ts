/**
 * The sub-store contract (people, login, devices, gateways): the same vitest cases run against
 * SQLite (substores.sqlite.contract.test.ts) and PostgreSQL (substores.postgres.contract.test.ts).
 * Uniqueness conflicts, single-use tokens and codes under concurrency (of two takes exactly one
 * wins), compare-and-set updates, expiry and pruning, ordering (bytewise, as SQLite) and limits,
 * and what a delete takes with it.
 */
import { describe, expect, it } from 'vitest';
import type {
  AuthTicketRecord, DeviceRecord, DeviceStore, GatewayCodeRecord, GatewayRecord, GatewayStore, LoginRequestRecord, LoginStore, PeopleStore, SessionRecord,
  Store, UserCertRecord, UserCredentialRecord, UserRecord,
} from './store.js';

export interface SubStoreFixture {
  people: PeopleStore;
  login: LoginStore;
  devices: DeviceStore;
  gateways: GatewayStore;
  /** The core store's SVID records and revocation list, which devices share. */
  core: Pick<Store, 'recordIssuedSvid' | 'isSerialRevoked' | 'listRevocations'>;
}

/** Each call gives fresh, empty stores; the test file closes them after each test. */
export type SubStoreFactory = () => Promise<SubStoreFixture>;

const T0 = Date.parse('2026-12-01T00:00:00.000Z');
const MIN = 60_000;

const user = (username: string, over: Partial<UserRecord> = {}): UserRecord => ({
  username, spiffeId: `spiffe://td/user/${username}`, source: 'local', oidcIssuer: null, oidcSubject: null, email: `${username}@example.com`,
  displayName: username.toUpperCase(), groups: ['staff'], state: 'active', webauthnId: `wa-${username}`, createdAt: T0, createdBy: 'spiffe://td/admin',
  updatedAt: T0, disabledReason: null, ...over,
});
const passkey = (id: string, username: string, createdAt = T0): UserCredentialRecord => ({
  id, username, kind: 'passkey', createdAt, publicKey: Buffer.from([0xa5, 0x01, 0x02, id.length]), counter: 0, transports: ['usb', 'nfc'],
  secretSealed: null, lastStep: -1, lastUsedAt: null,
});
const totp = (username: string): UserCredentialRecord => ({
  id: `totp:${username}`, username, kind: 'totp', createdAt: T0 + 1, publicKey: null, counter: 0, transports: [], secretSealed: Buffer.alloc(44, 7),
  lastStep: -1, lastUsedAt: null,
});
const session = (hash: string, username: string, expiresAt = T0 + 60 * MIN): SessionRecord => ({
  hash, username, source: 'local', createdAt: T0, lastSeenAt: T0, expiresAt, mfaAt: T0, csrfHash: `csrf-${hash}`,
});
const ticket = (hash: string, over: Partial<Omit<AuthTicketRecord, 'usedAt'>> = {}): Omit<AuthTicketRecord, 'usedAt'> => ({
  hash, kind: 'enrol', username: 'alice', data: '{"n":1}', createdAt: T0, expiresAt: T0 + 10 * MIN, ...over,
});
const request = (hash: string, over: Partial<LoginRequestRecord> = {}): LoginRequestRecord => ({
  hash, kind: 'device', userCodeHash: `uc-${hash}`, state: 'pending', username: null, mfaAt: null, clientIp: '192.0.2.1', keyThumbprint: `kt-${hash}`,
  ttlMs: 3_600_000, stepUp: false, codeChallenge: null, redirectUri: null, intervalS: 5, lastPollAt: null, serial: null, createdAt: T0,
  expiresAt: T0 + 10 * MIN, ...over,
});
const cert = (serial: string, username: string, over: Partial<UserCertRecord> = {}): UserCertRecord => ({
  serial, username, spiffeId: `spiffe://td/user/${username}`, groups: ['old'], mfaAt: T0, issuedAt: T0, notAfter: T0 + 60 * MIN, flow: 'browser',
  clientIp: '192.0.2.1', revokedAt: null, revokedReason: null, ...over,
});
const device = (id: string, over: Partial<DeviceRecord> = {}): DeviceRecord => ({
  id, spiffeId: `spiffe://td/device/${id}`, owner: 'alice', attributes: { site: 'berlin', compliance: 'high' }, certTtlSeconds: 600, createdAt: T0,
  tokenRef: 'abc', certSerial: `AA${id.length}`, certNotAfter: T0 + 600_000, certSpki: Buffer.from([1, 2, 3]), certIssuedAt: T0, ...over,
});
const gw = (name: string, over: Partial<GatewayRecord> = {}): GatewayRecord => ({
  name, spiffeId: `spiffe://td/gateway/${name}`, urls: [`https://${name}.example.com`, `https://${name}.example.org`], createdAt: T0,
  createdBy: 'spiffe://td/admin', ...over,
});
const code = (hash: string, gateway: string, expiresAt = T0 + MIN): GatewayCodeRecord => ({
  hash, gateway, sessionHash: `s-${hash}`, redirectUri: `https://${gateway}.example.com/_tessera/callback`, challenge: `ch-${hash}`, expiresAt,
});

/** A win: `true`, `{ ok: true, ... }`, or a record taken (a ticket, a code); not `false`, `undefined` or `{ ok: false }`. */
const won = (r: unknown): boolean => r === true || (typeof r === 'object' && r !== null && (!('ok' in r) || r.ok === true));
/** How many of concurrent attempts won. */
const wins = (results: readonly unknown[]): number => results.filter(won).length;

export function subStoreContract(name: string, open: SubStoreFactory): void {
  describe(`${name}: people`, () => {
    it('refuses a taken username, SPIFFE ID or OIDC identity, records groups, and round-trips a user', async () => {
      const { people } = await open();
      const alice = user('alice', { groups: ['staff', 'Zeta', 'admins'] });
      expect(await people.insertUser(alice)).toBe(true);
      expect(await people.insertUser(user('alice', { spiffeId: 'spiffe://td/user/other' }))).toBe(false);
      expect(await people.insertUser(user('alice2', { spiffeId: alice.spiffeId }))).toBe(false);
      const oidc = user('carol', { source: 'oidc', oidcIssuer: 'https://idp', oidcSubject: 'sub-1', email: null, displayName: null, groups: ['from-idp'] });
      expect(await people.insertUser(oidc)).toBe(true);
      expect(await people.insertUser(user('carol2', { source: 'oidc', oidcIssuer: 'https://idp', oidcSubject: 'sub-1' }))).toBe(false);
      // Local users have no OIDC identity: any number of them.
      expect(await people.insertUser(user('bob'))).toBe(true);
      expect(await people.getUser('alice')).toEqual(alice);
      expect(await people.getUserBySubject('https://idp', 'sub-1')).toEqual(oidc);
      expect(await people.getUserBySubject('https://idp', 'sub-2')).toBeUndefined();
      expect(await people.getUser('alice2')).toBeUndefined();
      // Groups: bytewise order, first writer's source kept; a refused insert records none.
      expect(await people.listGroups()).toEqual([
        { name: 'Zeta', source: 'local', createdAt: T0 }, { name: 'admins', source: 'local', createdAt: T0 },
        { name: 'from-idp', source: 'oidc', createdAt: T0 }, { name: 'staff', source: 'local', createdAt: T0 },
      ]);
    });

    it('updates a user (and records new groups), refuses a missing one, and lists bytewise with a limit', async () => {
      const { people } = await open();
      for (const n of ['alice', 'Bob', 'zed', 'Carl']) expect(await people.insertUser(user(n))).toBe(true);
      const changed = user('alice', { email: null, displayName: 'A.', groups: ['ops'], state: 'disabled', updatedAt: T0 + 5, disabledReason: 'left' });
      expect(await people.updateUser(changed)).toBe(true);
      expect(await people.getUser('alice')).toEqual(changed);
      expect(await people.updateUser(user('nobody'))).toBe(false);
      expect((await people.listGroups()).map((g) => [g.name, g.createdAt])).toEqual([['ops', T0 + 5], ['staff', T0]]);
      expect((await people.listUsers(10)).map((u) => u.username)).toEqual(['Bob', 'Carl', 'alice', 'zed']);
      expect((await people.listUsers(2)).map((u) => u.username)).toEqual(['Bob', 'Carl']);
    });

    it('settles concurrent inserts: one user per name, and new groups given in any order by many users at once', async () => {
      const { people } = await open();
      const same = await Promise.all([people.insertUser(user('dup', { webauthnId: 'a' })), people.insertUser(user('dup', { webauthnId: 'b' }))]);
      expect(wins(same)).toBe(1);
      const groups = Array.from({ length: 30 }, (_, i) => `g${String(i).padStart(2, '0')}`);
      const results = await Promise.all(Array.from({ length: 6 }, (_, i) =>
        people.insertUser(user(`u${i}`, { groups: i % 2 === 0 ? groups : [...groups].reverse() }))));
      expect(results).toEqual([true, true, true, true, true, true]);
      expect((await people.listGroups()).map((g) => g.name)).toEqual([...groups, 'staff']);
      expect((await people.listUsers(-1)).map((u) => u.username)).toEqual(['dup', 'u0', 'u1', 'u2', 'u3', 'u4', 'u5']);
    });

    it('replaces credentials atomically and keeps passkey counters and TOTP steps monotonic under concurrency', async () => {
      const { people } = await open();
      await people.insertUser(user('alice'));
      const creds = [totp('alice'), passkey('pk-b', 'alice'), passkey('pk-a', 'alice')];
      await people.replaceCredentials('alice', creds);
      // Ordered by creation time, then id.
      expect(await people.listCredentials('alice')).toEqual([creds[2], creds[1], creds[0]]);
      expect(await people.getCredential('totp:alice')).toEqual(creds[0]);
      // A replacement that fails half-way (the same id twice) changes nothing.
      await expect(people.replaceCredentials('alice', [passkey('pk-c', 'alice'), passkey('pk-c', 'alice')])).rejects.toThrow();
      expect((await people.listCredentials('alice')).map((c) => c.id)).toEqual(['pk-a', 'pk-b', 'totp:alice']);
      await people.replaceCredentials('alice', [passkey('pk-c', 'alice')]);
      expect((await people.listCredentials('alice')).map((c) => c.id)).toEqual(['pk-c']);
      expect(await people.getCredential('pk-a')).toBeUndefined();

      expect(wins(await Promise.all([people.setPasskeyCounter('pk-c', 0, 7, T0 + 1), people.setPasskeyCounter('pk-c', 0, 7, T0 + 1)]))).toBe(1);
      expect(await people.setPasskeyCounter('pk-c', 0, 9, T0 + 2)).toBe(false);
      expect(await people.getCredential('pk-c')).toMatchObject({ counter: 7, lastUsedAt: T0 + 1 });
      // A counter beyond 32 bits' signed range round-trips (WebAuthn counters are unsigned 32-bit).
      expect(await people.setPasskeyCounter('pk-c', 7, 4_294_967_295, T0 + 3)).toBe(true);
      expect((await people.getCredential('pk-c'))!.counter).toBe(4_294_967_295);

      await people.replaceCredentials('alice', [totp('alice')]);
      expect(wins(await Promise.all([people.advanceTotpStep('totp:alice', 100, T0), people.advanceTotpStep('totp:alice', 100, T0)]))).toBe(1);
      expect(await people.advanceTotpStep('totp:alice', 100, T0)).toBe(false);
      expect(await people.advanceTotpStep('totp:alice', 99, T0)).toBe(false);
      expect(await people.advanceTotpStep('totp:alice', 101, T0 + 30_000)).toBe(true);
      expect(await people.getCredential('totp:alice')).toMatchObject({ lastStep: 101, lastUsedAt: T0 + 30_000, secretSealed: Buffer.alloc(44, 7) });
      expect(await people.advanceTotpStep('no-such', 1, T0)).toBe(false);
    });

    it('stores sessions (pruning expired ones at insert), touches and ends them, and refuses one for an unknown user', async () => {
      const { people } = await open();
      await people.insertUser(user('alice'));
      await people.insertUser(user('bob'));
      await people.insertSession(session('s1', 'alice', T0 + MIN), T0);
      await people.insertSession(session('s2', 'alice'), T0);
      await people.insertSession(session('s3', 'bob'), T0);
      expect(await people.getSession('s1')).toEqual(session('s1', 'alice', T0 + MIN));
      await people.touchSession('s2', T0 + 5);
      expect((await people.getSession('s2'))!.lastSeenAt).toBe(T0 + 5);
      // s1 ended at T0 + MIN: an insert after that removes it (an insert exactly then does not).
      await people.insertSession(session('s4', 'bob'), T0 + MIN);
      expect(await people.getSession('s1')).toBeDefined();
      await people.insertSession(session('s5', 'bob'), T0 + MIN + 1);
      expect(await people.getSession('s1')).toBeUndefined();
      expect(await people.deleteSession('s3')).toBe(true);
      expect(await people.deleteSession('s3')).toBe(false);
      expect(await people.deleteSessionsOf('bob')).toBe(2);
      expect(await people.deleteSessionsOf('bob')).toBe(0);
      expect(await people.getSession('s2')).toBeDefined();
      await expect(people.insertSession(session('s6', 'nobody'), T0)).rejects.toThrow();
      expect(await people.getSession('s6')).toBeUndefined();
    });

    it('spends a ticket once under concurrency, only with its kind and before expiry, and counts live ones', async () => {
      const { people } = await open();
      await people.insertTicket(ticket('t1'), T0);
      await people.insertTicket(ticket('t2', { kind: 'challenge', expiresAt: T0 + MIN }), T0);
      await people.insertTicket(ticket('t3', { kind: 'oidc-state', username: null }), T0);
      expect(await people.countLiveTickets(['enrol', 'challenge'], T0)).toBe(2);
      expect(await people.countLiveTickets([], T0)).toBe(0);
      expect(await people.consumeTicket('t1', 'challenge', T0)).toBeUndefined();
      const both = await Promise.all([people.consumeTicket('t1', 'enrol', T0 + 1), people.consumeTicket('t1', 'enrol', T0 + 1)]);
      expect(wins(both)).toBe(1);
      expect(both.find((t) => t !== undefined)).toEqual({ ...ticket('t1'), usedAt: T0 + 1 });
      expect(await people.consumeTicket('t1', 'enrol', T0 + 2)).toBeUndefined();
      expect(await people.getTicket('t1', 'enrol')).toMatchObject({ usedAt: T0 + 1 });
      expect(await people.getTicket('t1', 'challenge')).toBeUndefined();
      // Expiry: not spendable at its end.
      expect(await people.consumeTicket('t2', 'challenge', T0 + MIN)).toBeUndefined();
      expect(await people.countLiveTickets(['enrol', 'challenge', 'oidc-state'], T0 + MIN)).toBe(1);
      // Compare-and-set of the data, refused once the ticket is used.
      expect(await people.replaceTicketData('t3', '{"n":2}', '{"n":3}')).toBe(false);
      expect(await people.replaceTicketData('t3', '{"n":1}', '{"n":2}')).toBe(true);
      expect((await people.getTicket('t3', 'oidc-state'))!.data).toBe('{"n":2}');
      expect(await people.replaceTicketData('t1', '{"n":1}', '{"n":2}')).toBe(false);
      // Expired tickets go at the next insert.
      expect(await people.getTicket('t2', 'challenge')).toBeDefined();
      await people.insertTicket(ticket('t4'), T0 + MIN + 1);
      expect(await people.getTicket('t2', 'challenge')).toBeUndefined();
      await expect(people.insertTicket(ticket('t4'), T0 + MIN + 1)).rejects.toThrow();
    });

    it('deletes a user with its credentials, sessions, tickets and person certificates', async () => {
      const { people, login } = await open();
      await people.insertUser(user('alice'));
      await people.insertUser(user('bob'));
      await people.replaceCredentials('alice', [passkey('pk-a', 'alice')]);
      await people.replaceCredentials('bob', [passkey('pk-b', 'bob')]);
      await people.insertSession(session('sa', 'alice'), T0);
      await people.insertSession(session('sb', 'bob'), T0);
      await people.insertTicket(ticket('ta'), T0);
      await people.insertTicket(ticket('tb', { username: 'bob' }), T0);
      await login.insertUserCert(cert('0A', 'alice'));
      await login.insertUserCert(cert('0B', 'bob'));
      expect(await people.deleteUser('alice')).toBe(true);
      expect(await people.deleteUser('alice')).toBe(false);
      expect(await people.getUser('alice')).toBeUndefined();
      expect(await people.getCredential('pk-a')).toBeUndefined();
      expect(await people.getSession('sa')).toBeUndefined();
      expect(await people.getTicket('ta', 'enrol')).toBeUndefined();
      expect(await login.getUserCert('0A')).toBeUndefined();
      // Bob's untouched.
      expect(await people.getCredential('pk-b')).toBeDefined();
      expect(await people.getSession('sb')).toBeDefined();
      expect(await people.getTicket('tb', 'enrol')).toBeDefined();
      expect(await login.getUserCert('0B')).toBeDefined();
    });
  });

  describe(`${name}: login`, () => {
    it('round-trips requests, caps them per address and in all, and keeps expired ones 15 minutes', async () => {
      const { login } = await open();
      const browser = request('r1', { kind: 'code', userCodeHash: null, codeChallenge: 'cc', redirectUri: 'http://127.0.0.1:5555/cb', stepUp: true });
      expect(await login.insertLoginRequest(browser, T0, { perIp: 2, total: 3 })).toBe('ok');
      expect(await login.getLoginRequest('r1')).toEqual(browser);
      expect(await login.insertLoginRequest(request('r2'), T0, { perIp: 2, total: 3 })).toBe('ok');
      expect(await login.getLoginRequestByUserCode('uc-r2')).toEqual(request('r2'));
      expect(await login.insertLoginRequest(request('r3'), T0, { perIp: 2, total: 3 })).toBe('ip_cap');
      expect(await login.insertLoginRequest(request('r3', { clientIp: '192.0.2.2' }), T0, { perIp: 2, total: 3 })).toBe('ok');
      expect(await login.insertLoginRequest(request('r4', { clientIp: '192.0.2.3' }), T0, { perIp: 2, total: 3 })).toBe('total_cap');
      expect(await login.getLoginRequest('r4')).toBeUndefined();
      // Denied and used requests do not count.
      expect(await login.updateLoginRequest('r2', 'pending', { state: 'denied' })).toBe(true);
      expect(await login.insertLoginRequest(request('r4', { clientIp: '192.0.2.3' }), T0, { perIp: 2, total: 3 })).toBe('ok');
      // Expired ones neither count nor go at once: kept 15 minutes so a late poll hears "expired".
      expect(await login.insertLoginRequest(request('r5', { expiresAt: T0 + 20 * MIN }), T0 + 10 * MIN, { perIp: 2, total: 3 })).toBe('ok');
      expect(await login.getLoginRequest('r1')).toBeDefined();
      expect(await login.insertLoginRequest(request('r6', { clientIp: '192.0.2.9', expiresAt: T0 + 40 * MIN }), T0 + 25 * MIN, { perIp: 2, total: 3 })).toBe('ok');
      expect(await login.getLoginRequest('r1')).toBeUndefined();
      expect(await login.getLoginRequest('r5')).toBeDefined();
      // A user code is unique.
      await expect(login.insertLoginRequest(request('r7', { userCodeHash: 'uc-r6' }), T0 + 25 * MIN, { perIp: 9, total: 9 })).rejects.toThrow();
    });

    it('holds the caps when inserts race', async () => {
      const { login } = await open();
      const caps = { perIp: 3, total: 5 };
      const sameIp = await Promise.all(Array.from({ length: 8 }, (_, i) => login.insertLoginRequest(request(`a${i}`), T0, caps)));
      expect(sameIp.filter((r) => r === 'ok')).toHaveLength(3);
      expect(sameIp.filter((r) => r === 'ip_cap')).toHaveLength(5);
      const many = await Promise.all(Array.from({ length: 6 }, (_, i) => login.insertLoginRequest(request(`b${i}`, { clientIp: `198.51.100.${i}` }), T0, caps)));
      expect(many.filter((r) => r === 'ok')).toHaveLength(2);
      expect(many.filter((r) => r === 'total_cap')).toHaveLength(4);
    });

    it('moves a request from one state once (compare and set) and records a poll once', async () => {
      const { login } = await open();
      await login.insertLoginRequest(request('r1'), T0, { perIp: 9, total: 9 });
      const approvals = await Promise.all([
        login.updateLoginRequest('r1', 'pending', { state: 'approved', username: 'alice', mfaAt: T0 + 1 }),
        login.updateLoginRequest('r1', 'pending', { state: 'approved', username: 'bob', mfaAt: T0 + 2 }),
      ]);
      expect(wins(approvals)).toBe(1);
      expect(await login.updateLoginRequest('r1', 'pending', { state: 'denied' })).toBe(false);
      expect(await login.updateLoginRequest('r1', 'approved', {})).toBe(false);
      expect(await login.updateLoginRequest('r1', 'approved', { state: 'used', serial: '0F' })).toBe(true);
      expect(await login.getLoginRequest('r1')).toMatchObject({ state: 'used', serial: '0F', username: approvals[0] ? 'alice' : 'bob' });
      expect(await login.updateLoginRequest('nope', 'pending', { state: 'denied' })).toBe(false);

      await login.insertLoginRequest(request('r2'), T0, { perIp: 9, total: 9 });
      expect(wins(await Promise.all([login.recordPoll('r2', null, T0 + 5000, 5), login.recordPoll('r2', null, T0 + 5000, 5)]))).toBe(1);
      expect(await login.recordPoll('r2', null, T0 + 6000, 10)).toBe(false);
      expect(await login.recordPoll('r2', T0 + 5000, T0 + 11_000, 10)).toBe(true);
      expect(await login.getLoginRequest('r2')).toMatchObject({ lastPollAt: T0 + 11_000, intervalS: 10 });
    });

    it('lists live person certificates with the users\' current groups, revokes once, and prunes old ones', async () => {
      const { people, login } = await open();
      await people.insertUser(user('alice', { groups: ['now'] }));
      await people.insertUser(user('bob', { state: 'disabled' }));
      await login.insertUserCert(cert('0B', 'alice', { flow: 'device', mfaAt: null }));
      await login.insertUserCert(cert('0A', 'alice'));
      await login.insertUserCert(cert('0C', 'alice', { notAfter: T0 + MIN }));
      await login.insertUserCert(cert('0D', 'bob'));
      await expect(login.insertUserCert(cert('0E', 'nobody'))).rejects.toThrow();
      await expect(login.insertUserCert(cert('0A', 'alice'))).rejects.toThrow();
      expect(await login.getUserCert('0B')).toEqual(cert('0B', 'alice', { flow: 'device', mfaAt: null }));
      const live = await login.liveUserCerts(T0 + MIN);
      expect(live.map((c) => c.serial)).toEqual(['0A', '0B']);
      expect(live[0]!.groups).toEqual(['now']);
      expect(await login.revokeUserCert('0A', T0 + 2, 'lost')).toBe(true);
      expect(await login.revokeUserCert('0A', T0 + 3, 'again')).toBe(false);
      expect(await login.revokeUserCert('FF', T0 + 3, 'unknown')).toBe(false);
      expect(await login.getUserCert('0A')).toMatchObject({ revokedAt: T0 + 2, revokedReason: 'lost' });
      expect(await login.revokeUserCerts('alice', T0 + 4, 'left')).toBe(2);
      expect(await login.revokeUserCerts('alice', T0 + 5, 'left')).toBe(0);
      expect(await login.liveUserCerts(T0)).toEqual([]);
      // Certificates expired over a day ago go at the next insert.
      await login.insertUserCert(cert('10', 'alice', { issuedAt: T0 + MIN + 86_400_000, notAfter: T0 + 2 * 86_400_000 }));
      expect(await login.getUserCert('0C')).toBeDefined();
      await login.insertUserCert(cert('11', 'alice', { issuedAt: T0 + MIN + 86_400_001, notAfter: T0 + 2 * 86_400_000 }));
      expect(await login.getUserCert('0C')).toBeUndefined();
      expect(await login.getUserCert('0A')).toBeDefined();
    });
  });

  describe(`${name}: devices`, () => {
    it('spends an enrolment token once under concurrency, refuses an expired or unknown one, and says which', async () => {
      const { devices } = await open();
      const t = { hash: 'h1', deviceId: 'lap', owner: 'alice', attributes: { b: '2', a: '1' }, certTtlSeconds: 60, createdAt: T0, expiresAt: T0 + 1000 };
      await devices.insertDeviceToken(t);
      await devices.insertDeviceToken({ ...t, hash: 'h2', expiresAt: T0 + 10 });
      await expect(devices.insertDeviceToken(t)).rejects.toThrow();
      expect(await devices.hasPendingDeviceToken('lap', T0)).toBe(true);
      const both = await Promise.all([devices.consumeDeviceToken('h1', T0), devices.consumeDeviceToken('h1', T0)]);
      expect(wins(both)).toBe(1);
      expect(both.find((r) => r.ok)).toEqual({ ok: true, token: t });
      expect(both.find((r) => !r.ok)).toEqual({ ok: false, reason: 'used' });
      expect(await devices.consumeDeviceToken('h2', T0 + 10)).toEqual({ ok: false, reason: 'expired' });
      expect(await devices.consumeDeviceToken('nope', T0)).toEqual({ ok: false, reason: 'unknown' });
      expect(await devices.hasPendingDeviceToken('lap', T0 + 9)).toBe(true);
      expect(await devices.hasPendingDeviceToken('lap', T0 + 10)).toBe(false);
    });

    it('keeps a device id and SPIFFE ID once, lists by id with a limit, and only the newest posture reports', async () => {
      const { devices } = await open();
      for (const id of ['lap', 'Desk', 'zz']) expect(await devices.insertDevice(device(id))).toBe(true);
      expect(await devices.insertDevice(device('lap', { spiffeId: 'spiffe://td/device/other' }))).toBe(false);
      expect(await devices.insertDevice(device('lap2', { spiffeId: 'spiffe://td/device/lap' }))).toBe(false);
      expect(await devices.getDevice('lap')).toEqual(device('lap'));
      expect(await devices.getDevice('lap2')).toBeUndefined();
      expect((await devices.listDevices(10)).map((d) => d.id)).toEqual(['Desk', 'lap', 'zz']);
      expect((await devices.listDevices(2)).map((d) => d.id)).toEqual(['Desk', 'lap']);
      for (let i = 0; i < 7; i++) await devices.insertPostureReport({ deviceId: 'lap', receivedAt: T0 + i, reportedAt: T0 + i - 1, report: `{"n":${i}}` }, 3);
      await devices.insertPostureReport({ deviceId: 'zz', receivedAt: T0, reportedAt: T0, report: '{"z":1}' }, 3);
      expect((await devices.listPostureReports('lap', 10)).map((r) => r.report)).toEqual(['{"n":6}', '{"n":5}', '{"n":4}']);
      expect(await devices.listPostureReports('lap', 1)).toEqual([{ deviceId: 'lap', receivedAt: T0 + 6, reportedAt: T0 + 5, report: '{"n":6}' }]);
      expect(await devices.listPostureReports('zz', 10)).toHaveLength(1);
      expect(await devices.listPostureReports('Desk', 10)).toEqual([]);
    });

    it('keeps the newest posture reports when many arrive at once', async () => {
      const { devices } = await open();
      await devices.insertDevice(device('lap'));
      await Promise.all(Array.from({ length: 40 }, (_, i) => devices.insertPostureReport({ deviceId: 'lap', receivedAt: T0 + i, reportedAt: T0, report: `{"n":${i}}` }, 3)));
      expect(await devices.listPostureReports('lap', 100)).toHaveLength(3);
    });

    it('renews and revokes a device once (concurrently too), and its certificates join the revocation list', async () => {
      const { devices, core } = await open();
      await devices.insertDevice(device('lap'));
      await core.recordIssuedSvid({ serial: 'AA3', entryId: 'device:lap', spiffeId: 'spiffe://td/device/lap', notAfter: T0 + 600_000, issuedAt: T0 });
      const renewed = { certSerial: 'BB01', certNotAfter: T0 + 1_200_000, certSpki: Buffer.from([9, 9]), certIssuedAt: T0 + 600_000 };
      expect(await devices.updateDeviceCert('lap', renewed)).toBe(true);
      await core.recordIssuedSvid({ serial: 'BB01', entryId: 'device:lap', spiffeId: 'spiffe://td/device/lap', notAfter: T0 + 1_200_000, issuedAt: T0 + 600_000 });
      expect(await devices.getDevice('lap')).toEqual(device('lap', renewed));
      expect(await devices.isDeviceSerial('lap', 'AA3')).toBe(true);
      expect(await devices.isDeviceSerial('lap', 'BB01')).toBe(true);
      expect(await devices.isDeviceSerial('other', 'BB01')).toBe(false);
      expect(await core.isSerialRevoked('BB01')).toBe(false);

      const both = await Promise.all([devices.revokeDevice('lap', T0 + 700_000, 'stolen'), devices.revokeDevice('lap', T0 + 700_000, 'stolen')]);
      expect(wins(both)).toBe(1);
      const revoked = device('lap', { ...renewed, revokedAt: T0 + 700_000, revokedReason: 'stolen' });
      expect(both.find((r) => r.ok)).toEqual({ ok: true, device: revoked });
      expect(both.find((r) => !r.ok)).toEqual({ ok: false, reason: 'already', device: revoked });
      expect(await devices.revokeDevice('nope', T0, 'x')).toEqual({ ok: false, reason: 'missing' });
      expect(await devices.updateDeviceCert('lap', { ...renewed, certSerial: 'CC' })).toBe(false);
      expect(await devices.updateDeviceCert('nope', renewed)).toBe(false);
      expect(await devices.getDevice('lap')).toEqual(revoked);
      expect(await core.isSerialRevoked('BB01')).toBe(true);
      expect(await core.listRevocations(T0 + 700_000, 0)).toEqual([{
        entryId: 'device:lap', spiffeId: 'spiffe://td/device/lap', revokedAt: T0 + 700_000, reason: 'stolen', deleted: false,
        serials: [{ serial: 'BB01', notAfter: T0 + 1_200_000 }],
      }]);
      // Kept after revocation: the id cannot be enrolled again.
      expect(await devices.insertDevice(device('lap'))).toBe(false);
    });
  });

  describe(`${name}: gateways`, () => {
    it('refuses a taken name or SPIFFE ID, lists by name, and deletes a gateway with its codes', async () => {
      const { gateways } = await open();
      for (const n of ['web', 'Admin', 'api']) expect(await gateways.insertGateway(gw(n))).toBe(true);
      expect(await gateways.insertGateway(gw('web', { spiffeId: 'spiffe://td/gateway/new' }))).toBe(false);
      expect(await gateways.insertGateway(gw('web2', { spiffeId: 'spiffe://td/gateway/web' }))).toBe(false);
      expect(await gateways.getGateway('web')).toEqual(gw('web'));
      expect(await gateways.gatewayBySpiffeId('spiffe://td/gateway/api')).toEqual(gw('api'));
      expect(await gateways.gatewayBySpiffeId('spiffe://td/gateway/web2')).toBeUndefined();
      expect((await gateways.listGateways()).map((g) => g.name)).toEqual(['Admin', 'api', 'web']);
      await gateways.insertGatewayCode(code('c1', 'web'), T0);
      await gateways.insertGatewayCode(code('c2', 'api'), T0);
      expect(await gateways.deleteGateway('web')).toBe(true);
      expect(await gateways.deleteGateway('web')).toBe(false);
      expect(await gateways.getGateway('web')).toBeUndefined();
      expect(await gateways.takeGatewayCode('c1')).toBeUndefined();
      expect(await gateways.takeGatewayCode('c2')).toEqual(code('c2', 'api'));
    });

    it('redeems a code at most once under concurrency, and drops expired codes at the next insert', async () => {
      const { gateways } = await open();
      await gateways.insertGateway(gw('web'));
      await gateways.insertGatewayCode(code('c1', 'web'), T0);
      const both = await Promise.all([gateways.takeGatewayCode('c1'), gateways.takeGatewayCode('c1')]);
      expect(wins(both)).toBe(1);
      expect(both.find((c) => c !== undefined)).toEqual(code('c1', 'web'));
      expect(await gateways.takeGatewayCode('c1')).toBeUndefined();
      await gateways.insertGatewayCode(code('c2', 'web', T0 + MIN), T0);
      await expect(gateways.insertGatewayCode(code('c2', 'web'), T0)).rejects.toThrow();
      await gateways.insertGatewayCode(code('c3', 'web', T0 + 2 * MIN), T0 + MIN - 1);
      await gateways.insertGatewayCode(code('c4', 'web', T0 + 2 * MIN), T0 + MIN);
      // c2 ended at T0 + MIN: gone at an insert then; c3 stays.
      expect(await gateways.takeGatewayCode('c2')).toBeUndefined();
      expect(await gateways.takeGatewayCode('c3')).toEqual(code('c3', 'web', T0 + 2 * MIN));
    });
  });
}
