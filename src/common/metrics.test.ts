import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../core/log.js';
import { LabelledTally, newRegistry, startMetricsListener, type MetricsListener } from './metrics.js';

/** One raw HTTP/1.1 exchange (any method and target, even ones fetch() would refuse to send). */
function raw(port: number, request: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    s.on('data', (d: Buffer) => { data += d.toString('latin1'); });
    s.on('end', () => {
      const [head, body = ''] = data.split('\r\n\r\n', 2);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head!)?.[1] ?? 0), head: head!, body });
    });
    s.on('error', reject);
    s.end(request);
  });
}

describe('metrics listener', () => {
  let listener: MetricsListener;
  const registry = newRegistry();
  const hits = new LabelledTally(registry, 'tessera_test_hits_total', 'test hits', ['kind']).slot({ kind: 'a' });

  beforeAll(async () => {
    listener = await startMetricsListener(registry, { host: '127.0.0.1', port: 0 }, silentLogger);
  });
  afterAll(() => listener.close());

  it('serves the registry on GET /metrics, counts copied at scrape, default process metrics prefixed tessera_', async () => {
    hits.n += 3;
    const res = await fetch(listener.url);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain('tessera_test_hits_total{kind="a"} 3');
    expect(text).toMatch(/^tessera_process_cpu_user_seconds_total \d/m);
    expect(text).not.toMatch(/^(?!#)(?!tessera_)\w+[{ ]/m);
    hits.n++;
    expect(await (await fetch(`${listener.url}?name[]=x`)).text()).toContain('tessera_test_hits_total{kind="a"} 4');
  });

  it('answers 404 for every other path and 405 for every other method', async () => {
    for (const path of ['/', '/metrics/', '/metrics/x', '/Metrics', '/healthz', '/debug/pprof', '//metrics', '/metrics%2f', 'http://x/metrics']) {
      const r = await raw(listener.port, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);
      expect(`${path} ${r.status}`).toBe(`${path} 404`);
      expect(r.body).not.toContain('tessera_');
    }
    for (const method of ['POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH']) {
      const r = await raw(listener.port, `${method} /metrics HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
      expect(`${method} ${r.status}`).toBe(`${method} 405`);
      expect(r.head.toLowerCase()).toContain('allow: get');
      expect(r.body).not.toContain('tessera_');
    }
    const bad = await raw(listener.port, 'NOT HTTP\r\n\r\n');
    expect(bad.status).toBe(400);
  });

  it('refuses an address in use with a stable code', async () => {
    await expect(startMetricsListener(registry, { host: '127.0.0.1', port: listener.port }, silentLogger)).rejects.toMatchObject({ code: 'TESSERA_ADDRESS_IN_USE' });
  });
});
