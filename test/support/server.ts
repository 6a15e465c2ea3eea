/**
 * Shared helpers for tests that run a real control plane (HTTPS + mTLS on 127.0.0.1, port 0, a
 * temporary data directory) and talk to it either through the agent's {@link ApiClient} or through
 * {@link rawRequest}, which sends exactly the bytes and headers it is given.
 */
export { httpsFetchTrusting } from './fetch.js';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiClient } from '../../src/common/api-client.js';
import { createCsr } from '../../src/core/csr.js';
import { TesseraError, type ErrorCode } from '../../src/core/errors.js';
import { createLogger, type Logger } from '../../src/core/log.js';
import { pemEncode } from '../../src/core/x509.js';
import { ControlPlane, type ControlPlaneOptions } from '../../src/server/server.js';

export interface AdminTls {
  /** The trust bundle (PEM). */
  ca: string;
  cert: string;
  key: string;
}

export interface TestControlPlane {
  cp: ControlPlane;
  /** An ApiClient holding the admin credential. */
  admin: ApiClient;
  /** The temporary data directory (removed by close()). */
  dataDir: string;
  /** Every line the control plane logged (JSON), for assertions such as "no internal error". */
  logs: string[];
  /** The admin credential and bundle as read from `<adminDir>` at start. */
  adminTls: AdminTls;
  close(): Promise<void>;
}

/** `port`: default 0 (any free port); a fixed one when the public URL must name it before start. */
export type StartOptions = Partial<Omit<ControlPlaneOptions, 'dataDir' | 'host'>>;

/** The admin credential and the bundle, as written by the control plane to its admin directory. */
export function readAdminTls(cp: ControlPlane): AdminTls {
  return {
    ca: readFileSync(join(cp.adminDir, 'bundle.pem'), 'utf8'),
    cert: readFileSync(join(cp.adminDir, 'admin.pem'), 'utf8'),
    key: readFileSync(join(cp.adminDir, 'admin.key'), 'utf8'),
  };
}

