/**
 * One raw HTTPS request with an optional client certificate and no connection reuse, for tests that
 * must send exactly what they mean (bad bodies, no certificate, odd headers) and read any status.
 */
import { Agent, request } from 'node:https';

export interface Reply { status: number; json: Record<string, unknown> }

export interface CallOptions {
  /** The server's CA (PEM). */
  ca: string;
  /** The client certificate and key (PEM); none: a call without a client certificate. */
  who?: { certPem: string; keyPem: string } | null | undefined;
  headers?: Record<string, string>;
}

/** `body`: a string is sent as is, anything else as JSON; undefined sends no body. */
export function httpsCall(url: string, method: string, path: string, body: unknown, opts: CallOptions): Promise<Reply> {
  const { ca, who, headers = {} } = opts;
  const agent = new Agent({ ca, ...(who ? { cert: who.certPem, key: who.keyPem } : {}), keepAlive: false });
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, { method, agent, headers: { ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) as Record<string, unknown> : {} });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body));
  });
}

/**
 * POSTs to `path` announcing a `contentLength`-byte body but sending 2 bytes: only a server that
 * refuses before reading the body answers at all (a server waiting for the body times out here, 5 s).
 */
export function announceBody(url: string, path: string, contentLength: number, opts: { ca: string; who: { certPem: string; keyPem: string } }): Promise<Reply> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({
      host: u.hostname, port: u.port, path, method: 'POST', agent: false, ca: opts.ca, cert: opts.who.certPem, key: opts.who.keyPem,
      headers: { 'content-type': 'application/json', 'content-length': String(contentLength) },
    }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => { text += c.toString('utf8'); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) as Record<string, unknown> : {} }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('no answer before the body: the server waited for it')));
    req.on('error', reject);
    req.write('{"');
  });
}
