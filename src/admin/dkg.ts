/**
 * The admin's CLI as the relay of a distributed key generation (issue 15): the key servers generate,
 * refresh or reshare a policy key among themselves; this process only carries their signed messages
 * from round to round (it cannot read the sealed shares in them), hands the whole log to the control
 * plane (which checks it and signs the record), and tells every key server to commit. No process
 * ever holds k_p or another server's share. Steps (src/core/wire/dkg.ts):
 *
 *   0. Each participant's X509-SVID chain as seen in a TLS handshake (pinned to its SPIFFE ID).
 *   1. POST /v1/dkg on every participant (every one must start).
 *   2. Each round: close the set (DkgRelayView) and POST it to every server still running, each with
 *      its own timeout. A server that fails or stops is not asked again: the protocol excludes it.
 *   3. POST the log to the control plane (create, or refresh/reshare of the epoch). An unknown
 *      outcome (no answer, a timeout, a 5xx: the record may have been signed) is settled by reading
 *      the record of (policy, epoch): signed with exactly this result's commitments, threshold, key
 *      servers and generation, the run goes on to step 4; otherwise it ends as below.
 *   4. POST /v1/dkg/:session/commit {signed record} everywhere; a commit without a definite answer is
 *      tried again a few times with a short backoff (the key server's commit is idempotent for the
 *      same signed record) before that server is reported as not committed.
 *   Any failure before 4: DELETE /v1/dkg/:session everywhere (nothing was installed), then a
 *   TesseraError naming the servers.
 *
 * Progress lines (admin.progress) name rounds, counts and servers; never material.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from 'node:tls';
import { ApiClient } from '../common/api-client.js';
import { TesseraError, isTesseraError, type ErrorCode } from '../core/errors.js';
import { DkgRelayView, verifyTranscript, type DkgRound } from '../core/secrets/dkg.js';
import { dkgVerifier } from '../core/secrets/dkg-identity.js';
import { parseDkgParamsWire } from '../core/secrets/dkg-params-wire.js';
import { verifySecretPolicy, type SecretPolicyRecord, type SecretPolicyServer, type SignedSecretPolicy } from '../core/secrets/policy-record.js';
import { PROVISION_AUTHORIZATION_HEADER, type ProvisionOp } from '../core/secrets/provision-authorization.js';
import { parseSpiffeId } from '../core/spiffe-id.js';
import { verifyPeerSvid } from '../core/x509-svid.js';
import type { CreateSecretPolicyRequest, CreateSecretPolicyResponse, DkgVerdictWire, RefreshSecretPolicyRequest, RefreshSecretPolicyResponse } from '../core/wire/control-plane.js';
import type { DkgAbortResponse, DkgCommitRequest, DkgCommitResponse, DkgNextRequest, DkgNextResponse, DkgParamsWire, DkgPublicResultWire, DkgStartRequest, DkgStartResponse, DkgTranscriptWire } from '../core/wire/dkg.js';
import type { ShareListResponse } from '../core/wire/keyserver.js';
import { fetchRecord, listEpochs, type SecretAdmin, type ServerOutcome } from './secrets.js';

/** How long one key server may take for one step (start, one round, commit, abort). */
export const DKG_STEP_TIMEOUT_MS = 30_000;
/** Waits before each further try of a key server's commit (so at most 1 + length tries). */
export const DKG_COMMIT_BACKOFF_MS: readonly number[] = [200, 500, 1_000];

/** A key server as the relay calls it. */
export interface RelayPeer { url: string; spiffeId: string }

/**
 * The relay's HTTP layer to the key servers (an ApiClient per server, pinned to its SPIFFE ID, by
 * default). Tests wrap it to see every byte the relay sends and receives.
 */
export interface RelayTransport {
  call<T>(peer: RelayPeer, method: string, path: string, body: unknown, headers: Record<string, string>): Promise<T>;
  /** The peer's certificate chain (leaf first, DER base64) as it presented it in a TLS handshake. */
  chain(peer: RelayPeer): Promise<string[]>;
  close(): void;
}