/** Starts a control plane on 127.0.0.1:0 in a fresh temporary data directory. */
export async function startControlPlane(opts: StartOptions = {}): Promise<TestControlPlane> {
  const dataDir = mkdtempSync(join(tmpdir(), 'tessera-test-'));
  const logs: string[] = [];
  const log: Logger = opts.log ?? createLogger({ level: 'debug', write: (line) => logs.push(line) });
  let cp: ControlPlane;
  try {
    // A test suite is one very busy client on 127.0.0.1: the per-address sign-in limit is raised
    // unless the test sets its own (people.signInLimits) to test it.
    const people = { ...opts.people, signInLimits: { rateLimit: { perSecond: 10_000, burst: 10_000 }, ...opts.people?.signInLimits } };
    cp = await ControlPlane.start({ trustDomain: 'tessera.test', env: {}, ...opts, people, log, dataDir, host: '127.0.0.1', port: opts.port ?? 0 });
  } catch (err) {
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  const adminTls = readAdminTls(cp);
  const admin = new ApiClient(cp.url, adminTls);
  let closed = false;
  return {
    cp,
    admin,
    dataDir,
    logs,
    adminTls,
    async close() {
      if (closed) return;
      closed = true;
      admin.close();
      try {
        await cp.stop();
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    },
  };
}

export interface CsrOptions {
  /** URI SAN the CSR asks for (omitted by default, as the server fills in the entry's ID). */
  uriSan?: string;
  commonName?: string;
  /** Default P-256. */
  keyType?: 'p256' | 'ed25519';
}

/** A fresh key pair and a PEM CSR signed with it. */
export function makeCsrPem(opts: CsrOptions = {}): { pem: string; privateKey: KeyObject; keyPem: string } {
  const { privateKey, publicKey } =
    opts.keyType === 'ed25519' ? generateKeyPairSync('ed25519') : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = createCsr({
    privateKey,
    publicKey,
    ...(opts.uriSan !== undefined ? { uriSan: opts.uriSan } : {}),
    ...(opts.commonName !== undefined ? { commonName: opts.commonName } : {}),
  });
  return { pem: pemEncode(der, 'CERTIFICATE REQUEST'), privateKey, keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

export interface RawRequestOptions {
  method?: string;
  path: string;
  /** Sent as given: no content-type or content-length is added unless `body` is set (then content-length only). */
  headers?: Record<string, string | number>;
  body?: Buffer | string;
  /** Client certificate chain and key (PEM); none by default. */
  cert?: string;
  key?: string;
  /** Trust bundle (PEM) for the server certificate. */
  ca: string;
  timeoutMs?: number;
}

export interface RawResponse {
  status: number;
  /** The parsed body, or undefined when it is not JSON. */
  json: unknown;
  text: string;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * One HTTPS request on its own connection (no keep-alive, so every request gets a fresh TLS
 * handshake and thus a fresh verdict on its client certificate), with raw headers and body.
 */
export function rawRequest(url: string, opts: RawRequestOptions): Promise<RawResponse> {
  const target = new URL(opts.path, url);
  const body = opts.body === undefined ? undefined : Buffer.isBuffer(opts.body) ? opts.body : Buffer.from(opts.body, 'utf8');
  const headers: Record<string, string | number> = { ...(body ? { 'content-length': body.length } : {}), ...opts.headers };
  return new Promise<RawResponse>((resolve, reject) => {
    let settled = false;
    const req = https.request(
      target,
      {
        method: opts.method ?? (body ? 'POST' : 'GET'),
        headers,
        agent: false,
        ca: opts.ca,
        ...(opts.cert ? { cert: opts.cert } : {}),
        ...(opts.key ? { key: opts.key } : {}),
        timeout: opts.timeoutMs ?? 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', (err) => {
          if (!settled) reject(err);
        });
        res.on('end', () => {
          settled = true;
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, json, text, headers: res.headers });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    // The server may answer (413, 415) and close before it has read the whole body: a write error
    // after the response has arrived is expected, not a failure.
    req.on('error', (err) => {
      if (!settled) reject(err);
    });
    req.end(body);
  });
}

/** Convenience: rawRequest with a JSON body (any value, serialized as given) and content-type application/json. */
export function rawJson(url: string, opts: Omit<RawRequestOptions, 'body'> & { json: unknown }): Promise<RawResponse> {
  const { json, ...rest } = opts;
  return rawRequest(url, {
    method: 'POST',
    ...rest,
    headers: { 'content-type': 'application/json', ...rest.headers },
    body: JSON.stringify(json),
  });
}

/** The `{ error: { code } }` of a response, if any. */
export function errorCode(res: RawResponse): string | undefined {
  const err = (res.json as { error?: { code?: unknown } } | undefined)?.error;
  return typeof err?.code === 'string' ? err.code : undefined;
}

export interface JoinedAgent {
  spiffeId: string;
  entryId: string;
  certPem: string;
  keyPem: string;
  privateKey: KeyObject;
  bundlePem: string;
}

/**
 * Registers `spiffeId` (POST /v1/entries, unless `entry: false` and the entry already exists),
 * creates a join token, and joins with a fresh P-256 CSR.
 */
export async function joinAgent(
  cp: ControlPlane,
  admin: ApiClient,
  spiffeId: string,
  opts: { entry?: Record<string, unknown> | false } = {},
): Promise<JoinedAgent> {
  let entryId: string;
  if (opts.entry === false) {
    entryId = (await admin.call<{ id: string }>('GET', `/v1/entries/${encodeURIComponent(spiffeId)}`)).id;
  } else {
    entryId = (await admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: spiffeId, ...opts.entry })).id;
  }
  const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: entryId });
  const csr = makeCsrPem();
  const anon = new ApiClient(cp.url, { ca: readAdminTls(cp).ca });
  try {
    const res = await anon.call<{ svid_pem: string; bundle_pem: string; spiffe_id: string }>('POST', '/v1/agent/join', { join_token: token, csr: csr.pem });
    return { spiffeId: res.spiffe_id, entryId, certPem: res.svid_pem, keyPem: csr.keyPem, privateKey: csr.privateKey, bundlePem: res.bundle_pem };
  } finally {
    anon.close();
  }
}

/** Cedar: every identity may derive any API key scope and any JWT-SVID audience (tests where minting is a side issue). */
export const PERMIT_ALL_DERIVE = 'permit (principal, action == Tessera::Action::"credential:derive", resource);';

/** Applies `files` (default {@link PERMIT_ALL_DERIVE}) as the control plane's policy: derived credentials are default deny. */
export async function applyPolicy(admin: ApiClient, files: Record<string, string> = { 'derive.cedar': PERMIT_ALL_DERIVE }): Promise<void> {
  await admin.call('POST', '/v1/policies', { files, reason: 'test policy' });
}

/** An ApiClient authenticating as a joined agent. */
export function agentClient(cp: ControlPlane, agent: Pick<JoinedAgent, 'certPem' | 'keyPem'>): ApiClient {
  return new ApiClient(cp.url, { ca: readAdminTls(cp).ca, cert: agent.certPem, key: agent.keyPem });
}

/** Resolves to the TesseraError code a promise rejects with (fails if it resolves or rejects otherwise). */
export async function rejectionCode(p: Promise<unknown>): Promise<ErrorCode> {
  const outcome = await p.then(
    (v: unknown) => ({ ok: true as const, v }),
    (e: unknown) => ({ ok: false as const, e }),
  );
  if (outcome.ok) throw new Error(`expected a rejection, got ${JSON.stringify(outcome.v)}`);
  if (!(outcome.e instanceof TesseraError)) throw outcome.e;
  return outcome.e.code;
}

/** True when GET /healthz answers 200 with status "ok". */
export async function isHealthy(cp: ControlPlane): Promise<boolean> {
  const res = await rawRequest(cp.url, { path: '/healthz', ca: readAdminTls(cp).ca });
  return res.status === 200 && (res.json as { status?: unknown } | undefined)?.status === 'ok';
}

