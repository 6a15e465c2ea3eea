import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FLAG_FIN, FRAME, FrameSplitter, SpopError, SpopReader, SpopWriter, decodeActions, decodeFrame, decodeKvList, decodeMessages, encodeFrame, varintSize,
  type Action, type Message, type TypedData,
} from './spop.js';

const U64 = (1n << 64n) - 1n;

const typedArb: fc.Arbitrary<TypedData> = fc.oneof(
  fc.constant<TypedData>({ type: 'null' }),
  fc.boolean().map((value): TypedData => ({ type: 'bool', value })),
  fc.bigInt(-(2n ** 31n), 2n ** 31n - 1n).map((value): TypedData => ({ type: 'int32', value })),
  fc.bigInt(0n, 2n ** 32n - 1n).map((value): TypedData => ({ type: 'uint32', value })),
  fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n).map((value): TypedData => ({ type: 'int64', value })),
  fc.bigInt(0n, U64).map((value): TypedData => ({ type: 'uint64', value })),
  fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b): TypedData => ({ type: 'ipv4', value: Buffer.from(b) })),
  fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b): TypedData => ({ type: 'ipv6', value: Buffer.from(b) })),
  fc.string({ unit: 'grapheme', maxLength: 300 }).map((value): TypedData => ({ type: 'string', value })),
  fc.uint8Array({ maxLength: 600 }).map((b): TypedData => ({ type: 'binary', value: Buffer.from(b) })),
);
const nameArb = fc.string({ maxLength: 40 });
const messageArb: fc.Arbitrary<Message> = fc.record({ name: nameArb, args: fc.array(fc.record({ name: nameArb, value: typedArb }), { maxLength: 8 }) });
const scopeArb = fc.constantFrom('proc', 'sess', 'txn', 'req', 'res') as fc.Arbitrary<Action['scope']>;
const actionArb: fc.Arbitrary<Action> = fc.oneof(
  fc.record({ type: fc.constant('set-var' as const), scope: scopeArb, name: nameArb, value: typedArb }),
  fc.record({ type: fc.constant('unset-var' as const), scope: scopeArb, name: nameArb }),
);
const idArb = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

function encodeVarint(v: number | bigint): Buffer {
  return new SpopWriter(1).varint(v).take();
}

/** Throws only SpopError, whatever the bytes. */
function onlySpopErrors(f: () => unknown): unknown {
  try {
    return f();
  } catch (err) {
    expect(err).toBeInstanceOf(SpopError);
    return err;
  }
}

describe('SPOP varints', () => {
  it('encodes the boundaries of doc/SPOE.txt §3.1', () => {
    expect([...encodeVarint(0)]).toEqual([0]);
    expect([...encodeVarint(239)]).toEqual([239]);
    expect([...encodeVarint(240)]).toEqual([0xf0, 0x00]);
    expect([...encodeVarint(2287)]).toEqual([0xff, 0x7f]);
    expect([...encodeVarint(2288)]).toEqual([0xf0, 0x80, 0x00]);
    expect(encodeVarint(264431)).toHaveLength(3);
    expect(encodeVarint(264432)).toHaveLength(4);
    expect(encodeVarint(33818863)).toHaveLength(4);
    expect(encodeVarint(33818864)).toHaveLength(5);
    expect(encodeVarint(U64)).toHaveLength(10);
  });

  it('round-trips numbers and bigints, with the size varintSize predicts', () => {
    fc.assert(fc.property(idArb, (n) => {
      const b = encodeVarint(n);
      expect(b.length).toBe(varintSize(n));
      const r = new SpopReader(b, 0, b.length);
      expect(r.varint()).toBe(n);
      expect(r.done).toBe(true);
    }), { numRuns: 2000 });
    fc.assert(fc.property(fc.bigInt(0n, U64), (n) => {
      const b = encodeVarint(n);
      expect(b.length).toBe(varintSize(n));
      expect(new SpopReader(b, 0, b.length).varintBig()).toBe(n);
    }), { numRuns: 2000 });
  });

  it('has one encoding per value: bytes that decode re-encode to themselves', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 12 }), (bytes) => {
      const buf = Buffer.from(bytes);
      const r = new SpopReader(buf, 0, buf.length);
      let v: bigint;
      try {
        v = r.varintBig();
      } catch (err) {
        expect(err).toBeInstanceOf(SpopError);
        return;
      }
      expect(encodeVarint(v).equals(buf.subarray(0, r.pos))).toBe(true);
    }), { numRuns: 3000 });
  });

  it('refuses varints that are truncated, longer than 10 bytes or above 2^64', () => {
    expect(() => new SpopReader(Buffer.from([0xf0]), 0, 1).varint()).toThrow(SpopError);
    expect(() => new SpopReader(Buffer.from([0xf0, 0x80]), 0, 2).varint()).toThrow('truncated');
    const long = Buffer.alloc(11, 0xff);
    expect(() => new SpopReader(long, 0, long.length).varintBig()).toThrow('too long');
    const over = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    expect(() => new SpopReader(over, 0, over.length).varintBig()).toThrow('above 64 bits');
    expect(() => new SpopReader(encodeVarint(2n ** 60n), 0, 10).varint()).toThrow('too large');
    expect(() => new SpopWriter().varint(-1)).toThrow(RangeError);
  });
});

