/**
 * Who may call the webhook: only the Kubernetes API server, authenticated by its client
 * certificate. A pod CREATE answered with a patch carries a fresh one-time join token for the pod's
 * identity, so anyone who could POST an AdmissionReview could mint identities for every opted-in
 * namespace: `/mutate` is refused unless the TLS client certificate
 * - chains to `--client-ca` (the CA that signed the certificate the API server presents, named in its
 *   AdmissionConfiguration kubeconfig; see deploy/kubernetes/apiserver-admission.yaml),
 * - is valid now and usable for client authentication (no extendedKeyUsage, or one with clientAuth),
 * - and names one of `--client-name` as its subject CN (the way Kubernetes names a certificate's
 *   user). A cluster CA signs kubelets' and people's client certificates too: the CN check is what
 *   keeps those out, so the list is required and has no wildcard.
 * `/healthz` stays open (the kubelet's probes present no certificate; it returns only the webhook's
 * SPIFFE ID, which its serving certificate shows anyway).
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { TesseraError } from '../core/errors.js';
import { pemDecodeAll } from '../core/x509.js';

export interface WebhookClientAuth {
  /** PEM of the CA certificates the API server's client certificate must chain to. */
  caPem: string;
  /** The subject CNs accepted. */
  names: ReadonlySet<string>;
}

const CLIENT_AUTH_EKU = '1.3.6.1.5.5.7.3.2';
const ANY_EKU = '2.5.29.37.0';
// A Kubernetes user name from a certificate: printable, no control bytes, bounded.
const CLIENT_NAME_RE = /^[\x21-\x7e](?:[\x20-\x7e]{0,254}[\x21-\x7e])?$/;

/** `--client-name a,b`: the accepted subject CNs. */
export function parseClientNames(values: readonly string[]): Set<string> {
  const names = values.flatMap((v) => v.split(',')).map((s) => s.trim()).filter((s) => s !== '');
  const bad = names.find((n) => !CLIENT_NAME_RE.test(n));
  if (names.length === 0 || bad !== undefined) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--client-name must name the subject CN of the API server's client certificate (comma-separated or repeated)${bad !== undefined ? `: ${JSON.stringify(bad).slice(0, 70)} is not a printable name` : ''}`);
  }
  return new Set(names);
}

/** Reads `--client-ca`: one or more PEM CA certificates (basicConstraints cA), nothing else. */
export function loadClientCa(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `--client-ca ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let ders: Buffer[];
  try {
    ders = pemDecodeAll(text, 'CERTIFICATE');
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--client-ca ${file} is not PEM: ${(err as Error).message}`);
  }
  if (ders.length === 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `--client-ca ${file} holds no CERTIFICATE block`);
  for (const der of ders) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(der);
    } catch {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `--client-ca ${file} holds a certificate that does not parse`);
    }
    if (!cert.ca) throw new TesseraError('TESSERA_CONFIG_INVALID', `--client-ca ${file} holds a certificate that is not a CA (${cert.subject.replace(/\n/g, ', ').slice(0, 120)})`);
  }
  return text;
}

/**
 * Why the caller on `socket` may not call `/mutate` (undefined: it may). The server requests a
 * certificate without rejecting the handshake (so `/healthz` works for probes), so every check is
 * here, on the socket's verification result.
 */
export function refuseCaller(socket: TLSSocket, auth: WebhookClientAuth): TesseraError | undefined {
  const cert = socket.getPeerCertificate();
  if (cert === null || cert === undefined || Object.keys(cert).length === 0) {
    return new TesseraError('TESSERA_AUTH_REQUIRED', 'the webhook answers only the Kubernetes API server: present its client certificate');
  }
  if (!socket.authorized) {
    return new TesseraError('TESSERA_AUTH_INVALID', `the client certificate is not trusted (${String(socket.authorizationError ?? 'unverified')}): it must chain to --client-ca`);
  }
  const eku = cert.ext_key_usage;
  if (Array.isArray(eku) && !eku.includes(CLIENT_AUTH_EKU) && !eku.includes(ANY_EKU)) {
    return new TesseraError('TESSERA_AUTH_INVALID', 'the client certificate is not for client authentication (its extendedKeyUsage lacks clientAuth)');
  }
  const cn = cert.subject?.CN;
  if (typeof cn !== 'string' || !auth.names.has(cn)) {
    return new TesseraError('TESSERA_FORBIDDEN', 'this client certificate is not the API server\'s: its subject CN is not one of --client-name');
  }
  return undefined;
}
