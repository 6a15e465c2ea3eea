/**
 * The key server's side of distributed key generation (issue 15): one {@link DkgParticipant} per
 * session, driven by a relay (the admin's CLI) through the routes of src/core/wire/dkg.ts. Free of
 * any transport (server.ts mounts it), so it can be tested directly.
 *
 * Design:
 * - Sessions live in memory only, keyed by the session id of their parameters (base64url). A
 *   restarted key server drops out of its running sessions, which the protocol tolerates (it
 *   finishes with the others if at least t remain). At most `maxSessions` (default 8) sessions hold
 *   secrets at once; one more is TESSERA_RATE_LIMITED (429: a capacity limit that clears when
 *   sessions end or expire, so "retry later" is the right advice). A second live session for the
 *   same (policy, epoch) is TESSERA_CONFLICT.
 * - Every session expires `ttlMs` (default 10 min) after its start: it is aborted and its secrets
 *   wiped, whatever its state; a committed session is only kept until then to answer retries.
 * - A session id is never accepted twice (even after the session ended), so old messages cannot be
 *   replayed into a new run. The memory of used ids is bounded (the last {@link USED_IDS} ids) and
 *   lost on restart; the state checks at start (a new key only for an epoch this server does not
 *   hold, a refresh or reshare only from exactly the current share) make an older replay harmless.
 * - The new share of a finished session stays in memory, never in the ShareStore, until the commit
 *   with the signed record: /v1/evaluate cannot use it, and a crash before the commit loses it (the
 *   server then counts as one that dropped out; nothing half-installed survives a restart). The
 *   commit writes it sealed with the KEK over the current share (ShareStore.replaceCurrent).
 * - The signer is this server's SVID private key at the start (kept for the session); peers' keys
 *   come from the chains the relay hands over, checked against this trust domain's current CAs.
 *
 * Nothing here logs; no error message carries a share, scalar, box or message payload.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { TesseraError, isTesseraError } from '../core/errors.js';
import { body } from '../common/api/validate.js';
import { DkgParticipant, type DkgKind, type DkgResult, type Share } from '../core/secrets/index.js';
import { dkgSigner, dkgVerifier, MAX_DKG_CHAIN } from '../core/secrets/dkg-identity.js';
import { DKG_SIGNATURE_DOMAIN, peekDkgMessage } from '../core/secrets/dkg-wire.js';
import { dkgPublicResultToWire, isDkgSessionId, parseDkgParamsWire, MAX_DKG_SERVERS } from '../core/secrets/dkg-params-wire.js';
import { verifySecretPolicy, type SecretPolicyRecord } from '../core/secrets/policy-record.js';
import type { DkgAbortResponse, DkgCommitResponse, DkgNextResponse, DkgStartResponse } from '../core/wire/dkg.js';
import type { ShareStore } from './store.js';

export const DEFAULT_DKG_TTL_MS = 10 * 60_000;
export const DEFAULT_DKG_MAX_SESSIONS = 8;
/** How many used session ids are remembered (oldest forgotten first). */
export const USED_IDS = 4096;
/** Most messages in one set the relay posts (every party once, with room for equivocations it saw). */
export const MAX_DKG_SET = 4 * 2 * MAX_DKG_SERVERS;

export type DkgSessionEvent = 'started' | 'finished' | 'committed' | 'aborted' | 'expired';

export interface DkgIdentity {
  spiffeId: string;
  /** The current SVID's private key (P-256). */
  key: KeyObject;
}

export interface DkgSessionsOptions {
  store: ShareStore;
  /** This server's current SVID (TlsSource material); undefined while it has none. */
  identity: () => DkgIdentity | undefined;
  /** CA certificates (DER) of this trust domain's current bundle. */
  trustedCas: () => Buffer[];
  trustDomain: string;
  ttlMs?: number;
  maxSessions?: number;
  /** Milliseconds; for tests. */
  now?: () => number;
  /** Session lifecycle (metrics). */
  onEvent?: (event: DkgSessionEvent) => void;
}

/** Public facts about a session (for the audit and the routes' authorization). */
export interface DkgSessionInfo {
  session: string;
  kind: DkgKind;
  policy: string;
  epoch: number;
}