describe('SPOP frames', () => {
  it('round-trips typed data, KV lists, messages and actions in frames', () => {
    fc.assert(fc.property(fc.array(fc.tuple(nameArb, typedArb), { maxLength: 6 }), idArb, idArb, (kv, s, f) => {
      const frame = encodeFrame(FRAME.HAPROXY_HELLO, FLAG_FIN, s, f, { kv });
      expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
      const d = decodeFrame(frame.subarray(4));
      expect(d).toMatchObject({ type: FRAME.HAPROXY_HELLO, flags: FLAG_FIN, streamId: s, frameId: f });
      expect(decodeKvList(d.payload)).toEqual(new Map(kv));
    }), { numRuns: 500 });
    fc.assert(fc.property(fc.array(messageArb, { maxLength: 4 }), idArb, idArb, (messages, s, f) => {
      const d = decodeFrame(encodeFrame(FRAME.NOTIFY, FLAG_FIN, s, f, { messages }).subarray(4));
      expect(decodeMessages(d.payload)).toEqual(messages);
    }), { numRuns: 500 });
    fc.assert(fc.property(fc.array(actionArb, { maxLength: 6 }), idArb, idArb, (actions, s, f) => {
      const d = decodeFrame(encodeFrame(FRAME.ACK, FLAG_FIN, s, f, { actions }).subarray(4));
      expect(d.streamId).toBe(s);
      expect(decodeActions(d.payload)).toEqual(actions);
    }), { numRuns: 500 });
  });

  it('a frame stream cut anywhere comes out frame by frame, and nothing else', () => {
    fc.assert(fc.property(fc.array(fc.array(messageArb, { maxLength: 3 }), { minLength: 1, maxLength: 5 }), fc.array(fc.integer({ min: 1, max: 64 }), { maxLength: 40 }), (frames, cuts) => {
      const encoded = frames.map((messages, i) => encodeFrame(FRAME.NOTIFY, FLAG_FIN, i, i + 1, { messages }));
      const stream = Buffer.concat(encoded);
      const splitter = new FrameSplitter(1 << 20);
      const out: Buffer[] = [];
      let pos = 0;
      for (const c of cuts) {
        if (pos >= stream.length) break;
        out.push(...splitter.push(stream.subarray(pos, pos + c)).map((b) => Buffer.from(b)));
        pos += c;
      }
      if (pos < stream.length) out.push(...splitter.push(stream.subarray(pos)));
      expect(splitter.pending).toBe(0);
      expect(out.map((b) => decodeMessages(decodeFrame(b).payload))).toEqual(frames);
    }), { numRuns: 300 });
  });

  it('refuses frames above the negotiated size or too short for a header', () => {
    const small = encodeFrame(FRAME.NOTIFY, FLAG_FIN, 1, 1, { raw: Buffer.alloc(10) });
    const big = encodeFrame(FRAME.NOTIFY, FLAG_FIN, 1, 1, { raw: Buffer.alloc(300) });
    const s = new FrameSplitter(256);
    // The frame before the bad one still comes out; the stream is over after it.
    expect(s.push(Buffer.concat([small, big]))).toHaveLength(1);
    expect(s.failed).toMatchObject({ status: 3 });
    expect(() => s.push(small)).toThrow(SpopError);
    const t = new FrameSplitter(256);
    expect(t.push(Buffer.from([0, 0, 0, 2, 3, 0]))).toEqual([]);
    expect(t.failed).toMatchObject({ status: 4 });
  });

  it('garbage and truncated frames give a clean SpopError, never a crash', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      const b = Buffer.from(bytes);
      onlySpopErrors(() => decodeFrame(b));
      onlySpopErrors(() => decodeKvList(b));
      onlySpopErrors(() => decodeMessages(b));
      onlySpopErrors(() => decodeActions(b));
      onlySpopErrors(() => new FrameSplitter(16380).push(b));
    }), { numRuns: 5000 });
    fc.assert(fc.property(fc.array(messageArb, { minLength: 1, maxLength: 3 }), fc.nat(), (messages, at) => {
      const frame = encodeFrame(FRAME.NOTIFY, FLAG_FIN, 7, 9, { messages }).subarray(4);
      const cut = at % frame.length;
      const r = onlySpopErrors(() => decodeMessages(decodeFrame(frame.subarray(0, cut)).payload));
      // A cut can only decode when it falls between two messages: then it is a prefix of them.
      if (!(r instanceof SpopError)) expect(messages.slice(0, (r as Message[]).length)).toEqual(r);
    }), { numRuns: 2000 });
  });
});
