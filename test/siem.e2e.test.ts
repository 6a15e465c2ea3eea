/**
 * SIEM export end to end (issue 10): a real `tessera server --siem` process ships its audit log to
 * Debian's rsyslogd (TLS with the gtls driver, and plain TCP); the receiver is killed and restarted
 * while records keep coming, then the control plane is killed and restarted, and every record id
 * 1..N must have arrived at least once (duplicates are allowed and reported).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditInclusionResponse, AuditListResponse } from '../src/core/wire/control-plane.js';
import { freePort, ServerProcess, waitFor } from './support/process.js';
import { makePki, parseReceived, Rsyslog } from './support/rsyslog.js';

const rsyslogInstalled = existsSync('/usr/sbin/rsyslogd');

describe.skipIf(!rsyslogInstalled).each(['tls', 'tcp'] as const)('SIEM export to a real rsyslogd over %s', (transport) => {
  let dir: string;
  let rsyslog: Rsyslog;
  let server: ServerProcess;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), `tessera-siem-${transport}-`));
    const pki = makePki(join(dir, 'pki'));
    rsyslog = new Rsyslog(join(dir, 'rsyslog'), await freePort(), transport === 'tls' ? { ca: pki.ca, cert: pki.cert, key: pki.key } : undefined);
    const valid = rsyslog.validate();
    expect(valid.status, valid.output).toBe(0);
    await rsyslog.start();
    server = new ServerProcess(join(dir, 'server'), await freePort(), [
      '--siem', `syslog+${transport}://127.0.0.1:${rsyslog.port}`, ...(transport === 'tls' ? ['--siem-ca', pki.ca] : []), '--siem-settle', '2s',
    ]);
    await server.start();
  }, 60_000);

  afterAll(async () => {
    await server?.stop(false);
    await rsyslog?.stop('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const receivedIds = (): Map<number, number> => {
    const seen = new Map<number, number>();
    for (const line of rsyslog.lines()) {
      const r = parseReceived(line);
      seen.set(r.sdId, (seen.get(r.sdId) ?? 0) + 1);
    }
    return seen;
  };

  it('delivers every record at least once across receiver and control-plane restarts', async () => {
    let admin = server.admin();
    let generating = true;
    let made = 0;
    let lastError = '';
    let attempt = 0;
    const generator = (async () => {
      while (generating) {
        try {
          // A fresh name per attempt: a create whose answer was lost to the kill did happen (409 on a retry).
          await admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://tessera.test/gen/e${attempt++}`, selectors: [], attributes: {} });
          made++;
        } catch (err) {
          lastError = `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`;
          await sleep(200); // the control plane is restarting
        }
        await sleep(20);
      }
    })();
    try {
      await waitFor('records at the receiver', () => receivedIds().size >= 20, 20_000, 100);
      // The receiver crashes while records keep coming, and comes back on the same port.
      await rsyslog.stop('SIGKILL');
      const atCrash = made;
      await sleep(1500);
      expect(made).toBeGreaterThan(atCrash);
      await rsyslog.start();
      const afterReceiver = Math.max(...receivedIds().keys());
      await waitFor('records after the receiver restart', () => Math.max(...receivedIds().keys()) > afterReceiver + 20, 30_000, 100);
      // The control plane crashes too (no clean stop: the cursor is all that survives) and restarts.
      await server.kill('SIGKILL');
      await sleep(300);
      await server.start();
      // A client of its own for the new process (the old one's pool saw its connections die mid-request).
      admin.close();
      admin = server.admin();
      const afterServer = made;
      await waitFor('records after the control-plane restart', () => made > afterServer + 20, 60_000, 100)
        .catch((err: unknown) => { throw new Error(`${(err as Error).message} (made ${made - afterServer}; last error: ${lastError}; server: ${server.output.slice(-1500)})`); });
    } finally {
      generating = false;
      await generator;
    }
    const [newest] = (await admin.call<AuditListResponse>('GET', '/v1/audit?limit=1')).records;
    const n = newest!.id - 1; // the read itself is record n + 1 (it may or may not have been sent yet)
    const seen = await waitFor(`ids 1..${n} at the receiver`, () => {
      const s = receivedIds();
      for (let id = 1; id <= n; id++) if (!s.has(id)) return undefined;
      return s;
    }, 60_000, 250);
    let duplicates = 0;
    for (const count of seen.values()) duplicates += count - 1;
    console.log(`[siem ${transport}] ${n} records, every one received; ${duplicates} duplicates (resent after restarts)`);
    // Each message: MSGID = action, SD id = the record's id, the leaf hash that the log proves.
    const received = rsyslog.lines().map(parseReceived);
    for (const r of received) {
      expect(r.record.id).toBe(r.sdId);
      expect(r.record.leaf_hash).toBe(r.leafHash);
      expect(r.msgid).toBe(String(r.record.action).slice(0, 32));
    }
    await waitFor('a checkpoint covering the records', async () => {
      const cp = await admin.call<{ checkpoint: { size: number } }>('GET', '/v1/audit/checkpoint');
      return cp.checkpoint.size >= n;
    }, 10_000, 200);
    for (const id of [1, Math.ceil(n / 2), n]) {
      const proof = await admin.call<AuditInclusionResponse>('GET', `/v1/audit/proof/inclusion?id=${id}`);
      expect(received.find((r) => r.sdId === id)!.leafHash).toBe(proof.leaf_hash);
    }
    expect(server.output).toContain('SIEM connection lost');
    expect(server.output.split('SIEM connected').length - 1).toBeGreaterThanOrEqual(3);
    admin.close();
  }, 180_000);
});
