import fc from 'fast-check';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FLAG_FIN, FRAME, FrameSplitter, bool, decodeActions, decodeFrame, decodeKvList, encodeFrame, str, uint32, type Frame, type Message } from './spop.js';
import { startSpoa, type Spoa } from './spoa.js';

let dir: string;
let spoa: Spoa;
const seen: Message[][] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'spoa-'));
  spoa = await startSpoa({
    socketPath: join(dir, 'spoa.sock'),
    handler: (messages) => {
      seen.push(messages);
      const m = messages[0];
      if (m?.name === 'boom') throw new Error('handler failure');
      return [{ type: 'set-var', scope: 'txn', name: 'echo', value: str(m?.name ?? '') }];
    },
  });
});

afterAll(async () => {
  await spoa.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Writes `bytes`, collects the frames the agent answers until it closes or `ms` pass. */
function exchange(bytes: Buffer[], ms = 1000): Promise<{ frames: Frame[]; closed: boolean }> {
  return new Promise((resolve) => {
    const s = connect(join(dir, 'spoa.sock'));
    const splitter = new FrameSplitter(1 << 20);
    const frames: Frame[] = [];
    let closed = false;
    s.on('connect', () => {
      for (const b of bytes) s.write(b);
    });
    s.on('data', (c: Buffer) => frames.push(...splitter.push(c).map((f) => decodeFrame(Buffer.from(f)))));
    s.on('error', () => {});
    s.on('close', () => {
      closed = true;
    });
    setTimeout(() => {
      s.destroy();
      resolve({ frames, closed });
    }, ms);
  });
}

const hello = (versions = '2.0', caps = 'pipelining,async', extra: [string, ReturnType<typeof str>][] = []): Buffer =>
  encodeFrame(FRAME.HAPROXY_HELLO, FLAG_FIN, 0, 0, { kv: [['supported-versions', str(versions)], ['max-frame-size', uint32(16380)], ['capabilities', str(caps)], ...extra] });
const notify = (stream: number, frame: number, name: string): Buffer =>
  encodeFrame(FRAME.NOTIFY, FLAG_FIN, stream, frame, { messages: [{ name, args: [{ name: 'a', value: str('b') }] }] });

describe('SPOA server', () => {
  it('negotiates SPOP 2.0 with pipelining, and acknowledges pipelined NOTIFY frames with the handler\'s actions', async () => {
    const r = await exchange([Buffer.concat([hello(), notify(1, 1, 'one'), notify(2, 5, 'two')])], 300);
    expect(r.frames.map((f) => f.type)).toEqual([FRAME.AGENT_HELLO, FRAME.ACK, FRAME.ACK]);
    const kv = decodeKvList(r.frames[0]!.payload);
    expect(kv.get('version')).toEqual(str('2.0'));
    expect(kv.get('capabilities')).toEqual(str('pipelining'));
    expect(kv.get('max-frame-size')).toEqual(uint32(16380));
    expect(r.frames.slice(1).map((f) => [f.streamId, f.frameId, decodeActions(f.payload)])).toEqual([
      [1, 1, [{ type: 'set-var', scope: 'txn', name: 'echo', value: str('one') }]],
      [2, 5, [{ type: 'set-var', scope: 'txn', name: 'echo', value: str('two') }]],
    ]);
    expect(r.closed).toBe(false);
  });

  it('answers a health check and closes', async () => {
    const r = await exchange([hello('2.0', 'pipelining', [['healthcheck', bool(true)] as never])], 300);
    expect(r.frames.map((f) => f.type)).toEqual([FRAME.AGENT_HELLO]);
    expect(r.closed).toBe(true);
  });

  it('disconnects with the SPOP status code: unsupported version, NOTIFY before HELLO, a fragment, garbage, a handler error, HAProxy\'s DISCONNECT', async () => {
    const status = async (bytes: Buffer[]): Promise<number | undefined> => {
      const r = await exchange(bytes, 300);
      const d = r.frames.find((f) => f.type === FRAME.AGENT_DISCONNECT);
      expect(r.closed).toBe(true);
      const v = d === undefined ? undefined : decodeKvList(d.payload).get('status-code');
      return v?.type === 'uint32' ? Number(v.value) : undefined;
    };
    expect(await status([hello('1.0')])).toBe(8);
    expect(await status([notify(1, 1, 'x')])).toBe(4);
    expect(await status([hello(), encodeFrame(FRAME.NOTIFY, 0, 1, 1, { raw: Buffer.alloc(3) })])).toBe(10);
    expect(await status([hello(), Buffer.from([0, 0, 0, 9, 3, 0, 0, 0, 1, 1, 1, 0xff, 0xff])])).toBe(4);
    expect(await status([hello(), Buffer.from([0xff, 0, 0, 0])])).toBe(3);
    expect(await status([hello(), notify(1, 1, 'boom')])).toBe(99);
    expect(await status([hello(), encodeFrame(FRAME.HAPROXY_DISCONNECT, FLAG_FIN, 0, 0, { kv: [['status-code', uint32(0)], ['message', str('bye')]] })])).toBe(0);
  });

  it('survives random bytes after a HELLO and keeps serving', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 64 }), async (bytes) => {
      const r = await exchange([hello(), Buffer.from(bytes)], 60);
      expect(r.frames[0]?.type).toBe(FRAME.AGENT_HELLO);
    }), { numRuns: 40 });
    const ok = await exchange([Buffer.concat([hello(), notify(9, 9, 'still')])], 200);
    expect(ok.frames.map((f) => f.type)).toEqual([FRAME.AGENT_HELLO, FRAME.ACK]);
  });
});
