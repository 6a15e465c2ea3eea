/**
 * The admin's side of secret policies, run by the CLI (never by the control plane, which sees only
 * public commitments): deal a key epoch to the key servers, rotate to a new epoch, refresh the
 * shares of an epoch, retire an epoch. Also sealing to a verified record, and unsealing with an
 * agent's SVID files (`tessera secret seal | unseal | reseal`).
 *
 * - deal: k_p is drawn here, split t-of-n, each share sent to its key server over mTLS (checked by
 *   SPIFFE ID), then wiped; the record is published only when every server took its share, and the
 *   shares already installed are deleted again when one did not.
 * - refresh (same key, new shares): a random sharing of zero; each server checks its delta against
 *   the public D_j and prepares generation g+1 beside g; once all n prepared (and computed the
 *   commitments this process expects), the control plane publishes g+1 and each server commits
 *   (deleting generation g). A run interrupted after publishing is finished by the next run.
 * - retire: each server deletes its share of the epoch; the control plane marks it retired.
 */
import { readFileSync } from 'node:fs';
import { fetchSecretPolicy, unsealSealedText, type KeyServerFailure } from '../agent/secrets/unseal.js';
import { ApiClient, type ClientTls } from '../common/api-client.js';
import { TesseraError, isTesseraError } from '../core/errors.js';
import { dealRefresh, decodePoint, randomScalar, ready, refreshedCommitments, seal, split } from '../core/secrets/index.js';
import { verifySecretPolicy, type SecretPolicyRecord, type SecretPolicyServer, type SignedSecretPolicy } from '../core/secrets/policy-record.js';
import { pemDecodeAll } from '../core/x509.js';
import type { ProvisionAuthorizationRequest, ProvisionAuthorizationResponse, CreateSecretPolicyRequest, CreateSecretPolicyResponse, RefreshSecretPolicyRequest, RefreshSecretPolicyResponse, RetireSecretPolicyResponse, SecretPolicyListResponse } from '../core/wire/control-plane.js';
import type { DkgCommitRequest, DkgCommitResponse } from '../core/wire/dkg.js';
import type { AbortShareResponse, CommitShareRequest, CommitShareResponse, DeleteShareResponse, InstallShareRequest, InstallShareResponse, RefreshShareRequest, RefreshShareResponse, ShareListResponse } from '../core/wire/keyserver.js';
import { adminClient, adminCredential, adminCredentialTls, agentTls, svidClient, type AdminLocation } from './clients.js';
import { PROVISION_AUTHORIZATION_HEADER, type ProvisionOp } from '../core/secrets/provision-authorization.js';

export interface SecretAdmin {
  /** The admin credential, presented to the key servers. */
  tls: ClientTls;
  /** The control plane, as the admin. */
  control: ApiClient;
  /** The trust bundle's CAs (DER), to verify records. */
  trusted: Buffer[];
  /** Progress lines for a human (stderr), never secret material. */
  progress?: (line: string) => void;
  /**
   * Set when the credential is a person's `tessera login` certificate: asks the control plane for a
   * provisioning authorization (the admin policy decides) and returns the header value the key
   * servers named need beside it. Admin credentials (bootstrap, named) provision without one.
   */
  authorize?: (op: ProvisionOp, id: string, epoch: number, keyServers: string[]) => Promise<string>;
}

/** The operation an onEachServer call belongs to (what a provisioning authorization must name). */
interface Provisioning { op: ProvisionOp; id: string; epoch: number }
/** A key server call (ApiClient.call with the provisioning authorization header when one is needed). */
interface ServerClient { call<T>(method: string, path: string, body?: unknown): Promise<T> }

/** Asks the control plane for a provisioning authorization with `control` (a login certificate's client). */
export async function requestProvisionAuthorization(control: ApiClient, op: ProvisionOp, id: string, epoch: number, keyServers: string[]): Promise<string> {
  const res = await control.call<ProvisionAuthorizationResponse>('POST', `/v1/secret-policies/${encodeURIComponent(id)}/provision-authorization`, { epoch, op, key_servers: keyServers } satisfies ProvisionAuthorizationRequest);
  return res.authorization;
}

