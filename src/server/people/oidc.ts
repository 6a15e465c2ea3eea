/**
 * Sign-in through an external OpenID Connect provider: the authorization code flow (OIDC Core
 * §3.1) with PKCE S256 (RFC 7636), `state` and `nonce`, by openid-client. The state, nonce and code
 * verifier stay server-side in a one-time ticket named by the state; the browser holds the state
 * in a cookie too, so a callback is finished only in the browser that started it.
 */
import * as oidc from 'openid-client';
import { TesseraError } from '../../core/errors.js';

/** How recent (seconds) the provider's `auth_time` must be after a step-up. */
export const STEP_UP_MAX_AGE_S = 300;

export interface OidcSettings {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The claim holding the user's groups (default `groups`). */
  groupsClaim: string;
  /** `acr` values that count as a multi-factor sign-in (besides `amr`, see {@link oidcCountsAsMfa}). */
  mfaAcr: string[];
}

/** Factor categories of RFC 8176 §2 `amr` values: knowledge, possession, inherence. */
const AMR_FACTORS: Record<string, 'know' | 'have' | 'are'> = {
  pwd: 'know', pin: 'know', kba: 'know',
  hwk: 'have', swk: 'have', otp: 'have', sms: 'have', tel: 'have', sc: 'have',
  fpt: 'are', face: 'are', iris: 'are', retina: 'are', vbm: 'are', user: 'are',
};

/**
 * Whether the provider's sign-in counts as MFA for Tessera: `amr` contains `mfa`, or values of two
 * different RFC 8176 factor categories (e.g. `pwd` and `otp`), or `acr` is one of `mfaAcr`.
 * Anything else (no `amr`, `pwd` alone, `hwk` alone) is a single factor.
 */
export function oidcCountsAsMfa(claims: Record<string, unknown>, mfaAcr: readonly string[]): boolean {
  const amr = Array.isArray(claims.amr) ? claims.amr.filter((a): a is string => typeof a === 'string') : [];
  if (amr.includes('mfa')) return true;
  const categories = new Set(amr.map((a) => AMR_FACTORS[a]).filter((c) => c !== undefined));
  if (categories.size >= 2) return true;
  return typeof claims.acr === 'string' && mfaAcr.includes(claims.acr);
}

/** An http:// issuer is accepted only on loopback (tests, a provider on the same host). */
function loopback(url: URL): boolean {
  return url.protocol === 'http:' && (url.hostname === 'localhost' || url.hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(url.hostname));
}

export function checkIssuerUrl(issuer: string): URL {
  let url: URL;
  try {
    url = new URL(issuer);
  } catch {
    throw new TesseraError('TESSERA_CONFIG_INVALID', '--oidc-issuer is not a URL');
  }
  if (url.protocol !== 'https:' && !loopback(url)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--oidc-issuer must be https:// (http:// only on loopback)');
  return url;
}

/** What the callback needs from the start of the flow (kept in the state's ticket). */
export interface OidcFlow {
  verifier: string;
  nonce: string;
  returnTo: string;
  stepUp: boolean;
}

export class OidcLogin {
  #config: Promise<oidc.Configuration> | undefined;

  constructor(readonly settings: OidcSettings, private readonly redirectUri: () => string) {
    checkIssuerUrl(settings.issuer);
  }

  /** Discovery once (OIDC Discovery §4), again after a failure. */
  private config(): Promise<oidc.Configuration> {
    const url = checkIssuerUrl(this.settings.issuer);
    this.#config ??= oidc.discovery(url, this.settings.clientId, this.settings.clientSecret, undefined, {
      execute: loopback(url) ? [oidc.allowInsecureRequests] : [], timeout: 10,
    }).catch((e: unknown) => {
      this.#config = undefined;
      throw new TesseraError('TESSERA_OIDC_FAILED', 'the OIDC provider\'s discovery document could not be read', { cause: e });
    });
    return this.#config;
  }

  /**
   * The authorization request (OIDC Core §3.1.2.1) with a fresh state, nonce and PKCE verifier.
   * A step-up asks the provider to authenticate again (`prompt=login`, `max_age=0`).
   */
  async start(state: string, returnTo: string, stepUp: boolean): Promise<{ url: string; flow: OidcFlow }> {
    const config = await this.config();
    const verifier = oidc.randomPKCECodeVerifier();
    const nonce = oidc.randomNonce();
    const params: Record<string, string> = {
      redirect_uri: this.redirectUri(), scope: 'openid email profile', response_type: 'code',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state, nonce,
    };
    if (stepUp) Object.assign(params, { prompt: 'login', max_age: '0' });
    return { url: oidc.buildAuthorizationUrl(config, params).href, flow: { verifier, nonce, returnTo, stepUp } };
  }

  /**
   * Finishes the flow from the callback's query: checks the authorization response (state, `iss`
   * per RFC 9207 when the provider sends it), redeems the code with the verifier, validates the ID
   * token (OIDC Core §3.1.3.7: signature, iss, aud, exp, nonce) and merges the UserInfo claims
   * (its `sub` must be the ID token's, §5.3.2). Any failure: TESSERA_OIDC_FAILED.
   */
  async finish(query: string, state: string, flow: OidcFlow): Promise<{ claims: Record<string, unknown>; mfa: boolean; authTime: number | undefined }> {
    const config = await this.config();
    const current = new URL(this.redirectUri());
    current.search = query;
    try {
      const tokens = await oidc.authorizationCodeGrant(config, current, {
        pkceCodeVerifier: flow.verifier, expectedState: state, expectedNonce: flow.nonce, // A step-up sent max_age=0: the provider must have authenticated the person just now (auth_time within
        // STEP_UP_MAX_AGE_S, which leaves time for the person to type).
        idTokenExpected: true, ...(flow.stepUp ? { maxAge: STEP_UP_MAX_AGE_S } : {}),
      });
      const idClaims = tokens.claims();
      if (!idClaims) throw new Error('no ID token');
      let claims: Record<string, unknown> = { ...idClaims };
      if (config.serverMetadata().userinfo_endpoint) {
        const info = await oidc.fetchUserInfo(config, tokens.access_token, idClaims.sub);
        // The ID token's own claims (sub, amr, acr, auth_time) win over UserInfo's.
        claims = { ...info, ...idClaims };
      }
      const authTime = typeof idClaims.auth_time === 'number' ? idClaims.auth_time * 1000 : undefined;
      return { claims, mfa: oidcCountsAsMfa(claims, this.settings.mfaAcr), authTime };
    } catch (e) {
      if (e instanceof TesseraError) throw e;
      throw new TesseraError('TESSERA_OIDC_FAILED', undefined, { cause: e });
    }
  }

  get issuer(): string {
    return this.settings.issuer;
  }
}