export interface DkgRunOptions {
  transport?: RelayTransport;
  /** Called after each round was delivered (tests stop a server mid-session). */
  onRound?: (round: DkgRound, running: string[]) => void | Promise<void>;
  /** Filled in with where the run's wall time went, when given (the bench); nothing is measured otherwise. */
  timings?: DkgRunTimings;
  /** Waits before each further commit try (default {@link DKG_COMMIT_BACKOFF_MS}). */
  commitBackoffMs?: readonly number[];
}

/**
 * Wall time of a run's steps in ms (performance.now), each from the relay's side: the step's
 * requests go out in parallel and the step ends with the last answer (or failure) in. Steps a run
 * did not reach stay unset.
 */
export interface DkgRunTimings {
  /** Step 0: a TLS handshake to every participant for its certificate chain. */
  chains?: number;
  /** Step 1: POST /v1/dkg everywhere (each server draws its polynomials and signs its hello). */
  start?: number;
  /** Step 2: each round delivered, by round, in schedule order. */
  rounds?: { round: DkgRound; ms: number }[];
  /** Step 3: the control plane's check and signature (with the record lookup after a lost answer). */
  publish?: number;
  /** Step 4: the commits (with their retries). */
  commit?: number;
  /** The whole runSession call. */
  total?: number;
}

/** What a DKG run did, for the CLI: the signed record, the control plane's verdict, and who committed. */
export interface DkgRunResult {
  record: SecretPolicyRecord;
  signed: SignedSecretPolicy;
  verdict: DkgVerdictWire;
  /** Key servers that stopped answering the relay (a timeout, an error, a crash), with the round. */
  lost: { spiffeId: string; round: DkgRound | 'start'; code: string }[];
  commits: ServerOutcome[];
  /**
   * Set when the control plane's answer was lost (unknown outcome) and the record was then found
   * signed with exactly this result: `verdict` is then recomputed here from the relay's own log (the
   * same public computation the control plane ran).
   */
  recovered?: { code: string; message: string };
}

const b64 = (u: Uint8Array | Buffer): string => Buffer.from(u).toString('base64');

/** The peer's chain from one TLS handshake, checked to be `spiffeId`'s X509-SVID under the admin's bundle. */
function tlsChain(peer: RelayPeer, tls: SecretAdmin['tls']): Promise<string[]> {
  const u = new URL(peer.url);
  const expect = { trustDomain: parseSpiffeId(peer.spiffeId).trustDomain, id: peer.spiffeId };
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: u.hostname, port: Number(u.port || 443), ca: tls.ca, ...(tls.cert ? { cert: tls.cert } : {}), ...(tls.key ? { key: tls.key } : {}),
      minVersion: 'TLSv1.2',
      checkServerIdentity: (_h, cert) => {
        const v = verifyPeerSvid(cert.raw, true, expect, Date.now());
        return v.ok ? undefined : new Error(`certificate refused (${v.reason}): the key server must be ${peer.spiffeId}`);
      },
    });
    const timer = setTimeout(() => socket.destroy(new Error('TLS handshake timed out')), DKG_STEP_TIMEOUT_MS);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      // Leaf and intermediates as sent; a self-issued certificate (a root) is the verifier's to know.
      const chain: string[] = [];
      let c = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (c && c.raw && !seen.has(c.fingerprint256)) {
        seen.add(c.fingerprint256);
        if (chain.length > 0 && c.issuerCertificate === c) break;
        if (chain.length > 0 && c.issuerCertificate?.fingerprint256 === c.fingerprint256) break;
        chain.push(b64(c.raw));
        c = c.issuerCertificate;
      }
      socket.end();
      resolve(chain);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new TesseraError('TESSERA_SERVER_UNREACHABLE', `cannot reach key server ${peer.spiffeId} at ${u.host}: ${err.message}`));
    });
  });
}