/** What one key server did, or why it failed (a stable code). */
export interface ServerOutcome { spiffeId: string; index: number; ok: boolean; code?: string; message?: string }

/** Control-plane answers that mean a request was not carried out (as opposed to an unknown outcome). */
const DEFINITE_REFUSALS: ReadonlySet<string> = new Set(['TESSERA_CONFLICT', 'TESSERA_NOT_FOUND', 'TESSERA_SECRET_EPOCH_RETIRED', 'TESSERA_SECRET_POLICY_INVALID', 'TESSERA_BAD_REQUEST', 'TESSERA_FORBIDDEN', 'TESSERA_AUTH_REQUIRED', 'TESSERA_AUTH_INVALID']);

const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');
const point = (s: string): Uint8Array => decodePoint(new Uint8Array(Buffer.from(s, 'base64url')));

/** Calls every key server in parallel, each with its own client checked against its SPIFFE ID. */
async function onEachServer<T>(admin: SecretAdmin, what: Provisioning, servers: SecretPolicyServer[], fn: (client: ServerClient, s: SecretPolicyServer, i: number) => Promise<T>): Promise<{ outcomes: ServerOutcome[]; values: (T | undefined)[] }> {
  // One authorization per phase, for exactly these servers; refused (no right, stale MFA), nothing is sent.
  const header = servers.length && admin.authorize ? await admin.authorize(what.op, what.id, what.epoch, servers.map((s) => s.spiffeId)) : undefined;
  const headers = header === undefined ? undefined : { [PROVISION_AUTHORIZATION_HEADER]: header };
  const settled = await Promise.allSettled(servers.map(async (s, i) => {
    const client = new ApiClient(s.url, { ...admin.tls, serverId: s.spiffeId }, 15_000);
    try {
      return await fn({ call: (method, path, body) => client.call(method, path, body, headers ? { headers } : {}) }, s, i);
    } finally {
      client.close();
    }
  }));
  return {
    values: settled.map((r) => (r.status === 'fulfilled' ? r.value : undefined)),
    outcomes: settled.map((r, i) => {
      const s = servers[i]!;
      if (r.status === 'fulfilled') return { spiffeId: s.spiffeId, index: s.index, ok: true };
      const e: unknown = r.reason;
      return { spiffeId: s.spiffeId, index: s.index, ok: false, code: isTesseraError(e) ? e.code : 'TESSERA_INTERNAL', message: e instanceof Error ? e.message : String(e) };
    }),
  };
}

const failedList = (outcomes: ServerOutcome[]): string => outcomes.filter((o) => !o.ok).map((o) => `${o.spiffeId}: ${o.code}`).join('; ');

/** The newest record of a policy (or the given epoch), fetched with `client` and verified against the trust bundle. */
export function fetchRecordWith(client: ApiClient, id: string, epoch: number | undefined, trusted: Buffer[]): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy }> {
  return fetchSecretPolicy((method, path, body) => client.call(method, path, body), id, epoch, trusted);
}

/** The newest record of a policy (or the given epoch), as the admin, verified against the trust bundle. */
export function fetchRecord(admin: SecretAdmin, id: string, epoch?: number): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy }> {
  return fetchRecordWith(admin.control, id, epoch, admin.trusted);
}

/** Every key epoch of a policy known to the control plane (admin list), oldest first. */
export async function listEpochs(admin: SecretAdmin, id: string): Promise<{ epoch: number; generation: number; retired_at: string | null }[]> {
  const res = await admin.control.call<SecretPolicyListResponse>('GET', '/v1/secret-policies');
  return res.policies.filter((p) => p.id === id).map((p) => ({ epoch: p.epoch, generation: p.generation ?? 1, retired_at: p.retired_at ?? null })).sort((a, b) => a.epoch - b.epoch);
}

/**
 * Deals a new key epoch: draws k_p, sends each server its share, publishes the signed record. If a
 * server does not take its share, the shares this call installed are deleted again and nothing is
 * published (TESSERA_SECRET_SHARE_INVALID, naming the servers and their codes).
 */
