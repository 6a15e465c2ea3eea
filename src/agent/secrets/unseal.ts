/**
 * The agent's side of a blind unseal (DESIGN.md, "Blind secrets"): fetch and verify the signed
 * secret-policy record from the control plane, blind the blob's R, ask all n key servers in
 * parallel over mTLS (each checked by its SPIFFE ID), keep the first t evaluations whose DLEQ
 * proofs verify, combine + unblind, and open the blob. Used by `tessera secret unseal` and by the
 * agent's `--unseal` files. Never logs point material or plaintext.
 */
import { performance } from 'node:perf_hooks';
import { ApiClient, type ClientTls } from '../../common/api-client.js';
import { TesseraError, isTesseraError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { EvaluationCollector, type Blinded } from '../../core/secrets/blind.js';
import { blind, decodePoint, decodeProof, openWithPoint, parseSealedText, ready, unsealContext } from '../../core/secrets/index.js';
import { verifySecretPolicy, type SecretPolicyRecord, type SecretPolicyServer, type SignedSecretPolicy } from '../../core/secrets/policy-record.js';
import type { SecretPolicyResponse } from '../../core/wire/control-plane.js';
import type { EvaluateRequest, EvaluateResponse } from '../../core/wire/keyserver.js';

/** A key server's answer before it is checked: every field may be missing or of another type. */
type Unchecked<T> = { [K in keyof T]?: unknown };

/** Calls the control plane as the agent. */
export type ControlPlaneCall = (method: string, path: string, body?: unknown) => Promise<unknown>;

export interface UnsealTls { certPem: string; keyPem: string; bundlePem: string }

/** A key server that did not give a valid evaluation. `code` is a stable TESSERA_* code. */
export interface KeyServerFailure { spiffeId: string; index: number; code: string; message: string }

/** A verified policy record with its decoded commitments (their public shares are memoized by blind.ts). */
interface VerifiedRecord { record: SecretPolicyRecord; commitments: Uint8Array[] }

/**
 * State reused across unseals: kept-alive mTLS clients to the key servers (one per URL and SPIFFE
 * ID) and the verified policy records by (id, epoch): a record carries only public commitments,
 * and the key servers still decide every unseal. A record changes only by a share refresh (a new
 * generation); a key server that has moved on answers TESSERA_SECRET_STALE and the record is
 * fetched again. Everything is dropped when the TLS material changes (an SVID
 * rotation or a bundle update) and on close().
 */
export class KeyServerPool {
  private clients = new Map<string, ApiClient>();
  private records = new Map<string, VerifiedRecord>();
  private tlsKey = '';

  constructor(private readonly timeoutMs = 10_000) {}

  /** Drops everything if the TLS material changed since the last call. */
  useTls(tls: UnsealTls): void {
    const tk = `${tls.certPem}\0${tls.bundlePem}`;
    if (tk !== this.tlsKey) {
      this.close();
      this.tlsKey = tk;
    }
  }

  record(id: string, epoch: number): VerifiedRecord | undefined {
    return this.records.get(`${id}\0${epoch}`);
  }

  forget(id: string, epoch: number): void {
    this.records.delete(`${id}\0${epoch}`);
  }

  remember(v: VerifiedRecord): void {
    if (this.records.size >= 1024) this.records.clear();
    this.records.set(`${v.record.id}\0${v.record.epoch}`, v);
  }

  get(url: string, spiffeId: string, tls: UnsealTls): ApiClient {
    this.useTls(tls);
    const key = `${url}\0${spiffeId}`;
    let c = this.clients.get(key);
    if (!c) {
      const ctls: ClientTls = { ca: tls.bundlePem, cert: tls.certPem, key: tls.keyPem, serverId: spiffeId };
      c = new ApiClient(url, ctls, this.timeoutMs);
      this.clients.set(key, c);
    }
    return c;
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
    this.records.clear();
  }
}

export interface UnsealOptions {
  /** The sealed text (`tessera-sealed:v1:...`). */
  text: string;
  /** The control plane, as the agent. */
  call: ControlPlaneCall;
  /** The agent's SVID, presented to the key servers. */
  tls: UnsealTls;
  /** The trust bundle's CAs (DER), to verify the signed policy record. */
  trustedCas: Buffer[];
  log?: Logger;
  /** Reuse kept-alive key server connections across calls; without it, connections are closed after the call. */
  pool?: KeyServerPool;
  /** Filled in with where the time went (benchmarks); its fields are overwritten. */
  timings?: UnsealTimings;
}

export interface UnsealResult {
  plaintext: Buffer;
  policyId: string;
  epoch: number;
  /** Key servers that failed (refused, unreachable, bad proof) while the threshold was still met. */
  bad: KeyServerFailure[];
}

const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');
const pointOf = (s: string): Uint8Array => decodePoint(new Uint8Array(Buffer.from(s, 'base64url')));

/** Fetches a policy's signed record from the control plane and verifies it against the bundle. */
export async function fetchSecretPolicy(call: ControlPlaneCall, id: string, epoch: number | undefined, trusted: Buffer[]): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy }> {
  const res = (await call('GET', `/v1/secret-policies/${encodeURIComponent(id)}${epoch === undefined ? '' : `?epoch=${epoch}`}`)) as SecretPolicyResponse;
  const record = verifySecretPolicy(res.signed, trusted);
  if (record.id !== id || (epoch !== undefined && record.epoch !== epoch)) throw new TesseraError('TESSERA_SECRET_POLICY_INVALID', 'the control plane answered with another policy or key epoch');
  return { record, signed: res.signed };
}

