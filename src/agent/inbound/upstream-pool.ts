/**
 * Kept-alive plain TCP connections from the inbound proxy to the local application. Each
 * connection has its listeners attached once, when it is made, and hands its events to whoever
 * owns it at the moment (the caller connection whose request it carries), so a request costs
 * no closure and no listener churn.
 */
import { connect, type Socket } from 'node:net';

/** What an upstream connection reports to its current owner. */
export interface UpstreamOwner {
  onUpstreamData(chunk: Buffer): void;
  onUpstreamEnd(): void;
  onUpstreamError(err: Error): void;
  onUpstreamDrain(): void;
}

export class Upstream {
  owner: UpstreamOwner | undefined;
  /** True once it has carried a request: it may have been closed by the app meanwhile. */
  reused = false;
  idleSince = 0;
  /** The app sent FIN or the socket failed: never pool it again. */
  broken = false;

  constructor(readonly socket: Socket) {
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    socket.on('drain', this.#onDrain);
  }

  #onData = (chunk: Buffer): void => {
    const o = this.owner;
    if (o === undefined) {
      // Bytes from the app while no request is outstanding: the connection's framing is lost.
      this.broken = true;
      this.socket.destroy();
      return;
    }
    o.onUpstreamData(chunk);
  };

  #onEnd = (): void => {
    this.broken = true;
    const o = this.owner;
    if (o === undefined) this.socket.destroy();
    else o.onUpstreamEnd();
  };

  #onError = (err: Error): void => {
    this.broken = true;
    const o = this.owner;
    this.owner = undefined;
    o?.onUpstreamError(err);
  };

  #onClose = (): void => {
    this.broken = true;
    const o = this.owner;
    this.owner = undefined;
    // A close without 'end' or 'error' (destroyed by us) needs no report; one after 'end' with
    // the response still incomplete was reported by onUpstreamEnd.
    if (o !== undefined) o.onUpstreamError(new Error('upstream connection closed'));
  };

  #onDrain = (): void => {
    this.owner?.onUpstreamDrain();
  };
}

export interface UpstreamPoolOptions {
  host: string;
  port: number;
  /** Idle connections kept (default 64). */
  maxIdle: number;
  /**
   * An idle connection is closed after this long (default 4 s: below Node's http server
   * keepAliveTimeout of 5 s, so the proxy closes first and rarely picks a connection the app is
   * closing).
   */
  idleTimeoutMs: number;
}

export class UpstreamPool {
  readonly #idle: Upstream[] = [];
  #created = 0;
  #closed = false;

  constructor(readonly opts: UpstreamPoolOptions) {}

  get idle(): number {
    return this.#idle.length;
  }

  get created(): number {
    return this.#created;
  }

  /** A connection for `owner`: the most recently used idle one, or a new one (connecting). */
  acquire(owner: UpstreamOwner, fresh = false): Upstream {
    const idle = this.#idle;
    if (!fresh) {
      while (idle.length > 0) {
        const up = idle.pop()!;
        if (up.broken || up.socket.destroyed) continue;
        up.owner = owner;
        up.reused = true;
        return up;
      }
    }
    this.#created++;
    const up = new Upstream(connect({ host: this.opts.host, port: this.opts.port, noDelay: true, allowHalfOpen: true }));
    up.owner = owner;
    return up;
  }

  /** Gives a connection back after a complete exchange, or closes it if it cannot be reused. */
  release(up: Upstream, now: number, reusable: boolean): void {
    up.owner = undefined;
    if (!reusable || this.#closed || up.broken || up.socket.destroyed || this.#idle.length >= this.opts.maxIdle) {
      up.broken = true;
      up.socket.destroy();
      return;
    }
    up.idleSince = now;
    // A connection whose app paused it for backpressure must flow again to notice a FIN.
    up.socket.resume();
    this.#idle.push(up);
  }

  /** Closes connections idle for longer than the timeout. */
  sweep(now: number): void {
    const idle = this.#idle;
    if (idle.length === 0) return;
    let keep = 0;
    for (let i = 0; i < idle.length; i++) {
      const up = idle[i]!;
      if (up.broken || up.socket.destroyed) continue;
      if (now - up.idleSince > this.opts.idleTimeoutMs) {
        up.broken = true;
        up.socket.destroy();
        continue;
      }
      idle[keep++] = up;
    }
    idle.length = keep;
  }

  close(): void {
    this.#closed = true;
    for (const up of this.#idle) up.socket.destroy();
    this.#idle.length = 0;
  }
}
