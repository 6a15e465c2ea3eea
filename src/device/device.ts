/**
 * The device side of device identity (issue 12): enrolment with a one-time token, renewal, and
 * signed posture reports. The private key is generated here, written 0600 and never sent: the
 * control plane only ever sees CSRs and signatures.
 *
 * Data directory: `device.key` (PKCS#8 PEM, 0600), `device.pem` (the certificate, 0600),
 * `bundle.pem` (the trust bundle), `device.json` (server URL, SPIFFE ID, trust domain).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ApiClient } from '../common/api-client.js';
import { createCsr } from '../core/csr.js';
import { parsePostureFacts, postureReportJson, postureSigningInput, POSTURE_FACT_NAMES, type PostureFacts, type PostureReport, type PostureSubmission } from '../core/devices/posture.js';
import { TesseraError } from '../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../core/files.js';
import { parseSpiffeId } from '../core/spiffe-id.js';
import { pemDecodeAll, pemEncode } from '../core/x509.js';
import type { BundleWatchResponse } from '../core/wire/control-plane.js';
import type { DeviceCertResponse, DeviceEnrollRequest, DeviceRenewRequest, PostureAcceptedResponse } from '../core/wire/devices.js';

export const DEVICE_FILES = { key: 'device.key', cert: 'device.pem', bundle: 'bundle.pem', state: 'device.json' } as const;

export interface DeviceState {
  serverUrl: string;
  spiffeId: string;
  deviceId: string;
  trustDomain: string;
}

/** The device's identity as loaded from its data directory. */
export interface DeviceIdentity {
  dir: string;
  state: DeviceState;
  key: KeyObject;
  certPem: string;
  bundlePem: string;
  notBefore: number;
  notAfter: number;
  serial: string;
}

function missing(what: string, dir: string): TesseraError {
  return new TesseraError('TESSERA_CREDENTIAL_MISSING', `${what} not found in ${dir}: enrol first (tessera device enroll)`);
}

/** Loads the identity from `dataDir` (TESSERA_CREDENTIAL_MISSING when it is not enrolled). */
export function loadDevice(dataDir: string): DeviceIdentity {
  const dir = resolve(dataDir);
  for (const f of Object.values(DEVICE_FILES)) if (!existsSync(join(dir, f))) throw missing(f, dir);
  const state = JSON.parse(readFileSync(join(dir, DEVICE_FILES.state), 'utf8')) as DeviceState;
  const certPem = readFileSync(join(dir, DEVICE_FILES.cert), 'utf8');
  const cert = new X509Certificate(certPem);
  return {
    dir, state, certPem, key: createPrivateKey(readFileSync(join(dir, DEVICE_FILES.key), 'utf8')), bundlePem: readFileSync(join(dir, DEVICE_FILES.bundle), 'utf8'),
    notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo), serial: cert.serialNumber.toUpperCase(),
  };
}

function serverIdFor(trustDomain: string): string {
  return `spiffe://${trustDomain}/tessera/server`;
}

/** An API client authenticated as the device (mTLS with its key and certificate). */
export function deviceClient(d: DeviceIdentity, serverUrl = d.state.serverUrl): ApiClient {
  return new ApiClient(serverUrl, {
    ca: d.bundlePem, cert: d.certPem, key: d.key.export({ format: 'pem', type: 'pkcs8' }) as string, serverId: serverIdFor(d.state.trustDomain),
  });
}

function storeCert(dir: string, res: DeviceCertResponse): void {
  writeFileAtomic(join(dir, DEVICE_FILES.bundle), res.bundle_pem);
  writeFileAtomic(join(dir, DEVICE_FILES.cert), res.cert_pem, 0o600);
}

/**
 * Enrols this device: generates a P-256 key (written 0600 before anything is sent), sends a CSR
 * with the one-time token, stores the certificate and the trust bundle. `trustBundlePem` is the
 * control plane's CA bundle, trusted for this first connection (no trust on first use).
 * Refuses a data directory that already holds a device identity (TESSERA_CONFLICT).
 */