/** The default transport: one ApiClient per key server (kept-alive mTLS, pinned to its SPIFFE ID). */
export function apiTransport(tls: SecretAdmin['tls']): RelayTransport {
  const clients = new Map<string, ApiClient>();
  const client = (p: RelayPeer): ApiClient => {
    let c = clients.get(p.spiffeId);
    if (c === undefined) clients.set(p.spiffeId, (c = new ApiClient(p.url, { ...tls, serverId: p.spiffeId }, DKG_STEP_TIMEOUT_MS)));
    return c;
  };
  return {
    call: (p, method, path, body, headers) => client(p).call(method, path, body, { headers, timeoutMs: DKG_STEP_TIMEOUT_MS }),
    chain: (p) => tlsChain(p, tls),
    close: () => {
      for (const c of clients.values()) c.close();
      clients.clear();
    },
  };
}

const codeOf = (e: unknown): string => (isTesseraError(e) ? e.code : 'TESSERA_INTERNAL');
const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/**
 * Whether a failed call may still have been carried out: no answer at all (a connection that failed
 * or was cut, a timeout: ApiClient marks these with `sent`), a 5xx, a 408, or anything that is not a
 * TesseraError. A 4xx answer (refused, conflict, invalid, rate limited) is a definite "not done".
 */
export function unknownOutcome(err: unknown): boolean {
  if (!isTesseraError(err)) return true;
  if ((err as { sent?: unknown }).sent !== undefined) return true;
  return err.status >= 500 || err.code === 'TESSERA_REQUEST_TIMEOUT';
}

const serverKey = (s: SecretPolicyServer): string => JSON.stringify([s.index, s.spiffeId, s.url]);
const sameServers = (a: readonly SecretPolicyServer[], b: readonly SecretPolicyServer[]): boolean => {
  const x = a.map(serverKey).sort();
  const y = b.map(serverKey).sort();
  return x.length === y.length && x.every((k, i) => k === y[i]);
};

/** The public verdict from the relay's own log, as the control plane computes it (src/server/secrets/dkg-check.ts). */
function localVerdict(admin: SecretAdmin, transcript: DkgTranscriptWire): DkgVerdictWire {
  const { params } = parseDkgParamsWire(transcript.params);
  const td = parseSpiffeId(params.servers[0]!.spiffeId).trustDomain;
  const v = verifyTranscript(params, dkgVerifier(transcript.certificates, admin.trusted, td), transcript.log);
  return {
    mode: 'dkg', kind: v.kind, transcript: Buffer.from(v.transcript).toString('base64url'), qual: [...v.qual],
    stopped: v.stopped.map((s) => ({ spiffe_id: s.spiffeId, round: s.round })),
    misbehaviour: v.misbehaviour.map((m) => ({ spiffe_id: m.spiffeId, round: m.round, what: m.what })),
    excluded: v.excluded.map((e) => ({ index: e.index, why: e.why })),
    confirmed_by: [...v.confirmedBy],
  };
}

/** The provisioning operation a session of this kind is authorized as: a new key is a create, a refresh or reshare a refresh of the epoch. */
const OP_OF: Record<DkgParamsWire['kind'], ProvisionOp> = { dkg: 'create', refresh: 'refresh', reshare: 'refresh' };

interface Publish {
  (transcript: DkgTranscriptWire, result: DkgPublicResultWire): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy; verdict: DkgVerdictWire }>;
}

/**
 * Runs one session over the key servers' API, then `publish` (the control plane), then commit.
 * `generation`: the share generation the record must have once signed (1 for a new key).
 */
