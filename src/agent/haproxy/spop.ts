/**
 * The Stream Processing Offload Protocol (SPOP 2.0), the wire format between HAProxy's SPOE
 * filter and an offload agent, written from HAProxy's doc/SPOE.txt §3 (no code of another
 * implementation). Pure code: frames in and out of Buffers, no I/O.
 *
 * - Every frame is `<LENGTH:4 bytes, big-endian><TYPE:1><FLAGS:4, big-endian><STREAM-ID:varint>
 *   <FRAME-ID:varint><PAYLOAD>` (§3.2); the payload is a KV-LIST (HELLO, DISCONNECT), a
 *   LIST-OF-MESSAGES (NOTIFY) or a LIST-OF-ACTIONS (ACK).
 * - Integers are "Peers" varints (§3.1): below 240 one byte; above, the first byte carries 4 bits
 *   (0xF0 | low nibble) and each next byte 7 bits plus a continuation bit, with the offsets that
 *   make every value's encoding unique; at most 10 bytes for 64 bits.
 * - Typed data (§3.1): a type nibble and a flags nibble (the boolean value), then the value.
 *
 * Every decoder works on untrusted bytes: a truncated or malformed frame throws {@link SpopError}
 * (with the SPOP status code to put in a DISCONNECT frame), never anything else, and never reads
 * past the frame it was given.
 */

export const FRAME = Object.freeze({
  UNSET: 0,
  HAPROXY_HELLO: 1,
  HAPROXY_DISCONNECT: 2,
  NOTIFY: 3,
  AGENT_HELLO: 101,
  AGENT_DISCONNECT: 102,
  ACK: 103,
});

export const FLAG_FIN = 1;
export const FLAG_ABORT = 2;

/** SPOP status codes (§3.5), as carried by DISCONNECT frames. */
export const STATUS = Object.freeze({
  NORMAL: 0,
  IO: 1,
  TIMEOUT: 2,
  TOO_BIG: 3,
  INVALID: 4,
  NO_VERSION: 5,
  NO_FRAME_SIZE: 6,
  NO_CAPABILITIES: 7,
  BAD_VERSION: 8,
  BAD_FRAME_SIZE: 9,
  FRAG_NOT_SUPPORTED: 10,
  INTERLACED: 11,
  FRAME_ID_NOT_FOUND: 12,
  RESOURCE: 13,
  UNKNOWN: 99,
});

/** Variable scopes of set-var / unset-var actions (§3.4). */
export const SCOPE = Object.freeze({ proc: 0, sess: 1, txn: 2, req: 3, res: 4 });
export type Scope = keyof typeof SCOPE;

/** The smallest frame size peers must support (§3.2). */
export const MIN_FRAME_SIZE = 256;

export class SpopError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
    this.name = 'SpopError';
  }
}

export type TypedData =
  | { type: 'null' }
  | { type: 'bool'; value: boolean }
  | { type: 'int32' | 'uint32' | 'int64' | 'uint64'; value: bigint }
  | { type: 'ipv4' | 'ipv6'; value: Buffer }
  | { type: 'string'; value: string }
  | { type: 'binary'; value: Buffer };

const T_NULL = 0, T_BOOL = 1, T_INT32 = 2, T_UINT32 = 3, T_INT64 = 4, T_UINT64 = 5, T_IPV4 = 6, T_IPV6 = 7, T_STRING = 8, T_BINARY = 9;
const TYPE_IDS = { null: T_NULL, bool: T_BOOL, int32: T_INT32, uint32: T_UINT32, int64: T_INT64, uint64: T_UINT64, ipv4: T_IPV4, ipv6: T_IPV6, string: T_STRING, binary: T_BINARY } as const;
const INT_NAMES = ['', '', 'int32', 'uint32', 'int64', 'uint64'] as const;
const TWO_64 = 1n << 64n;

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  frameId: number;
  /** The payload bytes (a view into the frame). */
  payload: Buffer;
}

export interface Message {
  name: string;
  args: { name: string; value: TypedData }[];
}

export type Action =
  | { type: 'set-var'; scope: Scope; name: string; value: TypedData }
  | { type: 'unset-var'; scope: Scope; name: string };

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

function truncated(): SpopError {
  return new SpopError(STATUS.INVALID, 'truncated frame');
}

/** A cursor over `buf[pos, end)`: every read checks the end. */
export class SpopReader {
  constructor(readonly buf: Buffer, public pos: number, readonly end: number) {}

