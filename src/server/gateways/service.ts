/**
 * Gateways for people (issue 12) as the control plane knows them: a registration (name, the SPIFFE ID
 * of the gateway's own entry, its public URL) and the one-time authorization codes of the sign-in
 * flow (RFC 6749 §4.1 shaped, PKCE S256 required, RFC 7636):
 *
 * 1. The gateway sends the browser to `GET /v1/gateway/authorize?gateway=NAME&redirect_uri=...&state=...
 *    &code_challenge=...&code_challenge_method=S256`. The redirect URI must be exactly the registered
 *    one (`url` + `/_tessera/callback`), so a code never goes anywhere else (no open redirect).
 * 2. With a signed-in session, a code (60 s, single use, only its SHA-256 stored) bound to the gateway,
 *    the redirect URI, the challenge and the session goes back to the gateway with the state.
 * 3. The gateway redeems it over mTLS (`POST /v1/gateway/token`) with the verifier: the session's
 *    person, groups, MFA time and a reference to the session it checks later.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { TesseraError } from '../../core/errors.js';
import { isMemberOf, parseSpiffeId } from '../../core/spiffe-id.js';
import { GATEWAY_CALLBACK_PATH, GATEWAY_CODE, GATEWAY_NAME, PKCE_CHALLENGE, PKCE_VERIFIER, type GatewayView } from '../../core/wire/gateway.js';
import type { GatewayRecord, GatewayStore } from '../store/store.js';

/** A code lives this long: the browser carries it straight back to the gateway. */
export const GATEWAY_CODE_TTL_MS = 60_000;
/** Caller identities looked up again after this long (telemetry and decision batches ask per batch). */
const CALLER_CACHE_MS = 1000;

const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The redirect URIs of a gateway: each of its origins and the fixed callback path. */
export function redirectUrisOf(g: Pick<GatewayRecord, 'urls'>): string[] {
  return g.urls.map((u) => `${u}${GATEWAY_CALLBACK_PATH}`);
}

export function gatewayView(g: GatewayRecord): GatewayView {
  return { name: g.name, spiffe_id: g.spiffeId, urls: [...g.urls], redirect_uris: redirectUrisOf(g), created_at: new Date(g.createdAt).toISOString(), created_by: g.createdBy };
}

/** At most this many origins per gateway. */
export const MAX_GATEWAY_URLS = 32;

/**
 * A gateway's public URL: an `https` origin (host and optional port), nothing else. A path, query,
 * fragment or user info is refused: the redirect URI is derived from it and compared exactly.
 */
export function parseGatewayUrl(v: string): string {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new TesseraError('TESSERA_BAD_REQUEST', '"url" must be an https origin, e.g. https://apps.example.com:8443');
  }
  if (u.protocol !== 'https:' || u.username || u.password || u.search || u.hash || (u.pathname !== '/' && u.pathname !== '') || v.length > 256) {
    throw new TesseraError('TESSERA_BAD_REQUEST', '"url" must be an https origin (no path, query, fragment or user info), e.g. https://apps.example.com:8443');
  }
  return u.origin;
}

export class GatewayService {
  readonly #callers = new Map<string, { at: number; g: GatewayRecord | undefined }>();

  constructor(private readonly deps: { store: GatewayStore; trustDomain: string; now: () => number }) {}

  async add(input: { name: string; spiffeId: string; urls: string[] }, by: string): Promise<GatewayRecord> {
    if (!GATEWAY_NAME.test(input.name)) throw new TesseraError('TESSERA_BAD_REQUEST', '"name" must be 1-63 of a-z, 0-9 and -, starting with a letter or digit');
    let path: string;
    try {
      const id = parseSpiffeId(input.spiffeId);
      if (!isMemberOf(id, this.deps.trustDomain)) throw new Error('other trust domain');
      path = id.path;
    } catch {
      throw new TesseraError('TESSERA_BAD_REQUEST', `"spiffe_id" must be a SPIFFE ID of spiffe://${this.deps.trustDomain} (the gateway's registration entry)`);
    }
    if (/^\/(tessera|user|device)(\/|$)/.test(path)) throw new TesseraError('TESSERA_SPIFFE_ID_RESERVED', 'a gateway runs as a workload entry: not under /tessera, /user or /device');
    if (input.urls.length === 0 || input.urls.length > MAX_GATEWAY_URLS) throw new TesseraError('TESSERA_BAD_REQUEST', `"urls" must list 1-${MAX_GATEWAY_URLS} https origins`);
    const urls = [...new Set(input.urls.map(parseGatewayUrl))];
    const rec: GatewayRecord = { name: input.name, spiffeId: input.spiffeId, urls, createdAt: this.deps.now(), createdBy: by };
    if (!(await this.deps.store.insertGateway(rec))) throw new TesseraError('TESSERA_CONFLICT', 'a gateway with this name or SPIFFE ID exists');
    this.#callers.clear();
    return rec;
  }

