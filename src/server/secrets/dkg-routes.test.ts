/**
 * The control plane signs a secret-policy record from a DKG transcript only when the transcript
 * checks out (issue 15): real HTTPS + mTLS, three key-server identities joined to this control plane
 * (their SVID keys sign the DKG messages), the protocol run in-process as the key servers would.
 * Refused: a tampered log, a confirmation naming another result, fewer than t confirmations, other
 * commitments or parameters than the request, chains not of this trust domain; nothing is stored.
 * And arbitrary bodies never make a 500.
 */
import { announceBody } from '../../../test/support/https-call.js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../core/errors.js';
import { DkgParticipant, DkgRelayView, type DkgParams, type DkgResult, type SignedDkgMessage } from '../../core/secrets/dkg.js';
import { resign } from '../../core/secrets/dkg-fixtures.js';
import { dkgSigner, dkgVerifier } from '../../core/secrets/dkg-identity.js';
import { parseDkgParamsWire } from '../../core/secrets/dkg-params-wire.js';
import { ready, type Share } from '../../core/secrets/index.js';
import type { SecretPolicyServer } from '../../core/secrets/policy-record.js';
import type { DkgParamsWire, DkgTranscriptWire } from '../../core/wire/dkg.js';
import { pemDecodeAll } from '../../core/x509.js';
import { TestCa } from '../../../test/support/tls-ca.js';
import { joinAgent, rawRequest, startControlPlane, type JoinedAgent, type RawResponse, type TestControlPlane } from '../../../test/support/server.js';

const TD = 'tessera.test';
const KS = [1, 2, 3, 4].map((i) => `spiffe://${TD}/keyserver/${i}`);
const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');
const chainOf = (pem: string): string[] => pemDecodeAll(pem, 'CERTIFICATE').map((d) => d.toString('base64'));
const servers = (n: number): SecretPolicyServer[] => KS.slice(0, n).map((spiffeId, i) => ({ url: `https://ks${i + 1}.example:8443`, spiffeId, index: i + 1 }));

interface Run { transcript: DkgTranscriptWire; results: Map<string, DkgResult>; commitments: string[] }

