/**
 * The https_web bundle endpoint over real HTTPS on 127.0.0.1: GET / serves the document; other paths
 * and methods get 404/405; a client past its rate gets 429 TESSERA_RATE_LIMITED with Retry-After
 * while another client address (127.0.0.2) is still served.
 */
import { request } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gatewayCert } from '../../../test/support/gateway.js';
import { startBundleEndpoint } from './endpoint.js';

const cert = gatewayCert(['bundle.test']);
let ep: Awaited<ReturnType<typeof startBundleEndpoint>>;

beforeAll(async () => {
  ep = await startBundleEndpoint({ host: '127.0.0.1', port: 0, certPem: cert.certPem, keyPem: cert.keyPem, bundle: () => '{"keys":[]}', rateLimit: { perSecond: 1, burst: 5 } });
});
afterAll(async () => { await ep?.close(); });

function get(path: string, opts: { method?: string; localAddress?: string } = {}): Promise<{ status: number; body: string; retryAfter?: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: ep.port, servername: 'bundle.test', path, method: opts.method ?? 'GET', ca: cert.caPem, agent: false, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => { body += c.toString(); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ...(res.headers['retry-after'] ? { retryAfter: String(res.headers['retry-after']) } : {}) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('https_web bundle endpoint', () => {
  it('serves the bundle at /, refuses other paths and methods, and limits each client address', async () => {
    expect(await get('/')).toEqual({ status: 200, body: '{"keys":[]}' });
    expect((await get('/v1/entries')).status).toBe(404);
    expect((await get('/', { method: 'POST' })).status).toBe(405);
    // The burst (5) is spent by now (3 above + 2 more), then 429 with a stable code and Retry-After.
    const answers = [];
    for (let i = 0; i < 6; i++) answers.push(await get('/'));
    const limited = answers.filter((a) => a.status === 429);
    expect(limited.length).toBeGreaterThanOrEqual(3);
    expect(JSON.parse(limited[0]!.body).error.code).toBe('TESSERA_RATE_LIMITED');
    expect(Number(limited[0]!.retryAfter)).toBeGreaterThanOrEqual(1);
    // Another client address has its own bucket.
    expect((await get('/', { localAddress: '127.0.0.2' })).status).toBe(200);
  });
});