export async function dealEpoch(admin: SecretAdmin, input: { id: string; epoch: number; t: number; servers: SecretPolicyServer[] }): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy }> {
  const { id, epoch, t, servers } = input;
  const n = servers.length;
  const k = randomScalar();
  const sharing = split(k, t, n);
  k.fill(0);
  const commitments = sharing.commitments.map(b64u);
  let installed: { outcomes: ServerOutcome[]; values: ({ created: boolean } | undefined)[] };
  try {
    installed = await onEachServer(admin, { op: 'create', id, epoch }, servers, async (client, s, i) => {
      const share = sharing.shares[i]!;
      return client.call<InstallShareResponse>('PUT', `/v1/shares/${id}/${epoch}`, { t, n, index: share.index, value: b64u(share.value), commitments } satisfies InstallShareRequest);
    });
  } finally {
    for (const s of sharing.shares) s.value.fill(0);
  }
  /** Takes back what this call installed (never a share that was there before it); says how that went. */
  const takeBack = async (): Promise<string> => {
    const mine = servers.filter((_, i) => installed.values[i]?.created === true);
    const undone = await onEachServer(admin, { op: 'create', id, epoch }, mine, (client) => client.call<DeleteShareResponse>('DELETE', `/v1/shares/${id}/${epoch}`));
    const left = undone.outcomes.filter((o) => !o.ok);
    if (left.length) return `; could not remove the shares already installed on ${left.map((o) => o.spiffeId).join(', ')} (delete them there: DELETE /v1/shares/${id}/${epoch})`;
    return mine.length ? '; the shares already installed were removed' : '';
  };
  if (installed.outcomes.some((o) => !o.ok)) {
    throw new TesseraError('TESSERA_SECRET_SHARE_INVALID', `not every key server took its share; nothing was published (${failedList(installed.outcomes)})${await takeBack()}`);
  }
  try {
    const res = await admin.control.call<CreateSecretPolicyResponse>('POST', '/v1/secret-policies', { id, epoch, t, n, commitments, servers } satisfies CreateSecretPolicyRequest);
    return { record: res.record, signed: res.signed };
  } catch (err) {
    // Refused for sure (e.g. the epoch exists): the shares just dealt would serve no record. An
    // unknown outcome leaves them: the record may exist (`secret policy show` tells).
    if (isTesseraError(err) && DEFINITE_REFUSALS.has(err.code)) throw new TesseraError(err.code, `the control plane refused the record (${err.message})${await takeBack()}`);
    throw err;
  }
}

/**
 * Rotates to a new key epoch (the newest known + 1), by default with the newest epoch's threshold
 * and key servers. Older epochs keep opening their blobs until retired.
 */
export async function rotateEpoch(admin: SecretAdmin, id: string, opts: { t?: number; servers?: SecretPolicyServer[] } = {}): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy; previous: number }> {
  const epochs = await listEpochs(admin, id);
  if (epochs.length === 0) throw new TesseraError('TESSERA_NOT_FOUND', `no secret policy ${id}: create it first`);
  const newest = epochs[epochs.length - 1]!.epoch;
  if (newest >= 0xffffffff) throw new TesseraError('TESSERA_CONFLICT', 'the key epoch cannot grow further');
  const active = [...epochs].reverse().find((e) => e.retired_at === null);
  const base = opts.t !== undefined && opts.servers !== undefined ? undefined : (await fetchRecord(admin, id, (active ?? epochs[epochs.length - 1]!).epoch).catch((err: unknown) => {
    if (isTesseraError(err) && err.code === 'TESSERA_SECRET_EPOCH_RETIRED') throw new TesseraError('TESSERA_CONFIG_INVALID', 'every key epoch is retired: pass --threshold and --servers');
    throw err;
  })).record;
  const servers = opts.servers ?? base!.servers;
  const t = opts.t ?? base!.t;
  if (t > servers.length) throw new TesseraError('TESSERA_CONFIG_INVALID', `--threshold ${t} is more than the ${servers.length} key servers`);
  const dealt = await dealEpoch(admin, { id, epoch: newest + 1, t, servers });
  return { ...dealt, previous: newest };
}

/**
 * Refreshes the shares of an epoch (default: the newest active one) to the next generation, same
 * key. Finishes first a refresh that was published but not committed everywhere. Returns the new
 * record and which servers committed; servers that could not commit still answer the new
 * generation from their prepared share, and the next refresh run commits them.
 */