describe('secret policy records from a DKG transcript', () => {
  let t: TestControlPlane;
  let trusted: Buffer[];
  const joined = new Map<string, JoinedAgent>();

  const admin = (method: string, path: string, body?: unknown): Promise<RawResponse> =>
    rawRequest(t.cp.url, { method, path, ...t.adminTls, ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }) });
  const code = (r: RawResponse): unknown => (r.json as { error?: { code?: unknown } } | undefined)?.error?.code;
  const refused = (r: RawResponse, status: number, c: string): void => {
    expect({ status: r.status, code: code(r) }, r.text).toEqual({ status, code: c });
    expect(ERROR_CODES[c as keyof typeof ERROR_CODES].status).toBe(status);
  };

  /** Runs a session among the joined identities as their key servers would, and returns what the relay would hand over. */
  function run(wire: DkgParamsWire, shares = new Map<string, Share>()): Run {
    const params: DkgParams = parseDkgParamsWire(wire).params;
    const relay = new DkgRelayView(params);
    const certificates = Object.fromEntries(relay.parties.map((id) => [id, chainOf(joined.get(id)!.certPem)]));
    const verifier = dkgVerifier(certificates, trusted, TD);
    const parts = new Map<string, DkgParticipant>();
    for (const id of relay.parties) {
      const share = shares.get(id);
      const { participant, message } = DkgParticipant.start(params, { spiffeId: id, ...(share ? { share } : {}) }, dkgSigner(joined.get(id)!.privateKey), verifier);
      parts.set(id, participant);
      relay.add(message);
    }
    const results = new Map<string, DkgResult>();
    for (const round of relay.schedule) {
      const set = relay.close(round);
      if (round === 'confirm') break;
      for (const [id, p] of parts) {
        const step = p.next(set);
        relay.add(step.message);
        if (step.done) results.set(id, step.done);
      }
    }
    const first = [...results.values()][0]!;
    return { transcript: { params: wire, certificates, log: relay.log() }, results, commitments: first.commitments.map(b64u) };
  }

  const newKey = (id: string, n = 3, tt = 2, epoch = 1): DkgParamsWire => ({ kind: 'dkg', session: b64u(crypto.getRandomValues(new Uint8Array(16))), policy: id, epoch, t: tt, servers: servers(n) });
  const createBody = (id: string, r: Run, over: Record<string, unknown> = {}) => ({ id, epoch: 1, t: 2, n: 3, commitments: r.commitments, servers: servers(3), dkg: r.transcript, ...over });
  const notStored = async (id: string): Promise<void> => expect((await admin('GET', `/v1/secret-policies/${id}`)).status).toBe(404);

  beforeAll(async () => {
    await ready();
    t = await startControlPlane({ trustDomain: TD });
    trusted = pemDecodeAll(t.adminTls.ca, 'CERTIFICATE');
    for (const id of KS) joined.set(id, await joinAgent(t.cp, t.admin, id));
  });

  afterAll(async () => {
    await t?.close();
    expect(t.logs.filter((l) => l.includes('"internal error"'))).toEqual([]);
  });

  it('signs a record from a valid transcript, audits mode dkg with the public verdict, and refreshes and reshares from transcripts', async () => {
    const r = run(newKey('ok.db'));
    const res = await admin('POST', '/v1/secret-policies', createBody('ok.db', r));
    expect(res.status, res.text).toBe(201);
    const out = res.json as { record: { commitments: string[]; generation: number }; dkg: { mode: string; qual: number[]; confirmed_by: string[]; stopped: unknown[] } };
    expect(out.record.commitments).toEqual(r.commitments);
    expect(out.dkg).toMatchObject({ mode: 'dkg', qual: [1, 2, 3], stopped: [] });
    expect(out.dkg.confirmed_by.sort()).toEqual(KS.slice(0, 3).sort());
    const audit = await admin('GET', '/v1/audit?action=secret.policy.create&outcome=success');
    const rec = (audit.json as { records: { target: string; detail: Record<string, unknown> }[] }).records.find((x) => x.target === 'secret:ok.db')!;
    expect(rec.detail).toMatchObject({ mode: 'dkg', kind: 'dkg', qual: [1, 2, 3], stopped: [], misbehaviour: [] });

    // Dealerless refresh: same servers, same key, generation 2.
    const shares = new Map([...r.results].map(([id, d]) => [id, d.share!]));
    const rf = run({ kind: 'refresh', session: b64u(crypto.getRandomValues(new Uint8Array(16))), policy: 'ok.db', epoch: 1, servers: servers(3), commitments: r.commitments }, shares);
    const ref = await admin('POST', '/v1/secret-policies/ok.db/epochs/1/refresh', { generation: 2, commitments: rf.commitments, dkg: rf.transcript });
    expect(ref.status, ref.text).toBe(200);
    expect((ref.json as { dkg: { kind: string } }).dkg.kind).toBe('refresh');
    // A reshare's t and servers without a reshare transcript are refused.
    refused(await admin('POST', '/v1/secret-policies/ok.db/epochs/1/refresh', { generation: 3, commitments: rf.commitments, t: 3, servers: servers(4) }), 400, 'TESSERA_BAD_REQUEST');
    refused(await admin('POST', '/v1/secret-policies/ok.db/epochs/1/refresh', { generation: 3, commitments: rf.commitments, t: 3, servers: servers(4), dkg: rf.transcript }), 400, 'TESSERA_SECRET_POLICY_INVALID');
    // Reshare 2-of-3 → 3-of-4.
    const shares2 = new Map([...rf.results].map(([id, d]) => [id, d.share!]));
    const rs = run({ kind: 'reshare', session: b64u(crypto.getRandomValues(new Uint8Array(16))), policy: 'ok.db', epoch: 1, t: 3, servers: servers(4), old: { commitments: rf.commitments, servers: servers(3) } }, shares2);
    const re = await admin('POST', '/v1/secret-policies/ok.db/epochs/1/refresh', { generation: 3, commitments: rs.commitments, t: 3, servers: servers(4), dkg: rs.transcript });
    expect(re.status, re.text).toBe(200);
    expect((re.json as { record: { t: number; n: number; commitments: string[] } }).record).toMatchObject({ t: 3, n: 4 });
    expect(rs.commitments[0]).toBe(r.commitments[0]);
  }, 60_000);

  it('refuses a tampered log, a confirmation of another result, fewer than t confirmations: nothing stored', async () => {
    const r = run(newKey('bad.db'));
    // A deal's payload altered: its signature fails, the recomputed transcript no longer matches the confirmations.
    const tampered = r.transcript.log.map((m, i) => (i === 3 ? { ...m, payload: m.payload.slice(0, -2) + (m.payload.endsWith('A') ? 'BB' : 'AA') } : m));
    const res1 = await admin('POST', '/v1/secret-policies', createBody('bad.db', r, { dkg: { ...r.transcript, log: tampered } }));
    expect([400, 409]).toContain(res1.status);
    expect(['TESSERA_DKG_ABORTED', 'TESSERA_DKG_MESSAGE_INVALID']).toContain(code(res1));
    // One server's (validly signed) confirmation names another public key.
    const confirms = r.transcript.log.filter((m) => JSON.parse(Buffer.from(m.payload, 'base64url').toString()).round === 'confirm');
    const victim = confirms[0]!;
    const from = (m: SignedDkgMessage): string => JSON.parse(Buffer.from(m.payload, 'base64url').toString()).from as string;
    const other = resign(victim, (b) => { b.publicKey = r.commitments[1]; }, dkgSigner(joined.get(from(victim))!.privateKey));
    refused(await admin('POST', '/v1/secret-policies', createBody('bad.db', r, { dkg: { ...r.transcript, log: r.transcript.log.map((m) => (m === victim ? other : m)) } })), 409, 'TESSERA_DKG_ABORTED');
    // Only one confirmation (t = 2).
    refused(await admin('POST', '/v1/secret-policies', createBody('bad.db', r, { dkg: { ...r.transcript, log: r.transcript.log.filter((m) => !confirms.slice(1).includes(m)) } })), 409, 'TESSERA_DKG_ABORTED');
    await notStored('bad.db');
    const denied = await admin('GET', '/v1/audit?action=secret.policy.create&outcome=denied');
    expect((denied.json as { records: { target: string; detail: Record<string, unknown> }[] }).records.filter((x) => x.target === 'secret:bad.db').every((x) => x.detail.mode === 'dkg')).toBe(true);
  }, 60_000);

  it('refuses other commitments or parameters than the request, and chains not of this trust domain: nothing stored', async () => {
    const r = run(newKey('mis.db'));
    const s = run(newKey('mis.db'));
    refused(await admin('POST', '/v1/secret-policies', createBody('mis.db', r, { commitments: s.commitments })), 400, 'TESSERA_SECRET_POLICY_INVALID');
    refused(await admin('POST', '/v1/secret-policies', createBody('mis.db', r, { epoch: 2 })), 400, 'TESSERA_SECRET_POLICY_INVALID');
    refused(await admin('POST', '/v1/secret-policies', createBody('mis.db', r, { t: 3 })), 400, 'TESSERA_SECRET_POLICY_INVALID');
    refused(await admin('POST', '/v1/secret-policies', createBody('mis.db', r, { servers: servers(3).map((x) => ({ ...x, url: `${x.url}0` })) })), 400, 'TESSERA_SECRET_POLICY_INVALID');
    refused(await admin('POST', '/v1/secret-policies', createBody('other.db', r)), 400, 'TESSERA_SECRET_POLICY_INVALID');
    // The same identities, certified by a CA that is not this trust domain's: a relay substituting keys.
    const foreign = new TestCa(TD, 'not-the-control-plane');
    const certs = Object.fromEntries(KS.slice(0, 3).map((id) => [id, chainOf(foreign.issue([id]).certPem)]));
    refused(await admin('POST', '/v1/secret-policies', createBody('mis.db', r, { dkg: { ...r.transcript, certificates: certs } })), 400, 'TESSERA_DKG_MESSAGE_INVALID');
    refused(await admin('POST', '/v1/secret-policies', createBody('mis.db', r, { dkg: { ...r.transcript, certificates: { ...r.transcript.certificates, [KS[3]!]: chainOf(joined.get(KS[3]!)!.certPem) } } })), 400, 'TESSERA_DKG_MESSAGE_INVALID');
    // A refresh transcript on the create route, a new-key transcript on the refresh route.
    refused(await admin('POST', '/v1/secret-policies', createBody('mis.db', r, { dkg: { ...r.transcript, params: { kind: 'refresh', session: r.transcript.params.session, policy: 'mis.db', epoch: 1, servers: servers(3), commitments: r.commitments } } })), 400, 'TESSERA_SECRET_POLICY_INVALID');
    await notStored('mis.db');
    const ok = await admin('POST', '/v1/secret-policies', createBody('mis.db', r));
    expect(ok.status, ok.text).toBe(201);
    refused(await admin('POST', '/v1/secret-policies/mis.db/epochs/1/refresh', { generation: 2, commitments: r.commitments, dkg: r.transcript }), 400, 'TESSERA_SECRET_POLICY_INVALID');
  }, 60_000);

  it('refuses a caller that is not an admin before reading its (up to 8 MiB) body, audited', async () => {
    const agent = joined.get(KS[0]!)!;
    const url = t.cp.url;
    for (const path of ['/v1/secret-policies', '/v1/secret-policies/ok.db/epochs/1/refresh']) {
      // Announces 8 MiB and sends 2 bytes: only a refusal before the body can answer at all.
      const answer = await announceBody(url, path, 8 * 1024 * 1024 - 1, { ca: t.adminTls.ca, who: agent });
      expect(answer.status).toBe(403);
      expect((answer.json.error as { code: string }).code).toBe('TESSERA_FORBIDDEN');
    }
    const denied = await admin('GET', `/v1/audit?action=secret.policy.create&outcome=denied&actor=${encodeURIComponent(agent.spiffeId)}`);
    const recs = (denied.json as { records: { actor: string; detail: Record<string, unknown> }[] }).records.filter((x) => x.actor === agent.spiffeId);
    expect(recs.some((x) => x.detail.before_body === true)).toBe(true);
  });

  it('never answers 500 to arbitrary DKG bodies (fast-check)', async () => {
    const r = run(newKey('fc.db'));
    const mutate = fc.oneof(
      fc.anything().filter((v) => v !== undefined),
      fc.record({ params: fc.anything(), certificates: fc.anything(), log: fc.anything() }),
      fc.constantFrom(...r.transcript.log).chain((m) => fc.record({ params: fc.constant(r.transcript.params), certificates: fc.constant(r.transcript.certificates), log: fc.array(fc.oneof(fc.constant(m), fc.anything(), fc.record({ payload: fc.string(), signature: fc.string() })), { maxLength: 30 }) })),
      fc.record({ params: fc.record({ kind: fc.constantFrom('dkg', 'refresh', 'reshare', 'x'), session: fc.string(), policy: fc.constant('fc.db'), epoch: fc.integer(), t: fc.integer(), servers: fc.anything(), commitments: fc.anything(), old: fc.anything() }, { requiredKeys: [] }), certificates: fc.constant(r.transcript.certificates), log: fc.constant(r.transcript.log) }),
    );
    await fc.assert(fc.asyncProperty(mutate, fc.boolean(), async (dkg, refresh) => {
      const res = refresh
        ? await admin('POST', '/v1/secret-policies/fc.db/epochs/1/refresh', { generation: 2, commitments: r.commitments, dkg })
        : await admin('POST', '/v1/secret-policies', createBody('fc.db', r, { dkg }));
      expect(res.status, res.text).toBeLessThan(500);
      expect(res.status).not.toBe(201);
    }), { numRuns: 60 });
    await notStored('fc.db');
  }, 120_000);
});
