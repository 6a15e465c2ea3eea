import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { auditLeafData, type AuditLeafRecord } from './audit-leaf.js';

const base: AuditLeafRecord = {
  id: 7, ts: 1_767_225_600_000, actor: 'spiffe://td/shop/orders', action: 'decision', target: 'spiffe://td/shop/payments',
  outcome: 'denied', code: 'DENY', detail: { principal: 'spiffe://td/shop/orders', reasons: ['no permit'], context: { path: '/x', hour: 3 } },
  principal: 'spiffe://td/shop/orders',
};

describe('auditLeafData', () => {
  it('is the domain line and the canonical JSON of every field, the id included', () => {
    const text = auditLeafData(base).toString('utf8');
    expect(text.startsWith('tessera-audit-record-v1\n')).toBe(true);
    expect(JSON.parse(text.slice(text.indexOf('\n') + 1))).toEqual({ ...base });
  });

  it('does not depend on key order, and an absent principal is null', () => {
    const { detail: _d, ...rest } = base;
    const reordered: AuditLeafRecord = { ...rest, detail: { context: { hour: 3, path: '/x' }, reasons: ['no permit'], principal: base.principal } };
    expect(auditLeafData(reordered).equals(auditLeafData(base))).toBe(true);
    const { principal: _p, ...without } = base;
    expect(auditLeafData(without).equals(auditLeafData({ ...without, principal: null }))).toBe(true);
  });

  it('changes when any field changes, the position (id) included (property)', () => {
    const fields = fc.record({
      id: fc.integer({ min: 1, max: 1e9 }), ts: fc.integer({ min: 0, max: 8.64e15 }), actor: fc.string(), action: fc.string(), target: fc.string(),
      outcome: fc.constantFrom('denied' as const, 'success' as const), code: fc.string(), detail: fc.dictionary(fc.string(), fc.jsonValue()),
      principal: fc.option(fc.string(), { nil: null }),
    });
    // Equal bytes exactly when the two records are the same JSON value.
    const asJson = (r: AuditLeafRecord): unknown => JSON.parse(JSON.stringify({ ...r, principal: r.principal ?? null }));
    fc.assert(fc.property(fields, fields, fc.boolean(), (a, b0, copy) => {
      const b = copy ? (JSON.parse(JSON.stringify(a)) as AuditLeafRecord) : b0;
      const ja = asJson(a);
      const jb = asJson(b);
      expect(auditLeafData(ja as AuditLeafRecord).equals(auditLeafData(jb as AuditLeafRecord))).toBe(isDeepStrictEqual(ja, jb));
    }), { numRuns: 300 });
    for (const patch of [{ id: 8 }, { ts: base.ts + 1 }, { actor: 'x' }, { action: 'y' }, { target: 'z' }, { outcome: 'success' as const }, { code: 'OK' }, { detail: { ...base.detail, extra: 1 } }, { principal: null }]) {
      expect(auditLeafData({ ...base, ...patch }).equals(auditLeafData(base)), JSON.stringify(patch)).toBe(false);
    }
  });

  it('refuses a record without a usable id or time, and detail that is not plain JSON', () => {
    for (const bad of [{ id: 0 }, { id: -1 }, { id: 1.5 }, { ts: Number.NaN }]) {
      expectTesseraError(() => auditLeafData({ ...base, ...bad }), 'TESSERA_CANONICAL_JSON_INVALID');
    }
    expectTesseraError(() => auditLeafData({ ...base, detail: { when: new Date(0) } }), 'TESSERA_CANONICAL_JSON_INVALID');
  });
});