  get done(): boolean {
    return this.pos >= this.end;
  }

  byte(): number {
    if (this.pos >= this.end) throw truncated();
    return this.buf[this.pos++]!;
  }

  uint32(): number {
    if (this.pos + 4 > this.end) throw truncated();
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** A varint as a number; SpopError past 2^53 (lengths and ids never get there). */
  varint(): number {
    let v = this.byte();
    if (v < 240) return v;
    let shift = 4;
    for (;;) {
      const b = this.byte();
      v += b * 2 ** shift;
      if (b < 128) break;
      shift += 7;
      if (shift > 60) throw new SpopError(STATUS.INVALID, 'varint too long');
    }
    if (v > Number.MAX_SAFE_INTEGER) throw new SpopError(STATUS.INVALID, 'varint too large');
    return v;
  }

  /** A varint as an unsigned 64-bit bigint; SpopError at 2^64 and above. */
  varintBig(): bigint {
    let v = BigInt(this.byte());
    if (v < 240n) return v;
    let shift = 4n;
    for (;;) {
      const b = this.byte();
      v += BigInt(b) << shift;
      if (b < 128) break;
      shift += 7n;
      if (shift > 60n) throw new SpopError(STATUS.INVALID, 'varint too long');
    }
    if (v >= TWO_64) throw new SpopError(STATUS.INVALID, 'varint above 64 bits');
    return v;
  }

  bytes(n: number): Buffer {
    if (n > this.end - this.pos) throw truncated();
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  /** A length-prefixed string (UTF-8; invalid sequences read as U+FFFD). */
  string(): string {
    const n = this.varint();
    if (n > this.end - this.pos) throw truncated();
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }

  typed(): TypedData {
    const t = this.byte();
    const type = t & 0x0f;
    switch (type) {
      case T_NULL:
        return { type: 'null' };
      case T_BOOL:
        return { type: 'bool', value: (t & 0x10) !== 0 };
      case T_INT32:
      case T_INT64: {
        const v = BigInt.asIntN(64, this.varintBig());
        if (type === T_INT32 && (v < -(2n ** 31n) || v >= 2n ** 31n)) throw new SpopError(STATUS.INVALID, 'int32 out of range');
        return { type: INT_NAMES[type] as 'int32', value: v };
      }
      case T_UINT32:
      case T_UINT64: {
        const v = this.varintBig();
        if (type === T_UINT32 && v >= 2n ** 32n) throw new SpopError(STATUS.INVALID, 'uint32 out of range');
        return { type: INT_NAMES[type] as 'uint32', value: v };
      }
      case T_IPV4:
        return { type: 'ipv4', value: Buffer.from(this.bytes(4)) };
      case T_IPV6:
        return { type: 'ipv6', value: Buffer.from(this.bytes(16)) };
      case T_STRING:
        return { type: 'string', value: this.string() };
      case T_BINARY:
        return { type: 'binary', value: Buffer.from(this.bytes(this.varint())) };
      default:
        throw new SpopError(STATUS.INVALID, `unknown data type ${type}`);
    }
  }
}

/**
 * Decodes one frame (the bytes after its 4-byte length). The payload is not decoded: see
 * {@link decodeKvList}, {@link decodeMessages}, {@link decodeActions}.
 */
export function decodeFrame(frame: Buffer): Frame {
  const r = new SpopReader(frame, 0, frame.length);
  const type = r.byte();
  const flags = r.uint32();
  const streamId = r.varint();
  const frameId = r.varint();
  return { type, flags, streamId, frameId, payload: frame.subarray(r.pos) };
}

/** A KV-LIST payload (HELLO and DISCONNECT frames): later duplicates win. */
export function decodeKvList(payload: Buffer): Map<string, TypedData> {
  const r = new SpopReader(payload, 0, payload.length);
  const out = new Map<string, TypedData>();
  while (!r.done) {
    const k = r.string();
    out.set(k, r.typed());
  }
  return out;
}

/** A LIST-OF-MESSAGES payload (NOTIFY frames). */
export function decodeMessages(payload: Buffer): Message[] {
  const r = new SpopReader(payload, 0, payload.length);
  const out: Message[] = [];
  while (!r.done) {
    const name = r.string();
    const n = r.byte();
    const args: Message['args'] = [];
    for (let i = 0; i < n; i++) {
      const k = r.string();
      args.push({ name: k, value: r.typed() });
    }
    out.push({ name, args });
  }
  return out;
}

const SCOPES = ['proc', 'sess', 'txn', 'req', 'res'] as const;

/** A LIST-OF-ACTIONS payload (ACK frames). */
export function decodeActions(payload: Buffer): Action[] {
  const r = new SpopReader(payload, 0, payload.length);
  const out: Action[] = [];
  while (!r.done) {
    const t = r.byte();
    const n = r.byte();
    if (t === 1 && n === 3) {
      const scope = SCOPES[r.byte()];
      if (scope === undefined) throw new SpopError(STATUS.INVALID, 'unknown variable scope');
      const name = r.string();
      out.push({ type: 'set-var', scope, name, value: r.typed() });
    } else if (t === 2 && n === 2) {
      const scope = SCOPES[r.byte()];
      if (scope === undefined) throw new SpopError(STATUS.INVALID, 'unknown variable scope');
      out.push({ type: 'unset-var', scope, name: r.string() });
    } else {
      throw new SpopError(STATUS.INVALID, `unknown action ${t} with ${n} arguments`);
    }
  }
  return out;
}

/**
 * Cuts a byte stream into frames. `push` returns the complete frames of what it got so far
 * (views of the input when a frame lies in one chunk). A frame longer than `maxFrameSize`, or too
 * short to hold its header, ends the stream: the frames before it are still returned, `failed`
 * holds the SpopError, and any later push throws it.
 */
export class FrameSplitter {
  #pending: Buffer | undefined;
  failed: SpopError | undefined;

  constructor(public maxFrameSize: number) {}

  push(chunk: Buffer): Buffer[] {
    if (this.failed !== undefined) throw this.failed;
    let buf = chunk;
    if (this.#pending !== undefined) {
      buf = Buffer.concat([this.#pending, chunk]);
      this.#pending = undefined;
    }
    const frames: Buffer[] = [];
    let pos = 0;
    while (buf.length - pos >= 4) {
      const len = buf.readUInt32BE(pos);
      // type, flags and two one-byte varints at least
      if (len < 7 || len > this.maxFrameSize) {
        this.failed = len < 7 ? new SpopError(STATUS.INVALID, 'frame too short') : new SpopError(STATUS.TOO_BIG, 'frame is too big');
        this.#pending = undefined;
        return frames;
      }
      if (buf.length - pos - 4 < len) break;
      frames.push(buf.subarray(pos + 4, pos + 4 + len));
      pos += 4 + len;
    }
    if (pos < buf.length) this.#pending = Buffer.from(buf.subarray(pos));
    return frames;
  }

  /** Bytes of an incomplete frame held. */
  get pending(): number {
    return this.#pending?.length ?? 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/** Bytes of the varint encoding of `v` (a non-negative safe integer or bigint below 2^64). */
export function varintSize(v: number | bigint): number {
  let x = BigInt(v);
  if (x < 240n) return 1;
  let n = 1;
  x = (x - 240n) >> 4n;
  while (x >= 128n) {
    n++;
    x = (x - 128n) >> 7n;
  }
  return n + 1;
}

/** A growable output buffer. */
export class SpopWriter {
  buf: Buffer;
  pos = 0;

  constructor(size = 256) {
    this.buf = Buffer.allocUnsafe(size);
  }

  #room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  byte(b: number): this {
    this.#room(1);
    this.buf[this.pos++] = b;
    return this;
  }

  uint32(v: number): this {
    this.#room(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  varint(v: number | bigint): this {
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v) || v < 0) throw new RangeError('varint must be a non-negative safe integer');
      if (v < 240) return this.byte(v);
      // Numbers below 2^32 with plain arithmetic (the common case); larger ones as bigint.
      if (v >= 2 ** 32) return this.varint(BigInt(v));
      this.#room(6);
      this.buf[this.pos++] = (v & 0x0f) | 0xf0;
      let x = Math.floor((v - 240) / 16);
      while (x >= 128) {
        this.buf[this.pos++] = (x & 0x7f) | 0x80;
        x = Math.floor((x - 128) / 128);
      }
      this.buf[this.pos++] = x;
      return this;
    }
    if (v < 0n || v >= TWO_64) throw new RangeError('varint must be within 0 .. 2^64-1');
    if (v < 240n) return this.byte(Number(v));
    this.#room(10);
    this.buf[this.pos++] = Number(v & 0x0fn) | 0xf0;
    let x = (v - 240n) >> 4n;
    while (x >= 128n) {
      this.buf[this.pos++] = Number(x & 0x7fn) | 0x80;
      x = (x - 128n) >> 7n;
    }
    this.buf[this.pos++] = Number(x);
    return this;
  }

  raw(b: Uint8Array): this {
    this.#room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  string(s: string): this {
    const n = Buffer.byteLength(s, 'utf8');
    this.varint(n);
    this.#room(n);
    this.buf.write(s, this.pos, n, 'utf8');
    this.pos += n;
    return this;
  }

  typed(d: TypedData): this {
    switch (d.type) {
      case 'null':
        return this.byte(T_NULL);
      case 'bool':
        return this.byte(T_BOOL | (d.value ? 0x10 : 0));
      case 'int32':
      case 'int64': {
        const lo = d.type === 'int32' ? -(2n ** 31n) : -(2n ** 63n);
        if (d.value < lo || d.value >= -lo) throw new RangeError(`${d.type} out of range`);
        return this.byte(TYPE_IDS[d.type]).varint(BigInt.asUintN(64, d.value));
      }
      case 'uint32':
      case 'uint64': {
        const hi = d.type === 'uint32' ? 2n ** 32n : TWO_64;
        if (d.value < 0n || d.value >= hi) throw new RangeError(`${d.type} out of range`);
        return this.byte(TYPE_IDS[d.type]).varint(d.value);
      }
      case 'ipv4':
      case 'ipv6':
        if (d.value.length !== (d.type === 'ipv4' ? 4 : 16)) throw new RangeError(`${d.type} needs ${d.type === 'ipv4' ? 4 : 16} bytes`);
        return this.byte(TYPE_IDS[d.type]).raw(d.value);
      case 'string':
        return this.byte(T_STRING).string(d.value);
      case 'binary':
        return this.byte(T_BINARY).varint(d.value.length).raw(d.value);
      default:
        throw new RangeError('unknown data type');
    }
  }

  /** Starts a frame: the length is filled in by {@link endFrame}. Returns where it starts. */
  startFrame(type: number, flags: number, streamId: number, frameId: number): number {
    const at = this.pos;
    this.uint32(0).byte(type).uint32(flags).varint(streamId).varint(frameId);
    return at;
  }

  endFrame(at: number): void {
    this.buf.writeUInt32BE(this.pos - at - 4, at);
  }

  kv(name: string, value: TypedData): this {
    return this.string(name).typed(value);
  }

  action(a: Action): this {
    if (a.type === 'set-var') return this.byte(1).byte(3).byte(SCOPE[a.scope]).string(a.name).typed(a.value);
    return this.byte(2).byte(2).byte(SCOPE[a.scope]).string(a.name);
  }

  message(m: Message): this {
    if (m.args.length > 255) throw new RangeError('a message has at most 255 arguments');
    this.string(m.name).byte(m.args.length);
    for (const a of m.args) this.kv(a.name, a.value);
    return this;
  }

  /** The bytes written (a copy). */
  take(): Buffer {
    const out = Buffer.from(this.buf.subarray(0, this.pos));
    this.pos = 0;
    return out;
  }
}

/** A whole frame, length prefix included. */
export function encodeFrame(
  type: number,
  flags: number,
  streamId: number,
  frameId: number,
  payload: { kv: [string, TypedData][] } | { messages: Message[] } | { actions: Action[] } | { raw: Buffer },
): Buffer {
  const w = new SpopWriter();
  const at = w.startFrame(type, flags, streamId, frameId);
  if ('kv' in payload) for (const [k, v] of payload.kv) w.kv(k, v);
  else if ('messages' in payload) for (const m of payload.messages) w.message(m);
  else if ('actions' in payload) for (const a of payload.actions) w.action(a);
  else w.raw(payload.raw);
  w.endFrame(at);
  return w.take();
}

// Small constructors for typed data.
export const str = (value: string): TypedData => ({ type: 'string', value });
export const bool = (value: boolean): TypedData => ({ type: 'bool', value });
export const int = (value: number | bigint): TypedData => ({ type: 'int64', value: BigInt(value) });
export const uint32 = (value: number): TypedData => ({ type: 'uint32', value: BigInt(value) });
export const bin = (value: Buffer): TypedData => ({ type: 'binary', value });
