/**
 * People (issue 12): local users an admin adds (`tessera user add`), and users of the OIDC provider,
 * created and updated at each sign-in from the ID token's claims. A user's principal is
 * `spiffe://<td>/user/<username>`; disabling a user ends its sessions and refuses its sign-ins.
 */
import { createHash, randomBytes } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import type { PeopleStore, UserRecord } from '../store/store.js';

/** A username: the last segment of the user's SPIFFE ID. */
export const USERNAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** A local group name (what `--group` takes). */
export const GROUP = /^[a-z0-9][a-z0-9._-]{0,62}$/;
/** A group name from OIDC claims: printable, no control characters; others are dropped. */
export const CLAIM_GROUP = /^[\x21-\x7e](?:[\x20-\x7e]{0,126}[\x21-\x7e])?$/;
const MAX_GROUPS = 64;

/**
 * The username of a new OIDC user, from its claims: `preferred_username`, else the local part of a
 * verified `email`, else `oidc-<16 hex of SHA-256(issuer ‖ sub)>`; lowercased, characters outside
 * `a-z 0-9 . _ -` replaced by `-`, leading non-alphanumerics dropped, at most 63 characters. The name
 * is chosen once, at the first sign-in, and bound to (issuer, sub): later claim changes (a new
 * email) do not rename the user.
 *
 * @example deriveUsername({ sub: '42', preferred_username: 'Ada.Lovelace' }, 'https://idp') // 'ada.lovelace'
 */
export function deriveUsername(claims: Record<string, unknown>, issuer: string): string {
  const candidates: unknown[] = [claims.preferred_username];
  if (typeof claims.email === 'string' && claims.email_verified === true) candidates.push(claims.email.split('@')[0]);
  for (const c of candidates) {
    if (typeof c !== 'string') continue;
    const name = c.toLowerCase().replace(/[^a-z0-9._-]/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 63);
    if (USERNAME.test(name)) return name;
  }
  return `oidc-${createHash('sha256').update(`${issuer}\n${String(claims.sub)}`).digest('hex').slice(0, 16)}`;
}

/** The groups of an OIDC user from claim `claim` (an array of strings, or one string); invalid items dropped. */
export function claimGroups(claims: Record<string, unknown>, claim: string): string[] {
  const v = claims[claim];
  const list = typeof v === 'string' ? [v] : Array.isArray(v) ? v : [];
  return [...new Set(list.filter((g): g is string => typeof g === 'string' && CLAIM_GROUP.test(g)))].slice(0, MAX_GROUPS).sort();
}

export class UserService {
  constructor(private readonly store: PeopleStore, private readonly opts: { trustDomain: string; now: () => number }) {}

  idOf(username: string): string {
    return `spiffe://${this.opts.trustDomain}/user/${username}`;
  }

  async get(username: string): Promise<UserRecord | undefined> {
    return USERNAME.test(username) ? this.store.getUser(username) : undefined;
  }

  /** The user, or TESSERA_NOT_FOUND. */
  async require(username: string): Promise<UserRecord> {
    const u = await this.get(username);
    if (!u) throw new TesseraError('TESSERA_NOT_FOUND', 'no such user');
    return u;
  }

  async list(limit = 10_000): Promise<UserRecord[]> {
    return this.store.listUsers(limit);
  }

  /** Adds a local user (no credential yet: it enrols through a one-time link). */
  async addLocal(input: { username: string; groups: string[]; email?: string; displayName?: string }, by: string): Promise<UserRecord> {
    if (!USERNAME.test(input.username)) throw new TesseraError('TESSERA_BAD_REQUEST', 'a username is 1..63 of a-z 0-9 . _ - starting with a letter or digit');
    for (const g of input.groups) if (!GROUP.test(g)) throw new TesseraError('TESSERA_BAD_REQUEST', 'a group name is 1..63 of a-z 0-9 . _ - starting with a letter or digit');
    const now = this.opts.now();
    const user: UserRecord = {
      username: input.username, spiffeId: this.idOf(input.username), source: 'local', oidcIssuer: null, oidcSubject: null,
      email: input.email ?? null, displayName: input.displayName ?? null, groups: [...new Set(input.groups)].sort(), state: 'active',
      webauthnId: randomBytes(16).toString('base64url'), createdAt: now, createdBy: by, updatedAt: now, disabledReason: null,
    };
    if (!(await this.store.insertUser(user))) throw new TesseraError('TESSERA_USER_CONFLICT', `user ${input.username} exists`);
    return user;
  }