async function runSession(admin: SecretAdmin, params: DkgParamsWire, generation: number, publish: Publish, opts: DkgRunOptions): Promise<DkgRunResult> {
  const tm = opts.timings;
  const t0 = tm ? performance.now() : 0;
  let mark = t0;
  /** ms since the last lap (only with timings). */
  const lap = (): number => {
    const now = performance.now();
    const ms = now - mark;
    mark = now;
    return ms;
  };
  const progress = admin.progress ?? (() => {});
  const transport = opts.transport ?? apiTransport(admin.tls);
  const peers = new Map<string, RelayPeer>();
  for (const s of [...params.servers, ...(params.kind === 'reshare' ? params.old.servers : [])]) if (!peers.has(s.spiffeId)) peers.set(s.spiffeId, { url: s.url, spiffeId: s.spiffeId });
  const parties = [...peers.keys()].sort();
  const label = `${params.kind} ${params.policy} epoch ${params.epoch}`;
  const started = new Map<string, string>(); // spiffeId → session path segment
  const lost: DkgRunResult['lost'] = [];
  try {
    const header = admin.authorize ? await admin.authorize(OP_OF[params.kind], params.policy, params.epoch, parties) : undefined;
    const headers: Record<string, string> = header === undefined ? {} : { [PROVISION_AUTHORIZATION_HEADER]: header };
    const call = <T>(id: string, method: string, path: string, body?: unknown): Promise<T> => transport.call<T>(peers.get(id)!, method, path, body, headers);

    const abortAll = async (): Promise<string> => {
      const ids = [...started.keys()];
      const res = await Promise.allSettled(ids.map((id) => call<DkgAbortResponse>(id, 'DELETE', `/v1/dkg/${encodeURIComponent(started.get(id)!)}`)));
      const left = ids.filter((_, i) => res[i]!.status === 'rejected');
      return left.length ? `; the session could not be ended on ${left.join(', ')} (it expires there; nothing was installed)` : '; the session was ended on every key server, nothing was installed';
    };
    const fail = async (code: ErrorCode, message: string): Promise<never> => {
      throw new TesseraError(code, `${label}: ${message}${await abortAll()}`);
    };

    // 0. Every participant's chain, as it shows it in TLS (the key servers and the control plane check them).
    const chains = await Promise.allSettled(parties.map((id) => transport.chain(peers.get(id)!)));
    const unreachable = parties.filter((_, i) => chains[i]!.status === 'rejected');
    const why = (id: string): string => messageOf((chains[parties.indexOf(id)] as PromiseRejectedResult).reason).slice(0, 300);
    if (tm) tm.chains = lap();
    if (unreachable.length) throw new TesseraError('TESSERA_SERVER_UNREACHABLE', `${label}: every key server must be reachable to start; not reached: ${unreachable.map((id) => `${id} (${why(id)})`).join('; ')}`);
    const certificates: Record<string, string[]> = {};
    parties.forEach((id, i) => { certificates[id] = (chains[i] as PromiseFulfilledResult<string[]>).value; });

    // 1. Start everywhere.
    const relay = new DkgRelayView(parseDkgParamsWire(params).params);
    const starts = await Promise.allSettled(parties.map((id) => call<DkgStartResponse>(id, 'POST', '/v1/dkg', { params, certificates } satisfies DkgStartRequest)));
    if (tm) tm.start = lap();
    starts.forEach((r, i) => { if (r.status === 'fulfilled') started.set(parties[i]!, r.value.session); });
    const refused = parties.filter((_, i) => starts[i]!.status === 'rejected');
    const reason = (id: string): unknown => (starts[parties.indexOf(id)] as PromiseRejectedResult).reason;
    if (refused.length) await fail(codeOf(reason(refused[0]!)) as ErrorCode, `not every key server started the session: ${refused.map((id) => `${id}: ${codeOf(reason(id))} ${messageOf(reason(id)).slice(0, 300)}`).join('; ')}`);
    for (const r of starts) relay.add((r as PromiseFulfilledResult<DkgStartResponse>).value.message);
    progress(`${label}: ${parties.length} key servers started the session`);

    // 2. Rounds.
    let running = [...parties];
    const done = new Map<string, DkgPublicResultWire>();
    if (tm) tm.rounds = [];
    for (const round of relay.schedule) {
      const set = relay.close(round);
      if (round === 'confirm') break;
      const answers = await Promise.allSettled(running.map((id) => call<DkgNextResponse>(id, 'POST', `/v1/dkg/${encodeURIComponent(started.get(id)!)}/next`, { set } satisfies DkgNextRequest)));
      if (tm) tm.rounds!.push({ round, ms: lap() });
      const next: string[] = [];
      answers.forEach((a, i) => {
        const id = running[i]!;
        if (a.status === 'rejected') {
          lost.push({ spiffeId: id, round, code: codeOf(a.reason) });
          return;
        }
        try {
          const filed = relay.add(a.value.message);
          if (filed.from !== id) throw new TesseraError('TESSERA_DKG_MESSAGE_INVALID', 'a message from another sender');
        } catch (err) {
          lost.push({ spiffeId: id, round, code: codeOf(err) });
          return;
        }
        if (a.value.done) done.set(id, a.value.done);
        next.push(id);
      });
      const gone = running.filter((id) => !next.includes(id));
      progress(`${label}: round ${round}: ${next.length} of ${parties.length} key servers answered${gone.length ? `; not heard from again: ${gone.map((id) => `${id} (${lost.find((l) => l.spiffeId === id)!.code})`).join(', ')}` : ''}`);
      running = next;
      await opts.onRound?.(round, [...running]);
    }
    const receivers = params.servers.map((s) => s.spiffeId);
    const results = receivers.filter((id) => done.has(id));
    const t = params.kind === 'refresh' ? params.commitments.length : params.t;
    if (results.length < t) await fail('TESSERA_DKG_ABORTED', `only ${results.length} key servers finished the session, fewer than t = ${t}${lost.length ? ` (stopped: ${lost.map((l) => `${l.spiffeId} at ${l.round}: ${l.code}`).join('; ')})` : ''}`);
    const result = done.get(results[0]!)!;
    const differ = results.filter((id) => done.get(id)!.commitments.join() !== result.commitments.join() || done.get(id)!.public_key !== result.public_key);
    if (differ.length) await fail('TESSERA_DKG_ABORTED', `key servers computed different results: ${differ.join(', ')}`);

    // 3. The control plane checks the transcript and signs.
    const transcript: DkgTranscriptWire = { params, certificates, log: relay.log() };
    let published: Awaited<ReturnType<Publish>>;
    let recovered: DkgRunResult['recovered'];
    try {
      published = await publish(transcript, result);
    } catch (err) {
      if (!unknownOutcome(err)) return await fail(codeOf(err) as ErrorCode, `the control plane did not sign the record (${codeOf(err)}: ${messageOf(err)})`);
      // No answer: the record may have been signed. Only the record itself tells.
      progress(`${label}: no answer from the control plane (${codeOf(err)}); looking up the record of epoch ${params.epoch}`);
      const found = await signedWithResult(admin, params, generation, result).catch((e: unknown) => e as Error);
      if (found instanceof Error || found === undefined) {
        const why = found instanceof Error
          ? `the record could not be read either (${codeOf(found)}: ${messageOf(found)}); if \`secret policy show ${params.policy}\` does show this result signed after all, no key server holds its shares: ${params.kind === 'dkg' ? 'retire that epoch and rotate' : 'rotate to a new epoch'}`
          : `the record of epoch ${params.epoch} is not signed with this result (generation ${generation})`;
        return await fail(codeOf(err) as ErrorCode, `the control plane did not answer (${codeOf(err)}: ${messageOf(err)}) and ${why}`);
      }
      let verdict: DkgVerdictWire;
      try {
        verdict = localVerdict(admin, transcript);
      } catch (e) {
        // The record is signed with this result: commit whatever this check says (it is informational here).
        progress(`${label}: the verdict could not be recomputed here (${codeOf(e)}); committing the signed record`);
        verdict = { mode: 'dkg', kind: params.kind, transcript: '', qual: [], stopped: [], misbehaviour: [], excluded: [], confirmed_by: [] };
      }
      published = { ...found, verdict };
      recovered = { code: codeOf(err), message: messageOf(err) };
      progress(`${label}: the control plane's answer was lost, but the record of epoch ${params.epoch} is signed with this result (generation ${found.record.generation}): committing`);
    }
    if (tm) tm.publish = lap();
    if (!recovered) progress(`${label}: the control plane checked the transcript and signed generation ${published.record.generation}`);

    // 4. Commit everywhere that finished (a stopped server has nothing to commit), each tried again on an unknown outcome.
    const committing = parties.filter((id) => done.has(id));
    const backoff = opts.commitBackoffMs ?? DKG_COMMIT_BACKOFF_MS;
    const commitOne = async (id: string): Promise<DkgCommitResponse> => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await call<DkgCommitResponse>(id, 'POST', `/v1/dkg/${encodeURIComponent(started.get(id)!)}/commit`, { record: published.signed } satisfies DkgCommitRequest);
        } catch (err) {
          const wait = backoff[attempt];
          if (wait === undefined || !retryableCommit(err)) throw err;
          progress(`${label}: commit on ${id} failed (${codeOf(err)}); trying again in ${wait} ms`);
          await sleep(wait);
        }
      }
    };
    const commits = await Promise.allSettled(committing.map(commitOne));
    if (tm) tm.commit = lap();
    const indexOf = (id: string): number => params.servers.find((s) => s.spiffeId === id)?.index ?? 0;
    const outcomes: ServerOutcome[] = committing.map((id, i) => {
      const r = commits[i]!;
      return r.status === 'fulfilled' ? { spiffeId: id, index: indexOf(id), ok: true } : { spiffeId: id, index: indexOf(id), ok: false, code: codeOf(r.reason), message: messageOf(r.reason) };
    });
    started.clear();
    return { record: published.record, signed: published.signed, verdict: published.verdict, lost, commits: outcomes, ...(recovered ? { recovered } : {}) };
  } finally {
    if (tm) tm.total = performance.now() - t0;
    if (!opts.transport) transport.close();
  }
}

