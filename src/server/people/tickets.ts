import { createHash, randomBytes } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import type { AuthTicketRecord, PeopleStore } from '../store/store.js';

/** Kinds of one-time tickets; each is consumed only as its own kind. */
export type TicketKind = 'enrol' | 'enrolling' | 'console' | 'webauthn.reg' | 'webauthn.auth' | 'mfa' | 'oidc';

/** Kinds a client creates without any credential (the sign-in routes): the ones capped in all. */
const UNAUTHENTICATED: readonly TicketKind[] = ['webauthn.auth', 'mfa', 'oidc'];
/** Default cap on live tickets of those kinds (PeopleOptions.maxPendingTickets). */
export const DEFAULT_MAX_PENDING_TICKETS = 50_000;

/** A bearer token we mint: 32 random bytes, base64url (43 characters). */
export const TOKEN = /^[A-Za-z0-9_-]{43}$/;

export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/** SHA-256 of a bearer value (hex): what the store holds instead of the value. */
export function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/**
 * One-time tickets in the store, by the hash of their bearer value: enrolment and console links,
 * WebAuthn challenges, OIDC states and half-done sign-ins. A ticket is consumed atomically (one
 * winner among concurrent uses) and only before it expires.
 */
export class Tickets {
  constructor(private readonly store: PeopleStore, private readonly now: () => number, private readonly maxPending = DEFAULT_MAX_PENDING_TICKETS) {}

  /**
   * Stores a ticket for `token` (a fresh one unless given, e.g. a WebAuthn challenge) and returns the token.
   * Tickets anyone may cause (challenges, half-done sign-ins, OIDC states) are capped in all:
   * over `maxPending` live ones, TESSERA_RATE_LIMITED until some expire (5 to 10 minutes).
   */
  async issue(kind: TicketKind, username: string | null, data: unknown, ttlMs: number, token = newToken()): Promise<{ token: string; expiresAt: number }> {
    const now = this.now();
    if (UNAUTHENTICATED.includes(kind) && (await this.store.countLiveTickets(UNAUTHENTICATED, now)) >= this.maxPending) {
      throw new TesseraError('TESSERA_RATE_LIMITED', 'too many sign-ins are under way on this control plane: retry in a few minutes');
    }
    const expiresAt = now + ttlMs;
    await this.store.insertTicket({ hash: tokenHash(token), kind, username, data: JSON.stringify(data), createdAt: now, expiresAt }, now);
    return { token, expiresAt };
  }

  /** Uses the ticket up; undefined when it is unknown, of another kind, used or expired. */
  async consume(kind: TicketKind, token: string | undefined): Promise<AuthTicketRecord | undefined> {
    if (token === undefined || token.length > 512) return undefined;
    return this.store.consumeTicket(tokenHash(token), kind, this.now());
  }

  /** The ticket while unused and unexpired, without using it up. */
  async peek(kind: TicketKind, token: string | undefined): Promise<AuthTicketRecord | undefined> {
    if (token === undefined || token.length > 512) return undefined;
    const t = await this.store.getTicket(tokenHash(token), kind);
    return t && t.usedAt === null && t.expiresAt > this.now() ? t : undefined;
  }

  /** Replaces an unused ticket's data if it is still `from` (compare and set). */
  async update(token: string, from: AuthTicketRecord, data: unknown): Promise<boolean> {
    return this.store.replaceTicketData(tokenHash(token), from.data, JSON.stringify(data));
  }
}
