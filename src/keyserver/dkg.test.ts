/**
 * Distributed key generation through real key servers (HTTPS with mutual TLS on 127.0.0.1, a test
 * CA, one data dir each), driven by an in-test relay (DkgRelayView) and an in-test "control plane"
 * that checks the transcript and signs the record: a new key, a refresh, reshares that add and remove
 * servers, a server killed mid-session, and every refusal of the routes.
 */
import { X509Certificate, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { announceBody, httpsCall, type Reply } from '../../test/support/https-call.js';
import { isTesseraError } from '../core/errors.js';
import { silentLogger } from '../core/log.js';
import {
  DkgRelayView, blind, combineAndUnblind, decodePoint, decodeProof, openWithPoint, parseBlob, ready, seal, unsealContext, verifyTranscript,
  type Evaluation, type SignedDkgMessage,
} from '../core/secrets/index.js';
import { dkgVerifier } from '../core/secrets/dkg-identity.js';
import { parseDkgParamsWire } from '../core/secrets/dkg-params-wire.js';
import { PROVISION_AUTHORIZATION_HEADER, encodeProvisionAuthorization, signProvisionAuthorization, type ProvisionOp } from '../core/secrets/provision-authorization.js';
import { signSecretPolicy, type SecretPolicyRecord, type SignedSecretPolicy } from '../core/secrets/policy-record.js';
import type { DkgParamsWire, DkgPublicResultWire } from '../core/wire/dkg.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../core/x509.js';
import type { TlsMaterial, TlsSource } from '../common/tls-source.js';
import type { DkgSessionEvent } from './dkg.js';
import { DKG_BODY_LIMIT, startKeyServer, type KeyServer } from './server.js';
import type { KeyAuditEvent } from './service.js';

const TD = 'tessera.test';
const ADMIN = `spiffe://${TD}/tessera/admin`;
const APP = `spiffe://${TD}/shop/orders`;
const HOUR = 3600_000;
const PLAIN = 'postgres://orders:dKg-TEST-secret@db.internal/orders';
const POLICY = 'shop.db';

// --- Test CA and SVIDs (the shapes of server.test.ts) -------------------------------------------
const now = Date.now();
function makeCa(name: string) {
  const key = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = createSelfSignedCa({ ...key, commonName: name, trustDomainUri: `spiffe://${TD}`, notBefore: new Date(now - HOUR), notAfter: new Date(now + HOUR) });
  return { key, der, pem: pemEncode(der, 'CERTIFICATE'), issuer: new CertificateIssuer({ certDer: der, privateKey: key.privateKey }) };
}
const ca = makeCa('Tessera test CA');
const rogue = makeCa('Rogue CA');

interface Svid { certPem: string; der: Buffer; key: KeyObject; keyPem: string }
function svid(id: string, by = ca): Svid {
  const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = by.issuer.issueLeaf({ publicKey: k.publicKey, notBefore: new Date(now - 60_000), notAfter: new Date(now + HOUR), uriSans: [id], ipSans: ['127.0.0.1'] });
  return { certPem: pemEncode(der, 'CERTIFICATE'), der, key: k.privateKey, keyPem: k.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

class FakeSource extends EventEmitter implements TlsSource {
  constructor(private material: TlsMaterial) { super(); }
  current(): TlsMaterial { return this.material; }
  /** The agent renewed the SVID (a new key): the key server rebuilds its TLS context. */
  rotate(m: TlsMaterial): void {
    this.material = m;
    this.emit('svid');
  }
}

const creds = { admin: svid(ADMIN), app: svid(APP) };

function call(url: string, method: string, path: string, body: unknown, who: Svid | null = creds.admin, headers: Record<string, string> = {}): Promise<Reply> {
  return httpsCall(url, method, path, body, { ca: ca.pem, who, headers });
}
const codeOf = (r: Reply): [number, string | undefined] => [r.status, (r.json.error as { code?: string } | undefined)?.code];
const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');

// --- Key servers ---------------------------------------------------------------------------------
interface Ks { name: string; id: string; svid: Svid; dir: string; server: KeyServer; url: string; source: FakeSource }
const all: Ks[] = [];
const audits: KeyAuditEvent[] = [];
const bodies: string[] = [];
const events: DkgSessionEvent[] = [];

async function startKs(name: string, dkg?: { ttlMs?: number; maxSessions?: number }, provision = false): Promise<Ks> {
  const id = `spiffe://${TD}/tessera/keyserver/${name}`;
  const s = svid(id);
  const dir = mkdtempSync(join(tmpdir(), `tessera-dkg-${name}-`));
  const source = new FakeSource({ spiffeId: id, certPem: s.certPem, key: s.key, bundlePem: ca.pem });
  const server = await startKeyServer({
    dataDir: dir,
    listen: { host: '127.0.0.1', port: 0 },
    tls: source,
    trustDomain: TD,
    authorize: (caller) => caller.spiffeId === APP,
    provisioners: [ADMIN],
    log: silentLogger,
    env: { TESSERA_KEK: randomBytes(32).toString('hex') },
    onAudit: (e) => audits.push(e),
    onRequestBody: ({ body }) => bodies.push(body),
    observeDkg: (e) => events.push(e),
    ...(dkg ? { dkg } : {}),
    ...(provision ? { provisionAuthorization: { self: () => id, trustedCas: () => [ca.der] } } : {}),
  });
  const ks = { name, id, svid: s, dir, server, url: server.url, source };
  all.push(ks);
  return ks;
}

const sessionId = (): string => b64u(randomBytes(16));
const entry = (ks: Ks, index: number) => ({ url: ks.url, spiffeId: ks.id, index });
const certificatesOf = (list: Ks[]): Record<string, string[]> => Object.fromEntries(list.map((k) => [k.id, [k.svid.der.toString('base64')]]));

function newKey(servers: Ks[], t: number, epoch: number): DkgParamsWire {
  return { kind: 'dkg', session: sessionId(), policy: POLICY, epoch, t, servers: servers.map((k, i) => entry(k, i + 1)) };
}

interface Run {
  params: DkgParamsWire;
  participants: Ks[];
  results: Map<string, DkgPublicResultWire>;
  relay: DkgRelayView;
  certificates: Record<string, string[]>;
  /** Every response body the relay got (must carry nothing secret). */
  traffic: string[];
}

/**
 * The relay: start everywhere, then per round close the set and post it to every server still
 * running. `kill`: close that server's process right after it answered for `round`.
 */
async function relay(params: DkgParamsWire, opts: { kill?: { ks: Ks; after: string }; after?: (round: string) => void } = {}): Promise<Run> {
  const parsed = parseDkgParamsWire(params).params;
  const view = new DkgRelayView(parsed);
  const byId = new Map(all.map((k) => [k.id, k]));
  const participants = view.parties.map((id) => byId.get(id)!);
  const certificates = certificatesOf(participants);
  const traffic: string[] = [];
  let running: Ks[] = [];
  for (const ks of participants) {
    const r = await call(ks.url, 'POST', '/v1/dkg', { params, certificates });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.session).toBe(params.session);
    expect(r.json.round).toBe('hello');
    traffic.push(JSON.stringify(r.json));
    view.add(r.json.message);
    running.push(ks);
  }
  const results = new Map<string, DkgPublicResultWire>();
  for (const round of view.schedule) {
    const set = view.close(round);
    if (round === 'confirm') break;
    const still: Ks[] = [];
    for (const ks of running) {
      const r = await call(ks.url, 'POST', `/v1/dkg/${params.session}/next`, { set }).catch(() => undefined);
      if (r === undefined) continue; // dead: the relay goes on without it
      expect(r.status, JSON.stringify(r.json)).toBe(200);
      traffic.push(JSON.stringify(r.json));
      view.add(r.json.message as SignedDkgMessage);
      if (r.json.done) results.set(ks.id, r.json.done as DkgPublicResultWire);
      if (opts.kill?.ks === ks && opts.kill.after === round) await ks.server.close();
      else still.push(ks);
    }
    running = still;
    opts.after?.(round);
  }
  return { params, participants, results, relay: view, certificates, traffic };
}

/** The control plane: checks the transcript and signs the record the servers computed. */
function signRecord(run: Run, generation: number, over: Partial<SecretPolicyRecord> = {}, by = ca): SignedSecretPolicy {
  const parsed = parseDkgParamsWire(run.params).params;
  const verdict = verifyTranscript(parsed, dkgVerifier(run.certificates, [ca.der], TD), run.relay.log());
  const first = [...run.results.values()][0]!;
  expect(verdict.commitments.map(b64u)).toEqual(first.commitments);
  expect(verdict.disagreeing).toEqual([]);
  const record: SecretPolicyRecord = {
    id: run.params.policy, epoch: run.params.epoch, t: first.t, n: run.params.servers.length, generation,
    commitments: first.commitments, servers: run.params.servers, createdAt: new Date().toISOString(), ...over,
  };
  return signSecretPolicy(record, { privateKey: by.key.privateKey, certDer: by.der });
}

async function commitAll(run: Run, record: SignedSecretPolicy, on = run.participants): Promise<Reply[]> {
  const out: Reply[] = [];
  for (const ks of on) out.push(await call(ks.url, 'POST', `/v1/dkg/${run.params.session}/commit`, { record }));
  return out;
}

/** The agent's side: blind, ask each server, check the proofs, combine, open. */
async function unseal(blob: Buffer, using: Ks[], commitments: string[]): Promise<string> {
  const parsed = parseBlob(blob);
  const blinded = blind(parsed.R);
  const context = unsealContext(parsed.policyId, parsed.epoch);
  const evals: Evaluation[] = [];
  for (const ks of using) {
    const r = await call(ks.url, 'POST', '/v1/evaluate', { policy: parsed.policyId, epoch: parsed.epoch, b: b64u(blinded.B) }, creds.app);
    if (r.status !== 200) throw new Error(`evaluate ${r.status} ${JSON.stringify(r.json)}`);
    evals.push({ index: r.json.index as number, Z: new Uint8Array(Buffer.from(r.json.z as string, 'base64url')), proof: decodeProof(new Uint8Array(Buffer.from(r.json.proof as string, 'base64url'))) });
  }
  const points = commitments.map((c) => decodePoint(new Uint8Array(Buffer.from(c, 'base64url'))));
  const { point, bad } = combineAndUnblind(evals, points, blinded, points.length, context);
  expect(bad).toEqual([]);
  return openWithPoint(parsed, point).toString('utf8');
}

const ks: Ks[] = [];
beforeAll(async () => {
  await ready();
  for (let i = 1; i <= 6; i++) ks.push(await startKs(`ks${i}`));
});

afterAll(async () => {
  for (const k of all) await k.server.close().catch(() => {});
  for (const k of all) rmSync(k.dir, { recursive: true, force: true });
});

describe('DKG through real key servers', () => {
  let commitments: string[];
  let blob: Buffer;

  it('a new 2-of-3 key: no share is usable before the commit; after it, any two servers open a blob sealed under P', async () => {
    const params = newKey(ks.slice(0, 3), 2, 1);
    const run = await relay(params);
    expect(run.results.size).toBe(3);
    const first = [...run.results.values()][0]!;
    for (const r of run.results.values()) expect(r).toEqual(first);
    expect(first.kind).toBe('dkg');
    expect(first.commitments).toHaveLength(2);
    expect(first.public_key).toBe(first.commitments[0]);
    commitments = first.commitments;
    blob = seal(Buffer.from(PLAIN), { id: POLICY, epoch: 1, publicKey: decodePoint(new Uint8Array(Buffer.from(first.public_key, 'base64url'))) });
    // finished but not committed: nothing installed, /v1/evaluate has no share
    for (const k of ks.slice(0, 3)) expect(k.server.store.get(POLICY, 1)).toBeUndefined();
    await expect(unseal(blob, ks.slice(0, 2), commitments)).rejects.toThrow(/evaluate 404/);
    const replies = await commitAll(run, signRecord(run, 1));
    replies.forEach((r, i) => expect(r).toEqual({ status: 200, json: { policy: POLICY, epoch: 1, generation: 1, index: i + 1, committed: true } }));
    // another record (another createdAt and signature) after the commit is refused
    const again = await commitAll(run, signRecord(run, 1), ks.slice(0, 1));
    expect(codeOf(again[0]!)).toEqual([409, 'TESSERA_CONFLICT']);
    expect(await unseal(blob, [ks[0]!, ks[1]!], commitments)).toBe(PLAIN);
    expect(await unseal(blob, [ks[1]!, ks[2]!], commitments)).toBe(PLAIN);
    expect(await unseal(blob, [ks[2]!, ks[0]!], commitments)).toBe(PLAIN);
    expect(ks[0]!.server.store.get(POLICY, 1)!.generation).toBe(1);
    // the relay saw only public material: no share of any server appears in its traffic
    const shares = ks.slice(0, 3).map((k) => b64u(k.server.store.get(POLICY, 1)!.value));
    for (const t of run.traffic) for (const s of shares) expect(t).not.toContain(s);
    // audited: start, next (×7), commit per server
    const mine = audits.filter((a) => a.session === params.session);
    expect(mine.filter((a) => a.action === 'secret:dkg-start' && a.outcome === 'allowed')).toHaveLength(3);
    expect(mine.filter((a) => a.action === 'secret:dkg-commit' && a.outcome === 'allowed')).toHaveLength(3);
    expect(mine.every((a) => a.policy === POLICY && a.epoch === 1 && a.actor === ADMIN)).toBe(true);
    expect(events).toEqual(expect.arrayContaining(['started', 'finished', 'committed']));
  });

  it('an identical commit retried is idempotent ({committed: false}), and the record is the same', async () => {
    const params = newKey(ks.slice(0, 3), 2, 7);
    const run = await relay(params);
    const record = signRecord(run, 1);
    expect((await commitAll(run, record)).map((r) => r.json.committed)).toEqual([true, true, true]);
    expect((await commitAll(run, record)).map((r) => [r.status, r.json.committed])).toEqual([[200, false], [200, false], [200, false]]);
  });

  it('POST /v1/dkg/commit finds the finished session by the record (a commit the relay could not deliver); idempotent; refusals', async () => {
    const params = newKey(ks.slice(0, 3), 2, 8);
    const run = await relay(params);
    const record = signRecord(run, 1);
    // the relay's commit reached ks1 only
    expect((await commitAll(run, record, ks.slice(0, 1)))[0]!.json.committed).toBe(true);
    const later = (k: Ks, body: unknown = { record }, who: Svid | null = creds.admin): Promise<Reply> => call(k.url, 'POST', '/v1/dkg/commit', body, who);
    expect(await later(ks[1]!)).toEqual({ status: 200, json: { policy: POLICY, epoch: 8, generation: 1, index: 2, committed: true } });
    expect(await later(ks[2]!)).toEqual({ status: 200, json: { policy: POLICY, epoch: 8, generation: 1, index: 3, committed: true } });
    expect(ks[2]!.server.store.get(POLICY, 8)!.generation).toBe(1);
    // asked again, or asking one the relay reached: nothing changes
    for (const k of ks.slice(0, 3)) expect((await later(k)).json).toMatchObject({ committed: false, generation: 1 });
    // another signed record of the same result (another createdAt): the share it names is held, nothing changes
    expect((await later(ks[1]!, { record: signRecord(run, 1) })).json).toMatchObject({ committed: false, index: 2 });
    // a record of this epoch naming other commitments: not held, no session → 404
    expect(codeOf(await later(ks[1]!, { record: signRecord(run, 1, { commitments: [...run.results.values().next().value!.commitments].reverse() }) }))).toEqual([404, 'TESSERA_NOT_FOUND']);
    // audited as a commit of this policy and epoch, with the session it found
    const mine = audits.filter((a) => a.action === 'secret:dkg-commit' && a.epoch === 8 && a.outcome === 'allowed');
    expect(mine.length).toBeGreaterThanOrEqual(3);
    expect(mine.every((a) => a.policy === POLICY)).toBe(true);

    // no session for the record's epoch, and no share of it: 404
    const ghost = signRecord(run, 1, { epoch: 9 });
    expect(codeOf(await later(ks[0]!, { record: ghost }))).toEqual([404, 'TESSERA_NOT_FOUND']);
    // a session still running for the record's epoch: 409
    const running = newKey(ks.slice(0, 3), 2, 9);
    expect((await call(ks[0]!.url, 'POST', '/v1/dkg', { params: running, certificates: certificatesOf(ks.slice(0, 3)) })).status).toBe(200);
    expect(codeOf(await later(ks[0]!, { record: ghost }))).toEqual([409, 'TESSERA_CONFLICT']);
    expect((await call(ks[0]!.url, 'DELETE', `/v1/dkg/${running.session}`, undefined)).json.aborted).toBe(true);
    // forged or malformed
    expect(codeOf(await later(ks[0]!, { record: signRecord(run, 1, {}, rogue) }))).toEqual([400, 'TESSERA_SECRET_POLICY_INVALID']);
    expect(codeOf(await later(ks[0]!, { record: { ...record, payload: record.payload.slice(0, -2) } }))).toEqual([400, 'TESSERA_SECRET_POLICY_INVALID']);
    expect(codeOf(await later(ks[0]!, { record, extra: 1 }))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    expect(codeOf(await later(ks[0]!, []))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    // not an admin, no provisioning authorization: 403 before the body is read
    expect(codeOf(await later(ks[0]!, { record }, creds.app))).toEqual([403, 'TESSERA_FORBIDDEN']);
  });

  it('POST /v1/dkg/commit on servers a reshare left out: each deletes its older share, with or without the session; a newer share is kept (409)', async () => {
    const E = 10;
    const four = ks.slice(0, 4);
    const made = await relay(newKey(four, 2, E));
    expect((await commitAll(made, signRecord(made, 1))).map((r) => r.status)).toEqual([200, 200, 200, 200]);
    const key0 = [...made.results.values()][0]!.commitments;
    // 2-of-4 → 2-of-2 on ks1, ks2: ks3 and ks4 deal and leave, but only ks1 and ks2 hear the commit.
    const two = ks.slice(0, 2);
    const p2: DkgParamsWire = { kind: 'reshare', session: sessionId(), policy: POLICY, epoch: E, t: 2, servers: two.map((k, i) => entry(k, i + 1)), old: { commitments: key0, servers: four.map((k, i) => entry(k, i + 1)) } };
    const run2 = await relay(p2);
    const record2 = signRecord(run2, 2);
    await commitAll(run2, record2, two);
    expect(ks[2]!.server.store.get(POLICY, E)!.generation).toBe(1);
    // ks4's finished session is gone (aborted here; expired or restarted alike)
    expect((await call(ks[3]!.url, 'DELETE', `/v1/dkg/${p2.session}`, undefined)).json.aborted).toBe(true);
    const later = (k: Ks, record: SignedSecretPolicy): Promise<Reply> => call(k.url, 'POST', '/v1/dkg/commit', { record });
    for (const k of [ks[2]!, ks[3]!]) {
      expect(await later(k, record2)).toEqual({ status: 200, json: { policy: POLICY, epoch: E, generation: 2, index: null, committed: true } });
      expect(k.server.store.get(POLICY, E)).toBeUndefined();
      expect((await later(k, record2)).json).toMatchObject({ index: null, committed: false });
    }
    // ks4 joins again (generation 3); the generation-2 record, which does not name it, then deletes nothing.
    const key2 = [...run2.results.values()][0]!.commitments;
    const p3: DkgParamsWire = { kind: 'reshare', session: sessionId(), policy: POLICY, epoch: E, t: 2, servers: [ks[0]!, ks[1]!, ks[3]!].map((k, i) => entry(k, i + 1)), old: { commitments: key2, servers: two.map((k, i) => entry(k, i + 1)) } };
    const run3 = await relay(p3);
    expect((await commitAll(run3, signRecord(run3, 3))).map((r) => r.status)).toEqual([200, 200, 200]);
    expect(codeOf(await later(ks[3]!, record2))).toEqual([409, 'TESSERA_CONFLICT']);
    expect(ks[3]!.server.store.get(POLICY, E)!.generation).toBe(3);
  });

  it('a refresh: new shares (generation 2) of the same key; the old blob still opens, old shares are gone', async () => {
    const before = ks.slice(0, 3).map((k) => b64u(k.server.store.get(POLICY, 1)!.value));
    const params: DkgParamsWire = { kind: 'refresh', session: sessionId(), policy: POLICY, epoch: 1, servers: ks.slice(0, 3).map((k, i) => entry(k, i + 1)), commitments };
    const run = await relay(params);
    const first = [...run.results.values()][0]!;
    expect(first.public_key).toBe(commitments[0]);
    expect(first.commitments).not.toEqual(commitments);
    // finished, not committed: generation 2 is unknown to /v1/evaluate, generation 1 still answers
    const B = b64u(blind(parseBlob(blob).R).B);
    const early = await call(ks[0]!.url, 'POST', '/v1/evaluate', { policy: POLICY, epoch: 1, generation: 2, b: B }, creds.app);
    expect(codeOf(early)).toEqual([409, 'TESSERA_SECRET_STALE']);
    expect(await unseal(blob, [ks[0]!, ks[1]!], commitments)).toBe(PLAIN);
    const replies = await commitAll(run, signRecord(run, 2));
    expect(replies.map((r) => r.json.generation)).toEqual([2, 2, 2]);
    commitments = first.commitments;
    const after = ks.slice(0, 3).map((k) => b64u(k.server.store.get(POLICY, 1)!.value));
    after.forEach((a, i) => expect(a).not.toBe(before[i]));
    expect(await unseal(blob, [ks[0]!, ks[2]!], commitments)).toBe(PLAIN);
  });

  it('a reshare 2-of-3 → 3-of-5 with two new servers, then 3-of-5 → 2-of-4 leaving two servers out (they delete their share)', async () => {
    const old = { commitments, servers: ks.slice(0, 3).map((k, i) => entry(k, i + 1)) };
    const params: DkgParamsWire = { kind: 'reshare', session: sessionId(), policy: POLICY, epoch: 1, t: 3, servers: ks.slice(0, 5).map((k, i) => entry(k, i + 1)), old };
    const run = await relay(params);
    expect(run.results.size).toBe(5);
    const first = [...run.results.values()][0]!;
    expect(first.public_key).toBe(commitments[0]);
    expect(first.commitments).toHaveLength(3);
    const replies = await commitAll(run, signRecord(run, 3));
    expect(replies.map((r) => [r.status, r.json.index, r.json.generation])).toEqual([1, 2, 3, 4, 5].map((i) => [200, i, 3]));
    commitments = first.commitments;
    expect(await unseal(blob, [ks[0]!, ks[3]!, ks[4]!], commitments)).toBe(PLAIN);
    expect(await unseal(blob, [ks[1]!, ks[2]!, ks[4]!], commitments)).toBe(PLAIN);

    // 3-of-5 → 2-of-4 over ks2, ks3, ks4, ks6: ks1 and ks5 deal and leave; ks6 is new
    const newSet = [ks[1]!, ks[2]!, ks[3]!, ks[5]!];
    const params2: DkgParamsWire = { kind: 'reshare', session: sessionId(), policy: POLICY, epoch: 1, t: 2, servers: newSet.map((k, i) => entry(k, i + 1)), old: { commitments, servers: ks.slice(0, 5).map((k, i) => entry(k, i + 1)) } };
    const run2 = await relay(params2);
    expect(run2.results.size).toBe(6);
    const record = signRecord(run2, 4);
    const r2 = await commitAll(run2, record);
    expect(r2.map((r) => [r.status, r.json.index])).toEqual([[200, null], [200, 1], [200, 2], [200, 3], [200, null], [200, 4]]);
    expect(ks[0]!.server.store.get(POLICY, 1)).toBeUndefined();
    expect(ks[4]!.server.store.get(POLICY, 1)).toBeUndefined();
    commitments = [...run2.results.values()][0]!.commitments;
    expect(await unseal(blob, [ks[1]!, ks[5]!], commitments)).toBe(PLAIN);
    expect(await unseal(blob, [ks[2]!, ks[3]!], commitments)).toBe(PLAIN);
  });

  it('a server killed mid-session: the others finish a 3-of-5 key and open with it', async () => {
    const victim = await startKs('victim');
    const set = [ks[0]!, ks[1]!, ks[2]!, ks[3]!, victim];
    const params = newKey(set, 3, 2);
    const run = await relay(params, { kill: { ks: victim, after: 'deal' } });
    expect(run.results.size).toBe(4);
    const first = [...run.results.values()][0]!;
    expect(first.stopped.map((s) => s.spiffeId)).toContain(victim.id);
    const replies = await commitAll(run, signRecord(run, 1), set.slice(0, 4));
    expect(replies.every((r) => r.status === 200)).toBe(true);
    const sealed = seal(Buffer.from(PLAIN), { id: POLICY, epoch: 2, publicKey: decodePoint(new Uint8Array(Buffer.from(first.public_key, 'base64url'))) });
    expect(await unseal(sealed, [ks[0]!, ks[2]!, ks[3]!], first.commitments)).toBe(PLAIN);
  });
});

describe('an SVID renewed during a session', () => {
  it('the session goes on with the key and chain it started with; the next session uses the new ones', async () => {
    const renewing = await startKs('renewing');
    const set = [ks[0]!, ks[1]!, renewing];
    const params = newKey(set, 2, 3);
    const renew = (): void => {
      renewing.svid = svid(renewing.id);
      renewing.source.rotate({ spiffeId: renewing.id, certPem: renewing.svid.certPem, key: renewing.svid.key, bundlePem: ca.pem });
    };
    const run = await relay(params, { after: (round) => { if (round === 'deal') renew(); } });
    expect(run.results.size).toBe(3);
    const first = [...run.results.values()][0]!;
    expect(first.stopped).toEqual([]);
    // The transcript verifies against the chains given at the start (the old certificate is still valid).
    const replies = await commitAll(run, signRecord(run, 1));
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200]);
    // The key server answers with its new certificate now.
    const served = await new Promise<Buffer>((resolve, reject) => {
      const req = httpsRequest(`${renewing.url}/v1/healthz`, { ca: ca.pem, cert: creds.admin.certPem, key: creds.admin.keyPem, agent: false }, (res) => {
        resolve((res.socket as import('node:tls').TLSSocket).getPeerCertificate().raw);
        res.resume();
      });
      req.on('error', reject);
      req.end();
    });
    expect(served.equals(renewing.svid.der)).toBe(true);
    const sealed = seal(Buffer.from(PLAIN), { id: POLICY, epoch: 3, publicKey: decodePoint(new Uint8Array(Buffer.from(first.public_key, 'base64url'))) });
    expect(await unseal(sealed, [ks[0]!, renewing], first.commitments)).toBe(PLAIN);
    // A new session signs with the new key: given the old chain, its messages would not verify.
    const next = newKey(set, 2, 4);
    const stale = { ...certificatesOf(set), [renewing.id]: [run.certificates[renewing.id]![0]!] };
    expect(stale[renewing.id]![0]).not.toBe(renewing.svid.der.toString('base64'));
    const fresh = await relay(next);
    expect(fresh.results.size).toBe(3);
    expect((await commitAll(fresh, signRecord(fresh, 1))).map((r) => r.status)).toEqual([200, 200, 200]);
    const parsed = parseDkgParamsWire(next).params;
    expect(() => verifyTranscript(parsed, dkgVerifier(stale, [ca.der], TD), fresh.relay.log())).toThrow();
  });
});

describe('DKG route refusals', () => {
  const trio = () => ks.slice(0, 3);
  const start = (k: Ks, params: unknown, certificates: unknown = certificatesOf(trio()), who: Svid | null = creds.admin) => call(k.url, 'POST', '/v1/dkg', { params, certificates }, who);
  let epoch = 100;

  it('without an admin certificate: no client certificate fails the handshake; another SVID is 403 on every route (audited as denied)', async () => {
    const p = newKey(trio(), 2, epoch++);
    const noCert = await start(ks[0]!, p, certificatesOf(trio()), null).then(() => undefined, (err: Error) => err);
    expect(noCert).toBeDefined();
    expect(codeOf(await start(ks[0]!, p, certificatesOf(trio()), creds.app))).toEqual([403, 'TESSERA_FORBIDDEN']);
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${p.session}/next`, { set: [] }, creds.app))).toEqual([403, 'TESSERA_FORBIDDEN']);
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${p.session}/commit`, { record: {} }, creds.app))).toEqual([403, 'TESSERA_FORBIDDEN']);
    expect(codeOf(await call(ks[0]!.url, 'DELETE', `/v1/dkg/${p.session}`, undefined, creds.app))).toEqual([403, 'TESSERA_FORBIDDEN']);
    // Refused before its body is read (below), so the start's denial cannot name the session the body held.
    expect(audits.some((a) => a.action === 'secret:dkg-start' && a.outcome === 'denied' && a.actor === APP && a.code === 'TESSERA_FORBIDDEN')).toBe(true);
    expect(audits.some((a) => a.action === 'secret:dkg-next' && a.outcome === 'denied' && a.actor === APP && a.session === p.session)).toBe(true);
  });

  it('refuses a caller with neither admin rights nor a provisioning authorization before reading its (up to 2 MiB) body', async () => {
    const url = ks[0]!.url;
    for (const path of ['/v1/dkg', `/v1/dkg/${newKey(trio(), 2, epoch++).session}/next`, '/v1/dkg/commit', `/v1/dkg/${newKey(trio(), 2, epoch++).session}/commit`]) {
      // Announces 2 MiB and sends 2 bytes: only a refusal before the body can answer at all.
      const answer = await announceBody(url, path, DKG_BODY_LIMIT - 1, { ca: ca.pem, who: creds.app });
      expect(answer.status).toBe(403);
      expect((answer.json.error as { code: string }).code).toBe('TESSERA_FORBIDDEN');
    }
  });

  it('refuses bad parameters field by field (400 TESSERA_DKG_PARAMS_INVALID) and bad bodies (400 TESSERA_BAD_REQUEST)', async () => {
    const good = newKey(trio(), 2, epoch++);
    const cases: [string, unknown][] = [
      ['kind', { ...good, kind: 'deal' }],
      ['short session', { ...good, session: b64u(randomBytes(8)) }],
      ['non-canonical session', { ...good, session: `${b64u(randomBytes(16)).slice(0, 21)}B` }],
      ['session not a string', { ...good, session: 5 }],
      ['policy', { ...good, policy: 'Shop DB' }],
      ['epoch negative', { ...good, epoch: -1 }],
      ['epoch too big', { ...good, epoch: 2 ** 32 }],
      ['epoch not an integer', { ...good, epoch: 1.5 }],
      ['t zero', { ...good, t: 0 }],
      ['t above n', { ...good, t: 4 }],
      ['no servers', { ...good, servers: [] }],
      ['33 servers', { ...good, servers: Array.from({ length: 33 }, (_, i) => ({ url: 'https://x.test', spiffeId: `spiffe://${TD}/k/${i}`, index: i + 1 })) }],
      ['index 0', { ...good, servers: good.servers.map((s, i) => ({ ...s, index: i })) }],
      ['index above n', { ...good, servers: good.servers.map((s, i) => ({ ...s, index: i + 2 })) }],
      ['repeated index', { ...good, servers: good.servers.map((s) => ({ ...s, index: 1 })) }],
      ['repeated SPIFFE ID', { ...good, servers: good.servers.map((s) => ({ ...s, spiffeId: good.servers[0]!.spiffeId })) }],
      ['bad SPIFFE ID', { ...good, servers: [{ ...good.servers[0]!, spiffeId: 'https://x' }, ...good.servers.slice(1)] }],
      ['other trust domain', { ...good, servers: [{ ...good.servers[0]!, spiffeId: 'spiffe://other.test/ks' }, ...good.servers.slice(1)] }],
      ['http url', { ...good, servers: [{ ...good.servers[0]!, url: 'http://127.0.0.1:1' }, ...good.servers.slice(1)] }],
      ['extra server field', { ...good, servers: [{ ...good.servers[0]!, extra: 1 }, ...good.servers.slice(1)] }],
      ['extra field', { ...good, extra: 1 }],
      ['missing t', { kind: 'dkg', session: good.session, policy: POLICY, epoch: 1, servers: good.servers }],
      ['refresh with a t field', { kind: 'refresh', session: good.session, policy: POLICY, epoch: 1, t: 2, servers: good.servers, commitments: [] }],
      ['refresh commitments not points', { kind: 'refresh', session: good.session, policy: POLICY, epoch: 1, servers: good.servers, commitments: ['x'.repeat(43), 'y'.repeat(43)] }],
      ['refresh commitments repeated', { kind: 'refresh', session: good.session, policy: POLICY, epoch: 1, servers: good.servers, commitments: [b64u(new Uint8Array(32).fill(2)), b64u(new Uint8Array(32).fill(2))] }],
      ['reshare without old', { kind: 'reshare', session: good.session, policy: POLICY, epoch: 1, t: 2, servers: good.servers }],
      ['reshare old servers below old t', { kind: 'reshare', session: good.session, policy: POLICY, epoch: 1, t: 2, servers: good.servers, old: { commitments: ['a', 'b'], servers: good.servers.slice(0, 1) } }],
      ['params not an object', 'dkg'],
      ['not a participant', newKey([ks[3]!, ks[4]!, ks[5]!], 2, 1)],
    ];
    for (const [what, params] of cases) {
      const r = await start(ks[0]!, params);
      expect(codeOf(r), what).toEqual([400, 'TESSERA_DKG_PARAMS_INVALID']);
      expect(JSON.stringify(r.json), what).not.toContain(good.session);
    }
    expect(codeOf(await call(ks[0]!.url, 'POST', '/v1/dkg', { params: good, certificates: certificatesOf(trio()), extra: 1 }))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    expect(codeOf(await start(ks[0]!, good, []))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    expect(codeOf(await start(ks[0]!, good, { [ks[0]!.id]: 'x' }))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    expect(codeOf(await start(ks[0]!, good, { ...certificatesOf(trio()), [ks[5]!.id]: [ks[5]!.svid.der.toString('base64')] }))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    // our own chain missing, or issued by another CA: refused before anything is kept
    expect(codeOf(await start(ks[0]!, good, certificatesOf(ks.slice(1, 3))))).toEqual([400, 'TESSERA_DKG_PARAMS_INVALID']);
    expect(codeOf(await start(ks[0]!, good, { ...certificatesOf(trio()), [ks[0]!.id]: [svid(ks[0]!.id, rogue).der.toString('base64')] }))).toEqual([400, 'TESSERA_DKG_PARAMS_INVALID']);
    // none of that used the session id up
    expect((await start(ks[0]!, good)).status).toBe(200);
    expect((await call(ks[0]!.url, 'DELETE', `/v1/dkg/${good.session}`, undefined)).json).toEqual({ session: good.session, aborted: true });
  });

  it('the state a session assumes: a new key for an epoch held (409), a refresh without the share (404) or with other commitments (409)', async () => {
    const held = newKey(trio(), 2, 1);
    expect(codeOf(await start(ks[1]!, held))).toEqual([409, 'TESSERA_CONFLICT']);
    const fake = [b64u(new Uint8Array(Buffer.from('e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76', 'hex'))), b64u(new Uint8Array(Buffer.from('6a493210f7499cd17fecb510ae0cea23a110e8d5b901f8acadd3095c73a3b919', 'hex')))];
    const refresh = (e: number): DkgParamsWire => ({ kind: 'refresh', session: sessionId(), policy: POLICY, epoch: e, servers: trio().map((k, i) => entry(k, i + 1)), commitments: fake });
    expect(codeOf(await start(ks[0]!, refresh(999)))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(codeOf(await start(ks[1]!, refresh(7)))).toEqual([409, 'TESSERA_CONFLICT']);
  });

  it('unknown sessions are 404 (abort: {aborted: false}); a bad session id in the path is 400; a used session id is refused (409)', async () => {
    const id = sessionId();
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${id}/next`, { set: [] }))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${id}/commit`, { record: {} }))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(await call(ks[0]!.url, 'DELETE', `/v1/dkg/${id}`, undefined)).toEqual({ status: 200, json: { session: id, aborted: false } });
    expect(codeOf(await call(ks[0]!.url, 'POST', '/v1/dkg/not-an-id/next', { set: [] }))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    const p = newKey(trio(), 2, epoch++);
    expect((await start(ks[0]!, p)).status).toBe(200);
    expect(codeOf(await start(ks[0]!, p))).toEqual([409, 'TESSERA_CONFLICT']);
    expect((await call(ks[0]!.url, 'DELETE', `/v1/dkg/${p.session}`, undefined)).json.aborted).toBe(true);
    expect(codeOf(await start(ks[0]!, p))).toEqual([409, 'TESSERA_CONFLICT']);
    // same session id with other parameters: still a replay
    expect(codeOf(await start(ks[0]!, { ...p, epoch: epoch++ }))).toEqual([409, 'TESSERA_CONFLICT']);
  });

  it('a set for the wrong round aborts the session (409 TESSERA_DKG_ABORTED), which is then gone (404); a non-list set is 400', async () => {
    const p = newKey(trio(), 2, epoch++);
    const view = new DkgRelayView(parseDkgParamsWire(p).params);
    for (const k of trio()) view.add((await start(k, p)).json.message);
    const hello = view.close('hello');
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${p.session}/next`, { set: 'x' }))).toEqual([400, 'TESSERA_BAD_REQUEST']);
    const r1 = await call(ks[0]!.url, 'POST', `/v1/dkg/${p.session}/next`, { set: hello });
    expect(r1.status).toBe(200);
    // the same set again: the same answer (a retry)
    expect(await call(ks[0]!.url, 'POST', `/v1/dkg/${p.session}/next`, { set: hello })).toEqual(r1);
    // ks2 gets the deal set before its hello round: aborted
    const r2 = await call(ks[1]!.url, 'POST', `/v1/dkg/${p.session}/next`, { set: [r1.json.message] });
    expect(codeOf(r2)).toEqual([409, 'TESSERA_DKG_ABORTED']);
    expect(codeOf(await call(ks[1]!.url, 'POST', `/v1/dkg/${p.session}/next`, { set: hello }))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(events).toContain('aborted');
    for (const k of trio()) await call(k.url, 'DELETE', `/v1/dkg/${p.session}`, undefined);
  });

  it('commit refusals install nothing: unfinished (409), a record of another CA (400), other commitments / index / generation / servers (409); then the right record commits', async () => {
    const p = newKey(trio(), 2, epoch++);
    const view = new DkgRelayView(parseDkgParamsWire(p).params);
    for (const k of trio()) view.add((await start(k, p)).json.message);
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${p.session}/commit`, { record: {} }))).toEqual([409, 'TESSERA_CONFLICT']);
    const results = new Map<string, DkgPublicResultWire>();
    for (const round of view.schedule) {
      const set = view.close(round);
      if (round === 'confirm') break;
      for (const k of trio()) {
        const r = await call(k.url, 'POST', `/v1/dkg/${p.session}/next`, { set });
        view.add(r.json.message);
        if (r.json.done) results.set(k.id, r.json.done as DkgPublicResultWire);
      }
    }
    const run: Run = { params: p, participants: trio(), results, relay: view, certificates: certificatesOf(trio()), traffic: [] };
    const other = [...results.values()][0]!.commitments.slice().reverse();
    const bad: [string, SignedSecretPolicy, number, string][] = [
      ['another CA', signRecord(run, 1, {}, rogue), 400, 'TESSERA_SECRET_POLICY_INVALID'],
      ['other commitments', signRecord(run, 1, { commitments: other }), 409, 'TESSERA_CONFLICT'],
      ['wrong index', signRecord(run, 1, { servers: p.servers.map((s, i) => ({ ...s, index: [2, 1, 3][i]! })) }), 409, 'TESSERA_CONFLICT'],
      ['other generation', signRecord(run, 2), 409, 'TESSERA_CONFLICT'],
      ['other epoch', signRecord(run, 1, { epoch: p.epoch + 1 }), 409, 'TESSERA_CONFLICT'],
      ['another server', signRecord(run, 1, { servers: [...p.servers.slice(0, 2), entry(ks[5]!, 3)] }), 409, 'TESSERA_CONFLICT'],
    ];
    for (const [what, record, status, code] of bad) {
      expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${p.session}/commit`, { record })), what).toEqual([status, code]);
      expect(ks[0]!.server.store.get(POLICY, p.epoch), what).toBeUndefined();
    }
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${p.session}/commit`, { record: 'x' }))).toEqual([400, 'TESSERA_SECRET_POLICY_INVALID']);
    expect((await commitAll(run, signRecord(run, 1))).map((r) => r.status)).toEqual([200, 200, 200]);
    expect(ks[0]!.server.store.get(POLICY, p.epoch)!.generation).toBe(1);
    // after the commit, an abort changes nothing
    expect((await call(ks[0]!.url, 'DELETE', `/v1/dkg/${p.session}`, undefined)).json.aborted).toBe(false);
    expect(ks[0]!.server.store.get(POLICY, p.epoch)).toBeDefined();
  });

  it('sessions expire after their TTL (wiped, 404), at most maxSessions at once (429), one live session per policy and epoch (409)', async () => {
    const small = await startKs('small', { ttlMs: 400, maxSessions: 2 });
    const group = [small, ks[0]!, ks[1]!];
    const mk = () => newKey(group, 2, epoch++);
    const a = mk();
    const b = mk();
    expect((await start(small, a, certificatesOf(group))).status).toBe(200);
    expect(codeOf(await start(small, { ...mk(), epoch: a.epoch }, certificatesOf(group)))).toEqual([409, 'TESSERA_CONFLICT']);
    expect((await start(small, b, certificatesOf(group))).status).toBe(200);
    expect(codeOf(await start(small, mk(), certificatesOf(group)))).toEqual([429, 'TESSERA_RATE_LIMITED']);
    expect(small.server.dkg.active).toBe(2);
    await new Promise((r) => setTimeout(r, 900));
    expect(small.server.dkg.active).toBe(0);
    expect(codeOf(await call(small.url, 'POST', `/v1/dkg/${a.session}/next`, { set: [] }))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(events).toContain('expired');
    expect((await start(small, mk(), certificatesOf(group))).status).toBe(200);
  });

  it('a person with a provisioning authorization (op create or refresh) for this policy and epoch may drive a session; for another epoch or op retire not', async () => {
    const host = await startKs('delegated', undefined, true);
    const group = [host, ks[0]!, ks[1]!];
    const alice = svid(`spiffe://${TD}/user/alice`);
    const serial = new X509Certificate(alice.der).serialNumber.toUpperCase();
    const auth = (op: ProvisionOp, e: number): Record<string, string> => {
      const iat = Math.floor(Date.now() / 1000);
      const a = { v: 1 as const, jti: b64u(randomBytes(16)), caller: `spiffe://${TD}/user/alice`, serial, op, policy: POLICY, epoch: e, keyServers: [host.id], iat, exp: iat + 60 };
      return { [PROVISION_AUTHORIZATION_HEADER]: encodeProvisionAuthorization(signProvisionAuthorization(a, { privateKey: ca.key.privateKey, certDer: ca.der })) };
    };
    const p = newKey(group, 2, epoch++);
    const body = { params: p, certificates: certificatesOf(group) };
    expect(codeOf(await call(host.url, 'POST', '/v1/dkg', body, alice))).toEqual([403, 'TESSERA_FORBIDDEN']);
    expect(codeOf(await call(host.url, 'POST', '/v1/dkg', body, alice, auth('create', p.epoch + 1)))).toEqual([403, 'TESSERA_PROVISION_AUTHORIZATION_INVALID']);
    expect(codeOf(await call(host.url, 'POST', '/v1/dkg', body, alice, auth('retire', p.epoch)))).toEqual([403, 'TESSERA_PROVISION_AUTHORIZATION_INVALID']);
    const ok = await call(host.url, 'POST', '/v1/dkg', body, alice, auth('create', p.epoch));
    expect(ok.status).toBe(200);
    const jtiAudited = audits.filter((a) => a.session === p.session && a.action === 'secret:dkg-start' && a.outcome === 'allowed');
    expect(jtiAudited).toHaveLength(1);
    expect(jtiAudited[0]!.authorization).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(codeOf(await call(host.url, 'POST', `/v1/dkg/${p.session}/next`, { set: [] }, alice, auth('create', p.epoch + 1)))).toEqual([403, 'TESSERA_PROVISION_AUTHORIZATION_INVALID']);
    expect(codeOf(await call(host.url, 'POST', `/v1/dkg/${sessionId()}/next`, { set: [] }, alice, auth('refresh', p.epoch)))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(await call(host.url, 'DELETE', `/v1/dkg/${p.session}`, undefined, alice, auth('refresh', p.epoch))).toEqual({ status: 200, json: { session: p.session, aborted: true } });
  });

  it('the DKG routes take bodies up to 2 MiB (413 beyond), the other routes still 64 KiB', async () => {
    const id = sessionId();
    const big = JSON.stringify({ set: ['x'.repeat(200 * 1024)] });
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${id}/next`, big))).toEqual([404, 'TESSERA_NOT_FOUND']);
    expect(codeOf(await call(ks[0]!.url, 'POST', '/v1/evaluate', big, creds.app))).toEqual([413, 'TESSERA_PAYLOAD_TOO_LARGE']);
    const huge = JSON.stringify({ set: ['x'.repeat(DKG_BODY_LIMIT)] });
    expect(codeOf(await call(ks[0]!.url, 'POST', `/v1/dkg/${id}/next`, huge))).toEqual([413, 'TESSERA_PAYLOAD_TOO_LARGE']);
    expect(codeOf(await call(ks[0]!.url, 'POST', '/v1/dkg', huge))).toEqual([413, 'TESSERA_PAYLOAD_TOO_LARGE']);
  });

  it('no request or answer of a DKG route carries a share held by a server', async () => {
    const shares = all.flatMap((k) => k.server.store.list().map((s) => b64u(k.server.store.get(s.policyId, s.epoch)!.value)));
    expect(shares.length).toBeGreaterThan(0);
    for (const b of bodies) for (const s of shares) expect(b).not.toContain(s);
  });
});

describe('the params parser never fails with anything but TESSERA_DKG_PARAMS_INVALID', () => {
  const base = (): Record<string, unknown> => ({ kind: 'reshare', session: sessionId(), policy: POLICY, epoch: 3, t: 2, servers: [{ url: 'https://a.test', spiffeId: `spiffe://${TD}/a`, index: 1 }, { url: 'https://b.test', spiffeId: `spiffe://${TD}/b`, index: 2 }], old: { commitments: ['AA'], servers: [] } });
  it('random values, and random edits of a valid shape', () => {
    fc.assert(fc.property(fc.anything(), (v) => {
      try {
        parseDkgParamsWire(v, TD);
      } catch (err) {
        expect(isTesseraError(err) && err.code === 'TESSERA_DKG_PARAMS_INVALID').toBe(true);
      }
    }), { numRuns: 300 });
    const keys = ['kind', 'session', 'policy', 'epoch', 't', 'servers', 'old', 'commitments', 'x'];
    fc.assert(fc.property(fc.constantFrom(...keys), fc.anything(), fc.constantFrom('dkg', 'refresh', 'reshare'), (k, v, kind) => {
      const p = { ...base(), kind, [k]: v };
      try {
        parseDkgParamsWire(p, TD);
      } catch (err) {
        expect(isTesseraError(err) && err.code === 'TESSERA_DKG_PARAMS_INVALID').toBe(true);
      }
    }), { numRuns: 500 });
  });

  it('over HTTP: random bodies are 4xx, never 500', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom('params', 'certificates', 'x'), fc.anything(), async (k, v) => {
      const r = await call(ks[0]!.url, 'POST', '/v1/dkg', { params: base(), certificates: {}, [k]: v });
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
    }), { numRuns: 25 });
    // the later commit (POST /v1/dkg/commit): any body, or a record with any payload or signature
    await fc.assert(fc.asyncProperty(fc.oneof(fc.anything(), fc.record({ record: fc.anything() }), fc.record({ record: fc.record({ payload: fc.string(), alg: fc.constant('ES256'), signer: fc.string(), signature: fc.string() }) })), async (b) => {
      const r = await call(ks[0]!.url, 'POST', '/v1/dkg/commit', b);
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
    }), { numRuns: 25 });
  });
});
