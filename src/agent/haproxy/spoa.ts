/**
 * The agent's Stream Processing Offload Agent: HAProxy's SPOE filter connects to it (a Unix socket
 * in the agent's 0700 data directory, so only processes of the agent's user reach it) and sends a
 * NOTIFY frame per request that needs a decision; the handler answers synchronously with set-var
 * actions, sent back in an ACK frame. SPOP 2.0 (doc/SPOE.txt §3.2.3 workflow):
 *
 * - HAPROXY-HELLO → AGENT-HELLO with version 2.0, the smaller max-frame-size and the
 *   capabilities both support among `pipelining` (ACKs of several NOTIFYs in flight on one
 *   connection, in any order); a health check is answered and closed. We do not announce
 *   `fragmentation` (HAProxy then never fragments), nor `async`.
 * - NOTIFY → ACK on the same connection, same stream and frame ids. The frames of one socket read
 *   are answered in one write.
 * - HAPROXY-DISCONNECT → AGENT-DISCONNECT and close. A malformed frame → AGENT-DISCONNECT with the
 *   SPOP status code (§3.5) and close: HAProxy then fails the streams waiting on it, and our
 *   HAProxy configuration answers them 503 (fail closed).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { unlinkSync } from 'node:fs';
import {
  FLAG_FIN, FRAME, FrameSplitter, MIN_FRAME_SIZE, STATUS, SpopError, SpopWriter, decodeFrame, decodeKvList, decodeMessages, str, uint32,
  type Action, type Message, type TypedData,
} from './spop.js';

/** Answers the messages of one NOTIFY frame with actions. Synchronous; a throw fails that frame's streams (503). */
export type NotifyHandler = (messages: Message[]) => Action[];

export interface SpoaOptions {
  socketPath: string;
  handler: NotifyHandler;
  /** Our largest frame (default 16380, HAProxy's default tune.bufsize - 4). */
  maxFrameSize?: number;
  /** Called on protocol errors (for a counter); never with frame contents. */
  onError?: (err: SpopError) => void;
}

export interface Spoa {
  /** NOTIFY frames answered. */
  readonly notified: number;
  /** Connections HAProxy holds open now. */
  readonly connections: number;
  close(): Promise<void>;
}

const VERSION = '2.0';

export async function startSpoa(opts: SpoaOptions): Promise<Spoa> {
  const ours = opts.maxFrameSize ?? 16380;
  const sockets = new Set<Socket>();
  const state = { notified: 0 };
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    serve(socket, opts, ours, state);
  });
  try {
    unlinkSync(opts.socketPath);
  } catch {
    /* not there */
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', () => {});
  return {
    get notified() {
      return state.notified;
    },
    get connections() {
      return sockets.size;
    },
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    }),
  };
}

function serve(socket: Socket, opts: SpoaOptions, ours: number, state: { notified: number }): void {
  const splitter = new FrameSplitter(Math.max(ours, MIN_FRAME_SIZE));
  let hello = false;
  let closing = false;
  const out = new SpopWriter(1024);
  const disconnect = (status: number, message: string): void => {
    if (closing) return;
    closing = true;
    const at = out.startFrame(FRAME.AGENT_DISCONNECT, FLAG_FIN, 0, 0);
    out.kv('status-code', uint32(status)).kv('message', str(message));
    out.endFrame(at);
    socket.end(out.take());
  };
  socket.on('error', () => socket.destroy());
  socket.on('data', (chunk: Buffer) => {
    if (closing) return;
    // Answers fully encoded so far: they still go out before a DISCONNECT.
    let committed = 0;
    try {
      for (const f of splitter.push(chunk)) {
        committed = out.pos;
        const frame = decodeFrame(f);
        switch (frame.type) {
          case FRAME.HAPROXY_HELLO: {
            const kv = decodeKvList(frame.payload);
            const reply = negotiate(kv, ours);
            const at = out.startFrame(FRAME.AGENT_HELLO, FLAG_FIN, 0, 0);
            for (const [k, v] of reply.kv) out.kv(k, v);
            out.endFrame(at);
            splitter.maxFrameSize = reply.maxFrameSize;
            hello = true;
            if (reply.healthcheck) {
              closing = true;
              socket.end(out.take());
              return;
            }
            break;
          }
          case FRAME.NOTIFY: {
            if (!hello) throw new SpopError(STATUS.INVALID, 'NOTIFY before HELLO');
            if ((frame.flags & FLAG_FIN) === 0) throw new SpopError(STATUS.FRAG_NOT_SUPPORTED, 'fragmented payloads are not supported');
            const actions = opts.handler(decodeMessages(frame.payload));
            const at = out.startFrame(FRAME.ACK, FLAG_FIN, frame.streamId, frame.frameId);
            for (const a of actions) out.action(a);
            out.endFrame(at);
            state.notified++;
            break;
          }
          case FRAME.HAPROXY_DISCONNECT:
            if (out.pos > 0) socket.write(out.take());
            disconnect(STATUS.NORMAL, 'bye');
            return;
          case FRAME.UNSET:
            throw new SpopError(STATUS.FRAG_NOT_SUPPORTED, 'fragmented payloads are not supported');
          default:
          // Unknown frames may be silently skipped (§3.2.2).
        }
      }
      committed = out.pos;
      if (splitter.failed !== undefined) throw splitter.failed;
      if (out.pos > 0) socket.write(out.take());
    } catch (err) {
      const e = err instanceof SpopError ? err : new SpopError(STATUS.UNKNOWN, 'agent error');
      opts.onError?.(e);
      out.pos = committed;
      disconnect(e.status, e.message);
    }
  });
}

/** The AGENT-HELLO answer to a HAPROXY-HELLO's items (§3.2.4-5), or SpopError. */
export function negotiate(kv: Map<string, TypedData>, ours: number): { kv: [string, TypedData][]; maxFrameSize: number; healthcheck: boolean } {
  const versions = kv.get('supported-versions');
  if (versions?.type !== 'string') throw new SpopError(STATUS.NO_VERSION, 'version value not found');
  // "2.0, 1.5": a major version announced means all its minor versions up to that one.
  const majors = versions.value.split(',').map((v) => v.trim()).filter((v) => /^\d+\.\d+$/.test(v)).map((v) => Number(v.split('.')[0]));
  if (!majors.includes(2)) throw new SpopError(STATUS.BAD_VERSION, 'unsupported version');
  const size = kv.get('max-frame-size');
  if (size === undefined || (size.type !== 'uint32' && size.type !== 'uint64' && size.type !== 'int32' && size.type !== 'int64')) throw new SpopError(STATUS.NO_FRAME_SIZE, 'max-frame-size value not found');
  const theirs = Number(size.value);
  if (theirs < MIN_FRAME_SIZE) throw new SpopError(STATUS.BAD_FRAME_SIZE, 'max-frame-size too small');
  const caps = kv.get('capabilities');
  if (caps?.type !== 'string') throw new SpopError(STATUS.NO_CAPABILITIES, 'capabilities value not found');
  const theirCaps = new Set(caps.value.split(',').map((c) => c.trim()));
  const common = ['pipelining'].filter((c) => theirCaps.has(c));
  const maxFrameSize = Math.min(ours, theirs);
  const hc = kv.get('healthcheck');
  return {
    kv: [['version', str(VERSION)], ['max-frame-size', uint32(maxFrameSize)], ['capabilities', str(common.join(','))]],
    maxFrameSize,
    healthcheck: hc?.type === 'bool' && hc.value,
  };
}
