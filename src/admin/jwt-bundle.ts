/**
 * The JWT authorities a JWT-SVID is validated against (`tessera svid validate-jwt`): from a saved
 * SPIFFE bundle in JWK Set form (offline), or from the control plane's GET /v1/bundle, called with
 * an agent's SVID or the admin credential.
 */
import { readFileSync, statSync } from 'node:fs';
import { parseJwksBundle } from '../core/bundle.js';
import { TesseraError, isTesseraError } from '../core/errors.js';
import type { JwksLike } from '../core/jwt-svid.js';
import { parseTrustDomain } from '../core/spiffe-id.js';
import type { BundleResponse, HealthResponse } from '../core/wire/control-plane.js';
import { adminClient, svidClient, type AdminLocation } from './clients.js';

const MAX_BUNDLE_FILE_BYTES = 1 << 20;

/** A bundle file (at most 1 MiB) holding the JWT authorities of `trustDomain`. */
export function bundleFromFile(file: string, trustDomain: string | undefined): { jwks: JwksLike; trustDomain: string } {
  if (trustDomain === undefined) throw new TesseraError('TESSERA_CONFIG_INVALID', '--bundle needs --trust-domain (a bundle holds the keys of one trust domain)');
  const td = parseTrustDomain(trustDomain);
  let text: string;
  try {
    if (statSync(file).size > MAX_BUNDLE_FILE_BYTES) throw new Error('larger than 1 MiB');
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `cannot read the bundle ${file}: ${(err as Error).message}`);
  }
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
    const content = parseJwksBundle(jwks, td);
    if (content.jwtAuthorities.length === 0) throw new TesseraError('TESSERA_BAD_REQUEST', 'it holds no JWT authority (use "jwt-svid")');
  } catch (err) {
    const reason = isTesseraError(err) ? err.message : 'not valid JSON';
    throw new TesseraError('TESSERA_CONFIG_INVALID', `${file} is not a SPIFFE bundle in JWK Set form (GET /v1/bundle): ${reason}`);
  }
  return { jwks: jwks as JwksLike, trustDomain: td };
}

/** The bundle and trust domain the control plane serves (GET /v1/bundle, GET /healthz over the same channel). */
export async function bundleFromControlPlane(at: AdminLocation, agentDir: string | undefined, trustDomain: string | undefined): Promise<{ jwks: JwksLike; trustDomain: string }> {
  const client = agentDir !== undefined ? svidClient(agentDir, at.server) : adminClient(at);
  try {
    const [health, jwks] = await Promise.all([client.call<Partial<HealthResponse>>('GET', '/healthz'), client.call<BundleResponse>('GET', '/v1/bundle')]);
    const served = typeof health.trust_domain === 'string' ? parseTrustDomain(health.trust_domain) : undefined;
    if (served === undefined) throw new TesseraError('TESSERA_UNAVAILABLE', 'the control plane did not say its trust domain');
    if (trustDomain !== undefined && parseTrustDomain(trustDomain) !== served) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `--trust-domain ${trustDomain} is not the control plane's (${served})`);
    }
    return { jwks, trustDomain: served };
  } finally {
    client.close();
  }
}