/** A commit worth trying again: no definite answer, or a capacity limit (429) that clears. */
function retryableCommit(err: unknown): boolean {
  return unknownOutcome(err) || (isTesseraError(err) && err.code === 'TESSERA_RATE_LIMITED');
}

/**
 * The record of (policy, epoch) when it is signed (verified against the trust bundle) with exactly
 * this session's result: commitments, threshold, key servers (index, SPIFFE ID, URL) and share
 * generation; undefined when there is none or it is another. Throws when it cannot be read.
 */
async function signedWithResult(admin: SecretAdmin, params: DkgParamsWire, generation: number, result: DkgPublicResultWire): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy } | undefined> {
  let found: { record: SecretPolicyRecord; signed: SignedSecretPolicy };
  try {
    found = await fetchRecord(admin, params.policy, params.epoch);
  } catch (err) {
    if (isTesseraError(err) && err.code === 'TESSERA_NOT_FOUND') return undefined;
    throw err;
  }
  const { record } = found;
  const t = params.kind === 'refresh' ? params.commitments.length : params.t;
  const same = record.id === params.policy && record.epoch === params.epoch && record.generation === generation && record.t === t &&
    record.n === params.servers.length && sameServers(record.servers, params.servers) && record.commitments.join() === result.commitments.join();
  return same ? found : undefined;
}

