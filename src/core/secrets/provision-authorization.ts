/**
 * The provisioning authorization: a short-lived statement by the control plane that the admin
 * policy allowed one caller (SPIFFE ID and certificate serial) one secret-policy operation
 * (`create`, `refresh`, `retire`) on one policy epoch at named key servers. Key servers trust a
 * person's `tessera login` certificate for provisioning only with such a statement: the admin
 * policy (and its fresh-MFA rule for writes) decides, not a list on the key server.
 *
 * Signed with the trust domain's CA key in the one signed envelope (src/core/signed-envelope.ts),
 * domain `"tessera-provision-authorization-v1\n"`, so a key server checks it offline with the trust
 * bundle its agent already holds, and no signature over a policy bundle, record or certificate can
 * be taken for one. It is bound to the caller's mTLS identity: a copy is useless without that
 * certificate's private key. It is not single use: one operation makes several calls to each key
 * server (list, refresh, commit; install then, on failure, delete); its lifetime bounds it instead.
 */
import { TesseraError } from '../errors.js';
import { openEnvelope, signEnvelope, type EnvelopeKind, type EnvelopeSigner, type SignedEnvelope } from '../signed-envelope.js';
import { exactObject } from '../shape.js';
import { isSpiffeId } from '../spiffe-id.js';
import { isSecretPolicyId } from './index.js';

export const PROVISION_OPS = ['create', 'refresh', 'retire'] as const;
export type ProvisionOp = (typeof PROVISION_OPS)[number];

/** The key server routes (their audit actions) each operation covers. */
export type ShareAction = 'secret:share-install' | 'secret:share-refresh' | 'secret:share-commit' | 'secret:share-abort' | 'secret:share-delete' | 'secret:share-list' | DkgAction;
/** The distributed key generation routes (issue 15): a new key is a create, a refresh or reshare a refresh of the epoch. */
export type DkgAction = 'secret:dkg-start' | 'secret:dkg-next' | 'secret:dkg-commit' | 'secret:dkg-abort';
const DKG_ACTIONS: readonly DkgAction[] = ['secret:dkg-start', 'secret:dkg-next', 'secret:dkg-commit', 'secret:dkg-abort'];
const COVERS: Record<ProvisionOp, ReadonlySet<ShareAction>> = {
  // A deal installs, and takes back what it installed when another server refused.
  create: new Set<ShareAction>(['secret:share-install', 'secret:share-delete', ...DKG_ACTIONS]),
  refresh: new Set<ShareAction>(['secret:share-list', 'secret:share-refresh', 'secret:share-commit', 'secret:share-abort', ...DKG_ACTIONS]),
  retire: new Set(['secret:share-delete']),
};

export interface ProvisionAuthorization {
  v: 1;
  /** Random id (audit correlation on both sides). */
  jti: string;
  /** The caller's SPIFFE ID and certificate serial (uppercase hex), as the control plane saw its mTLS. */
  caller: string;
  serial: string;
  op: ProvisionOp;
  policy: string;
  epoch: number;
  /** SPIFFE IDs of the key servers this is for. */
  keyServers: string[];
  /** Seconds since the epoch. */
  iat: number;
  exp: number;
}

/** Longest lifetime a key server accepts (seconds), and the clock skew it tolerates. */
export const MAX_PROVISION_AUTHORIZATION_SECONDS = 120;
export const PROVISION_AUTHORIZATION_SKEW_SECONDS = 30;
/** The request header carrying it: base64url of the envelope's JSON. */
export const PROVISION_AUTHORIZATION_HEADER = 'x-tessera-provision-authorization';

const DOMAIN = 'tessera-provision-authorization-v1\n';
const KEYS = ['caller', 'epoch', 'exp', 'iat', 'jti', 'keyServers', 'op', 'policy', 'serial', 'v'] as const;
const SERIAL = /^[0-9A-F]{1,40}$/;
const JTI = /^[A-Za-z0-9_-]{16,64}$/;
const MAX_HEADER_CHARS = 8192;

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_PROVISION_AUTHORIZATION_INVALID', message);
}
const KIND: EnvelopeKind = { domain: DOMAIN, what: 'provisioning authorization', fail: invalid, maxPayloadChars: 6000 };

