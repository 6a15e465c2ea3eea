/**
 * The agent's SPIFFE Workload API end to end, over a real Unix socket, with a client built ONLY from
 * proto/workload.proto (@grpc/proto-loader + @grpc/grpc-js), as any SPIFFE client would be: nothing
 * of the server's code is used on the client side. The identity source is a fake agent with real
 * certificates (a test CA) and real JWT-SVIDs.
 */
import { spawn } from 'node:child_process';
import { EventEmitter, once } from 'node:events';
import { X509Certificate, createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, lstatSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWorkloadApi, type IdentitySource, type WorkloadApi } from '../src/agent/workload-api/index.js';
import { createLogger } from '../src/core/log.js';
import { bundleToJwks } from '../src/core/bundle.js';
import { signJwtSvid, type JwtSigningKey } from '../src/core/jwt-svid.js';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../src/core/x509.js';

const TD = 'example.org';
const ID = 'spiffe://example.org/shop/orders';
const HOUR = 3_600_000;

// ---------------------------------------------------------------------------------------------
// A fake agent: a real CA, real leaves, real JWT signing.

interface Ca {
  certDer: Buffer;
  issuer: CertificateIssuer;
}

function newCa(name: string): Ca {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const certDer = createSelfSignedCa({
    privateKey,
    publicKey,
    commonName: name,
    trustDomainUri: `spiffe://${TD}`,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * HOUR),
  });
  return { certDer, issuer: new CertificateIssuer({ certDer, privateKey }) };
}

class FakeAgent extends EventEmitter implements IdentitySource {
  readonly trustDomain = TD;
  selectors: string[] = [];
  cas: Ca[] = [newCa('ca-1')];
  jwtKey: JwtSigningKey;
  private jwtPublic: KeyObject;
  svid: { certPem: string; key: KeyObject; notAfter: Date } | undefined;
  minted = 0;
  tokens: string[] = [];

  constructor() {
    super();
    const k = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.jwtKey = { kid: 'jwt-1', privateKey: k.privateKey, alg: 'ES256' };
    this.jwtPublic = k.publicKey;
    this.issue();
  }

  /** A new key and leaf from the newest CA (what the agent does at renewal). */
  issue(): void {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const now = Date.now();
    const notAfter = new Date(now + HOUR);
    const der = this.cas[this.cas.length - 1]!.issuer.issueLeaf({ publicKey, notBefore: new Date(now - 10_000), notAfter, uriSans: [ID] });
    this.svid = { certPem: pemEncode(der, 'CERTIFICATE'), key: privateKey, notAfter };
  }

  rotate(): void {
    this.issue();
    this.emit('svid');
  }

  addCa(): void {
    this.cas.push(newCa(`ca-${this.cas.length + 1}`));
    this.emit('bundle');
  }

  current() {
    if (this.svid === undefined) return undefined;
    const bundlePem = this.cas.map((c) => pemEncode(c.certDer, 'CERTIFICATE')).join('');
    return { spiffeId: ID, certPem: this.svid.certPem, key: this.svid.key, bundlePem, notAfter: this.svid.notAfter };
  }

  jwtBundle() {
    return bundleToJwks({
      trustDomain: TD,
      x509Authorities: this.cas.map((c) => c.certDer),
      jwtAuthorities: [{ kid: this.jwtKey.kid, publicKey: this.jwtPublic }],
      sequence: this.cas.length,
    });
  }

  async mintJwt(audience: string[]): Promise<{ token: string }> {
    this.minted++;
    const { token } = signJwtSvid(this.jwtKey, { sub: ID, aud: audience, ttlSeconds: 300 });
    this.tokens.push(token);
    return { token };
  }

  entrySelectors(): string[] {
    return this.selectors;
  }

  /** Federated trust domains' bundles (issue 14): the JWT keys each partner signs with. */
  federated = new Map<string, { jwks: { keys: readonly object[] }; pem: string }>();

  federatedBundles() {
    return this.federated;
  }
}

// ---------------------------------------------------------------------------------------------
// A client from the .proto only.

