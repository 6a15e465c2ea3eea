/**
 * What the sidecar proxies need from the agent: the current X509-SVID and trust bundle, and a
 * signal when either changes. The Agent class satisfies it; tests pass a fake backed by a real
 * test CA. The proxies never import the agent itself.
 */
import type { KeyObject } from 'node:crypto';
import { TesseraError, listenFailure } from '../core/errors.js';
import { parseSpiffeId } from '../core/spiffe-id.js';

export interface TlsMaterial {
  spiffeId: string;
  certPem: string;
  key: KeyObject;
  bundlePem: string;
  /**
   * Set only when the agent holds federated bundles (issue 14): every trust domain's anchors, for a
   * peer's chain to be checked against its own trust domain's bundle and no other.
   */
  trust?: import('../core/federation-trust.js').TrustAnchors;
}

export interface TlsSource {
  current(): TlsMaterial | undefined;
  on(event: 'svid' | 'bundle', fn: () => void): unknown;
  off(event: 'svid' | 'bundle', fn: () => void): unknown;
}

/** The lowest protocol version the proxies speak (TLS 1.2 and 1.3). */
export const MIN_TLS_VERSION = 'TLSv1.2';

const pemCache = new WeakMap<KeyObject, string>();

/** The key as PKCS#8 PEM for a SecureContext (exported once per KeyObject). */
export function keyPem(key: KeyObject): string {
  let pem = pemCache.get(key);
  if (pem === undefined) {
    pem = key.export({ format: 'pem', type: 'pkcs8' }) as string;
    pemCache.set(key, pem);
  }
  return pem;
}

/** The current material, or TESSERA_CREDENTIAL_MISSING when the agent has no SVID yet. */
export function requireMaterial(source: TlsSource): TlsMaterial {
  const m = source.current();
  if (m === undefined) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', 'the agent has no SVID yet');
  return m;
}

/**
 * Calls `rebuild` whenever the SVID or the bundle changes; returns the function that stops it.
 * Errors thrown by `rebuild` are passed to `onError` (the previous context stays in use).
 */
export function watchTlsSource(source: TlsSource, rebuild: () => void, onError: (err: unknown) => void): () => void {
  const handler = (): void => {
    try {
      rebuild();
    } catch (err) {
      onError(err);
    }
  };
  source.on('svid', handler);
  source.on('bundle', handler);
  return () => {
    source.off('svid', handler);
    source.off('bundle', handler);
  };
}

/** The trust domain of our own SPIFFE ID. */
export function trustDomainOf(spiffeId: string): string {
  return parseSpiffeId(spiffeId).trustDomain;
}

/**
 * Listens and returns the bound port; a failure becomes TESSERA_ADDRESS_IN_USE (port in use) or
 * TESSERA_CONFIG_INVALID (bad address) naming the proxy. Later server errors are counted by `onError`.
 */
export async function listenOn(server: import('node:net').Server, listen: { host: string; port: number }, what: string, onError: () => void): Promise<number> {
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listen.port, listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    throw listenFailure(err, what, `${listen.host}:${listen.port}`);
  }
  server.on('error', onError);
  const addr = server.address();
  return typeof addr === 'object' && addr !== null ? addr.port : listen.port;
}
