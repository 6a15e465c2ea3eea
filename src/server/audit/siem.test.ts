/**
 * The SIEM exporter inside a real control plane (in process, real SQLite file) against receivers
 * made here from node:net / node:tls: the cursor and what "acknowledged" means, resending after a
 * lost connection, an unreachable receiver and receivers with the wrong certificate (refused,
 * logged, retried), while the API keeps serving.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer as createTlsServer } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { OctetCountedDecoder } from '../../core/syslog.js';
import { freePort, waitFor } from '../../../test/support/process.js';
import { makePki } from '../../../test/support/rsyslog.js';
import { startControlPlane, type TestControlPlane } from '../../../test/support/server.js';
import type { SiemExporterOptions } from './siem.js';
import { SIEM_CURSOR_META } from './siem.js';

/** A syslog receiver that records the SD id of every frame it gets. */
class Receiver {
  readonly ids: number[] = [];
  readonly sockets = new Set<Socket>();
  handshakes = 0;
  constructor(readonly server: Server) {
    const onSocket = (sock: Socket): void => {
      this.handshakes++;
      this.sockets.add(sock);
      const dec = new OctetCountedDecoder();
      sock.on('data', (d: Buffer) => {
        for (const m of dec.push(d)) this.ids.push(Number(/ \[tessera@32473 id="(\d+)"/.exec(m.toString('utf8'))![1]));
      });
      sock.on('error', () => {});
      sock.on('close', () => this.sockets.delete(sock));
    };
    server.on('secureConnection', onSocket);
    if (!('addContext' in server)) server.on('connection', onSocket);
  }
  listen(port: number): Promise<void> {
    return new Promise((resolve) => this.server.listen(port, '127.0.0.1', resolve));
  }
  /** Cuts every connection, as a crashed receiver would. */
  cut(): void {
    for (const s of this.sockets) s.destroy();
  }
  close(): Promise<void> {
    this.cut();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

let dir: string;
let pki: ReturnType<typeof makePki>;
const opened: { close(): Promise<void> }[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-siem-unit-'));
  pki = makePki(join(dir, 'pki'));
});
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function controlPlane(siem: SiemExporterOptions): Promise<TestControlPlane> {
  const t = await startControlPlane({ siem: { settleMs: 500, ...siem } });
  opened.push(t);
  return t;
}

const createEntry = (t: TestControlPlane, name: string): Promise<unknown> => t.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://tessera.test/siem/${name}`, selectors: [], attributes: {} });

describe('SIEM exporter', () => {
  it('acknowledges a record once it was written settleMs ago on a healthy connection, and resends the unsettled tail after a cut', async () => {
    const port = await freePort();
    const rx = new Receiver(createTcpServer());
    await rx.listen(port);
    opened.push(rx);
    // A settle window far longer than the steps below take on a loaded machine.
    const t = await controlPlane({ target: { transport: 'tcp', host: '127.0.0.1', port }, settleMs: 5000 });
    const siem = t.cp.siem!;
    for (let i = 0; i < 5; i++) await createEntry(t, `a${i}`);
    await waitFor('records at the receiver', () => rx.ids.length >= 5, 10_000);
    // Written, but not yet settled: the cursor has not moved past them.
    expect(siem.stats.cursor).toBe(0);
    await waitFor('the cursor to settle', () => siem.stats.cursor >= 5, 20_000);
    expect(await t.cp.store.getMeta(SIEM_CURSOR_META)).toBe(String(siem.stats.cursor));
    const settled = siem.stats.cursor;
    // New records, then the connection is cut inside the settle window: they are sent again.
    for (let i = 0; i < 3; i++) await createEntry(t, `b${i}`);
    await waitFor('new records at the receiver', () => Math.max(...rx.ids) >= settled + 3, 10_000);
    const atCut = siem.stats.cursor;
    expect(Math.max(...rx.ids)).toBeGreaterThan(atCut);
    rx.cut();
    await waitFor('a resend after reconnecting', () => siem.stats.resent > 0 && siem.stats.connects >= 2, 15_000);
    // What was written has to reach the receiver too (it reads asynchronously).
    await waitFor('the resent tail at the receiver', () => rx.ids.filter((id) => id === atCut + 1).length >= 2 && Math.max(...rx.ids) === siem.stats.sent, 15_000);
    const counts = new Map<number, number>();
    for (const id of rx.ids) counts.set(id, (counts.get(id) ?? 0) + 1);
    expect(atCut).toBeGreaterThanOrEqual(settled);
    expect(counts.get(atCut + 1)).toBeGreaterThanOrEqual(2);
    // Settled records are not sent twice.
    expect(counts.get(1)).toBe(1);
    expect(siem.stats.sent).toBe(Math.max(...rx.ids));
    // The same counts are what Prometheus scrapes.
    const scraped = await t.cp.ctx.metrics.registry.metrics();
    expect(scraped).toMatch(new RegExp(`^tessera_siem_records_sent_total ${siem.stats.sent}$`, 'm'));
    expect(scraped).toMatch(new RegExp(`^tessera_siem_records_resent_total ${siem.stats.resent}$`, 'm'));
    expect(scraped).toMatch(/^tessera_siem_connected 1$/m);
    expect(scraped).toMatch(new RegExp(`^tessera_siem_cursor ${siem.stats.cursor}$`, 'm'));
  }, 60_000);

  it('keeps serving and retries with backoff while the receiver is unreachable, then delivers everything', async () => {
    const port = await freePort();
    const t = await controlPlane({ target: { transport: 'tcp', host: '127.0.0.1', port } });
    const started = Date.now();
    for (let i = 0; i < 3; i++) await createEntry(t, `c${i}`);
    expect(Date.now() - started).toBeLessThan(3000);
    await waitFor('two failed attempts', () => t.cp.siem!.stats.failures >= 2, 10_000);
    expect(t.cp.siem!.stats.connected).toBe(false);
    expect(t.logs.some((l) => l.includes('SIEM receiver unreachable') && l.includes('retry_in_ms'))).toBe(true);
    const rx = new Receiver(createTcpServer());
    await rx.listen(port);
    opened.push(rx);
    await waitFor('the backlog at the receiver', () => rx.ids.length >= 3, 20_000);
    expect(rx.ids.slice(0, 3)).toEqual([1, 2, 3]);
  }, 60_000);

  it.each([
    ['signed by another CA', () => ({ cert: pki.otherCert, key: pki.otherKey }), /certificate/i],
    ['for another name', () => ({ cert: pki.misnamedCert, key: pki.misnamedKey }), /does not match|altnames/i],
  ])('refuses a receiver whose certificate is %s, logs it and retries', async (_what, files, why) => {
    const { cert, key } = files();
    const port = await freePort();
    const rx = new Receiver(createTlsServer({ cert: readFileSync(cert), key: readFileSync(key) }));
    await rx.listen(port);
    opened.push(rx);
    const t = await controlPlane({ target: { transport: 'tls', host: '127.0.0.1', port }, ca: readFileSync(pki.ca, 'utf8') });
    await createEntry(t, 'd');
    await waitFor('two refused attempts', () => t.cp.siem!.stats.failures >= 2, 10_000);
    await sleep(200);
    expect(rx.ids).toEqual([]);
    expect(t.cp.siem!.stats.sent).toBe(0);
    const warned = t.logs.filter((l) => l.includes('SIEM receiver unreachable'));
    expect(warned.some((l) => why.test(l))).toBe(true);
    // The log line names the receiver and the reason, never a record.
    expect(warned.some((l) => l.includes('entry.create'))).toBe(false);
    await createEntry(t, 'e');
  }, 30_000);

  it('delivers over TLS to a receiver whose certificate chains to --siem-ca and names the host', async () => {
    const port = await freePort();
    const rx = new Receiver(createTlsServer({ cert: readFileSync(pki.cert), key: readFileSync(pki.key) }));
    await rx.listen(port);
    opened.push(rx);
    const t = await controlPlane({ target: { transport: 'tls', host: '127.0.0.1', port }, ca: readFileSync(pki.ca, 'utf8') });
    await createEntry(t, 'f');
    await waitFor('the record at the receiver', () => rx.ids.includes(1), 10_000);
    expect(t.cp.siem!.stats.connected).toBe(true);
  }, 30_000);
});
