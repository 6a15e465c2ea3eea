/**
 * The inbound proxy's HTTP/1.1 mode, one {@link HttpConnection} per authenticated TLS
 * connection. For each request: collect only its head, parse it strictly, ask the authorizer,
 * then either answer 403 or send a rewritten head (hop-by-hop fields dropped, the caller's
 * verified SPIFFE ID in the id header) and stream the body to the app over a pooled plain TCP
 * connection, and stream the response back, parsing only its head to know where it ends.
 *
 * Nothing is buffered beyond one head and one socket chunk per connection (and a request's
 * chunked trailer section, at most 16 KiB, held until complete to strip id-header trailers): bodies flow with
 * pause/resume backpressure in both directions, and bytes of a pipelined next request wait
 * (with the caller's socket paused) until the current response is complete.
 */
import type { TLSSocket } from 'node:tls';
import { ERROR_CODES, TesseraError, type ErrorCode } from '../../core/errors.js';
import {
  ChunkedBodyTracker,
  HeadReader,
  forwardRequestHead,
  forwardResponseHead,
  responseFraming,
  type BodyFraming,
  type HeadLimits,
  type PathAllowances,
  type RequestHead,
  type ResponseHead,
} from '../../core/http-head.js';
import type { Upstream, UpstreamOwner, UpstreamPool } from './upstream-pool.js';
import type { EdgeStats } from '../telemetry/edge.js';
import type { TelemetryLane } from '../telemetry/collector.js';
import { standingCode } from './rejudge.js';

export interface AuthorizeRequest {
  /** The caller's SPIFFE ID, from its verified client certificate. */
  peer: string;
  /** The serial of the caller's certificate (uppercase hex), for the revocation list. */
  serial?: string;
  action: 'tcp:connect' | 'http:request';
  method?: string;
  /** The request path without the query (never with `.`/`..` segments or escaped unreserved characters). */
  path?: string;
}

export interface AuthorizeResult {
  allow: boolean;
  reasons?: string[];
}

/** Synchronous: the decision must not wait on the network (policy is evaluated locally). */
export type Authorize = (req: AuthorizeRequest) => AuthorizeResult;

export interface DecisionRecord extends AuthorizeRequest {
  allow: boolean;
  reasons: string[];
  /** Milliseconds since the epoch. */
  time: number;
}

/** Mutable counters shared by the proxy's connections; read through `Inbound.stats` (a copy). */
export interface InboundStats {
  /** TLS connections accepted (handshake and peer identity passed). */
  connections: number;
  /** Connections open now. */
  active: number;
  /** TLS handshakes that failed: no client certificate, untrusted, expired, not yet valid, protocol errors. */
  handshakeFailures: number;
  /** Verified certificates refused for their identity (no or several URI SANs, other trust domain, expired since). */
  identityRefused: number;
  /** HTTP requests whose head was read (tcp mode: 0). */
  requests: number;
  allowed: number;
  denied: number;
  /** Requests refused as malformed (400) or too large (431). */
  badRequests: number;
  /** Refusals before any decision (handshake, identity) counted but not passed on one by one (sampled). */
  refusalsNotRecorded: number;
  /** Heads not received in time (408). */
  timeouts: number;
  /** Application connections that failed or answered malformed responses. */
  upstreamErrors: number;
  /** Unexpected exceptions caught in a connection handler (a bug: the connection was closed). */
  internalErrors: number;
  /** Connections closed by re-judging (policy or revocation list changed; http mode: after their exchange). */
  rejudged: number;
  /** Connections closed at the caller's certificate expiry (tcp mode, or http mid-exchange / mid-head). */
  expired: number;
  /** Accepted connections that resumed a TLS session (the caller's certificate read from the session). */
  resumed: number;
}

export function newStats(): InboundStats {
  return { connections: 0, active: 0, handshakeFailures: 0, identityRefused: 0, requests: 0, allowed: 0, denied: 0, badRequests: 0, refusalsNotRecorded: 0, timeouts: 0, upstreamErrors: 0, internalErrors: 0, rejudged: 0, expired: 0, resumed: 0 };
}