  list(): Promise<GatewayRecord[]> {
    return this.deps.store.listGateways();
  }

  async require(name: string): Promise<GatewayRecord> {
    const g = GATEWAY_NAME.test(name) ? await this.deps.store.getGateway(name) : undefined;
    if (!g) throw new TesseraError('TESSERA_GATEWAY_NOT_FOUND');
    return g;
  }

  async remove(name: string): Promise<GatewayRecord> {
    const g = await this.require(name);
    await this.deps.store.deleteGateway(name);
    this.#callers.clear();
    return g;
  }

  /** The gateway whose registration names `spiffeId` (cached for a second), if any. */
  async ofIdentity(spiffeId: string): Promise<GatewayRecord | undefined> {
    const now = this.deps.now();
    const hit = this.#callers.get(spiffeId);
    if (hit && now - hit.at < CALLER_CACHE_MS) return hit.g;
    const g = await this.deps.store.gatewayBySpiffeId(spiffeId);
    if (this.#callers.size > 10_000) this.#callers.clear();
    this.#callers.set(spiffeId, { at: now, g });
    return g;
  }

  /** The caller's gateway, or TESSERA_FORBIDDEN: only a registered gateway calls the gateway routes. */
  async requireCaller(spiffeId: string): Promise<GatewayRecord> {
    const g = await this.ofIdentity(spiffeId);
    if (!g) throw new TesseraError('TESSERA_FORBIDDEN', 'only a registered gateway (tessera gateway add) may call this route');
    return g;
  }

  /** A new one-time code for `sessionRef`, bound to the gateway, the redirect URI (one of its own) and the PKCE challenge. */
  async issueCode(g: GatewayRecord, sessionRef: string, redirectUri: string, challenge: string): Promise<string> {
    if (!redirectUrisOf(g).includes(redirectUri)) throw new TesseraError('TESSERA_REDIRECT_INVALID');
    if (!PKCE_CHALLENGE.test(challenge)) throw new TesseraError('TESSERA_BAD_REQUEST', '"code_challenge" must be an S256 challenge (43 base64url characters)');
    const code = `gwc_${randomBytes(32).toString('base64url')}`;
    const now = this.deps.now();
    await this.deps.store.insertGatewayCode({ hash: sha256(code), gateway: g.name, sessionHash: sessionRef, redirectUri, challenge, expiresAt: now + GATEWAY_CODE_TTL_MS }, now);
    return code;
  }

  /**
   * Redeems a code for gateway `g`: the session reference it was issued for. The code is gone after
   * this call whatever the outcome (single use, RFC 6749 §4.1.2). One answer, TESSERA_GATEWAY_CODE_INVALID,
   * for every refusal: unknown, used, expired, other gateway, other redirect URI, wrong verifier.
   */
  async redeem(g: GatewayRecord, code: string, verifier: string, redirectUri: string): Promise<string> {
    const refuse = (): never => {
      throw new TesseraError('TESSERA_GATEWAY_CODE_INVALID');
    };
    if (!GATEWAY_CODE.test(code) || !PKCE_VERIFIER.test(verifier)) return refuse();
    const rec = await this.deps.store.takeGatewayCode(sha256(code));
    if (!rec || rec.expiresAt <= this.deps.now() || rec.gateway !== g.name || rec.redirectUri !== redirectUri || !redirectUrisOf(g).includes(rec.redirectUri)) return refuse();
    // RFC 7636 §4.6: BASE64URL-ENCODE(SHA256(ASCII(code_verifier))) == code_challenge.
    const computed = createHash('sha256').update(verifier, 'ascii').digest('base64url');
    if (!sameSecret(computed, rec.challenge)) return refuse();
    return rec.sessionHash;
  }
}