export async function refreshEpoch(admin: SecretAdmin, id: string, epoch?: number): Promise<{ record: SecretPolicyRecord; signed: SignedSecretPolicy; commits: ServerOutcome[] }> {
  let { record, signed } = await fetchRecord(admin, id, epoch);
  if (record.t < 2) throw new TesseraError('TESSERA_CONFIG_INVALID', 'a 1-of-n policy cannot be refreshed (every share is the key): rotate it instead');
  const path = `/v1/shares/${id}/${record.epoch}`;
  const refreshing: Provisioning = { op: 'refresh', id, epoch: record.epoch };
  const progress = admin.progress ?? (() => {});

  // 0. Where is each server? A server one generation behind with the published one prepared was
  //    not reached by the last run's commit: commit it now.
  const states = await onEachServer(admin, refreshing, record.servers, async (client) => {
    const res = await client.call<ShareListResponse>('GET', '/v1/shares');
    return res.shares.find((s) => s.policy === id && s.epoch === record.epoch);
  });
  const unreachable = states.outcomes.filter((o) => !o.ok);
  if (unreachable.length) throw new TesseraError('TESSERA_SECRET_THRESHOLD', `a refresh needs every key server of the policy; not reached: ${failedList(states.outcomes)} (a server gone for good: \`secret policy rotate ${id} --servers ...\` to a new epoch without it)`);
  const behind = record.servers.filter((_, i) => states.values[i]?.generation !== record.generation);
  if (behind.length) {
    const lost = behind.filter((s) => states.values[record.servers.indexOf(s)]?.pending !== record.generation);
    if (lost.length) throw new TesseraError('TESSERA_CONFLICT', `key servers without share generation ${record.generation}: ${lost.map((s) => s.spiffeId).join(', ')}`);
    progress(`finishing generation ${record.generation} on ${behind.map((s) => s.spiffeId).join(', ')}`);
    const done = await onEachServer(admin, refreshing, behind, (client) => client.call<CommitShareResponse>('POST', `${path}/commit`, { generation: record.generation, commitments: record.commitments } satisfies CommitShareRequest));
    if (done.outcomes.some((o) => !o.ok)) throw new TesseraError('TESSERA_SECRET_THRESHOLD', `cannot finish the previous refresh: ${failedList(done.outcomes)}`);
  }

  // 1. Prepare: each server gets its delta and computes the new commitments itself.
  const deal = dealRefresh(record.t, record.n);
  const expected = refreshedCommitments(record.commitments.map(point), deal.D).map(b64u);
  const D = deal.D.map(b64u);
  let prepared: { outcomes: ServerOutcome[]; values: (unknown)[] };
  try {
    prepared = await onEachServer(admin, refreshing, record.servers, async (client, s) => {
      const delta = deal.deltas[s.index - 1]!;
      const res = await client.call<RefreshShareResponse>('POST', `${path}/refresh`, { from: record.generation, delta: b64u(delta.value), d: D } satisfies RefreshShareRequest);
      if (res.generation !== record.generation + 1 || res.index !== s.index || res.commitments.join() !== expected.join()) {
        throw new TesseraError('TESSERA_SECRET_SHARE_INVALID', 'the key server prepared another share generation or commitments than dealt');
      }
      return res;
    });
  } finally {
    for (const d of deal.deltas) d.value.fill(0);
  }
  if (prepared.outcomes.some((o) => !o.ok)) {
    await onEachServer(admin, refreshing, record.servers, (client) => client.call<AbortShareResponse>('DELETE', `${path}/pending`));
    throw new TesseraError('TESSERA_SECRET_SHARE_INVALID', `not every key server prepared the refresh; nothing was published and the prepared shares were dropped (${failedList(prepared.outcomes)})`);
  }
  progress(`all ${record.n} key servers prepared share generation ${record.generation + 1}`);

  // 2. Publish, 3. commit.
  let res: RefreshSecretPolicyResponse;
  try {
    res = await admin.control.call<RefreshSecretPolicyResponse>('POST', `/v1/secret-policies/${encodeURIComponent(id)}/epochs/${record.epoch}/refresh`, { generation: record.generation + 1, commitments: expected } satisfies RefreshSecretPolicyRequest);
  } catch (err) {
    // Refused for sure (another refresh won, retired, ...): drop the prepared shares. Outcome unknown
    // (unreachable, timeout): keep them, since the record may have been published; the next run
    // either commits them (published) or prepares anew (not published).
    if (isTesseraError(err) && DEFINITE_REFUSALS.has(err.code)) {
      await onEachServer(admin, refreshing, record.servers, (client) => client.call<AbortShareResponse>('DELETE', `${path}/pending`));
      throw new TesseraError(err.code, `the control plane refused the new generation (${err.message}); the prepared shares were dropped`);
    }
    throw new TesseraError(isTesseraError(err) ? err.code : 'TESSERA_INTERNAL', `publishing share generation ${record.generation + 1} failed with an unknown outcome; run \`secret policy refresh ${id}\` again to finish or redo it`);
  }
  const next = verifySecretPolicy(res.signed, admin.trusted);
  if (next.generation !== record.generation + 1 || next.commitments.join() !== expected.join()) throw new TesseraError('TESSERA_SECRET_POLICY_INVALID', 'the control plane published another record than asked');
  record = next;
  signed = res.signed;
  const commits = await onEachServer(admin, refreshing, record.servers, (client) => client.call<CommitShareResponse>('POST', `${path}/commit`, { generation: record.generation, commitments: record.commitments } satisfies CommitShareRequest));
  return { record, signed, commits: commits.outcomes };
}

