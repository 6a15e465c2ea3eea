/**
 * The compute floor of a key-generation session, for bench/secrets: every participant of a DKG,
 * refresh or reshare run in this one process (src/core/secrets/dkg.ts, as the key servers run it),
 * signing with P-256 keys as the key servers sign with their SVID keys, through an in-process relay
 * (DkgRelayView, as the CLI uses it), then the control plane's public check (verifyTranscript). No
 * network, no TLS, no HTTP, no JSON parsing of requests, no store: only the protocol's own work.
 *
 * Each participant's step is timed on its own, so a run gives both the total CPU of all parties (as
 * on one core) and the critical path (per round the slowest party, as if each had its own core).
 */
import { generateKeyPairSync, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { DkgParticipant, DkgRelayView, verifyTranscript, type DkgParams, type DkgResult, type DkgRound, type DkgSigner, type DkgVerifier } from '../src/core/secrets/dkg.js';
import type { DkgServer } from '../src/core/secrets/dkg-session.js';
import type { Share } from '../src/core/secrets/shamir.js';

export interface LocalKeys { signers: Map<string, DkgSigner>; verifier: DkgVerifier }

/** P-256 signing keys for the named parties (ECDSA P1363, as src/core/secrets/dkg-identity.ts signs). */
export function localKeys(ids: string[]): LocalKeys {
  const pub = new Map<string, KeyObject>();
  const signers = new Map<string, DkgSigner>();
  for (const id of ids) {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    pub.set(id, publicKey);
    signers.set(id, { sign: (b) => new Uint8Array(sign('sha256', b, { key: privateKey, dsaEncoding: 'ieee-p1363' })) });
  }
  return {
    signers,
    verifier: { verify: (id, bytes, sig) => { const k = pub.get(id); return k !== undefined && verify('sha256', bytes, { key: k, dsaEncoding: 'ieee-p1363' }, sig); } },
  };
}

/** Where one in-process session's time went, in ms. */
export interface LocalRun {
  /** Every party's every step plus the transcript check, back to back (one core). */
  totalMs: number;
  /** Per step the slowest party, summed, plus the transcript check (one core per party). */
  criticalMs: number;
  /** The control plane's verifyTranscript. */
  verifyMs: number;
  /** Per step ('start' = the hello): the sum over parties and the slowest one. */
  steps: { step: DkgRound | 'start'; sumMs: number; maxMs: number }[];
  results: Map<string, DkgResult>;
}

/** Runs `params` with every party here; `shares` are the current shares (refresh, reshare) by SPIFFE ID. */
export function runLocal(params: DkgParams, keys: LocalKeys, shares?: Map<string, Share>): LocalRun {
  const relay = new DkgRelayView(params);
  const parties = new Map<string, DkgParticipant>();
  const steps: LocalRun['steps'] = [];
  const results = new Map<string, DkgResult>();
  let sum = 0;
  let max = 0;
  for (const id of relay.parties) {
    const share = shares?.get(id);
    const t0 = performance.now();
    const { participant, message } = DkgParticipant.start(params, { spiffeId: id, ...(share ? { share } : {}) }, keys.signers.get(id)!, keys.verifier);
    const ms = performance.now() - t0;
    sum += ms;
    max = Math.max(max, ms);
    relay.add(message);
    parties.set(id, participant);
  }
  steps.push({ step: 'start', sumMs: sum, maxMs: max });
  for (const round of relay.schedule) {
    const set = relay.close(round);
    if (round === 'confirm') break;
    sum = 0;
    max = 0;
    for (const [id, p] of parties) {
      if (results.has(id)) continue;
      const t0 = performance.now();
      const step = p.next(set);
      const ms = performance.now() - t0;
      sum += ms;
      max = Math.max(max, ms);
      relay.add(step.message);
      if (step.done) results.set(id, step.done);
    }
    steps.push({ step: round, sumMs: sum, maxMs: max });
  }
  const t0 = performance.now();
  verifyTranscript(params, keys.verifier, relay.log());
  const verifyMs = performance.now() - t0;
  if (results.size !== params.servers.length) throw new Error(`in-process ${params.kind}: ${results.size} of ${params.servers.length} servers finished`);
  return {
    totalMs: steps.reduce((a, s) => a + s.sumMs, 0) + verifyMs,
    criticalMs: steps.reduce((a, s) => a + s.maxMs, 0) + verifyMs,
    verifyMs, steps, results,
  };
}

export const localSession = (): Uint8Array => new Uint8Array(randomBytes(32));

/** The current shares of a finished run, by SPIFFE ID (for a refresh or reshare after it). */
export function sharesOf(run: LocalRun): Map<string, Share> {
  return new Map([...run.results].flatMap(([id, r]) => (r.share ? [[id, r.share] as const] : [])));
}

export function localServers(ids: string[]): DkgServer[] {
  return ids.map((spiffeId, i) => ({ index: i + 1, spiffeId }));
}
