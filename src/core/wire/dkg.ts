/**
 * Distributed key generation on the wire (issue 15): the key servers' DKG routes and what the relay
 * (the admin's CLI) hands the control plane. Declared once; the key server, the control plane and
 * the CLI check their bodies against these. Binary fields are base64url; certificates base64 DER.
 *
 * The relay runs a session as:
 *   1. POST /v1/dkg on every participant (same params, same certificates) → each one's hello.
 *   2. For each round: the relay closes the set of messages it collected (DkgRelayView) and POSTs the
 *      same set to every participant still running: /v1/dkg/:session/next → its next message.
 *      After the last round each answer carries `done` (the public result) and its confirm message.
 *   3. The relay POSTs its whole log (DkgRelayView.log(): every message of every closed round) to the control plane, which
 *      runs verifyTranscript and signs the record only if the confirmations agree.
 *   4. POST /v1/dkg/:session/commit {signed record} on every participant: each checks the record is
 *      signed by the trust domain and names exactly its result, then makes its new share current.
 *   Any failure before 4: DELETE /v1/dkg/:session everywhere (nothing was installed).
 */
import type { SecretPolicyRecord, SecretPolicyServer, SignedSecretPolicy } from '../secrets/policy-record.js';
import type { SignedDkgMessage } from '../secrets/dkg-wire.js';

export type { SignedDkgMessage };

/** A participant as the relay names it: the record's server entry (url, SPIFFE ID, index). */
export type DkgServerWire = SecretPolicyServer;

/** The session parameters (src/core/secrets/dkg-session.ts DkgParams) with points and bytes as base64url. */
export type DkgParamsWire =
  | { kind: 'dkg'; session: string; policy: string; epoch: number; t: number; servers: DkgServerWire[] }
  | { kind: 'refresh'; session: string; policy: string; epoch: number; servers: DkgServerWire[]; commitments: string[] }
  | { kind: 'reshare'; session: string; policy: string; epoch: number; t: number; servers: DkgServerWire[]; old: { commitments: string[]; servers: DkgServerWire[] } };

/**
 * POST /v1/dkg (a provisioner, or a provisioning authorization for op dkg/refresh/reshare).
 * `certificates`: for every participant's SPIFFE ID, its X509-SVID chain (leaf first), base64 DER, as
 * the relay saw it in the TLS handshake. Each key server checks every chain against its own trust
 * bundle and the SPIFFE ID before it takes the leaf's key as that participant's signing key, so a
 * relay cannot substitute a key.
 */
export interface DkgStartRequest { params: DkgParamsWire; certificates: Record<string, string[]> }
export interface DkgStartResponse { session: string; round: string; message: SignedDkgMessage }

/** POST /v1/dkg/:session/next: the set the relay closed for the participant's current round. */
export interface DkgNextRequest { set: SignedDkgMessage[] }
/** The public result of a finished session (no share), as every honest participant computes it. */
export interface DkgPublicResultWire {
  kind: 'dkg' | 'refresh' | 'reshare';
  public_key: string;
  commitments: string[];
  t: number;
  servers: { index: number; spiffeId: string }[];
  qual: number[];
  transcript: string;
  stopped: { spiffeId: string; round: string }[];
  misbehaviour: unknown[];
  excluded: { index: number; why: string }[];
}
export interface DkgNextResponse { session: string; round: string; message: SignedDkgMessage; done?: DkgPublicResultWire }

/** POST /v1/dkg/:session/commit: the record the control plane signed for this result. */
export interface DkgCommitRequest { record: SignedSecretPolicy }
export interface DkgCommitResponse { policy: string; epoch: number; generation: number; index: number | null; committed: boolean }

/** DELETE /v1/dkg/:session. */
export interface DkgAbortResponse { session: string; aborted: boolean }

/**
 * What the relay gives the control plane to sign a record from a DKG (POST /v1/secret-policies with
 * `dkg`, and .../epochs/:epoch/refresh with `dkg` for a refresh or reshare): the parameters, every
 * participant's certificate chain, and DkgRelayView.log() (every message of every closed round).
 */
export interface DkgTranscriptWire { params: DkgParamsWire; certificates: Record<string, string[]>; log: SignedDkgMessage[] }

export type { SecretPolicyRecord };