  /**
   * The user bound to this OIDC identity, created at its first sign-in and updated (email, name,
   * groups) at each one. A derived name already taken by anyone else is refused (TESSERA_USER_CONFLICT):
   * never merged into another user.
   */
  async upsertOidc(issuer: string, claims: Record<string, unknown>, groupsClaim: string): Promise<UserRecord> {
    const sub = claims.sub;
    if (typeof sub !== 'string' || sub.length === 0 || sub.length > 255) throw new TesseraError('TESSERA_OIDC_FAILED', 'the ID token has no usable sub');
    const email = typeof claims.email === 'string' && claims.email.length <= 254 ? claims.email : null;
    const displayName = typeof claims.name === 'string' && claims.name.length <= 256 ? claims.name : null;
    const groups = claimGroups(claims, groupsClaim);
    const now = this.opts.now();
    const existing = await this.store.getUserBySubject(issuer, sub);
    if (existing) {
      const updated: UserRecord = { ...existing, email, displayName, groups, updatedAt: now };
      await this.store.updateUser(updated);
      return updated;
    }
    const username = deriveUsername(claims, issuer);
    const user: UserRecord = {
      username, spiffeId: this.idOf(username), source: 'oidc', oidcIssuer: issuer, oidcSubject: sub, email, displayName, groups,
      state: 'active', webauthnId: randomBytes(16).toString('base64url'), createdAt: now, createdBy: `oidc:${issuer}`, updatedAt: now, disabledReason: null,
    };
    if (!(await this.store.insertUser(user))) {
      // A concurrent first sign-in of the same identity won the race: that one is this user.
      const raced = await this.store.getUserBySubject(issuer, sub);
      if (raced) return raced;
      throw new TesseraError('TESSERA_USER_CONFLICT', `the username ${username} derived from this OIDC identity belongs to another user`);
    }
    return user;
  }

  /** Disables the user and ends its sessions; returns how many sessions ended. */
  async disable(username: string, reason: string): Promise<{ user: UserRecord; sessionsEnded: number }> {
    const u = await this.require(username);
    if (u.state === 'disabled') throw new TesseraError('TESSERA_CONFLICT', `user ${username} is already disabled`);
    const user: UserRecord = { ...u, state: 'disabled', disabledReason: reason, updatedAt: this.opts.now() };
    await this.store.updateUser(user);
    return { user, sessionsEnded: await this.store.deleteSessionsOf(username) };
  }

  async enable(username: string): Promise<UserRecord> {
    const u = await this.require(username);
    if (u.state === 'active') throw new TesseraError('TESSERA_CONFLICT', `user ${username} is not disabled`);
    const user: UserRecord = { ...u, state: 'active', disabledReason: null, updatedAt: this.opts.now() };
    await this.store.updateUser(user);
    return user;
  }

  /** Removes the user with its credentials, sessions and pending links. */
  async remove(username: string): Promise<UserRecord> {
    const u = await this.require(username);
    await this.store.deleteUser(username);
    return u;
  }

  /** Groups with their members. */
  async groups(): Promise<{ name: string; source: string; members: string[] }[]> {
    const users = await this.list();
    return (await this.store.listGroups()).map((g) => ({
      name: g.name, source: g.source, members: users.filter((u) => u.groups.includes(g.name)).map((u) => u.username),
    }));
  }
}