function sessionId(): string {
  return randomBytes(32).toString('base64url');
}

/** The signed record from the control plane's answer, verified against the trust bundle and checked to be what was asked. */
function verifiedAnswer(admin: SecretAdmin, res: { signed: SignedSecretPolicy; dkg?: DkgVerdictWire }, want: { id: string; epoch: number; commitments: string[] }): { record: SecretPolicyRecord; signed: SignedSecretPolicy; verdict: DkgVerdictWire } {
  const record = verifySecretPolicy(res.signed, admin.trusted);
  if (record.id !== want.id || record.epoch !== want.epoch || record.commitments.join() !== want.commitments.join()) throw new TesseraError('TESSERA_SECRET_POLICY_INVALID', 'the control plane signed another record than asked');
  if (res.dkg === undefined) throw new TesseraError('TESSERA_SECRET_POLICY_INVALID', 'the control plane did not check the transcript (an older control plane?)');
  return { record, signed: res.signed, verdict: res.dkg };
}

/** A new key epoch generated by the key servers together (GJKR DKG); t of `servers`. */
export function createEpoch(admin: SecretAdmin, input: { id: string; epoch: number; t: number; servers: SecretPolicyServer[] }, opts: DkgRunOptions = {}): Promise<DkgRunResult> {
  const { id, epoch, t, servers } = input;
  const params: DkgParamsWire = { kind: 'dkg', session: sessionId(), policy: id, epoch, t, servers };
  return runSession(admin, params, 1, async (dkg, result) => {
    const res = await admin.control.call<CreateSecretPolicyResponse>('POST', '/v1/secret-policies', { id, epoch, t, n: servers.length, commitments: result.commitments, servers, dkg } satisfies CreateSecretPolicyRequest);
    return verifiedAnswer(admin, res, { id, epoch, commitments: result.commitments });
  }, opts);
}

