import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectTesseraError } from '../../test/support/expect.js';
import { auditDetailJson, auditLeafData, auditLeafHash, type AuditLeafRecord } from './audit-leaf.js';
import { canonicalJsonChecked } from './canonical-json.js';
import { leafHash } from './merkle.js';

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

  describe('the append path gives the leaf it always gave (existing logs still verify)', () => {
    /** auditLeafData as first shipped: the checked encoder over the whole record. */
    const referenceLeafData = (r: AuditLeafRecord): Buffer => {
      if (!Number.isSafeInteger(r.id) || r.id < 1 || !Number.isSafeInteger(r.ts)) throw new Error('bad id or ts');
      const body = canonicalJsonChecked({
        id: r.id, ts: r.ts, actor: r.actor, action: r.action, target: r.target, outcome: r.outcome, code: r.code, detail: r.detail, principal: r.principal ?? null,
      });
      return Buffer.from(`tessera-audit-record-v1\n${body}`, 'utf8');
    };
    /** The store's append as first shipped: detail stored as JSON.stringify text, hashed as it parses back. */
    const referenceAppend = (id: number, r: Omit<AuditLeafRecord, 'id'>): { text: string; hash: Buffer } => {
      const text = JSON.stringify(r.detail);
      return { text, hash: leafHash(referenceLeafData({ ...r, id, detail: JSON.parse(text) as Record<string, unknown> })) };
    };
    const text = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom('\ud800', 'a\udc00b', '\u{1f600}', 'é', '"\\\n'));
    // Details as the control plane makes them (plain JSON) and as a careless caller might (undefined
    // members, Dates, nested non-JSON that JSON.stringify drops or rewrites).
    const odd = fc.constantFrom(undefined, new Date(0), () => 1, NaN, -0, { toJSON: () => 'x' }, [undefined, 1]);
    const detail = fc.oneof(
      fc.dictionary(text, fc.jsonValue({ maxDepth: 3 }), { maxKeys: 8 }),
      fc.dictionary(text, fc.oneof(fc.jsonValue({ maxDepth: 2 }), odd, fc.dictionary(text, odd, { maxKeys: 2 })), { maxKeys: 5 }),
    ) as fc.Arbitrary<Record<string, unknown>>;
    const record = fc.record({
      id: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), ts: fc.oneof(fc.integer({ min: 0, max: 8.64e15 }), fc.constant(-1)),
      actor: text, action: text, target: text, outcome: fc.constantFrom('denied' as const, 'success' as const), code: text, detail,
      principal: fc.option(text, { nil: undefined }),
    });

    it('auditDetailJson + auditLeafHash = SHA-256(0x00 ‖ the leaf as first computed); the stored text hashes the same when read back (property)', () => {
      fc.assert(fc.property(record, ({ id, ...r }) => {
        const ref = referenceAppend(id, r);
        const d = auditDetailJson(r.detail);
        expect(auditLeafHash(id, r, d.canonical).equals(ref.hash)).toBe(true);
        // What a verifier recomputes from the row: the stored text parsed back.
        const readBack = { ...r, id, detail: JSON.parse(d.text) as Record<string, unknown> };
        expect(leafHash(auditLeafData(readBack)).equals(ref.hash)).toBe(true);
        expect(JSON.parse(d.text)).toEqual(JSON.parse(ref.text));
      }), { numRuns: 2000 });
    });

    it('auditLeafData gives the same bytes, and refuses with the same message (property)', () => {
      fc.assert(fc.property(record, (r) => {
        let ref: Buffer | Error;
        try {
          ref = referenceLeafData(r);
        } catch (err) {
          ref = err as Error;
        }
        if (ref instanceof Error) expect(() => auditLeafData(r)).toThrow(ref.message);
        else expect(auditLeafData(r).equals(ref)).toBe(true);
      }), { numRuns: 1000 });
      const messageOf = (f: () => unknown): string => {
        try {
          f();
        } catch (err) {
          return (err as Error).message;
        }
        return 'no error';
      };
      for (const bad of [{ detail: { when: new Date(0) } }, { actor: undefined as unknown as string }, { target: 1 as unknown as string }, { detail: { a: { b: [undefined] } } }]) {
        expect(messageOf(() => auditLeafData({ ...base, ...bad }))).toBe(messageOf(() => referenceLeafData({ ...base, ...bad })));
      }
    });

    it('a plain detail is stored as its canonical JSON; anything else as JSON.stringify writes it', () => {
      expect(auditDetailJson({ b: 1, a: { d: [1], c: null } })).toEqual({ text: '{"a":{"c":null,"d":[1]},"b":1}', canonical: '{"a":{"c":null,"d":[1]},"b":1}' });
      expect(auditDetailJson({ b: undefined, a: new Date(0) })).toEqual({ text: '{"a":"1970-01-01T00:00:00.000Z"}', canonical: '{"a":"1970-01-01T00:00:00.000Z"}' });
      expect(auditDetailJson({ z: 1, y: undefined, x: 2 })).toEqual({ text: '{"z":1,"x":2}', canonical: '{"x":2,"z":1}' });
      let deep: unknown = 1;
      for (let i = 0; i < 100; i++) deep = [deep];
      expectTesseraError(() => auditDetailJson({ deep }), 'TESSERA_CANONICAL_JSON_INVALID');
    });

    it('auditLeafHash refuses a record without a usable id or time', () => {
      const { id: _id, detail: _d, ...fields } = base;
      for (const [id, ts] of [[0, 1], [1.5, 1], [1, Number.NaN], [-3, 1]] as const) {
        expectTesseraError(() => auditLeafHash(id, { ...fields, ts }, '{}'), 'TESSERA_CANONICAL_JSON_INVALID');
      }
    });
  });
});
