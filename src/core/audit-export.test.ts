import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { asciiJson, exportRecord, ocsfClassOf, OCSF_VERSION, PRODUCT_VERSION, syslogMessage, toOcsf } from './audit-export.js';
import type { AuditLeafRecord } from './audit-leaf.js';
import { parseStructuredData } from './syslog.js';

const leaf = Buffer.alloc(32, 7);

function rec(over: Partial<AuditLeafRecord> = {}): AuditLeafRecord {
  return { id: 12, ts: Date.UTC(2026, 11, 3, 10, 0, 0, 123), actor: 'spiffe://example.org/tessera/admin', action: 'entry.create', target: 'spiffe://example.org/web', outcome: 'success', code: 'OK', detail: { entry_id: 'e1' }, ...over };
}

describe('export record', () => {
  it('carries every stored field, the time as ISO 8601 and the leaf hash as base64', () => {
    expect(exportRecord(rec({ principal: 'spiffe://example.org/a' }), leaf)).toEqual({
      id: 12, ts: '2026-12-03T10:00:00.123Z', actor: 'spiffe://example.org/tessera/admin', action: 'entry.create', target: 'spiffe://example.org/web',
      outcome: 'success', code: 'OK', detail: { entry_id: 'e1' }, principal: 'spiffe://example.org/a', leaf_hash: leaf.toString('base64'),
    });
    expect('principal' in exportRecord(rec(), leaf)).toBe(false);
  });

  it('asciiJson is the same JSON value in US-ASCII only', () => {
    fc.assert(fc.property(fc.jsonValue(), (v) => {
      const text = asciiJson(v);
      expect(/^[\x20-\x7e]*$/.test(text)).toBe(true);
      expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(v)));
    }), { numRuns: 500 });
  });
});

describe('OCSF mapping', () => {
  const cases: [string, number, number, number][] = [
    // action, class_uid, category_uid, activity_id
    ['svid.join', 3002, 3, 1],
    ['svid.renew', 3002, 3, 5],
    ['svid.jwt', 3002, 3, 4],
    ['apikey.verify', 3002, 3, 99],
    ['decision', 3003, 3, 99],
    ['decision.refused', 3003, 3, 99],
    ['entry.create', 3004, 3, 1],
    ['entry.revoke', 3004, 3, 3],
    ['entry.delete', 3004, 3, 4],
    ['token.create', 3004, 3, 1],
    ['apikey.create', 3004, 3, 1],
    ['apikey.revoke', 3004, 3, 3],
    ['policy.apply', 3004, 3, 1],
    ['secret.policy.retire', 3004, 3, 3],
    ['entry.list', 6003, 6, 2],
    ['audit.tail', 6003, 6, 2],
    ['decision.ship', 6003, 6, 1],
    ['something.new', 6003, 6, 99],
  ];

  it.each(cases)('%s → class %i, category %i, activity %i', (action, classUid, categoryUid, activityId) => {
    const e = toOcsf(exportRecord(rec({ action }), leaf));
    expect(e).toMatchObject({ class_uid: classUid, category_uid: categoryUid, activity_id: activityId, type_uid: classUid * 100 + activityId });
  });

  it('fills the base attributes: status, severity, time, metadata, actor, unmapped', () => {
    const ok = toOcsf(exportRecord(rec(), leaf));
    expect(ok).toMatchObject({
      status_id: 1, status: 'Success', status_code: 'OK', severity_id: 1, time: Date.UTC(2026, 11, 3, 10, 0, 0, 123),
      metadata: { product: { name: 'Tessera', vendor_name: 'Tessera', version: PRODUCT_VERSION }, version: OCSF_VERSION, uid: '12' },
      actor: { user: { uid: 'spiffe://example.org/tessera/admin', type_id: 2 } },
      entity: { type: 'Registration Entry', name: 'spiffe://example.org/web' },
      unmapped: { action: 'entry.create', detail: { entry_id: 'e1' }, leaf_hash: leaf.toString('base64') },
    });
    const denied = toOcsf(exportRecord(rec({ action: 'svid.join', actor: 'ip:10.0.0.9', outcome: 'denied', code: 'TESSERA_TOKEN_INVALID', target: '' }), leaf));
    expect(denied).toMatchObject({ status_id: 2, status: 'Failure', status_code: 'TESSERA_TOKEN_INVALID', severity_id: 3, src_endpoint: { ip: '10.0.0.9' }, user: { uid: 'ip:10.0.0.9', type_id: 0 }, auth_protocol: 'Join token' });
    const decision = toOcsf(exportRecord(rec({ action: 'decision', principal: 'spiffe://example.org/a', detail: { action: 'http:request' }, code: 'DENY', outcome: 'denied' }), leaf));
    expect(decision).toMatchObject({ user: { uid: 'spiffe://example.org/a', type_id: 3 }, privileges: ['http:request spiffe://example.org/web'], status_id: 2 });
  });

  it('type_uid = class_uid * 100 + activity_id and the class is one of the four, for any action', () => {
    fc.assert(fc.property(fc.string(), (action) => {
      const { classUid, activityId } = ocsfClassOf(action);
      expect([3002, 3003, 3004, 6003]).toContain(classUid);
      const e = toOcsf(exportRecord(rec({ action }), leaf));
      expect(e.type_uid).toBe(classUid * 100 + activityId);
      expect(e.category_uid).toBe(Math.floor(classUid / 1000));
    }), { numRuns: 500 });
  });
});

describe('syslog message of a record', () => {
  it('has MSGID = action, the SD-ELEMENT with id, leaf hash, outcome and code, and the record as MSG', () => {
    const r = exportRecord(rec({ code: 'A"B]\\C', detail: { note: 'naïve ✓' } }), leaf);
    const msg = syslogMessage(r, { hostname: 'cp-1', procid: 99 });
    const m = /^<110>1 2026-12-03T10:00:00\.123Z cp-1 tessera 99 entry\.create (.*)$/.exec(msg);
    expect(m).not.toBeNull();
    const { elements, rest } = parseStructuredData(m![1]!);
    expect(elements).toEqual([{ id: 'tessera@32473', params: [['id', '12'], ['leaf_hash', leaf.toString('base64')], ['outcome', 'success'], ['code', 'A"B]\\C']] }]);
    expect(JSON.parse(rest.slice(1))).toEqual(r);
    expect(/^[\x20-\x7e]*$/.test(msg)).toBe(true);
    expect(syslogMessage(exportRecord(rec({ outcome: 'denied' }), leaf), { hostname: 'h', procid: 1 }).startsWith('<109>1 ')).toBe(true);
  });
});