export interface HttpLimits extends HeadLimits {
  headTimeoutMs: number;
  idleTimeoutMs: number;
  responseTimeoutMs: number;
  lingerMs: number;
  maxPendingDenials: number;
}

export interface HttpContext {
  pool: UpstreamPool;
  /** Lowercase. */
  idHeader: string;
  /** Request path shapes accepted beyond the strict rules (InboundOptions.allowPath). */
  allowPath: Readonly<PathAllowances>;
  limits: HttpLimits;
  authorize: Authorize;
  onDecision: ((record: DecisionRecord) => void) | undefined;
  stats: InboundStats;
  /** Coarse clock (ms), advanced by the proxy's sweep timer: cheaper than Date.now() per chunk. */
  clock: { now: number };
  /** Prometheus hooks; undefined: requests are not timed. */
  metrics: { observeRequest(seconds: number): void; refused(code: ErrorCode): void } | undefined;
  /** Telemetry of the callee's end (src/agent/telemetry); undefined: nothing is counted. */
  telemetry: TelemetryLane | undefined;
}

const enum Phase {
  Head,
  Exchange,
  Closing,
}

/** First body bytes up to this size are copied behind the head into one buffer. */
const INLINE_BODY_BYTES = 16 * 1024;

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 408: 'Request Timeout', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 502: 'Bad Gateway' };

