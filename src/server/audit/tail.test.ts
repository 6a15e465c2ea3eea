/**
 * GET /v1/audit/tail on a real control plane (in process): the NDJSON stream, its end line, the
 * follow mode, refusals of bad queries and of callers without the admin credential, and a server
 * that stops while a stream is open (it must not hang).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient } from '../../common/api-client.js';
import { auditLeafData } from '../../core/audit-leaf.js';
import { isTesseraError } from '../../core/errors.js';
import { leafHash } from '../../core/merkle.js';
import type { AuditExportRecord, AuditTailEnd } from '../../core/wire/control-plane.js';
import { waitFor } from '../../../test/support/process.js';
import { startControlPlane, type TestControlPlane } from '../../../test/support/server.js';

let t: TestControlPlane | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const entry = (c: TestControlPlane, name: string): Promise<unknown> => c.admin.call('POST', '/v1/entries', { spiffe_id: `spiffe://tessera.test/tail/${name}`, selectors: [], attributes: {} });

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return isTesseraError(err) ? err.code : String(err);
  }
}

describe('GET /v1/audit/tail', () => {
  it('streams every record after `after` with its leaf hash, then an end line', async () => {
    t = await startControlPlane();
    for (let i = 0; i < 3; i++) await entry(t, `e${i}`);
    const lines: (AuditExportRecord | AuditTailEnd)[] = [];
    await t.admin.stream('/v1/audit/tail?after=1', (l) => { lines.push(JSON.parse(l) as AuditExportRecord); });
    const end = lines.pop() as AuditTailEnd;
    const records = lines as AuditExportRecord[];
    // Records 2 and 3, and the stream's own audit.tail record (stored before the first byte).
    expect(records.map((r) => r.id)).toEqual([2, 3, 4]);
    expect(records[2]).toMatchObject({ action: 'audit.tail', detail: { after: 1, follow: false } });
    expect(end).toEqual({ end: true, last_id: 4 });
    // The leaf hash is the one the Merkle tree holds: recomputed here from the record's fields.
    for (const r of records) {
      const { leaf_hash: sent, ts, ...rest } = r;
      expect(leafHash(auditLeafData({ ...rest, ts: Date.parse(ts) })).toString('base64')).toBe(sent);
    }
  });

  it('follows new records, and a server that stops ends the stream without hanging', async () => {
    t = await startControlPlane();
    const c = t;
    const seen: number[] = [];
    const streaming = c.admin.stream('/v1/audit/tail?after=0&follow=true', (l) => { seen.push((JSON.parse(l) as AuditExportRecord).id); });
    streaming.catch(() => {});
    await waitFor('the stream\'s own record', () => seen.includes(1), 5000);
    await entry(c, 'late');
    await waitFor('the new record', () => seen.includes(2), 5000);
    const stopped = Date.now();
    await c.close();
    t = undefined;
    expect(Date.now() - stopped).toBeLessThan(5000);
    expect(await codeOf(streaming)).toBe('TESSERA_SERVER_UNREACHABLE');
  });

  it('refuses bad queries (400) and callers without the admin credential', async () => {
    t = await startControlPlane();
    for (const q of ['after=-1', 'after=x', 'after=1.5', 'follow=yes', 'follow=1', 'after=99999999999999999']) {
      expect(`${q}: ${await codeOf(t.admin.stream(`/v1/audit/tail?${q}`, () => {}))}`).toBe(`${q}: TESSERA_BAD_REQUEST`);
    }
    const anonymous = new ApiClient(t.cp.url, { ca: t.adminTls.ca });
    try {
      expect(await codeOf(anonymous.stream('/v1/audit/tail', () => {}))).toBe('TESSERA_AUTH_REQUIRED');
    } finally {
      anonymous.close();
    }
    // Each refusal is itself an audit record.
    const denied = (await t.admin.call<{ records: { outcome: string }[] }>('GET', '/v1/audit?action=audit.tail&outcome=denied')).records;
    expect(denied.length).toBe(7);
  });
});