const isInt = (v: unknown, min: number, max: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;

/** Checks the shape (not the binding): what the control plane signs and what a key server reads. */
export function checkProvisionAuthorization(v: unknown): ProvisionAuthorization {
  const o = exactObject(v, KEYS, 'provisioning authorization', invalid);
  if (o.v !== 1) throw invalid('provisioning authorization: v must be 1');
  if (typeof o.jti !== 'string' || !JTI.test(o.jti)) throw invalid('provisioning authorization: bad jti');
  if (typeof o.caller !== 'string' || !isSpiffeId(o.caller)) throw invalid('provisioning authorization: caller must be a SPIFFE ID');
  if (typeof o.serial !== 'string' || !SERIAL.test(o.serial)) throw invalid('provisioning authorization: serial must be uppercase hex');
  if (typeof o.op !== 'string' || !(PROVISION_OPS as readonly string[]).includes(o.op)) throw invalid(`provisioning authorization: op must be one of ${PROVISION_OPS.join(', ')}`);
  if (!isSecretPolicyId(o.policy)) throw invalid('provisioning authorization: bad policy id');
  if (!isInt(o.epoch, 0, 0xffffffff)) throw invalid('provisioning authorization: bad epoch');
  if (!Array.isArray(o.keyServers) || o.keyServers.length < 1 || o.keyServers.length > 255 || !o.keyServers.every((s) => typeof s === 'string' && isSpiffeId(s)) || new Set(o.keyServers).size !== o.keyServers.length) {
    throw invalid('provisioning authorization: keyServers must be 1 to 255 distinct SPIFFE IDs');
  }
  if (!isInt(o.iat, 0, 2 ** 40) || !isInt(o.exp, 0, 2 ** 40) || o.exp <= o.iat || o.exp - o.iat > MAX_PROVISION_AUTHORIZATION_SECONDS) {
    throw invalid(`provisioning authorization: lifetime must be 1..${MAX_PROVISION_AUTHORIZATION_SECONDS} s`);
  }
  return { v: 1, jti: o.jti, caller: o.caller, serial: o.serial, op: o.op as ProvisionOp, policy: o.policy, epoch: o.epoch, keyServers: o.keyServers as string[], iat: o.iat, exp: o.exp };
}

/** Signs a checked statement with the CA key (control plane). */
export function signProvisionAuthorization(a: ProvisionAuthorization, signer: EnvelopeSigner): SignedEnvelope {
  return signEnvelope(checkProvisionAuthorization(a), signer, KIND);
}

/** The header value for a signed statement. */
export function encodeProvisionAuthorization(signed: SignedEnvelope): string {
  return Buffer.from(JSON.stringify(signed), 'utf8').toString('base64url');
}

/** What the key server knows about the request it is judging. */
export interface ProvisionRequestFacts {
  /** This key server's own SPIFFE ID. */
  keyServer: string;
  /** The mTLS caller. */
  caller: string;
  serial: string | undefined;
  action: ShareAction;
  /** Absent for the list (GET /v1/shares, public facts of every share). */
  policy?: string;
  epoch?: number;
  /** Seconds since the epoch. */
  now: number;
}

/**
 * Verifies a header value (unknown shape) against the trust bundle's CAs and binds it to the
 * request: signed by a trusted CA, unexpired, for this caller and serial, this key server, this
 * policy and epoch, an operation covering this route. Any failure: TESSERA_PROVISION_AUTHORIZATION_INVALID.
 */
export function verifyProvisionAuthorization(header: unknown, trustedCas: readonly Buffer[], facts: ProvisionRequestFacts): ProvisionAuthorization {
  if (typeof header !== 'string' || header.length === 0 || header.length > MAX_HEADER_CHARS || !/^[A-Za-z0-9_-]+$/.test(header)) throw invalid('the provisioning authorization header is not base64url');
  let env: unknown;
  try {
    env = JSON.parse(Buffer.from(header, 'base64url').toString('utf8'));
  } catch {
    throw invalid('the provisioning authorization header is not a JSON envelope');
  }
  const a = checkProvisionAuthorization(openEnvelope(env, trustedCas, KIND));
  if (a.iat > facts.now + PROVISION_AUTHORIZATION_SKEW_SECONDS) throw invalid('the provisioning authorization is not valid yet');
  if (a.exp <= facts.now - PROVISION_AUTHORIZATION_SKEW_SECONDS) throw invalid('the provisioning authorization has expired: ask the control plane again');
  if (a.caller !== facts.caller || facts.serial === undefined || a.serial !== facts.serial) throw invalid('the provisioning authorization was issued to another caller or certificate');
  if (!a.keyServers.includes(facts.keyServer)) throw invalid('the provisioning authorization is for other key servers');
  if (!COVERS[a.op].has(facts.action)) throw invalid(`the provisioning authorization for ${a.op} does not cover ${facts.action}`);
  if (facts.policy !== undefined && (a.policy !== facts.policy || a.epoch !== facts.epoch)) throw invalid('the provisioning authorization is for another secret policy or epoch');
  return a;
}
