/**
 * SPIFFE federation (SPIFFE_Federation.md): the checks on a federation relationship and on a bundle
 * fetched from another trust domain's bundle endpoint, and the fetch itself for both profiles.
 *
 * Decisions taken from the standards:
 * - A relationship names the foreign trust domain, the bundle endpoint URL (https only, §4.1: the
 *   endpoint MUST be served over TLS) and the profile: `https_web` (§5.2.1, the endpoint's certificate
 *   is checked like any Web PKI server's: chain to the given or system roots plus host name) or
 *   `https_spiffe` (§5.2.2: the endpoint presents an X509-SVID; the client MUST check its SPIFFE ID
 *   against the configured endpoint SPIFFE ID and its chain against the bundle of the endpoint's trust
 *   domain, bootstrapped out of band from a bundle file and then from the endpoint itself).
 * - A fetched bundle is a SPIFFE bundle (JWK Set form, parsed by core/bundle.ts) and belongs to the
 *   foreign trust domain: an X.509 authority whose SPIFFE URI SAN names another trust domain is
 *   refused; a bundle with no authority at all is refused (it could not verify anything).
 * - `spiffe_sequence` must not go backwards (§4.2.1 of the bundle spec: it increases on change), and a
 *   changed bundle under the same non-zero sequence is refused: the last good bundle stays in force.
 * - The refresh hint is honoured but bounded (§4.2.2: SHOULD refresh at the hint), see refreshDelayMs.
 * - Responses are read up to MAX_FEDERATED_BUNDLE_BYTES and with a timeout: a hostile endpoint can
 *   neither exhaust memory nor hang a refresh.
 */
import { X509Certificate } from 'node:crypto';
import { request } from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { parseJwksBundle, type BundleContent } from './bundle.js';
import { TesseraError, isTesseraError } from './errors.js';
import { parseSpiffeId, parseTrustDomain } from './spiffe-id.js';
import { verifyPeerSvid } from './x509-svid.js';

export const FEDERATION_PROFILES = ['https_web', 'https_spiffe'] as const;
export type FederationProfile = (typeof FEDERATION_PROFILES)[number];

export const MAX_FEDERATED_BUNDLE_BYTES = 1024 * 1024;
export const MIN_REFRESH_SECONDS = 1;
export const MAX_REFRESH_SECONDS = 3600;
export const DEFAULT_REFRESH_SECONDS = 300;

export interface FederationSpec {
  trustDomain: string;
  endpoint: string;
  profile: FederationProfile;
  /** https_spiffe only: the SPIFFE ID the endpoint must present. */
  endpointId?: string;
}

function invalid(message: string): TesseraError {
  return new TesseraError('TESSERA_FEDERATION_INVALID', message);
}

/** Checks a relationship as an admin gives it; `ownTrustDomain` can never be federated with itself. */
export function parseFederationSpec(input: { trustDomain: unknown; endpoint: unknown; profile: unknown; endpointId?: unknown }, ownTrustDomain: string): FederationSpec {
  let td: string;
  try {
    if (typeof input.trustDomain !== 'string') throw new Error('not a string');
    td = parseTrustDomain(input.trustDomain);
  } catch {
    throw invalid('trust domain must be a SPIFFE trust domain name (lowercase letters, digits, dots, dashes, underscores)');
  }
  if (td === ownTrustDomain) throw invalid('a trust domain cannot federate with itself');
  if (typeof input.endpoint !== 'string' || input.endpoint.length > 2048) throw invalid('endpoint must be an https:// URL');
  let url: URL;
  try {
    url = new URL(input.endpoint);
  } catch {
    throw invalid('endpoint must be an https:// URL');
  }
  if (url.protocol !== 'https:' || url.username !== '' || url.password !== '' || url.hash !== '') throw invalid('endpoint must be an https:// URL without credentials or fragment');
  if (typeof input.profile !== 'string' || !(FEDERATION_PROFILES as readonly string[]).includes(input.profile)) throw invalid('profile must be https_web or https_spiffe');
  const profile = input.profile as FederationProfile;
  const spec: FederationSpec = { trustDomain: td, endpoint: url.toString(), profile };
  if (profile === 'https_spiffe') {
    if (typeof input.endpointId !== 'string') throw invalid('https_spiffe needs the endpoint SPIFFE ID (--endpoint-id)');
    let id;
    try {
      id = parseSpiffeId(input.endpointId);
    } catch {
      throw invalid('endpoint SPIFFE ID is not a SPIFFE ID');
    }
    if (id.path === '') throw invalid('endpoint SPIFFE ID needs a path');
    spec.endpointId = id.id;
  } else if (input.endpointId !== undefined) {
    throw invalid('--endpoint-id applies to the https_spiffe profile only');
  }
  return spec;
}

/**
 * Parses a bundle of `trustDomain` (text or parsed JSON) and checks it may replace `previous`.
 * Throws TESSERA_FEDERATION_INVALID; never anything else.
 */
