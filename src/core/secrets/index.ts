/**
 * Blind threshold secrets (DESIGN.md, "Blind secrets"): per-policy keys Shamir-shared across key
 * servers with Feldman commitments, blobs sealed offline under the policy public key, and unseal by
 * blinded evaluation with a DLEQ proof per key server. Pure: no I/O, no logging.
 *
 * `await ready()` once before anything else.
 */
export { ready, decodePoint, decodeScalar, baseMul, randomScalar, pointEquals, type Point, type Scalar } from './group.js';
export { split, verifyShare, publicShare, refreshShares, dealRefresh, applyRefresh, refreshedCommitments, type RefreshDeal, lagrangeAt0, combinePoints, MAX_SHARES, type Share, type Sharing, type IndexedPoint } from './shamir.js';
export { proveDleq, verifyDleq, encodeProof, decodeProof, PROOF_BYTES, type DleqProof } from './dleq.js';
export { blind, evaluate, unblind, unsealContext, evaluateAndProve, combineEvaluations, combineAndUnblind, type Blinded, type Evaluation, type Combined } from './blind.js';
export {
  seal,
  parseBlob,
  openWithPoint,
  sealedToText,
  parseSealedText,
  isSecretPolicyId,
  SECRET_POLICY_ID_RULE,
  BLOB_VERSION,
  MAX_BLOB_BYTES,
  SEALED_TEXT_PREFIX,
  type SealPolicy,
  type ParsedBlob,
} from './blob.js';
export {
  DkgParticipant,
  DkgRelayView,
  verifyTranscript,
  dkgSchedule,
  peekDkgMessage,
  sessionDigest,
  type DkgParams,
  type DkgNewKeyParams,
  type DkgRefreshParams,
  type DkgReshareParams,
  type DkgServer,
  type DkgKind,
  type DkgMe,
  type DkgRound,
  type DkgSigner,
  type DkgVerifier,
  type DkgStep,
  type DkgResult,
  type DkgPublicResult,
  type TranscriptVerdict,
  type SignedDkgMessage,
  type Misbehaviour,
} from './dkg.js';
