/**
 * The inbound proxy's Prometheus hooks, in process over real mTLS on 127.0.0.1: http mode times
 * each forwarded request and counts refusals by code (a malformed request, a caller without a
 * certificate), tcp mode times each connection; bytes and open connections are read at scrape.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { startInbound, type Inbound } from '../src/agent/inbound/inbound.js';
import { AgentMetrics } from '../src/agent/metrics.js';
import { keyPem } from '../src/common/tls-source.js';
import { TestCa } from './support/tls-ca.js';
import { waitFor } from './support/process.js';

const TD = 'metrics.test';
const CALLER = `spiffe://${TD}/shop/frontend`;
const SELF = `spiffe://${TD}/shop/orders`;
const ca = new TestCa(TD);
const cleanups: (() => Promise<unknown> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function app(): Promise<number> {
  const server: Server = createServer((req, res) => {
    req.resume();
    res.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((r) => server.close(r)));
  return (server.address() as AddressInfo).port;
}

async function proxy(mode: 'http' | 'tcp', m: AgentMetrics): Promise<Inbound> {
  const ib = await startInbound({
    listen: { host: '127.0.0.1', port: 0 }, app: { host: '127.0.0.1', port: await app() }, mode, tls: ca.source(SELF),
    authorize: () => ({ allow: true }), metrics: m.inbound, onDecision: (r) => m.decision(r.peer, r.allow),
  });
  cleanups.push(() => ib.close());
  m.attachSidecar({ inbound: ib, outbounds: [], enforcer: { decisions: { dropped: 0 }, version: 1 } } as never);
  return ib;
}

/** Sends `raw` over mTLS as CALLER (or without a certificate) and reads until the proxy closes. */
function exchange(port: number, raw: string, withCert = true): Promise<string> {
  const m = ca.source(CALLER).current();
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca: m.bundlePem, ...(withCert ? { cert: m.certPem, key: keyPem(m.key) } : {}), checkServerIdentity: () => undefined });
    let out = '';
    s.on('secureConnect', () => s.end(raw));
    s.on('data', (d: Buffer) => { out += d.toString('latin1'); });
    s.on('error', () => resolve(out));
    s.on('close', () => resolve(out));
  });
}

async function sample(m: AgentMetrics, line: RegExp): Promise<number> {
  const text = await m.registry.metrics();
  const hit = text.split('\n').find((l) => line.test(l));
  return hit === undefined ? NaN : Number(hit.split(' ').pop());
}

describe('inbound proxy metrics', () => {
  it('http mode: a request histogram observation per forwarded request, refusals by code, bytes', async () => {
    const m = new AgentMetrics();
    const ib = await proxy('http', m);
    for (const path of ['/a', '/b']) expect(await exchange(ib.port, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)).toContain('HTTP/1.1 200');
    expect(await sample(m, /^tessera_sidecar_request_duration_seconds_count /)).toBe(2);
    expect(await sample(m, /^tessera_sidecar_request_duration_seconds_bucket\{le="\+Inf"\}/)).toBe(2);
    expect(await sample(m, new RegExp(`^tessera_sidecar_edge_decisions_total\\{caller="${CALLER}",callee="",outcome="allow"\\}`))).toBe(2);

    expect(await exchange(ib.port, 'GET /a\x01 HTTP/1.1\r\nhost: x\r\n\r\n')).toContain('TESSERA_BAD_REQUEST');
    await exchange(ib.port, 'GET / HTTP/1.1\r\n\r\n', false);
    await waitFor('both refusals counted', async () =>
      await sample(m, /^tessera_sidecar_refusals_total\{direction="inbound",code="TESSERA_BAD_REQUEST"\}/) === 1
      && await sample(m, /^tessera_sidecar_refusals_total\{direction="inbound",code="TESSERA_AUTH_INVALID"\}/) === 1, 5000);
    expect(await sample(m, /^tessera_sidecar_request_duration_seconds_count /)).toBe(2);
    await waitFor('connections closed', () => ib.stats.active === 0, 5000);
    expect(await sample(m, /^tessera_sidecar_open_connections\{direction="inbound"\}/)).toBe(0);
    expect(await sample(m, /^tessera_sidecar_received_bytes_total /)).toBeGreaterThan(200);
    expect(await sample(m, /^tessera_sidecar_sent_bytes_total /)).toBeGreaterThan(200);
  });

  it('tcp mode: one connection-duration observation per closed connection, none for requests', async () => {
    const m = new AgentMetrics();
    const ib = await proxy('tcp', m);
    for (let i = 0; i < 3; i++) expect(await exchange(ib.port, 'GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')).toContain('200 OK');
    await waitFor('three connections timed', async () => await sample(m, /^tessera_sidecar_tcp_connection_duration_seconds_count /) === 3, 5000);
    expect(await sample(m, /^tessera_sidecar_request_duration_seconds_count /)).toBe(0);
    expect(await sample(m, /^tessera_sidecar_decisions_total\{outcome="allow"\}/)).toBe(3);
  });
});