/**
 * A new key epoch (the newest + 1) by DKG, by default with the newest active epoch's threshold and
 * key servers. Older epochs keep opening their blobs until retired.
 */
export async function rotate(admin: SecretAdmin, id: string, choice: { t?: number; servers?: SecretPolicyServer[] } = {}, opts: DkgRunOptions = {}): Promise<DkgRunResult & { previous: number }> {
  const epochs = await listEpochs(admin, id);
  if (epochs.length === 0) throw new TesseraError('TESSERA_NOT_FOUND', `no secret policy ${id}: create it first`);
  const newest = epochs[epochs.length - 1]!.epoch;
  if (newest >= 0xffffffff) throw new TesseraError('TESSERA_CONFLICT', 'the key epoch cannot grow further');
  let base: SecretPolicyRecord | undefined;
  if (choice.t === undefined || choice.servers === undefined) {
    const active = [...epochs].reverse().find((e) => e.retired_at === null);
    if (active === undefined) throw new TesseraError('TESSERA_CONFIG_INVALID', 'every key epoch is retired: pass --threshold and --server');
    base = (await fetchRecord(admin, id, active.epoch)).record;
  }
  const servers = choice.servers ?? base!.servers;
  const t = choice.t ?? base!.t;
  if (t > servers.length) throw new TesseraError('TESSERA_CONFIG_INVALID', `--threshold ${t} is more than the ${servers.length} key servers`);
  return { ...(await createEpoch(admin, { id, epoch: newest + 1, t, servers }, opts)), previous: newest };
}

/** New shares of the same key for the same servers (dealerless: every server deals a sharing of zero). */
export async function refresh(admin: SecretAdmin, id: string, epoch?: number, opts: DkgRunOptions = {}): Promise<DkgRunResult> {
  const { record } = await fetchRecord(admin, id, epoch);
  if (record.t < 2) throw new TesseraError('TESSERA_CONFIG_INVALID', 'a 1-of-n policy cannot be refreshed (every share is the key): rotate it instead');
  const params: DkgParamsWire = { kind: 'refresh', session: sessionId(), policy: id, epoch: record.epoch, servers: record.servers, commitments: record.commitments };
  return runSession(admin, params, record.generation + 1, async (dkg, result) => {
    const res = await admin.control.call<RefreshSecretPolicyResponse>('POST', `/v1/secret-policies/${encodeURIComponent(id)}/epochs/${record.epoch}/refresh`, { generation: record.generation + 1, commitments: result.commitments, dkg } satisfies RefreshSecretPolicyRequest);
    return verifiedAnswer(admin, res, { id, epoch: record.epoch, commitments: result.commitments });
  }, opts);
}

/**
 * The current key servers (of those reached) that hold another generation of the epoch than the
 * record's (a commit they missed): they cannot deal, since their share is not on the current
 * commitments. SPIFFE ID → the generation they hold. A server whose list cannot be read is taken to
 * hold the current share (its start says otherwise, and the reshare stops there).
 */