/**
 * Retires a key epoch: every key server deletes its share (blobs sealed under it no longer open),
 * then the control plane marks it retired. Refuses the newest active epoch unless `force` (nothing
 * could be sealed afterwards). If some servers cannot be reached, the epoch is still marked retired
 * when fewer than t shares can remain (it can never open a blob again), and the servers that keep
 * a share are reported; otherwise nothing is marked and TESSERA_SECRET_THRESHOLD says to run it again.
 */
export async function retireEpoch(admin: SecretAdmin, id: string, epoch: number, force = false): Promise<{ deletes: ServerOutcome[]; retired: boolean }> {
  const epochs = await listEpochs(admin, id);
  const e = epochs.find((x) => x.epoch === epoch);
  if (!e) throw new TesseraError('TESSERA_NOT_FOUND', `secret policy ${id} has no key epoch ${epoch}`);
  if (e.retired_at !== null) return { deletes: [], retired: false };
  const active = epochs.filter((x) => x.retired_at === null);
  if (!force && active.length === 1) throw new TesseraError('TESSERA_CONFIG_INVALID', `epoch ${epoch} is the only active key epoch of ${id}: rotate first, or pass --force`);
  const { record } = await fetchRecord(admin, id, epoch);
  const deletes = (await onEachServer(admin, { op: 'retire', id, epoch }, record.servers, (client) => client.call<DeleteShareResponse>('DELETE', `/v1/shares/${id}/${epoch}`))).outcomes;
  const kept = deletes.filter((o) => !o.ok).length;
  if (kept >= record.t) throw new TesseraError('TESSERA_SECRET_THRESHOLD', `only ${record.n - kept} of ${record.n} key servers deleted their share; ${kept} (at least t = ${record.t}) still could open blobs, so the epoch is not marked retired: run it again (${failedList(deletes)})`);
  const r = await admin.control.call<RetireSecretPolicyResponse>('POST', `/v1/secret-policies/${encodeURIComponent(id)}/epochs/${epoch}/retire`, {});
  return { deletes, retired: r.retired };
}

/**
 * What one key server answered to a later commit: `committed` false when it already held the record's
 * share (or, not named by the record, none); `left` when the record does not name it (its old share
 * is deleted).
 */
export interface LaterCommit extends ServerOutcome { committed?: boolean; left?: boolean }

/**
 * Finishes a key generation's commit where the run could not deliver it (`tessera secret policy
 * commit`): the signed record of (policy, epoch) goes to each of its key servers, which commits the
 * finished session that record names, or answers that it already holds that share (idempotent). A
 * server whose session is gone (the 10-minute TTL, a restart) answers TESSERA_NOT_FOUND. `leftOut`:
 * key servers the record does not name (a reshare left them out) that may still hold an older share:
 * each deletes it, session or not.
 */
