/**
 * Gateway test support: a browser-like HTTPS client that follows redirects across origins (the
 * gateway's hosts and the control plane) keeping cookies per host name as browsers do (ports share
 * cookies), connecting every host name to 127.0.0.1 with the right SNI; and a server certificate
 * for the gateway's host names from a throwaway CA.
 */
import { generateKeyPairSync } from 'node:crypto';
import { request } from 'node:https';
import { CertificateIssuer, createSelfSignedCa, pemEncode } from '../../src/core/x509.js';
import type { TestControlPlane } from './server.js';

export interface GatewayCert { caPem: string; certPem: string; keyPem: string }

/** A CA and a server certificate for `hosts` (DNS SANs). */
export function gatewayCert(hosts: string[]): GatewayCert {
  const ca = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const now = Date.now();
  const caDer = createSelfSignedCa({ privateKey: ca.privateKey, publicKey: ca.publicKey, commonName: 'gateway-test-ca', trustDomainUri: 'spiffe://gateway-ca.test', notBefore: new Date(now - 3600_000), notAfter: new Date(now + 86_400_000) });
  const leaf = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const der = new CertificateIssuer({ certDer: caDer, privateKey: ca.privateKey }).issueLeaf({ publicKey: leaf.publicKey, uriSans: [], dnsSans: hosts, notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
  return { caPem: pemEncode(caDer, 'CERTIFICATE'), certPem: pemEncode(der, 'CERTIFICATE'), keyPem: leaf.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string };
}

export interface Hop { status: number; url: string; location?: string; headers: Record<string, string | string[] | undefined>; text: string }

export interface NavOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Client certificate (a device's). */
  cert?: string;
  key?: string;
  /** Redirects followed at most (default 10); 0 returns the first answer. */
  follow?: number;
  /** The client's own address (any 127.x.y.z works on Linux loopback): another client, as the gateway sees it. */
  localAddress?: string;
}

export class PeopleBrowser {
  /** host name → cookie name → value (ports share cookies, as in browsers: RFC 6265 §8.5). */
  readonly jar = new Map<string, Map<string, string>>();

  constructor(private readonly ca: string) {}

  cookies(host: string): Map<string, string> {
    let m = this.jar.get(host);
    if (!m) {
      m = new Map();
      this.jar.set(host, m);
    }
    return m;
  }

  /** One request, no redirect followed. */
  fetch(url: string, o: NavOptions = {}): Promise<Hop> {
    const u = new URL(url);
    const jar = this.cookies(u.hostname);
    const headers: Record<string, string> = { accept: 'text/html', ...o.headers };
    if (jar.size > 0 && headers.cookie === undefined) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    if (o.body !== undefined) headers['content-length'] = String(Buffer.byteLength(o.body));
    return new Promise((resolve, reject) => {
      const req = request({
        host: '127.0.0.1', port: Number(u.port), path: `${u.pathname}${u.search}`, method: o.method ?? 'GET', headers: { host: u.host, ...headers },
        servername: /^\d+\.\d+\.\d+\.\d+$/.test(u.hostname) ? undefined : u.hostname, ca: this.ca, agent: false, timeout: 15_000,
        ...(o.cert ? { cert: o.cert, key: o.key } : {}), ...(o.localAddress ? { localAddress: o.localAddress } : {}),
      }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const set = res.headers['set-cookie'] ?? [];
          for (const line of set) {
            const [pair, ...attrs] = line.split(';').map((s) => s.trim());
            const eq = pair!.indexOf('=');
            const name = pair!.slice(0, eq);
            const value = pair!.slice(eq + 1);
            if (value === '' || attrs.some((a) => /^max-age=0$/i.test(a))) jar.delete(name);
            else jar.set(name, value);
          }
          const location = res.headers.location;
          resolve({ status: res.statusCode ?? 0, url, ...(location ? { location: new URL(location, url).toString() } : {}), headers: res.headers, text: Buffer.concat(chunks).toString('utf8') });
        });
      });
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', reject);
      req.end(o.body);
    });
  }

  /** Follows redirects (GET after a 303, as browsers do); returns every hop, the last one last. */
  async navigate(url: string, o: NavOptions = {}): Promise<Hop[]> {
    const hops: Hop[] = [];
    let hop = await this.fetch(url, o);
    hops.push(hop);
    let left = o.follow ?? 10;
    while (hop.location !== undefined && [301, 302, 303, 307, 308].includes(hop.status) && left-- > 0) {
      hop = await this.fetch(hop.location, { ...(o.cert ? { cert: o.cert, key: o.key } : {}), ...(o.headers ? { headers: o.headers } : {}), ...(o.localAddress ? { localAddress: o.localAddress } : {}) });
      hops.push(hop);
    }
    return hops;
  }
}

/** A browser signed in at the control plane as `username` (a one-time console link: no MFA). */
export async function signedInBrowser(t: TestControlPlane, ca: string, username: string): Promise<PeopleBrowser> {
  const link = await t.admin.call<{ url: string }>('POST', '/v1/console/links', { username });
  const token = link.url.split('#token=')[1]!;
  const b = new PeopleBrowser(ca);
  const res = await b.fetch(`${t.cp.url}/v1/auth/link`, { method: 'POST', headers: { origin: new URL(t.cp.url).origin, 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  if (res.status !== 200) throw new Error(`console link sign-in failed: ${res.status} ${res.text}`);
  return b;
}