interface Live extends DkgSessionInfo {
  me: string;
  expires: number;
  participant: DkgParticipant;
  state: 'running' | 'done' | 'committed';
  /** Generation of the share this server deals from (undefined: it deals none). */
  base: number | undefined;
  /** Generation of the share the commit replaces (a dealer's, or a stale one a receiver held; undefined: none). */
  replaces: number | undefined;
  result?: DkgResult;
  last?: { key: string; response: DkgNextResponse };
  committed?: { record: string; response: DkgCommitResponse };
}

const notFound = (): TesseraError => new TesseraError('TESSERA_NOT_FOUND', 'no such key-generation session here (unknown, expired, aborted, or this server restarted)');
const conflict = (message: string): TesseraError => new TesseraError('TESSERA_CONFLICT', message);
const badRequest = (message: string): TesseraError => new TesseraError('TESSERA_BAD_REQUEST', message);
const paramsInvalid = (message: string): TesseraError => new TesseraError('TESSERA_DKG_PARAMS_INVALID', message);

function wipeShare(s: Share | undefined): void {
  s?.value.fill(0);
}

export class DkgSessions {
  private readonly sessions = new Map<string, Live>();
  /** Used session ids (insertion order = age). */
  private readonly used = new Set<string>();
  private readonly ttl: number;
  private readonly max: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly opts: DkgSessionsOptions) {
    this.ttl = opts.ttlMs ?? DEFAULT_DKG_TTL_MS;
    this.max = opts.maxSessions ?? DEFAULT_DKG_MAX_SESSIONS;
    this.now = opts.now ?? Date.now;
  }

  /** Wipes expired sessions every `intervalMs` too (besides on every call). Unref'd. */
  startSweeper(intervalMs = Math.max(250, Math.min(30_000, Math.floor(this.ttl / 4)))): void {
    this.timer ??= setInterval(() => this.sweep(), intervalMs).unref();
  }

  /** Aborts every session and stops the sweeper (server shutdown). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const id of [...this.sessions.keys()]) this.drop(id, 'aborted');
  }

  /** Sessions holding secrets (running, or finished and waiting for their commit). */
  get active(): number {
    this.sweep();
    return [...this.sessions.values()].filter((s) => s.state !== 'committed').length;
  }

  /** Public facts of a live session, or undefined. */
  info(id: string): DkgSessionInfo | undefined {
    this.sweep();
    const s = this.sessions.get(id);
    return s === undefined ? undefined : { session: s.session, kind: s.kind, policy: s.policy, epoch: s.epoch };
  }

  /** Expires sessions past their TTL: aborted, secrets wiped, forgotten (their ids stay used). */
  sweep(): void {
    const t = this.now();
    for (const [id, s] of this.sessions) if (s.expires <= t) this.drop(id, s.state === 'committed' ? undefined : 'expired');
  }

  private drop(id: string, event: DkgSessionEvent | undefined): void {
    const s = this.sessions.get(id);
    if (s === undefined) return;
    this.sessions.delete(id);
    s.participant.abort();
    wipeShare(s.result?.share);
    if (event) this.opts.onEvent?.(event);
  }

  private remember(id: string): void {
    this.used.add(id);
    while (this.used.size > USED_IDS) this.used.delete(this.used.values().next().value as string);
  }

  private live(id: string): Live {
    if (!isDkgSessionId(id)) throw badRequest('the session in the path must be the base64url session id of the parameters');
    this.sweep();
    const s = this.sessions.get(id);
    if (s === undefined) throw notFound();
    return s;
  }

  /** POST /v1/dkg. */
  start(input: unknown): DkgStartResponse {
    const b = body(input, ['params', 'certificates']);
    const { params, wire } = parseDkgParamsWire(b.params, this.opts.trustDomain);
    const certificates = checkCertificates(b.certificates);
    this.sweep();
    const id = wire.session;
    if (this.used.has(id) || this.sessions.has(id)) throw conflict('this session id was already used here: start a new session with a fresh id');
    if (this.active >= this.max) throw new TesseraError('TESSERA_RATE_LIMITED', `this key server already runs ${this.max} key-generation sessions: retry when one ends`);
    for (const s of this.sessions.values()) {
      if (s.state === 'done' && s.policy === wire.policy && s.epoch === wire.epoch) throw conflict('a finished key-generation session for this policy and epoch waits here for its commit (tessera secret policy commit), or for its 10-minute TTL');
      if (s.state === 'running' && s.policy === wire.policy && s.epoch === wire.epoch) throw conflict('another key-generation session for this policy and epoch is under way here');
    }
    const me = this.opts.identity();
    if (me === undefined) throw new TesseraError('TESSERA_UNAVAILABLE', 'the key server has no identity yet');
    const receiver = params.servers.find((s) => s.spiffeId === me.spiffeId);
    const dealer = params.kind === 'reshare' ? params.old.servers.find((s) => s.spiffeId === me.spiffeId) : receiver;
    if (receiver === undefined && dealer === undefined) throw paramsInvalid('this key server is not a participant of the session');
    for (const id of Object.keys(certificates)) {
      if (!params.servers.some((s) => s.spiffeId === id) && !(params.kind === 'reshare' && params.old.servers.some((s) => s.spiffeId === id))) throw badRequest('"certificates" names a SPIFFE ID that is not a participant');
    }

    const cur = this.opts.store.get(params.policyId, params.epoch);
    const sameCommitments = (cs: Uint8Array[]): boolean => cur !== undefined && cur.commitments.length === cs.length && cur.commitments.every((c, k) => Buffer.from(c).equals(Buffer.from(cs[k]!)));
    let share: Share | undefined;
    let base: number | undefined;
    let replaces: number | undefined;
    switch (params.kind) {
      case 'dkg':
        if (cur !== undefined) throw conflict('this key server already holds a share of this policy and epoch: a new key is a new epoch');
        break;
      case 'refresh':
      case 'reshare': {
        const old = params.kind === 'refresh' ? params.commitments : params.old.commitments;
        if (dealer === undefined) {
          // It receives only: a new server of the reshare, or one whose share is stale (another
          // generation: it missed a commit), which the new share replaces at the commit. A server
          // holding the current share deals instead.
          if (cur !== undefined && sameCommitments(old)) throw conflict('this key server holds the current share of this policy and epoch but is not a dealer of the reshare');
          replaces = cur?.generation;
          break;
        }
        if (cur === undefined) throw notFound2();
        if (!sameCommitments(old) || cur.index !== dealer.index) throw conflict('this key server\'s current share of this policy and epoch has other commitments or another index than the session names');
        share = { index: cur.index, value: new Uint8Array(cur.value) };
        base = cur.generation;
        replaces = base;
        break;
      }
    }

    const verifier = dkgVerifier(certificates, this.opts.trustedCas(), this.opts.trustDomain, this.now());
    let started: ReturnType<typeof DkgParticipant.start>;
    try {
      started = DkgParticipant.start(params, { spiffeId: me.spiffeId, ...(share ? { share } : {}) }, dkgSigner(me.key), verifier);
    } finally {
      wipeShare(share);
    }
    const { participant, message } = started;
    // Our own chain must be in the request and be our current SVID, or no peer could check us either.
    const json = Buffer.from(message.payload, 'base64url');
    if (!verifier.verify(me.spiffeId, Buffer.concat([Buffer.from(DKG_SIGNATURE_DOMAIN, 'utf8'), json]), new Uint8Array(Buffer.from(message.signature, 'base64url')))) {
      participant.abort();
      throw paramsInvalid('"certificates" lacks this key server\'s current SVID chain (or it does not verify)');
    }
    this.remember(id);
    this.sessions.set(id, { session: id, kind: params.kind, policy: params.policyId, epoch: params.epoch, me: me.spiffeId, expires: this.now() + this.ttl, participant, state: 'running', base, replaces });
    this.opts.onEvent?.('started');
    return { session: id, round: peekDkgMessage(message).round, message };
  }

  /**
   * POST /v1/dkg/:session/next. The very same set posted again returns the same answer (a relay's
   * retry); anything the protocol cannot continue from aborts the session (TESSERA_DKG_ABORTED).
   */
  next(id: string, input: unknown): DkgNextResponse {
    const s = this.live(id);
    const b = body(input, ['set']);
    if (!Array.isArray(b.set) || b.set.length > MAX_DKG_SET) throw badRequest(`"set" must be a list of at most ${MAX_DKG_SET} messages`);
    const key = createHash('sha256').update(JSON.stringify(b.set)).digest('base64url');
    if (s.last?.key === key) return s.last.response;
    if (s.state !== 'running') throw conflict('the session has finished here: commit or abort it');
    let step: ReturnType<DkgParticipant['next']>;
    try {
      step = s.participant.next(b.set);
    } catch (err) {
      this.drop(id, 'aborted');
      if (isTesseraError(err)) throw err;
      throw new TesseraError('TESSERA_DKG_ABORTED', 'the key generation is aborted: internal error');
    }
    const response: DkgNextResponse = { session: id, round: peekDkgMessage(step.message).round, message: step.message };
    if (step.done) {
      s.state = 'done';
      s.result = step.done;
      response.done = dkgPublicResultToWire(step.done);
      this.opts.onEvent?.('finished');
    }
    s.last = { key, response };
    return response;
  }

  /**
   * POST /v1/dkg/:session/commit: installs the new share once the record signed by the trust domain
   * names exactly this session's result; idempotent for the same record.
   */
  commit(id: string, input: unknown, verified?: SecretPolicyRecord): DkgCommitResponse {
    const s = this.live(id);
    const b = body(input, ['record']);
    const payload = typeof b.record === 'object' && b.record !== null ? (b.record as { payload?: unknown }).payload : undefined;
    if (s.state === 'committed') {
      if (s.committed!.record === payload) return { ...s.committed!.response, committed: false };
      throw conflict('the session is already committed with another record');
    }
    if (s.state !== 'done' || s.result === undefined) throw conflict('the session has not finished here');
    const record = verified ?? verifySecretPolicy(b.record, this.opts.trustedCas());
    const r = s.result;
    const mismatch = (what: string): TesseraError => conflict(`the record does not name this session's result: ${what}`);
    if (record.id !== s.policy || record.epoch !== s.epoch) throw mismatch('another policy or epoch');
    if (record.t !== r.t || record.n !== r.servers.length) throw mismatch('another threshold or number of servers');
    const commitments = r.commitments.map((c) => Buffer.from(c).toString('base64url'));
    if (record.commitments.length !== commitments.length || record.commitments.some((c, k) => c !== commitments[k])) throw mismatch('other commitments');
    const servers = [...record.servers].sort((x, y) => x.index - y.index);
    if (servers.some((x, k) => x.index !== r.servers[k]!.index || x.spiffeId !== r.servers[k]!.spiffeId)) throw mismatch('other key servers or indices');
    if (s.kind === 'dkg' ? record.generation !== 1 : s.base !== undefined ? record.generation !== s.base + 1 : record.generation < 2) throw mismatch('another share generation');
    const mine = record.servers.find((x) => x.spiffeId === s.me);
    let index: number | null = null;
    if (r.share !== undefined) {
      if (mine?.index !== r.share.index) throw mismatch('this key server under another index');
      index = r.share.index;
      this.opts.store.replaceCurrent({ policyId: s.policy, epoch: s.epoch, generation: record.generation, t: record.t, n: record.n, index, value: new Uint8Array(r.share.value), commitments: r.commitments }, s.replaces);
    } else {
      if (mine !== undefined) throw mismatch('this key server, which the reshare leaves out');
      this.opts.store.deleteGeneration(s.policy, s.epoch, s.base!);
    }
    wipeShare(r.share);
    delete s.result;
    s.state = 'committed';
    const response: DkgCommitResponse = { policy: s.policy, epoch: s.epoch, generation: record.generation, index, committed: true };
    s.committed = { record: payload as string, response };
    this.opts.onEvent?.('committed');
    return response;
  }

  /** The record in a commit body, verified against the trust bundle; undefined when it does not verify. */
  verifiedRecord(input: unknown): SecretPolicyRecord | undefined {
    const signed = typeof input === 'object' && input !== null ? (input as { record?: unknown }).record : undefined;
    try {
      return verifySecretPolicy(signed, this.opts.trustedCas());
    } catch {
      return undefined;
    }
  }

  /**
   * POST /v1/dkg/commit: the commit of a finished session found by the signed record it names (policy
   * and epoch), for a commit the relay could not deliver (`tessera secret policy commit`). Idempotent:
   * a server that already holds what the record names answers `committed: false`. Without a finished
   * session (its TTL passed, or the key server restarted) and without that share: TESSERA_NOT_FOUND.
   * A server the record does not name deletes an older share of the epoch (a reshare left it out),
   * session or not.
   */
  commitRecord(input: unknown, verified?: SecretPolicyRecord): DkgCommitResponse {
    const b = body(input, ['record']);
    const record = verified ?? verifySecretPolicy(b.record, this.opts.trustedCas());
    this.sweep();
    const payload = (b.record as { payload?: unknown }).payload;
    const sessions = [...this.sessions.values()].filter((x) => x.policy === record.id && x.epoch === record.epoch);
    const waiting = sessions.find((x) => x.state === 'done') ?? sessions.find((x) => x.state === 'committed' && x.committed!.record === payload);
    if (waiting !== undefined) return this.commit(waiting.session, input, record);
    if (sessions.some((x) => x.state === 'running')) throw conflict('the key-generation session for this policy and epoch has not finished here');
    const mine = record.servers.find((x) => x.spiffeId === this.opts.identity()?.spiffeId);
    const cur = this.opts.store.get(record.id, record.epoch);
    const held = cur !== undefined && mine !== undefined && cur.index === mine.index && cur.generation === record.generation
      && cur.commitments.length === record.commitments.length && cur.commitments.every((c, k) => Buffer.from(c).toString('base64url') === record.commitments[k]);
    if (held) return { policy: record.id, epoch: record.epoch, generation: record.generation, index: cur.index, committed: false };
    if (mine === undefined) {
      // Not a server of this sharing (a reshare left it out): it must hold no share of the epoch. An
      // older generation is deleted now, even without the session (it could help rebuild k_p with
      // other old shares); a newer one means this record is not the current one.
      const done = { policy: record.id, epoch: record.epoch, generation: record.generation, index: null };
      if (cur === undefined) return { ...done, committed: false };
      if (cur.generation >= record.generation) throw conflict('this key server holds a newer share generation of this policy and epoch than the record names');
      this.opts.store.deleteGeneration(record.id, record.epoch, cur.generation);
      this.opts.onEvent?.('committed');
      return { ...done, committed: true };
    }
    throw new TesseraError('TESSERA_NOT_FOUND', 'no finished key-generation session for this record here, and no share of it: the session expired (10 minutes) or this key server restarted; run `tessera secret policy reshare` to give it a share');
  }

  /** DELETE /v1/dkg/:session: wipes and forgets a session not committed yet ({aborted: false} if none). */
  abort(id: string): DkgAbortResponse {
    if (!isDkgSessionId(id)) throw badRequest('the session in the path must be the base64url session id of the parameters');
    this.sweep();
    const s = this.sessions.get(id);
    if (s === undefined || s.state === 'committed') return { session: id, aborted: false };
    this.drop(id, 'aborted');
    return { session: id, aborted: true };
  }
}

function notFound2(): TesseraError {
  return new TesseraError('TESSERA_NOT_FOUND', 'no key share for this policy and epoch here: a refresh or reshare needs the current share');
}

/** SPIFFE ID → chain (leaf first, base64 DER strings); the chains themselves are judged by dkgVerifier. */
function checkCertificates(v: unknown): Record<string, string[]> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw badRequest('"certificates" must be an object: SPIFFE ID → certificate chain');
  const entries = Object.entries(v);
  if (entries.length > 2 * MAX_DKG_SERVERS) throw badRequest('"certificates" names too many participants');
  const out: Record<string, string[]> = Object.create(null) as Record<string, string[]>;
  for (const [id, chain] of entries) {
    if (!Array.isArray(chain) || chain.length < 1 || chain.length > MAX_DKG_CHAIN || !chain.every((c) => typeof c === 'string' && c.length > 0 && c.length <= 16_384)) {
      throw badRequest(`"certificates" must map each SPIFFE ID to 1..${MAX_DKG_CHAIN} base64 DER certificates`);
    }
    out[id] = chain as string[];
  }
  return out;
}