export function checkFederatedBundle(trustDomain: string, doc: unknown, previous?: BundleContent): BundleContent {
  if (typeof doc === 'string' && Buffer.byteLength(doc) > MAX_FEDERATED_BUNDLE_BYTES) throw invalid('bundle is too large');
  let b: BundleContent;
  try {
    b = parseJwksBundle(doc, trustDomain);
  } catch (err) {
    throw invalid(`not a SPIFFE bundle: ${isTesseraError(err) ? err.message : 'malformed'}`);
  }
  if (b.x509Authorities.length === 0 && b.jwtAuthorities.length === 0) throw invalid('bundle has no authority');
  const own = `spiffe://${trustDomain}`;
  for (const der of b.x509Authorities) {
    const uris = uriSans(new X509Certificate(der));
    if (uris.some((u) => u.startsWith('spiffe://') && u !== own)) throw invalid(`an X.509 authority of the bundle belongs to another trust domain than ${trustDomain}`);
  }
  if (previous !== undefined) {
    if (b.sequence < previous.sequence) throw invalid(`bundle sequence went backwards (${b.sequence} < ${previous.sequence})`);
    if (b.sequence === previous.sequence && b.sequence > 0 && !sameAuthorities(b, previous)) throw invalid('bundle changed without a new sequence number');
  }
  return b;
}

function uriSans(cert: X509Certificate): string[] {
  const san = cert.subjectAltName ?? '';
  const out: string[] = [];
  for (const part of san.split(', ')) if (part.startsWith('URI:')) out.push(part.slice(4));
  return out;
}

/** Same X.509 and JWT authorities (order ignored). */
export function sameAuthorities(a: BundleContent, b: BundleContent): boolean {
  const x = (c: BundleContent): string => c.x509Authorities.map((d) => d.toString('base64')).sort().join(',');
  const j = (c: BundleContent): string => c.jwtAuthorities.map((k) => `${k.kid}:${k.publicKey.export({ format: 'der', type: 'spki' }).toString('base64')}`).sort().join(',');
  return x(a) === x(b) && j(a) === j(b);
}

/** The next refresh: the bundle's hint (or the default) bounded to [min, max] seconds. */
export function refreshDelayMs(hintSeconds: number | undefined, bounds = { min: MIN_REFRESH_SECONDS, max: MAX_REFRESH_SECONDS }): number {
  const s = hintSeconds ?? DEFAULT_REFRESH_SECONDS;
  return Math.min(bounds.max, Math.max(bounds.min, s)) * 1000;
}

export interface FetchOptions {
  profile: FederationProfile;
  /** https_web: PEM roots for the endpoint (default: the system's). */
  caPem?: string;
  /** https_spiffe: the SPIFFE ID the endpoint must present, and the PEM bundle of its trust domain. */
  endpointId?: string;
  trustPem?: string;
  timeoutMs?: number;
}

/** GETs a bundle endpoint per its profile; resolves to the body text. TESSERA_FEDERATION_FETCH_FAILED on any failure. */
export function fetchBundleText(endpoint: string, o: FetchOptions): Promise<string> {
  const failed = (why: string): TesseraError => new TesseraError('TESSERA_FEDERATION_FETCH_FAILED', `${endpoint}: ${why}`);
  let tls: Record<string, unknown>;
  if (o.profile === 'https_spiffe') {
    if (o.endpointId === undefined || o.trustPem === undefined || o.trustPem === '') return Promise.reject(failed('https_spiffe needs the endpoint SPIFFE ID and a bundle of its trust domain'));
    const expect = { trustDomain: parseSpiffeId(o.endpointId).trustDomain, id: o.endpointId };
    tls = {
      ca: o.trustPem,
      // The endpoint is identified by its SPIFFE ID, not its host name (SPIFFE_Federation.md §5.2.2).
      checkServerIdentity: (_host: string, cert: PeerCertificate): Error | undefined => {
        const v = verifyPeerSvid(cert.raw, true, expect, Date.now());
        return v.ok ? undefined : new Error(`endpoint identity refused: ${v.reason}`);
      },
    };
  } else {
    tls = o.caPem !== undefined ? { ca: o.caPem } : {};
  }
  return new Promise((resolve, reject) => {
    const req = request(endpoint, { method: 'GET', headers: { accept: 'application/json' }, rejectUnauthorized: true, minVersion: 'TLSv1.2', agent: false, timeout: o.timeoutMs ?? 10_000, ...tls }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(failed(`HTTP ${res.statusCode ?? '?'}`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_FEDERATED_BUNDLE_BYTES) {
          req.destroy();
          reject(failed('bundle is larger than 1 MiB'));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      res.on('error', (err) => reject(failed(err.message)));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', (err) => reject(failed(err.message)));
    req.end();
  });
}
