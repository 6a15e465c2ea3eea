/**
 * The control plane's check of a DKG transcript before it signs a secret-policy record (issue 15).
 * The relay (the admin's CLI) hands over the session parameters, every participant's certificate
 * chain and every message of every round it closed; this recomputes the public outcome with
 * verifyTranscript, trusting chains only to the control plane's own CA bundle and trust domain, and
 * accepts only when:
 *   - the parameters are exactly those of the request (policy, epoch, kind, threshold, key servers
 *     with their URLs; for a refresh or reshare the current record's commitments and servers),
 *   - every participant's chain verifies to this trust domain under its own SPIFFE ID,
 *   - no participant confirmed another result, and at least t of the new servers confirmed this one,
 *   - the result's commitments (hence P_p), threshold and servers are those of the request.
 * Nothing here is secret: the transcript carries sealed boxes only the key servers can open. What
 * is kept (in the audit trail) is the transcript hash and the verdict's public facts.
 */
import { TesseraError, isTesseraError } from '../../core/errors.js';
import { verifyTranscript, type TranscriptVerdict } from '../../core/secrets/dkg.js';
import { dkgVerifier } from '../../core/secrets/dkg-identity.js';
import { MAX_DKG_SERVERS, parseDkgParamsWire } from '../../core/secrets/dkg-params-wire.js';
import type { DkgParams } from '../../core/secrets/dkg-session.js';
import { dkgSchedule } from '../../core/secrets/dkg-wire.js';
import type { SecretPolicyRecord, SecretPolicyServer } from '../../core/secrets/policy-record.js';
import type { DkgVerdictWire } from '../../core/wire/control-plane.js';

export { MAX_DKG_SERVERS };

/**
 * Body limit of the two routes that take a transcript: n = 32 dealers' deal messages (t commitments
 * and n-1 sealed boxes each) dominate, about 0.5 MiB; a reshare has up to 2n parties, and complaints
 * and answers can add as much again. 8 MiB bounds the worst case with room.
 */
export const DKG_BODY_LIMIT = 8 * 1024 * 1024;
/** Each party sends one message per round; an equivocator's two versions are both kept. */
const maxLog = (parties: number, rounds: number): number => 2 * parties * rounds;

const b64u = (u: Uint8Array): string => Buffer.from(u).toString('base64url');
const policyInvalid = (m: string) => new TesseraError('TESSERA_SECRET_POLICY_INVALID', m);
const aborted = (m: string) => new TesseraError('TESSERA_DKG_ABORTED', m);
const messageInvalid = (m: string) => new TesseraError('TESSERA_DKG_MESSAGE_INVALID', m);

/** What the request asks the control plane to sign. */
export type DkgExpectation =
  | { route: 'create'; id: string; epoch: number; t: number; servers: SecretPolicyServer[]; commitments: string[] }
  | { route: 'refresh'; id: string; epoch: number; t: number; servers: SecretPolicyServer[]; commitments: string[]; current: SecretPolicyRecord };

const serverKey = (s: SecretPolicyServer): string => JSON.stringify([s.index, s.spiffeId, s.url]);
const sameServers = (a: readonly SecretPolicyServer[], b: readonly SecretPolicyServer[]): boolean => {
  const x = a.map(serverKey).sort();
  const y = b.map(serverKey).sort();
  return x.length === y.length && x.every((k, i) => k === y[i]);
};

function checkShape(input: unknown): { params: unknown; certificates: Record<string, unknown>; log: unknown[] } {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new TesseraError('TESSERA_BAD_REQUEST', '"dkg" must be {params, certificates, log}');
  for (const k of Object.keys(input)) if (!['params', 'certificates', 'log'].includes(k)) throw new TesseraError('TESSERA_BAD_REQUEST', `"dkg": unknown field "${k.slice(0, 64)}"`);
  const { params, certificates, log } = input as Record<string, unknown>;
  if (typeof certificates !== 'object' || certificates === null || Array.isArray(certificates)) throw new TesseraError('TESSERA_BAD_REQUEST', '"dkg.certificates" must map each SPIFFE ID to its chain');
  if (!Array.isArray(log)) throw new TesseraError('TESSERA_BAD_REQUEST', '"dkg.log" must be the list of signed messages');
  return { params, certificates: certificates as Record<string, unknown>, log };
}

/** The wire servers of the params (with URLs), read without trusting them. */
function wireServers(v: unknown): SecretPolicyServer[] {
  return Array.isArray(v) ? (v as SecretPolicyServer[]) : [];
}

/**
 * Checks a transcript against the request and the control plane's trust bundle. Returns the
 * verdict's public facts; throws TESSERA_BAD_REQUEST / TESSERA_DKG_PARAMS_INVALID (malformed),
 * TESSERA_SECRET_POLICY_INVALID (another policy, epoch, threshold, servers or result than asked),
 * TESSERA_DKG_MESSAGE_INVALID (a chain not of this trust domain, a log too long), TESSERA_DKG_ABORTED
 * (no result, a participant confirming another result, fewer than t confirmations).
 */