const def = protoLoader.loadSync(join(import.meta.dirname, '..', 'proto', 'workload.proto'), {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
type Ctor = new (address: string, creds: grpc.ChannelCredentials) => grpc.Client;
const WorkloadClient = (grpc.loadPackageDefinition(def) as unknown as { SpiffeWorkloadAPI: Ctor & { service: grpc.ServiceDefinition } }).SpiffeWorkloadAPI;

type Msg = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
type Rpc = (req: Msg, md: grpc.Metadata, cb?: (err: grpc.ServiceError | null, res: Msg) => void) => unknown;

function header(value = 'true'): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set('workload.spiffe.io', value);
  return md;
}

function unary(client: grpc.Client, method: string, req: Msg, md = header()): Promise<Msg> {
  return new Promise((ok, fail) => {
    ((client as unknown as Record<string, Rpc>)[method]!).call(client, req, md, (err, res) => (err ? fail(err) : ok(res)));
  });
}

/** A server stream as a queue of messages; `next()` waits for the next message or the final error. */
function stream(client: grpc.Client, method: string, md = header()) {
  const call = ((client as unknown as Record<string, Rpc>)[method]!).call(client, {}, md) as grpc.ClientReadableStream<Msg>;
  const messages: Msg[] = [];
  let error: grpc.ServiceError | undefined;
  let wake: (() => void) | undefined;
  call.on('data', (m: Msg) => {
    messages.push(m);
    wake?.();
  });
  call.on('error', (e: grpc.ServiceError) => {
    error = e;
    wake?.();
  });
  return {
    call,
    async next(timeoutMs = 5000): Promise<Msg> {
      const deadline = Date.now() + timeoutMs;
      while (messages.length === 0) {
        if (error) throw error;
        if (Date.now() > deadline) throw new Error(`no message on ${method} within ${timeoutMs} ms`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
      return messages.shift()!;
    },
    /** Resolves with the stream's final error status. */
    async status(timeoutMs = 5000): Promise<grpc.ServiceError> {
      const deadline = Date.now() + timeoutMs;
      while (!error) {
        if (Date.now() > deadline) throw new Error(`${method} did not end within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return error;
    },
    cancel: () => call.cancel(),
  };
}

async function expectStatus(p: Promise<unknown>, code: grpc.status): Promise<grpc.ServiceError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e as grpc.ServiceError,
  );
  expect(err, `expected status ${grpc.status[code]}`).toBeDefined();
  expect(grpc.status[err!.code]).toBe(grpc.status[code]);
  return err!;
}

/** DER certificates concatenated (the x509_svid and bundle fields) split into X509Certificates. */
function splitDer(buf: Buffer): X509Certificate[] {
  const out: X509Certificate[] = [];
  let off = 0;
  while (off < buf.length) {
    // SEQUENCE with a long-form length (certificates are > 127 bytes).
    expect(buf[off]).toBe(0x30);
    const lenBytes = buf[off + 1]! & 0x7f;
    let len = 0;
    for (let i = 0; i < lenBytes; i++) len = len * 256 + buf[off + 2 + i]!;
    const end = off + 2 + lenBytes + len;
    out.push(new X509Certificate(buf.subarray(off, end)));
    off = end;
  }
  return out;
}

/** google.protobuf.Struct (protobufjs object form) back to JSON. */
function fromValue(v: Msg): unknown {
  if ('stringValue' in v) return v.stringValue;
  if ('numberValue' in v) return v.numberValue;
  if ('boolValue' in v) return v.boolValue;
  if ('nullValue' in v) return null;
  if ('listValue' in v) return (v.listValue.values as Msg[]).map(fromValue);
  if ('structValue' in v) return fromStruct(v.structValue);
  throw new Error(`unexpected Value ${JSON.stringify(v)}`);
}
function fromStruct(s: Msg): Record<string, unknown> {
  return Object.fromEntries(Object.entries(s.fields as Record<string, Msg>).map(([k, v]) => [k, fromValue(v)]));
}

// ---------------------------------------------------------------------------------------------

let dir: string;
let socketPath: string;
let agent: FakeAgent;
let api: WorkloadApi;
let client: grpc.Client;
const logLines: string[] = [];
const log = createLogger({ level: 'debug', write: (line) => logLines.push(line) });
const uid = process.getuid!();
const gid = process.getgid!();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'twa-'));
  socketPath = join(dir, 'agent.sock');
  expect(Buffer.byteLength(socketPath)).toBeLessThan(104);
  agent = new FakeAgent();
  agent.selectors = [`unix:uid:${uid}`];
  api = await startWorkloadApi({ socketPath, source: agent, log });
  client = new WorkloadClient(`unix:${socketPath}`, grpc.credentials.createInsecure());
});

afterAll(async () => {
  client?.close();
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('Workload API endpoint', () => {
  it('is a Unix socket that workloads can open (0666)', () => {
    const st = lstatSync(socketPath);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o666);
  });

  it('serves the service and methods of the standard (/SpiffeWorkloadAPI/...)', () => {
    expect(Object.values(WorkloadClient.service).map((m) => m.path).sort()).toEqual([
      '/SpiffeWorkloadAPI/FetchJWTBundles',
      '/SpiffeWorkloadAPI/FetchJWTSVID',
      '/SpiffeWorkloadAPI/FetchX509Bundles',
      '/SpiffeWorkloadAPI/FetchX509SVID',
      '/SpiffeWorkloadAPI/ValidateJWTSVID',
    ]);
  });
});

describe('FetchX509SVID', () => {
  it('sends the X.509-SVID, its PKCS#8 key and the bundle at once, and a new one when the SVID rotates', async () => {
    const s = stream(client, 'FetchX509SVID');
    try {
      const first = await s.next();
      expect(first.svids).toHaveLength(1);
      expect(first.crl).toEqual([]);
      expect(first.federated_bundles).toEqual({});
      const svid = first.svids[0];
      expect(svid.spiffe_id).toBe(ID);
      const [leaf, ...rest] = splitDer(svid.x509_svid);
      expect(rest).toHaveLength(0);
      expect(leaf!.subjectAltName).toBe(`URI:${ID}`);
      expect(leaf!.ca).toBe(false);
      const key = createPrivateKey({ key: svid.x509_svid_key, format: 'der', type: 'pkcs8' });
      expect(leaf!.checkPrivateKey(key)).toBe(true);
      const bundle = splitDer(svid.bundle);
      expect(bundle.map((c) => c.raw)).toEqual([agent.cas[0]!.certDer]);
      expect(leaf!.verify(bundle[0]!.publicKey)).toBe(true);

      agent.rotate();
      const second = await s.next();
      const [leaf2] = splitDer(second.svids[0].x509_svid);
      expect(leaf2!.serialNumber).not.toBe(leaf!.serialNumber);
      expect(leaf2!.subjectAltName).toBe(`URI:${ID}`);
      const key2 = createPrivateKey({ key: second.svids[0].x509_svid_key, format: 'der', type: 'pkcs8' });
      expect(leaf2!.checkPrivateKey(key2)).toBe(true);
      expect(leaf2!.checkPrivateKey(key)).toBe(false);

      // A new CA in the bundle is pushed too: the full bundle, both CAs.
      agent.addCa();
      const third = await s.next();
      expect(splitDer(third.svids[0].bundle)).toHaveLength(2);
    } finally {
      s.cancel();
    }
  });

  it('does not push a message when nothing changed', async () => {
    const s = stream(client, 'FetchX509SVID');
    try {
      await s.next();
      agent.emit('bundle'); // same content
      await expect(s.next(300)).rejects.toThrow(/no message/);
    } finally {
      s.cancel();
    }
  });

  it('answers PermissionDenied when the agent has no identity yet', async () => {
    const saved = agent.svid;
    agent.svid = undefined;
    try {
      const s = stream(client, 'FetchX509SVID');
      const err = await s.status();
      expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    } finally {
      agent.svid = saved;
    }
  });

  it('ends an open stream with PermissionDenied once the caller is no longer entitled', async () => {
    const s = stream(client, 'FetchX509SVID');
    await s.next();
    agent.selectors = [`unix:uid:${uid + 1}`];
    try {
      agent.rotate();
      const err = await s.status();
      expect(err.code).toBe(grpc.status.PERMISSION_DENIED);
    } finally {
      agent.selectors = [`unix:uid:${uid}`];
    }
  });
});

describe('FetchX509Bundles and FetchJWTBundles', () => {
  it('stream the X.509 bundle keyed by the trust domain SPIFFE ID, again when it changes', async () => {
    const s = stream(client, 'FetchX509Bundles');
    try {
      const first = await s.next();
      expect(Object.keys(first.bundles)).toEqual([`spiffe://${TD}`]);
      expect(splitDer(first.bundles[`spiffe://${TD}`]).map((c) => c.raw)).toEqual(agent.cas.map((c) => c.certDer));
      const before = agent.cas.length;
      agent.addCa();
      const second = await s.next();
      expect(splitDer(second.bundles[`spiffe://${TD}`])).toHaveLength(before + 1);
    } finally {
      s.cancel();
    }
  });

  it('stream the JWT bundle as a JWK Set with only jwt-svid keys', async () => {
    const s = stream(client, 'FetchJWTBundles');
    try {
      const first = await s.next();
      const jwks = JSON.parse(Buffer.from(first.bundles[`spiffe://${TD}`]).toString('utf8')) as { keys: { kid?: string; use?: string; kty: string }[] };
      expect(jwks.keys).toHaveLength(1);
      expect(jwks.keys[0]).toMatchObject({ kid: 'jwt-1', use: 'jwt-svid', kty: 'EC' });
    } finally {
      s.cancel();
    }
  });
});

describe('JWT-SVID profile', () => {
  it('FetchJWTSVID returns a JWT-SVID that ValidateJWTSVID accepts, with its claims', async () => {
    const res = await unary(client, 'FetchJWTSVID', { audience: ['payments'] });
    expect(res.svids).toHaveLength(1);
    expect(res.svids[0].spiffe_id).toBe(ID);
    const token = res.svids[0].svid as string;
    expect(token.split('.')).toHaveLength(3);

    const v = await unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: token });
    expect(v.spiffe_id).toBe(ID);
    const claims = fromStruct(v.claims);
    expect(claims).toMatchObject({ sub: ID, aud: 'payments' });
    expect(typeof claims.exp).toBe('number');
  });

  it('FetchJWTSVID with the caller\'s own spiffe_id works, with another identity is PermissionDenied', async () => {
    await expect(unary(client, 'FetchJWTSVID', { audience: ['a'], spiffe_id: ID })).resolves.toBeDefined();
    await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'], spiffe_id: 'spiffe://example.org/other' }), grpc.status.PERMISSION_DENIED);
    await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'], spiffe_id: 'not a spiffe id' }), grpc.status.INVALID_ARGUMENT);
  });

  it('FetchJWTSVID without an audience is InvalidArgument and mints nothing', async () => {
    const before = agent.minted;
    await expectStatus(unary(client, 'FetchJWTSVID', { audience: [] }), grpc.status.INVALID_ARGUMENT);
    await expectStatus(unary(client, 'FetchJWTSVID', { audience: [''] }), grpc.status.INVALID_ARGUMENT);
    expect(agent.minted).toBe(before);
  });

  it('ValidateJWTSVID refuses malformed requests and tokens with InvalidArgument', async () => {
    const { svids } = await unary(client, 'FetchJWTSVID', { audience: ['payments'] });
    const token = svids[0].svid as string;
    await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: '' }), grpc.status.INVALID_ARGUMENT);
    await expectStatus(unary(client, 'ValidateJWTSVID', { audience: '', svid: token }), grpc.status.INVALID_ARGUMENT);
    await expectStatus(unary(client, 'ValidateJWTSVID', {}), grpc.status.INVALID_ARGUMENT);
    await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: 'not.a.jwt' }), grpc.status.INVALID_ARGUMENT);
    await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: 'x'.repeat(20_000) }), grpc.status.INVALID_ARGUMENT);
    // Wrong audience, and a tampered signature.
    const wrongAud = await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'billing', svid: token }), grpc.status.INVALID_ARGUMENT);
    expect(wrongAud.details).not.toContain(token);
    const [h, p, sig] = token.split('.');
    const tampered = `${h}.${p}.${sig!.slice(0, -2)}${sig!.endsWith('AA') ? 'BA' : 'AA'}`;
    await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: tampered }), grpc.status.INVALID_ARGUMENT);
    // A token signed by a key that is not in the bundle.
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const foreign = signJwtSvid({ kid: 'jwt-1', privateKey: other.privateKey, alg: 'ES256' }, { sub: ID, aud: ['payments'], ttlSeconds: 60 }).token;
    await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: foreign }), grpc.status.INVALID_ARGUMENT);
  });

  it('ValidateJWTSVID checks a federated domain\'s JWT-SVID against that domain\'s bundle only', async () => {
    const PARTNER = 'partner.test';
    const partnerCa = newCa('partner-ca');
    const pk = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const partnerKey: JwtSigningKey = { kid: 'partner-jwt', privateKey: pk.privateKey, alg: 'ES256' };
    const partnerJwks = bundleToJwks({ trustDomain: PARTNER, x509Authorities: [partnerCa.certDer], jwtAuthorities: [{ kid: partnerKey.kid, publicKey: pk.publicKey }], sequence: 1 });
    const partnerToken = signJwtSvid(partnerKey, { sub: `spiffe://${PARTNER}/api`, aud: ['payments'], ttlSeconds: 60 }).token;
    // Not federated (yet): refused.
    await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: partnerToken }), grpc.status.INVALID_ARGUMENT);
    agent.federated.set(PARTNER, { jwks: partnerJwks, pem: pemEncode(partnerCa.certDer, 'CERTIFICATE') });
    try {
      const v = await unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: partnerToken });
      expect(v.spiffe_id).toBe(`spiffe://${PARTNER}/api`);
      // Never merged: a partner-signed token claiming OUR domain, and one signed by our key claiming
      // the partner's, are both refused; so is the partner's token for another audience.
      const spoofOurs = signJwtSvid(partnerKey, { sub: ID, aud: ['payments'], ttlSeconds: 60 }).token;
      await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: spoofOurs }), grpc.status.INVALID_ARGUMENT);
      const spoofTheirs = signJwtSvid(agent.jwtKey, { sub: `spiffe://${PARTNER}/api`, aud: ['payments'], ttlSeconds: 60 }).token;
      await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: spoofTheirs }), grpc.status.INVALID_ARGUMENT);
      await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'billing', svid: partnerToken }), grpc.status.INVALID_ARGUMENT);
      // Our own tokens still validate.
      const { token } = await agent.mintJwt(['payments']);
      expect((await unary(client, 'ValidateJWTSVID', { audience: 'payments', svid: token })).spiffe_id).toBe(ID);
    } finally {
      agent.federated.clear();
    }
  });
});