export async function commitLater(admin: SecretAdmin, id: string, epoch?: number, leftOut: SecretPolicyServer[] = []): Promise<{ record: SecretPolicyRecord; outcomes: LaterCommit[] }> {
  const { record, signed } = await fetchRecord(admin, id, epoch);
  const named = new Set(record.servers.map((s) => s.spiffeId));
  const servers = [...record.servers, ...leftOut.filter((s) => !named.has(s.spiffeId))];
  const what: Provisioning = { op: record.generation === 1 ? 'create' : 'refresh', id, epoch: record.epoch };
  const r = await onEachServer(admin, what, servers, (client) => client.call<DkgCommitResponse>('POST', '/v1/dkg/commit', { record: signed } satisfies DkgCommitRequest));
  return {
    record,
    outcomes: r.outcomes.map((o, i) => {
      const left = !named.has(o.spiffeId);
      const base = left ? { ...o, index: 0, left } : o;
      return r.values[i] === undefined ? base : { ...base, committed: r.values[i]!.committed };
    }),
  };
}

/** Runs `fn` (libsodium ready) with the admin's credential for the key servers and the control plane. */
export async function withSecretAdmin<T>(at: AdminLocation, progress: ((line: string) => void) | undefined, fn: (admin: SecretAdmin) => Promise<T>): Promise<T> {
  await ready();
  // A person's `tessera login` certificate provisions with an authorization per phase; an admin
  // credential directory (bootstrap, named admin) as before.
  const cred = adminCredential(at);
  const tls = adminCredentialTls(at);
  const control = adminClient(at);
  try {
    return await fn({
      tls, control, trusted: pemDecodeAll(tls.ca, 'CERTIFICATE'), ...(progress ? { progress } : {}),
      ...(cred.kind === 'login' ? { authorize: (op: ProvisionOp, id: string, epoch: number, ks: string[]) => requestProvisionAuthorization(control, op, id, epoch, ks) } : {}),
    });
  } finally {
    control.close();
  }
}

/** The signed envelope from a show/create answer, a saved `show --json`, or a bare envelope. */
function envelopeOf(v: unknown): unknown {
  if (typeof v === 'object' && v !== null && 'signed' in v) return (v as { signed: unknown }).signed;
  return v;
}

/** A saved signed record (`tessera secret policy show NAME --json`), verified, and checked to be of policy `id` (and `epoch`). */
export function readSavedRecord(file: string, id: string, epoch: number | undefined, trusted: Buffer[]): SecretPolicyRecord {
  let saved: unknown;
  try {
    saved = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw new TesseraError('TESSERA_SECRET_POLICY_INVALID', `${file} is not a saved signed record (JSON)`);
  }
  const record = verifySecretPolicy(envelopeOf(saved), trusted);
  if (record.id !== id || (epoch !== undefined && record.epoch !== epoch)) throw new TesseraError('TESSERA_SECRET_POLICY_INVALID', `${file} is the record of ${record.id} epoch ${record.epoch}`);
  return record;
}

/** Seals `plain` under a verified record's public key (its first commitment). */
export function sealToRecord(plain: Uint8Array, record: SecretPolicyRecord): Buffer {
  return seal(plain, { id: record.id, epoch: record.epoch, publicKey: point(record.commitments[0]!) });
}

/** Unseals a sealed text as the agent whose SVID files are in `agentDir` (the flow is src/agent/secrets/unseal.ts). */
export async function unsealWithAgentDir(text: string, agentDir: string, server: string | undefined, report: (f: KeyServerFailure) => void): Promise<Buffer> {
  const tls = agentTls(agentDir);
  const client = svidClient(agentDir, server);
  try {
    const res = await unsealSealedText({
      text,
      call: (method, path, body) => client.call(method, path, body),
      tls: { certPem: tls.cert!, keyPem: tls.key!, bundlePem: tls.ca },
      trustedCas: pemDecodeAll(tls.ca, 'CERTIFICATE'),
    });
    for (const f of res.bad) report(f);
    return res.plaintext;
  } catch (err) {
    for (const f of (err as { failures?: KeyServerFailure[] }).failures ?? []) report(f);
    throw err;
  } finally {
    client.close();
  }
}