export function checkDkgTranscript(input: unknown, expect: DkgExpectation, trustedCas: readonly Buffer[], trustDomain: string, now = Date.now()): { verdict: DkgVerdictWire; facts: TranscriptVerdict } {
  const { params: wire, certificates, log } = checkShape(input);
  const parsed = parseDkgParamsWire(wire, trustDomain);
  const params: DkgParams = parsed.params;
  const w = parsed.wire as unknown as Record<string, unknown>;
  if (params.policyId !== expect.id || params.epoch !== expect.epoch) throw policyInvalid('the transcript is for another policy or key epoch');
  if (expect.route === 'create' && params.kind !== 'dkg') throw policyInvalid('a new key epoch needs a transcript of kind dkg');
  if (expect.route === 'refresh' && params.kind === 'dkg') throw policyInvalid('a share refresh needs a transcript of kind refresh or reshare');
  const servers = wireServers(w.servers);
  if (!sameServers(servers, expect.servers)) throw policyInvalid('the transcript names other key servers (or URLs) than the request');
  const t = params.kind === 'refresh' ? params.commitments.length : params.t;
  if (t !== expect.t) throw policyInvalid(`the transcript is for threshold ${t}, the request for ${expect.t}`);
  if (expect.route === 'refresh') {
    const cur = expect.current;
    if (params.kind === 'refresh') {
      if (!sameServers(servers, cur.servers)) throw policyInvalid('a refresh keeps the key servers of the record');
      if (params.commitments.map(b64u).join() !== cur.commitments.join()) throw policyInvalid('the refresh transcript starts from other commitments than the current record');
    } else if (params.kind === 'reshare') {
      const old = wireServers((w.old as Record<string, unknown>).servers);
      const current = new Set(cur.servers.map(serverKey));
      if (!old.every((s) => current.has(serverKey(s)))) throw policyInvalid('the reshare\'s dealers must be key servers of the current record');
      if (params.old.commitments.map(b64u).join() !== cur.commitments.join()) throw policyInvalid('the reshare transcript starts from other commitments than the current record');
    }
  }

  const parties = [...new Set([...servers, ...(params.kind === 'reshare' ? wireServers((w.old as Record<string, unknown>).servers) : [])].map((s) => s.spiffeId))].sort();
  if (log.length > maxLog(parties.length, dkgSchedule(params.kind).length)) throw messageInvalid('the log has more messages than the session can have');
  const named = Object.keys(certificates).sort();
  if (named.length !== parties.length || named.some((id, i) => id !== parties[i])) throw messageInvalid('"certificates" must give exactly one chain per participant');
  const verifier = dkgVerifier(certificates, trustedCas, trustDomain, now);
  if (verifier.refused.length) throw messageInvalid(`the certificate chain of ${verifier.refused.join(', ')} is not an X509-SVID of this trust domain for that ID`);

  let verdict: TranscriptVerdict;
  try {
    verdict = verifyTranscript(params, verifier, log);
  } catch (err) {
    if (isTesseraError(err) && ['TESSERA_DKG_ABORTED', 'TESSERA_DKG_PARAMS_INVALID', 'TESSERA_DKG_MESSAGE_INVALID'].includes(err.code)) throw err;
    if (isTesseraError(err)) throw messageInvalid(`the transcript does not check: ${err.message}`);
    throw err;
  }
  if (verdict.disagreeing.length) throw aborted(`key servers confirmed another result than the transcript's: ${verdict.disagreeing.join(', ')}; nothing is signed`);
  const receivers = new Set(verdict.servers.map((s) => s.spiffeId));
  const confirmed = verdict.confirmedBy.filter((id) => receivers.has(id));
  if (confirmed.length < expect.t) throw aborted(`only ${confirmed.length} key servers confirmed the result, fewer than t = ${expect.t}; nothing is signed`);
  if (verdict.t !== expect.t || verdict.commitments.map(b64u).join() !== expect.commitments.join()) throw policyInvalid('the transcript leads to other commitments than the request');
  if (expect.route === 'refresh' && b64u(verdict.publicKey) !== expect.current.commitments[0]) throw policyInvalid('the transcript changes the public key');
  return {
    facts: verdict,
    verdict: {
      mode: 'dkg',
      kind: verdict.kind,
      transcript: b64u(verdict.transcript),
      qual: [...verdict.qual],
      stopped: verdict.stopped.map((s) => ({ spiffe_id: s.spiffeId, round: s.round })),
      misbehaviour: verdict.misbehaviour.map((m) => ({ spiffe_id: m.spiffeId, round: m.round, what: m.what })),
      excluded: verdict.excluded.map((e) => ({ index: e.index, why: e.why })),
      confirmed_by: [...verdict.confirmedBy],
    },
  };
}