/** A small `{"error":{code,message}}` response, the API's error shape. */
export function errorResponse(code: ErrorCode, message: string, close: boolean): Buffer {
  const status = ERROR_CODES[code].status;
  const body = JSON.stringify({ error: { code, message } });
  return Buffer.from(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${close ? 'connection: close\r\n' : ''}\r\n${body}`,
    'latin1',
  );
}

const NO_REASONS: string[] = Object.freeze([]) as unknown as string[];

/** The answer to a denied kept-alive request, built once: a denial costs no allocation. */
const DENIED_KEEP_ALIVE = errorResponse('TESSERA_PROXY_DENIED', 'denied by policy', false);

export function callAuthorize(ctx: { authorize: Authorize; onDecision: ((r: DecisionRecord) => void) | undefined; stats: InboundStats }, req: AuthorizeRequest): boolean {
  let result: AuthorizeResult;
  try {
    result = ctx.authorize(req);
  } catch {
    // Fail closed: an authorizer that cannot decide denies.
    result = { allow: false, reasons: ['authorizer error'] };
  }
  const allow = result?.allow === true;
  if (allow) ctx.stats.allowed++;
  else ctx.stats.denied++;
  const log = ctx.onDecision;
  if (log !== undefined) {
    try {
      // Fields named one by one: a spread (`{ ...req, allow }`) costs several microseconds here
      // (V8 clones the request object on a slow path), more than the cached decision itself.
      log({ peer: req.peer, serial: req.serial, action: req.action, method: req.method, path: req.path, allow, reasons: result?.reasons ?? NO_REASONS, time: Date.now() });
    } catch {
      /* a logging callback must not break the proxy */
    }
  }
  return allow;
}

export class HttpConnection implements UpstreamOwner {
  #phase = Phase.Head;
  /** Clock at the first byte of the head being read; 0 when no head is partly read. */
  #headSince = 0;
  #idleSince: number;
  #closingSince = 0;
  readonly #reader: HeadReader<'request'>;
  readonly #resReader: HeadReader<'response'>;

  // The exchange in progress.
  #req: RequestHead | undefined;
  #reqChunked = false;
  #reqLeft = 0;
  #reqDone = true;
  /** Drops the caller's id-header trailers (see ChunkedBodyTracker). */
  readonly #reqTracker: ChunkedBodyTracker;
  #up: Upstream | undefined;
  /** The forwarded head, kept until the first response byte so a dead pooled connection can be retried. */
  #fwdHead: Buffer | undefined;
  #retryable = false;
  #res: ResponseHead | undefined;
  #resFraming: BodyFraming = 'none';
  #resLeft = 0;
  #resDone = false;
  #resStarted = false;
  readonly #resTracker = new ChunkedBodyTracker();
  /** The app sent more than its response: its connection is not reused. */
  #upDirty = false;
  #closeAfter = false;
  /** When the sweep first saw this exchange waiting for the app's response head, the request sent (0: not yet). */
  #awaitingSince = 0;
  #clientEnded = false;
  /** Caller bytes after the current request (pipelining); the caller is paused while set. */
  #held: Buffer | undefined;
  #clientPausedForUp = false;
  #upPausedForClient = false;
  /** Denied answers written since reading last paused for them (bounded by maxPendingDenials). */
  #deniedBurst = 0;
  /** Reading from the caller stopped until its denied answers have gone out. */
  #waitingCaller = false;
  /** performance.now() when the current request's head was read (0: not timed). */
  #reqSince = 0;
  /** The telemetry edge of the forwarded request in progress (its latency and a 5xx go there). */
  #tEdge: EdgeStats | undefined;
  /** Its error is counted already. */
  #tFailed = false;

  constructor(
    readonly client: TLSSocket,
    readonly peer: string,
    readonly peerNotAfter: number,
    readonly ctx: HttpContext,
    /** The serial of the caller's certificate (for re-judging against the revocation list). */
    readonly serial = '',
    /**
     * Set when the caller's standing (revocation list) refused it at accept: every request on the
     * connection is answered 403 TESSERA_IDENTITY_REVOKED (the caller learns why) and it is closed.
     */
    readonly standingRefused?: string,
  ) {
    this.#idleSince = ctx.clock.now;
    const limits = { maxHeadBytes: ctx.limits.maxHeadBytes, maxHeaders: ctx.limits.maxHeaders };
    this.#reader = new HeadReader('request', limits, ctx.allowPath);
    this.#reqTracker = new ChunkedBodyTracker(ctx.idHeader);
    // Responses come from our own app: allow larger heads (cookies), same header count bound.
    this.#resReader = new HeadReader('response', { maxHeadBytes: Math.max(64 * 1024, limits.maxHeadBytes), maxHeaders: Math.max(200, limits.maxHeaders) });
    client.on('data', this.#onClientData);
    client.on('end', this.#onClientEnd);
    client.on('drain', this.#onClientDrain);
    client.on('close', this.#onClientClose);
    client.on('error', noop);
  }

  // ----------------------------------------------------------------------------------------
  // Caller side
  // ----------------------------------------------------------------------------------------

  #onClientData = (chunk: Buffer): void => {
    try {
      switch (this.#phase) {
        case Phase.Head:
          if (this.#waitingCaller) this.#hold(chunk);
          else this.#readHeads(chunk);
          break;
        case Phase.Exchange:
          if (!this.#reqDone) this.#forwardRequestBody(chunk, 0);
          else this.#hold(chunk);
          break;
        default:
        // Closing: the caller's remaining bytes are read and dropped (lingering close).
      }
    } catch (err) {
      this.#internalError(err);
    }
  };

  #onClientEnd = (): void => {
    this.#clientEnded = true;
    if (this.#phase === Phase.Exchange) this.#closeAfter = true;
    // A partial head that will never complete, or a clean end between requests.
    else if (this.#phase === Phase.Head) this.#startClosing();
  };

  #onClientDrain = (): void => {
    if (this.#waitingCaller) this.#continueAfterDenials();
    if (this.#upPausedForClient) {
      this.#upPausedForClient = false;
      this.#up?.socket.resume();
    }
  };

  #onClientClose = (): void => {
    this.#phase = Phase.Closing;
    this.#held = undefined;
    this.#dropUpstream();
  };

  #readHeads(chunk: Buffer): void {
    const ctx = this.ctx;
    let buf = chunk;
    for (;;) {
      let head: RequestHead | undefined;
      try {
        head = this.#reader.push(buf);
      } catch (err) {
        ctx.stats.badRequests++;
        const e = err instanceof TesseraError ? err : new TesseraError('TESSERA_BAD_REQUEST', 'malformed request');
        this.#refuse(e.code, e.message);
        return;
      }
      if (head === undefined) {
        // A partial head: its deadline starts now (precise time: the coarse clock could be a sweep old).
        if (this.#reader.pending > 0 && this.#headSince === 0) this.#headSince = Date.now();
        return;
      }
      this.#headSince = 0;
      ctx.stats.requests++;
      if (ctx.metrics !== undefined || ctx.telemetry !== undefined) this.#reqSince = performance.now();
      const rest = this.#reader.buffer;
      const off = this.#reader.bodyStart;
      if (ctx.clock.now >= this.peerNotAfter) {
        ctx.stats.identityRefused++;
        this.#refuse('TESSERA_PROXY_PEER_IDENTITY', 'the caller\'s certificate has expired');
        return;
      }
      const allowed = callAuthorize(ctx, { peer: this.peer, serial: this.serial, action: 'http:request', method: head.method, path: head.path });
      const tel = ctx.telemetry;
      if (tel !== undefined) {
        // One Map lookup, integer additions and a path hash (telemetry/edge.ts).
        const e = tel.edge(this.peer);
        e.requests++;
        e.path(head.path);
        if (allowed) {
          this.#tEdge = e;
          this.#tFailed = false;
        } else e.denials++;
      }
      if (this.standingRefused !== undefined) {
        // Asked anyway so that the decision is recorded with its reason (the enforcer refuses
        // unknown, revoked and quarantined principals itself); the answer does not depend on it.
        const code = standingCode(this.standingRefused);
        this.#refuse(code, code === 'TESSERA_IDENTITY_QUARANTINED' ? 'the caller is quarantined' : 'the caller is not a live workload');
        return;
      }
      if (allowed) {
        this.#startExchange(head, rest, off);
        return;
      }
      // Denied. A body we did not read would be taken for the next request: close after it.
      const hasBody = head.chunked || (head.contentLength ?? 0) > 0;
      if (hasBody || !head.keepAlive) {
        this.#refuse('TESSERA_PROXY_DENIED', 'denied by policy');
        return;
      }
      // Pipelined denials are answered without the app, so nothing else slows a caller that
      // sends them and never reads: stop reading from it while its answers wait to go out.
      const flowing = this.client.write(DENIED_KEEP_ALIVE);
      this.#idleSince = ctx.clock.now;
      const more = off < rest.length;
      if (!flowing || ++this.#deniedBurst >= ctx.limits.maxPendingDenials) {
        this.#waitForCaller(more ? rest.subarray(off) : undefined, flowing);
        return;
      }
      if (!more) return;
      buf = rest.subarray(off);
    }
  }

  /**
   * Pauses the caller after a run of denied answers, keeping its unread bytes. When write()
   * reported a full buffer, reading resumes on 'drain' (a caller that never reads stays paused
   * until the idle timeout closes it); otherwise on the next turn of the event loop, so one
   * connection's pipeline cannot hold the loop for longer than maxPendingDenials decisions.
   */
  #waitForCaller(rest: Buffer | undefined, flowing: boolean): void {
    this.#waitingCaller = true;
    if (rest !== undefined) this.#hold(rest);
    else this.client.pause();
    if (flowing) setImmediate(this.#continueAfterDenials);
  }

  #continueAfterDenials = (): void => {
    if (!this.#waitingCaller) return;
    this.#waitingCaller = false;
    this.#deniedBurst = 0;
    if (this.#phase !== Phase.Head) return;
    try {
      const held = this.#held;
      this.#held = undefined;
      if (held !== undefined) this.#readHeads(held);
      this.#resumeClient();
    } catch (err) {
      this.#internalError(err);
    }
  };

  #startExchange(head: RequestHead, buf: Buffer, off: number): void {
    const ctx = this.ctx;
    this.#phase = Phase.Exchange;
    this.#req = head;
    // A caller whose certificate ends within the margin is told to close (connection: close on the
    // response) rather than have this idle connection closed under a request it may be sending.
    this.#closeAfter = !head.keepAlive || this.#clientEnded || ctx.clock.now >= this.peerNotAfter - EXPIRING_PEER_MARGIN_MS;
    this.#res = undefined;
    this.#resDone = false;
    this.#resStarted = false;
    this.#awaitingSince = 0;
    this.#upDirty = false;
    this.#resReader.reset();
    if (head.chunked) {
      this.#reqChunked = true;
      this.#reqTracker.reset();
      this.#reqDone = false;
    } else if (head.contentLength !== undefined && head.contentLength > 0) {
      this.#reqChunked = false;
      this.#reqLeft = head.contentLength;
      this.#reqDone = false;
    } else {
      this.#reqDone = true;
    }
    this.#retryable = this.#reqDone;
    const fwd = forwardRequestHead(head, ctx.idHeader, this.peer);
    this.#fwdHead = this.#retryable ? fwd : undefined;
    const up = ctx.pool.acquire(this);
    this.#up = up;
    // The head and the body bytes that came with it leave in one write.
    up.socket.cork();
    const flowing = up.socket.write(fwd);
    if (off < buf.length) {
      if (!this.#reqDone) this.#forwardRequestBody(buf, off);
      else this.#hold(buf.subarray(off));
    } else if (!flowing && !this.#reqDone) {
      this.#pauseClientForUp();
    }
    up.socket.uncork();
  }

  #forwardRequestBody(buf: Buffer, off: number): void {
    const len = buf.length;
    let end: number;
    // Bytes to pass on as they are: all of [off, end) but a held trailer section.
    let pass: number;
    if (this.#reqChunked) {
      let e: number;
      try {
        e = this.#reqTracker.feed(buf, off, len);
      } catch (err) {
        this.ctx.stats.badRequests++;
        // The head is already with the app: that connection cannot be reused.
        this.#dropUpstream();
        if (this.#res === undefined) this.#refuse('TESSERA_BAD_REQUEST', err instanceof TesseraError ? err.message : 'malformed chunked body');
        else this.client.destroy();
        return;
      }
      end = e === -1 ? len : e;
      pass = this.#reqTracker.passEnd;
      if (e !== -1) this.#reqDone = true;
    } else {
      const n = Math.min(this.#reqLeft, len - off);
      end = off + n;
      pass = end;
      this.#reqLeft -= n;
      if (this.#reqLeft === 0) this.#reqDone = true;
    }
    const up = this.#up;
    if (up !== undefined && pass > off) {
      if (!up.socket.write(off === 0 && pass === len ? buf : buf.subarray(off, pass)) && !this.#reqDone) this.#pauseClientForUp();
    }
    if (this.#reqDone) {
      const trailers = this.#reqChunked ? this.#reqTracker.takeTrailers() : undefined;
      if (trailers !== undefined) up?.socket.write(trailers);
      if (end < len) this.#hold(buf.subarray(end));
      if (this.#resDone) this.#finishExchange();
    }
  }

  #pauseClientForUp(): void {
    this.#clientPausedForUp = true;
    this.client.pause();
  }

  #hold(bytes: Buffer): void {
    this.#held = this.#held === undefined ? bytes : Buffer.concat([this.#held, bytes]);
    this.client.pause();
  }

  #resumeClient(): void {
    if (!this.#clientPausedForUp && !this.#waitingCaller && this.#held === undefined && this.#phase !== Phase.Closing) this.client.resume();
  }

  // ----------------------------------------------------------------------------------------
  // Application side
  // ----------------------------------------------------------------------------------------

  onUpstreamDrain(): void {
    if (this.#clientPausedForUp) {
      this.#clientPausedForUp = false;
      this.#resumeClient();
    }
  }

  onUpstreamData(chunk: Buffer): void {
    try {
      if (this.#phase !== Phase.Exchange || this.#resDone) {
        this.#upDirty = true;
        this.#dropUpstream();
        return;
      }
      this.#resStarted = true;
      this.#fwdHead = undefined;
      // Everything written to the caller for this chunk (typically the rewritten head and the
      // body) leaves as one write: one TLS record and one syscall instead of one per piece,
      // which halves the work of both proxies for small responses.
      const client = this.client;
      client.cork();
      try {
        if (this.#res === undefined) this.#readResponseHead(chunk);
        else this.#forwardResponseBody(chunk, 0);
      } finally {
        client.uncork();
      }
    } catch (err) {
      this.#internalError(err);
    }
  }

  onUpstreamEnd(): void {
    if (this.#phase !== Phase.Exchange || this.#up === undefined) return;
    if (this.#res !== undefined && this.#resFraming === 'close' && !this.#resDone) {
      this.#upDirty = true;
      this.#resDone = true;
      this.#finishExchange();
      return;
    }
    if (!this.#resDone) this.#upstreamFailed('the application closed the connection before answering');
  }

  onUpstreamError(_err: Error): void {
    if (this.#phase !== Phase.Exchange || this.#resDone) return;
    this.#upstreamFailed('the application could not be reached');
  }

  #readResponseHead(chunk: Buffer): void {
    const req = this.#req!;
    let buf = chunk;
    for (;;) {
      let head: ResponseHead | undefined;
      try {
        head = this.#resReader.push(buf);
      } catch {
        this.#upstreamFailed('the application sent a malformed response head');
        return;
      }
      if (head === undefined) return;
      const rbuf = this.#resReader.buffer;
      const off = this.#resReader.bodyStart;
      if (head.status < 200) {
        if (head.status === 101) {
          this.#upstreamFailed('the application switched protocols, which the proxy does not support');
          return;
        }
        // Interim responses (100 Continue, 103 Early Hints) go to HTTP/1.1 callers only (RFC 9110 §15.2).
        if (req.version === 'HTTP/1.1') this.client.write(forwardResponseHead(head, false, 'HTTP/1.1'));
        this.#resReader.reset();
        if (off >= rbuf.length) return;
        buf = rbuf.subarray(off);
        continue;
      }
      this.#res = head;
      if (head.status >= 500) this.#telemetryError();
      const framing = responseFraming(head, req.method);
      this.#resFraming = framing;
      if (framing === 'close') this.#closeAfter = true;
      if (!head.keepAlive) this.#upDirty = true;
      if (framing === 'length') this.#resLeft = head.contentLength!;
      else if (framing === 'chunked') this.#resTracker.reset();
      let end = off;
      if (framing === 'none') this.#resDone = true;
      else if (off < rbuf.length) {
        end = this.#advanceResponse(rbuf, off);
        if (end < 0) return;
      }
      // Small first body pieces travel with the head in one buffer; big ones are written after it
      // (the caller's socket is corked, so they still leave in one write).
      const inline = end - off <= INLINE_BODY_BYTES;
      let flowing = this.client.write(forwardResponseHead(head, this.#closeAfter, req.version, inline && end > off ? rbuf.subarray(off, end) : undefined));
      if (!inline) flowing = this.client.write(rbuf.subarray(off, end));
      if (!flowing) this.#pauseUpForClient();
      this.#afterResponseBytes(end, rbuf.length);
      return;
    }
  }

  /**
   * Accounts for the response body bytes in buf[off, ...): returns where this response's bytes
   * end in `buf` (and marks the response done when they end), or -1 after failing the exchange.
   */
  #advanceResponse(buf: Buffer, off: number): number {
    const len = buf.length;
    switch (this.#resFraming) {
      case 'length': {
        const n = Math.min(this.#resLeft, len - off);
        this.#resLeft -= n;
        if (this.#resLeft === 0) this.#resDone = true;
        return off + n;
      }
      case 'chunked': {
        let e: number;
        try {
          e = this.#resTracker.feed(buf, off, len);
        } catch {
          this.ctx.stats.upstreamErrors++;
          this.#dropUpstream();
          this.client.destroy();
          return -1;
        }
        if (e === -1) return len;
        this.#resDone = true;
        return e;
      }
      default:
        return len;
    }
  }

  /** After bytes up to `end` of a chunk of length `len` were forwarded. */
  #afterResponseBytes(end: number, len: number): void {
    if (!this.#resDone) return;
    if (end < len) this.#upDirty = true;
    this.#finishExchange();
  }

  #forwardResponseBody(buf: Buffer, off: number): void {
    const len = buf.length;
    const end = this.#advanceResponse(buf, off);
    if (end < 0) return;
    if (end > off && !this.client.write(off === 0 && end === len ? buf : buf.subarray(off, end))) this.#pauseUpForClient();
    this.#afterResponseBytes(end, len);
  }

  #pauseUpForClient(): void {
    const up = this.#up;
    if (up === undefined) return;
    this.#upPausedForClient = true;
    up.socket.pause();
  }

  #finishExchange(): void {
    const ctx = this.ctx;
    if (this.#reqSince !== 0) {
      const ms = performance.now() - this.#reqSince;
      ctx.metrics?.observeRequest(ms / 1000);
      const te = this.#tEdge;
      if (te !== undefined) ctx.telemetry!.current(te).latency(ms);
      this.#reqSince = 0;
    }
    this.#tEdge = undefined;
    const up = this.#up;
    this.#up = undefined;
    if (this.#upPausedForClient) {
      this.#upPausedForClient = false;
      up?.socket.resume();
    }
    if (!this.#reqDone) {
      // The app answered before it had the whole request body: neither connection can carry
      // another exchange with certainty about where this one ended.
      if (up !== undefined) ctx.pool.release(up, ctx.clock.now, false);
      this.#startClosing();
      return;
    }
    if (up !== undefined) ctx.pool.release(up, ctx.clock.now, !this.#upDirty);
    this.#req = undefined;
    this.#res = undefined;
    if (this.#closeAfter || this.#clientEnded) {
      this.#startClosing();
      return;
    }
    this.#phase = Phase.Head;
    this.#idleSince = ctx.clock.now;
    const held = this.#held;
    if (held !== undefined) {
      this.#held = undefined;
      this.#readHeads(held);
    }
    this.#resumeClient();
  }

  #upstreamFailed(reason: string): void {
    const ctx = this.ctx;
    const up = this.#up;
    this.#dropUpstream();
    // A pooled connection the app closed while idle: send the (bodiless) request again, once,
    // on a new connection. Nothing of it can have been processed: no byte came back.
    if (!this.#resStarted && this.#fwdHead !== undefined && up?.reused === true && this.#retryable) {
      this.#retryable = false;
      const fresh = ctx.pool.acquire(this, true);
      this.#up = fresh;
      fresh.socket.write(this.#fwdHead);
      return;
    }
    ctx.stats.upstreamErrors++;
    this.#fwdHead = undefined;
    if (this.#res === undefined) this.#refuse('TESSERA_PROXY_UPSTREAM', reason);
    else {
      this.#telemetryError();
      this.client.destroy();
    }
  }

  /** The forwarded request in progress ended in a 5xx or an abort: one error on its telemetry edge (once). */
  #telemetryError(): void {
    const te = this.#tEdge;
    if (te === undefined || this.#tFailed) return;
    this.#tFailed = true;
    this.ctx.telemetry!.current(te).errors++;
  }

  /** Closes the app connection of the current exchange without reusing it. */
  #dropUpstream(): void {
    const up = this.#up;
    if (up === undefined) return;
    this.#up = undefined;
    up.owner = undefined;
    up.broken = true;
    up.socket.destroy();
  }

  // ----------------------------------------------------------------------------------------
  // Ending
  // ----------------------------------------------------------------------------------------

  /** Answers with an error and closes (after the caller has had time to read it). */
  #refuse(code: ErrorCode, message: string): void {
    if (this.#phase === Phase.Closing) return;
    if (code !== 'TESSERA_PROXY_DENIED') this.ctx.metrics?.refused(code);
    if (ERROR_CODES[code].status >= 500) this.#telemetryError();
    this.client.write(errorResponse(code, message, true));
    this.#startClosing();
  }

  /**
   * Ends our side and keeps reading (and dropping) what the caller still sends for a while, so
   * that a response is not destroyed by a reset before the caller read it (lingering close).
   */
  #startClosing(): void {
    this.#phase = Phase.Closing;
    this.#closingSince = this.ctx.clock.now;
    this.#held = undefined;
    this.#dropUpstream();
    this.client.end();
    this.client.resume();
  }

  #internalError(_err: unknown): void {
    this.ctx.stats.internalErrors++;
    this.#dropUpstream();
    this.client.destroy();
  }

  /** Re-judging looks at the caller's standing only: requests are decided one by one. */
  get action(): 'http:request' {
    return 'http:request';
  }

  /**
   * The caller is no longer acceptable (revoked, unknown): an idle connection closes now, one in
   * an exchange after that exchange's response (its pipelined requests are dropped unread).
   */
  retire(): void {
    if (this.#phase === Phase.Exchange) this.#closeAfter = true;
    else if (this.#phase === Phase.Head) {
      if (this.#headSince !== 0) this.#refuse('TESSERA_PROXY_PEER_IDENTITY', 'the caller is no longer accepted');
      else this.#startClosing();
    }
  }

  /** Called by the proxy's sweep timer with the current time. */
  tick(now: number): void {
    const limits = this.ctx.limits;
    if (now >= this.peerNotAfter && this.#phase !== Phase.Closing) {
      // The caller's certificate has expired: no byte more either way, even mid-exchange (a long
      // upload or stream). Its client connects again with its renewed SVID.
      this.ctx.stats.expired++;
      if (this.#phase === Phase.Head && this.#headSince === 0) {
        // Idle (normally closed already, EXPIRING_PEER_MARGIN_MS before): no unsolicited answer.
        this.#startClosing();
      } else if (this.#res === undefined) {
        this.#dropUpstream();
        this.#refuse('TESSERA_PROXY_PEER_IDENTITY', 'the caller\'s certificate has expired');
      } else {
        this.destroy();
      }
      return;
    }
    switch (this.#phase) {
      case Phase.Head:
        if (this.#headSince !== 0) {
          if (now - this.#headSince > limits.headTimeoutMs) {
            this.ctx.stats.timeouts++;
            this.#refuse('TESSERA_REQUEST_TIMEOUT', 'the request head was not received in time');
          }
        } else if (now - this.#idleSince > limits.idleTimeoutMs || now >= this.peerNotAfter - EXPIRING_PEER_MARGIN_MS) {
          // Idle, and either idle too long or the caller's certificate is about to expire: a request
          // sent on this connection after its expiry would be refused, so close it while idle and the
          // caller's next request opens a connection with its renewed SVID (the sidecar's outbound
          // proxy passes the close on to the app's keep-alive pool).
          this.#startClosing();
        }
        break;
      case Phase.Exchange:
        // Waiting for the app's response head after the whole request went to it (sweep precision).
        if (this.#res === undefined && this.#reqDone && !this.#resStarted) {
          if (this.#awaitingSince === 0) this.#awaitingSince = now;
          else if (now - this.#awaitingSince > limits.responseTimeoutMs) {
            this.ctx.stats.timeouts++;
            this.#dropUpstream();
            this.#refuse('TESSERA_PROXY_UPSTREAM_TIMEOUT', 'the application did not answer in time');
          }
        }
        break;
      case Phase.Closing:
        if (now - this.#closingSince > limits.lingerMs) this.client.destroy();
        break;
      default:
    }
  }

  /** Closes at once (proxy shutdown). */
  destroy(): void {
    this.#dropUpstream();
    this.client.destroy();
  }
}

function noop(): void {}

/** Idle connections are closed this long before the caller's certificate expires. */
export const EXPIRING_PEER_MARGIN_MS = 3000;