async function staleServers(admin: SecretAdmin, transport: RelayTransport, record: SecretPolicyRecord, reached: SecretPolicyServer[]): Promise<Map<string, number>> {
  if (reached.length === 0) return new Map();
  const header = admin.authorize ? await admin.authorize('refresh', record.id, record.epoch, reached.map((s) => s.spiffeId)) : undefined;
  const headers: Record<string, string> = header === undefined ? {} : { [PROVISION_AUTHORIZATION_HEADER]: header };
  const lists = await Promise.allSettled(reached.map((s) => transport.call<ShareListResponse>(s, 'GET', '/v1/shares', undefined, headers)));
  const out = new Map<string, number>();
  lists.forEach((l, i) => {
    if (l.status !== 'fulfilled') return;
    const mine = l.value.shares.find((x) => x.policy === record.id && x.epoch === record.epoch);
    if (mine !== undefined && mine.generation !== record.generation) out.set(reached[i]!.spiffeId, mine.generation);
  });
  return out;
}

/**
 * The same key shared t-of-`servers` among a new set of key servers (verifiable secret
 * redistribution): the current servers deal their shares, the new ones receive. A current server
 * that cannot be reached is left out of the dealers when at least the current t remain (that is how
 * a dead key server is replaced).
 */
export async function reshare(admin: SecretAdmin, id: string, target: { t: number; servers: SecretPolicyServer[]; epoch?: number }, opts: DkgRunOptions = {}): Promise<DkgRunResult & { previous: { t: number; n: number } }> {
  const { record } = await fetchRecord(admin, id, target.epoch);
  if (target.t > target.servers.length) throw new TesseraError('TESSERA_CONFIG_INVALID', `--threshold ${target.t} is more than the ${target.servers.length} key servers`);
  const transport = opts.transport ?? apiTransport(admin.tls);
  try {
    const reachable = await Promise.allSettled(record.servers.map((s) => transport.chain(s)));
    const stale = await staleServers(admin, transport, record, record.servers.filter((_, i) => reachable[i]!.status === 'fulfilled'));
    const newIds = new Set(target.servers.map((s) => s.spiffeId));
    const dealers = record.servers.filter((s, i) => (reachable[i]!.status === 'fulfilled' || newIds.has(s.spiffeId)) && !stale.has(s.spiffeId));
    const dropped = record.servers.filter((s) => !dealers.includes(s));
    if (dealers.length < record.t) throw new TesseraError('TESSERA_SECRET_THRESHOLD', `a reshare needs at least t = ${record.t} of the current key servers; not reached or without the current share: ${dropped.map((s) => s.spiffeId).join(', ')}`);
    const unreached = dropped.filter((s) => !stale.has(s.spiffeId));
    if (unreached.length) admin.progress?.(`reshare ${id}: dealing without the unreachable current key servers ${unreached.map((s) => s.spiffeId).join(', ')}`);
    for (const s of dropped.filter((x) => stale.has(x.spiffeId))) {
      admin.progress?.(`reshare ${id}: ${s.spiffeId} holds an older share generation (${stale.get(s.spiffeId)}; it missed a commit): it does not deal${newIds.has(s.spiffeId) ? ', and its new share replaces the old one' : ''}`);
    }
    const params: DkgParamsWire = { kind: 'reshare', session: sessionId(), policy: id, epoch: record.epoch, t: target.t, servers: target.servers, old: { commitments: record.commitments, servers: dealers } };
    const res = await runSession(admin, params, record.generation + 1, async (dkg, result) => {
      const r = await admin.control.call<RefreshSecretPolicyResponse>('POST', `/v1/secret-policies/${encodeURIComponent(id)}/epochs/${record.epoch}/refresh`, { generation: record.generation + 1, commitments: result.commitments, t: target.t, servers: target.servers, dkg } satisfies RefreshSecretPolicyRequest);
      return verifiedAnswer(admin, r, { id, epoch: record.epoch, commitments: result.commitments });
    }, { ...opts, transport });
    return { ...res, previous: { t: record.t, n: record.n } };
  } finally {
    if (!opts.transport) transport.close();
  }
}