export async function enrollDevice(opts: { serverUrl: string; token: string; dataDir: string; trustBundlePem: string }): Promise<DeviceIdentity> {
  const dir = resolve(opts.dataDir);
  if (existsSync(join(dir, DEVICE_FILES.cert))) throw new TesseraError('TESSERA_CONFLICT', `${dir} already holds a device identity`);
  if (pemDecodeAll(opts.trustBundlePem, 'CERTIFICATE').length === 0) throw new TesseraError('TESSERA_CONFIG_INVALID', 'the trust bundle holds no certificate');
  ensurePrivateDir(dir);
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeFileAtomic(join(dir, DEVICE_FILES.key), privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600);
  const csr = pemEncode(createCsr({ privateKey, publicKey }), 'CERTIFICATE REQUEST');
  // The server's SPIFFE ID comes from the bundle's one trust domain (ApiClient's default).
  const client = new ApiClient(opts.serverUrl, { ca: opts.trustBundlePem });
  let res: DeviceCertResponse;
  try {
    res = await client.call<DeviceCertResponse>('POST', '/v1/device/enroll', { token: opts.token, csr } satisfies DeviceEnrollRequest);
  } finally {
    client.close();
  }
  const trustDomain = parseSpiffeId(res.spiffe_id).trustDomain;
  storeCert(dir, res);
  writeFileAtomic(join(dir, DEVICE_FILES.state), `${JSON.stringify({ serverUrl: opts.serverUrl, spiffeId: res.spiffe_id, deviceId: res.device_id, trustDomain } satisfies DeviceState, null, 2)}\n`);
  return loadDevice(dir);
}

/**
 * Renews the device certificate (same key: it never leaves the device, and the control plane
 * verifies posture reports against the key of the current certificate). Returns the new identity.
 */
export async function renewDevice(d: DeviceIdentity): Promise<DeviceIdentity> {
  const csr = pemEncode(createCsr({ privateKey: d.key, publicKey: createPublicKey(d.key) }), 'CERTIFICATE REQUEST');
  const client = deviceClient(d);
  try {
    storeCert(d.dir, await client.call<DeviceCertResponse>('POST', '/v1/device/renew', { csr } satisfies DeviceRenewRequest));
  } finally {
    client.close();
  }
  return loadDevice(d.dir);
}

/**
 * Follows the trust bundle (public `GET /v1/bundle/watch`, answered at once): a CA prepared for
 * rotation is published there before it signs, so a device that checks every round trusts the
 * control plane's next certificate before it is used, even between two renewals.
 */
export async function refreshBundle(d: DeviceIdentity): Promise<DeviceIdentity> {
  const client = deviceClient(d);
  let res: BundleWatchResponse;
  try {
    res = await client.call<BundleWatchResponse>('GET', '/v1/bundle/watch?after=0&timeout_seconds=0');
  } finally {
    client.close();
  }
  if (res.bundle_pem === d.bundlePem || pemDecodeAll(res.bundle_pem, 'CERTIFICATE').length === 0) return d;
  writeFileAtomic(join(d.dir, DEVICE_FILES.bundle), res.bundle_pem);
  return loadDevice(d.dir);
}

/** Whether the certificate has passed `fraction` of its life (renew at half life by default). */
export function renewalDue(d: Pick<DeviceIdentity, 'notBefore' | 'notAfter'>, now: number, fraction = 0.5): boolean {
  return now >= d.notBefore + (d.notAfter - d.notBefore) * fraction;
}

/** Signs a report with the device key: ECDSA P-256 SHA-256, DER, base64url (see postureSigningInput). */
export function signPostureReport(key: KeyObject, report: PostureReport): PostureSubmission {
  const signature = sign('sha256', postureSigningInput(report), { key, dsaEncoding: 'der' }).toString('base64url');
  return { report: postureReportJson(report), signature };
}

/**
 * Facts from a posture file (MDM export, test): JSON `{ "<fact>": value | { value, observed_at } }`;
 * bare values are stamped with the file's modification time. Throws TESSERA_CONFIG_INVALID.
 */
export function readPostureFile(file: string): PostureFacts {
  let parsed: unknown;
  let mtime: number;
  try {
    mtime = statSync(file).mtimeMs;
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--posture-file ${file}: ${err instanceof SyntaxError ? 'not JSON' : 'cannot be read'}`);
  }
  try {
    return parsePostureFacts(parsed, Math.floor(mtime));
  } catch (err) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--posture-file ${file}: ${(err as Error).message}`);
  }
}

/** Collected facts with the supplied ones laid over them (an MDM knows better than a guess-free "unknown"). */
export function mergeFacts(collected: PostureFacts, supplied: PostureFacts | undefined): PostureFacts {
  const out: PostureFacts = { ...collected };
  if (supplied) for (const name of POSTURE_FACT_NAMES) if (supplied[name]) (out as Record<string, unknown>)[name] = supplied[name];
  return out;
}

/** Signs and sends one posture report as the device; returns the control plane's answer. */
export async function sendPosture(d: DeviceIdentity, facts: PostureFacts, now = Date.now()): Promise<PostureAcceptedResponse> {
  const client = deviceClient(d);
  try {
    return await client.call<PostureAcceptedResponse>('POST', '/v1/device/posture', signPostureReport(d.key, { deviceId: d.state.spiffeId, reportedAt: now, facts }));
  } finally {
    client.close();
  }
}