describe('security header (SPIFFE_Workload_Endpoint.md §3, §6)', () => {
  it('is required on every call: missing or not exactly "true" is InvalidArgument', async () => {
    const none = new grpc.Metadata();
    const err = await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'] }, none), grpc.status.INVALID_ARGUMENT);
    expect(err.details).toBe('security header missing from request');
    await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'] }, header('TRUE')), grpc.status.INVALID_ARGUMENT);
    await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'a', svid: 'a.b.c' }, header('false')), grpc.status.INVALID_ARGUMENT);
    for (const method of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles']) {
      const s = stream(client, method, new grpc.Metadata());
      const e = await s.status();
      expect(grpc.status[e.code]).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('caller attestation by peer credentials', () => {
  const withSelectors = async (selectors: string[], fn: () => Promise<void>): Promise<void> => {
    const saved = agent.selectors;
    agent.selectors = selectors;
    try {
      await fn();
    } finally {
      agent.selectors = saved;
    }
  };

  it('refuses a caller whose uid does not match the entry with PermissionDenied, on every RPC', async () => {
    await withSelectors([`unix:uid:${uid + 1}`], async () => {
      const err = await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'] }), grpc.status.PERMISSION_DENIED);
      expect(err.details).toBe('no identity issued');
      await expectStatus(unary(client, 'ValidateJWTSVID', { audience: 'a', svid: 'a.b.c' }), grpc.status.PERMISSION_DENIED);
      for (const method of ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles']) {
        const e = await stream(client, method).status();
        expect(grpc.status[e.code]).toBe('PERMISSION_DENIED');
      }
    });
  });

  it('matches uid, gid and pid together, and refuses entries without unix selectors or with ones it cannot attest', async () => {
    await withSelectors([`unix:uid:${uid}`, `unix:gid:${gid}`, `unix:pid:${process.pid}`], async () => {
      await expect(unary(client, 'FetchJWTSVID', { audience: ['a'] })).resolves.toBeDefined();
    });
    await withSelectors([`unix:uid:${uid}`, `unix:gid:${gid + 1}`], async () => {
      await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'] }), grpc.status.PERMISSION_DENIED);
    });
    await withSelectors([`unix:pid:${process.pid + 1}`], async () => {
      await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'] }), grpc.status.PERMISSION_DENIED);
    });
    await withSelectors([], async () => {
      await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'] }), grpc.status.PERMISSION_DENIED);
    });
    await withSelectors([`unix:uid:${uid}`, 'k8s:ns:prod'], async () => {
      await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'] }), grpc.status.PERMISSION_DENIED);
    });
  });
});

describe('socket lifecycle', () => {
  it('removes a stale socket at start, refuses a live one, and removes its socket at close', async () => {
    const d = mkdtempSync(join(tmpdir(), 'tws-'));
    try {
      const path = join(d, 's.sock');
      // A stale socket: its owner was SIGKILLed, so the path is still there but nobody answers.
      const owner = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`]);
      await once(owner.stdout, 'data');
      owner.kill('SIGKILL');
      await once(owner, 'exit');
      expect(lstatSync(path).isSocket()).toBe(true);

      // A socket something still answers on is not taken over.
      const live = net.createServer();
      const livePath = join(d, 'live.sock');
      await new Promise<void>((r) => live.listen(livePath, r));
      await expect(startWorkloadApi({ socketPath: livePath, source: agent })).rejects.toMatchObject({ code: 'TESSERA_WORKLOAD_API_SOCKET_IN_USE' });
      await new Promise<void>((r) => live.close(() => r()));

      // A file that is not a socket is never removed.
      const filePath = join(d, 'file.sock');
      writeFileSync(filePath, 'not a socket');
      await expect(startWorkloadApi({ socketPath: filePath, source: agent })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
      expect(lstatSync(filePath).isFile()).toBe(true);

      // The stale socket at `path` is replaced.
      const a = await startWorkloadApi({ socketPath: path, source: agent, socketMode: 0o660 });
      expect(lstatSync(path).mode & 0o777).toBe(0o660);
      await a.close();

      // The socket's folder is created when missing; open streams end with Unavailable at close.
      const nested = join(d, 'run', 'tessera', 'agent.sock');
      const b = await startWorkloadApi({ socketPath: nested, source: agent });
      expect(lstatSync(join(d, 'run', 'tessera')).mode & 0o777).toBe(0o755);
      const c = new WorkloadClient(`unix:${nested}`, grpc.credentials.createInsecure());
      const s2 = stream(c, 'FetchX509SVID');
      await s2.next();
      await b.close();
      // Open streams end with Unavailable (retry with backoff), and the socket is gone.
      const err = await s2.status();
      expect(grpc.status[err.code]).toBe('UNAVAILABLE');
      expect(() => lstatSync(nested)).toThrow();
      expect(() => lstatSync(path)).toThrow();
      c.close();
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('refuses socket paths that do not fit in sockaddr_un', async () => {
    await expect(startWorkloadApi({ socketPath: `/tmp/${'x'.repeat(120)}.sock`, source: agent })).rejects.toMatchObject({ code: 'TESSERA_CONFIG_INVALID' });
  });
});

describe('a workload in another process, as another user', () => {
  it.skipIf(uid !== 0)('gets its identity when the entry names its uid, while this process is refused', async () => {
    chmodSync(dir, 0o755); // let uid 65534 reach the socket
    const script = `
      const grpc = require('@grpc/grpc-js');
      const protoLoader = require('@grpc/proto-loader');
      const def = protoLoader.loadSync(${JSON.stringify(join(import.meta.dirname, '..', 'proto', 'workload.proto'))}, { keepCase: true, defaults: true });
      const Client = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI;
      const c = new Client(${JSON.stringify(`unix:${socketPath}`)}, grpc.credentials.createInsecure());
      const md = new grpc.Metadata();
      md.set('workload.spiffe.io', 'true');
      // Modules and proto are loaded as root (the checkout may sit in a directory only root can
      // read, e.g. under mktemp -d); the connection, whose peer credentials the agent reads, is
      // made as uid/gid 65534.
      process.setgroups([]);
      process.setgid(65534);
      process.setuid(65534);
      c.FetchJWTSVID({ audience: ['x'] }, md, (err, res) => {
        console.log(JSON.stringify(err ? { code: err.code } : { spiffe_id: res.svids[0].spiffe_id }));
        c.close();
      });`;
    const run = async (): Promise<unknown> => {
      const child = spawn(process.execPath, ['-e', script], { cwd: join(import.meta.dirname, '..'), stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      await once(child, 'exit');
      return JSON.parse(out);
    };
    const saved = agent.selectors;
    try {
      agent.selectors = ['unix:uid:65534', 'unix:gid:65534'];
      expect(await run()).toEqual({ spiffe_id: ID });
      await expectStatus(unary(client, 'FetchJWTSVID', { audience: ['a'] }), grpc.status.PERMISSION_DENIED);
      agent.selectors = [`unix:uid:${uid}`];
      expect(await run()).toEqual({ code: grpc.status.PERMISSION_DENIED });
    } finally {
      agent.selectors = saved;
    }
  });
});

describe('logs', () => {
  // Last in the file: vitest runs tests in the order they are declared.
  it('never contain a token or key material', () => {
    expect(agent.tokens.length).toBeGreaterThan(0);
    const all = logLines.join('\n');
    expect(logLines.some((l) => l.includes('caller refused'))).toBe(true);
    for (const t of agent.tokens) {
      expect(all).not.toContain(t);
      expect(all).not.toContain(t.split('.')[2]!);
    }
    const keyDer = agent.svid!.key.export({ format: 'der', type: 'pkcs8' });
    expect(all).not.toContain(keyDer.toString('base64').slice(40, 80));
  });
});
