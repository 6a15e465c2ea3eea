import type { Socket } from 'node:net';
import type { TelemetryLane } from './collector.js';

interface Metered {
  peer: string;
  socket: Socket;
  read: number;
  written: number;
}

/**
 * Bytes and ends of a proxy's authenticated connections, for telemetry: nothing is counted per
 * chunk. A connection's byte counters (the socket's own) are read when it closes and, for the
 * ones still open, when a window closes (the lane's meter), so a long-lived connection's bytes
 * land in the windows they flowed in. A close with an error (a reset) counts as an error of the
 * edge; with `timeConnections` (tcp action class) the connection's lifetime is its latency sample.
 */
export class ConnectionMeter {
  readonly #open = new Set<Metered>();
  readonly #unmeter: () => void;

  constructor(private readonly lane: TelemetryLane, private readonly timeConnections: boolean) {
    this.#unmeter = lane.meter(() => {
      for (const m of this.#open) this.#count(m);
    });
  }

  /** Meters `socket`, an authenticated connection with `peer`; `since` is performance.now() at its start. */
  track(socket: Socket, peer: string, since: number): void {
    const m: Metered = { peer, socket, read: 0, written: 0 };
    this.#open.add(m);
    socket.once('close', (hadError: boolean) => {
      this.#open.delete(m);
      const e = this.#count(m) ?? this.lane.edge(peer);
      if (hadError) e.errors++;
      if (this.timeConnections) e.latency(performance.now() - since);
    });
  }

  close(): void {
    this.#unmeter();
    this.#open.clear();
  }

  #count(m: Metered): ReturnType<TelemetryLane['edge']> | undefined {
    const r = m.socket.bytesRead;
    const w = m.socket.bytesWritten;
    if (r === m.read && w === m.written) return undefined;
    const e = this.lane.edge(m.peer);
    e.bytesIn += r - m.read;
    e.bytesOut += w - m.written;
    m.read = r;
    m.written = w;
    return e;
  }
}