/**
 * Where one unseal's wall time went, in milliseconds (performance.now()); filled in when passed as
 * {@link UnsealOptions.timings}. Answers are counted from when the requests were sent; after a
 * retry (a stale share generation), the phases are the retry's and `total` the whole call's.
 */
export interface UnsealTimings {
  /** Sealed text parsed, policy record (cached or fetched and verified), blind: until the requests go out. */
  prepare: number;
  /** Sent → the first answer in (any key server, good or not). */
  firstAnswer: number;
  /** Sent → the answer that reached the threshold in (before its proof check). */
  lastAnswer: number;
  /** Proof checks done before the threshold was reached (t of them when all answers are good). */
  verify: number;
  /** Sent → t proofs verified. */
  gather: number;
  /** Lagrange combination + unblind. */
  combine: number;
  /** HKDF + AES-GCM open. */
  open: number;
  total: number;
}

/**
 * Asks every key server in parallel and checks each answer's DLEQ proof as it arrives (while the
 * others are still on their way); resolves with the collector once t proofs verified (and the
 * failures seen so far), or throws TESSERA_SECRET_THRESHOLD (with `failures`) as soon as too few
 * remain. Answers that arrive after that are still checked, off the caller's path, and a bad one
 * is logged.
 */
async function gatherEvaluations(v: VerifiedRecord, tls: UnsealTls, pool: KeyServerPool, blinded: Blinded, context: Uint8Array, log: Logger | undefined, timings: UnsealTimings | undefined): Promise<{ collector: EvaluationCollector; failures: KeyServerFailure[] }> {
  const { record, commitments } = v;
  const collector = new EvaluationCollector(commitments, blinded, record.t, context);
  const failures: KeyServerFailure[] = [];
  const body = { policy: record.id, epoch: record.epoch, generation: record.generation, b: b64u(blinded.B) } satisfies EvaluateRequest;
  return new Promise((resolveAll, reject) => {
    let pending = record.servers.length;
    let done = false;
    const sent = performance.now();
    const settle = (): void => {
      if (done) return;
      if (collector.complete) {
        done = true;
        if (timings) timings.gather = performance.now() - sent;
        resolveAll({ collector, failures: [...failures] });
      } else if (pending === 0 || record.servers.length - failures.length < record.t) {
        done = true;
        collector.wipe();
        const detail = failures.map((f) => `${f.spiffeId}: ${f.code}`).join('; ');
        const e = new TesseraError('TESSERA_SECRET_THRESHOLD', `only ${collector.count} of the ${record.t} key servers needed answered with a valid evaluation (${detail})`);
        (e as TesseraError & { failures?: KeyServerFailure[] }).failures = [...failures];
        reject(e);
      }
    };
    /** Decodes and checks one answer (its proof through the collector); throws a TesseraError for a bad one. */
    const check = (s: SecretPolicyServer, res: Unchecked<EvaluateResponse>): void => {
      if (res.index !== s.index || typeof res.z !== 'string' || typeof res.proof !== 'string') throw new TesseraError('TESSERA_SECRET_PROOF_INVALID', 'malformed answer');
      if (res.generation !== undefined && res.generation !== record.generation) throw new TesseraError('TESSERA_SECRET_STALE', `answered with share generation ${String(res.generation)}`);
      const ev = { index: s.index, Z: pointOf(res.z), proof: decodeProof(new Uint8Array(Buffer.from(res.proof, 'base64url'))) };
      if (!collector.offer(ev)) throw new TesseraError('TESSERA_SECRET_PROOF_INVALID', 'the proof does not verify');
    };
    const failure = (s: SecretPolicyServer, err: unknown): KeyServerFailure => {
      const e = isTesseraError(err) ? err : new TesseraError('TESSERA_SECRET_PROOF_INVALID', 'malformed answer');
      return { spiffeId: s.spiffeId, index: s.index, code: e.code, message: e.message };
    };
    for (const s of record.servers) {
      let client: ApiClient;
      try {
        client = pool.get(s.url, s.spiffeId, tls);
      } catch (err) {
        failures.push({ spiffeId: s.spiffeId, index: s.index, code: isTesseraError(err) ? err.code : 'TESSERA_SERVER_UNREACHABLE', message: 'cannot build a client' });
        pending -= 1;
        continue;
      }
      client.call<Unchecked<EvaluateResponse>>('POST', '/v1/evaluate', body).then((res) => {
        if (done) {
          // Late: the unseal went on without it. Still checked, on a later turn of the event loop
          // (by then the caller has combined: it does not wait between gathering and combining,
          // and the collector only ever combines answers it verified).
          setImmediate(() => {
            try {
              check(s, res);
            } catch (err) {
              const f = failure(s, err);
              log?.warn('key server failed', { policy: record.id, spiffe_id: f.spiffeId, index: f.index, code: f.code, late: true });
            }
          });
          return;
        }
        const t0 = performance.now();
        if (timings) {
          if (timings.firstAnswer < 0) timings.firstAnswer = t0 - sent;
          timings.lastAnswer = t0 - sent;
        }
        try {
          check(s, res);
        } finally {
          if (timings) timings.verify += performance.now() - t0;
        }
      }, (err: unknown) => {
        if (timings && !done && timings.firstAnswer < 0) timings.firstAnswer = performance.now() - sent;
        throw err;
      }).catch((err: unknown) => {
        if (!done) failures.push(failure(s, err));
      }).finally(() => {
        pending -= 1;
        settle();
      });
    }
    // b⁻¹ once the requests are written (they go out on the next tick), not after the last answer.
    setImmediate(() => collector.precompute());
    settle();
  });
}

/** Unseals a sealed text as the agent. Throws a TesseraError (with `failures` on TESSERA_SECRET_THRESHOLD). */
export async function unsealSealedText(opts: UnsealOptions): Promise<UnsealResult> {
  const t0 = performance.now();
  await ready();
  const parsed = parseSealedText(opts.text);
  const pool = opts.pool ?? new KeyServerPool();
  try {
    pool.useTls(opts.tls);
    const cached = pool.record(parsed.policyId, parsed.epoch) !== undefined;
    try {
      return await unsealOnce(opts, parsed, pool, t0);
    } catch (err) {
      // The record used may be out of date: a share refresh moved the key servers to a newer
      // generation (STALE; a refresh never changes the key, so this is the same unseal), or a cached
      // record's epoch was retired since (its shares are gone: NOT_FOUND). Fetch it again and retry
      // once; a retired epoch then ends in TESSERA_SECRET_EPOCH_RETIRED from the control plane.
      const failures = (err as { failures?: KeyServerFailure[] }).failures ?? [];
      const outdated = failures.some((f) => f.code === 'TESSERA_SECRET_STALE' || (cached && f.code === 'TESSERA_NOT_FOUND'));
      if (!outdated) throw err;
      pool.forget(parsed.policyId, parsed.epoch);
      return await unsealOnce(opts, parsed, pool, t0);
    }
  } finally {
    if (!opts.pool) pool.close();
  }
}

async function unsealOnce(opts: UnsealOptions, parsed: ReturnType<typeof parseSealedText>, pool: KeyServerPool, t0: number): Promise<UnsealResult> {
  let v = pool.record(parsed.policyId, parsed.epoch);
  if (!v) {
    const { record } = await fetchSecretPolicy(opts.call, parsed.policyId, parsed.epoch, opts.trustedCas);
    v = { record, commitments: record.commitments.map(pointOf) };
    pool.remember(v);
  }
  const { record } = v;
  const blinded = blind(parsed.R);
  const context = unsealContext(record.id, record.epoch);
  const timings = opts.timings;
  if (timings) Object.assign(timings, { prepare: performance.now() - t0, firstAnswer: -1, lastAnswer: 0, verify: 0, gather: 0, combine: 0, open: 0, total: 0 });
  let gathered: { collector: EvaluationCollector; failures: KeyServerFailure[] };
  try {
    gathered = await gatherEvaluations(v, opts.tls, pool, blinded, context, opts.log, timings);
  } catch (err) {
    blinded.b.fill(0);
    for (const f of (err as { failures?: KeyServerFailure[] }).failures ?? []) opts.log?.warn('key server failed', { policy: record.id, spiffe_id: f.spiffeId, index: f.index, code: f.code });
    throw err;
  }
  for (const f of gathered.failures) opts.log?.warn('key server failed', { policy: record.id, spiffe_id: f.spiffeId, index: f.index, code: f.code });
  const t1 = performance.now();
  const point = gathered.collector.combineAndUnblind();
  blinded.b.fill(0);
  const t2 = performance.now();
  try {
    return { plaintext: openWithPoint(parsed, point), policyId: record.id, epoch: record.epoch, bad: gathered.failures };
  } finally {
    point.fill(0);
    if (timings) {
      const t3 = performance.now();
      timings.combine = t2 - t1;
      timings.open = t3 - t2;
      timings.total = t3 - t0;
    }
  }
}
