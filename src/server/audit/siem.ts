import { once } from 'node:events';
import { hostname } from 'node:os';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { setImmediate as yieldTurn, setTimeout as sleep } from 'node:timers/promises';
import { exportRecord, syslogMessage } from '../../core/audit-export.js';
import type { Logger } from '../../core/log.js';
import { frameOctetCounted, type SiemTarget } from '../../core/syslog.js';
import type { Store } from '../store/store.js';
import type { AuditLog } from './audit.js';

/** Meta key of the exporter's cursor: the id of the last acknowledged record (see SiemExporter). */
export const SIEM_CURSOR_META = 'siem_cursor';

export interface SiemExporterOptions {
  target: SiemTarget;
  /** PEM of the CAs that may sign the receiver's certificate (TLS); default: Node's public roots. */
  ca?: string;
  /** Client certificate chain and key (PEM), when the receiver asks for one. */
  cert?: string;
  key?: string;
  /** How long a record must have been written on a connection still up before it counts as acknowledged. */
  settleMs?: number;
  /** Records read and sent at a time (memory bound). */
  pageSize?: number;
  /** How often to look for new records once caught up. */
  pollMs?: number;
  /** Longest wait between reconnection attempts (the wait doubles from 500 ms up to it). */
  maxBackoffMs?: number;
  connectTimeoutMs?: number;
}

/** Counters for metrics and tests: records sent for the first time, sent again, connection state, cursor. */
export interface SiemStats {
  sent: number;
  resent: number;
  connected: boolean;
  cursor: number;
  connects: number;
  failures: number;
}

interface InFlight { id: number; writtenAt: number }

/**
 * Ships every audit record, in id order, to a syslog receiver as RFC 5424 messages with octet
 * counting (RFC 6587 §3.4.1) over TLS (RFC 5425) or plain TCP. The leader alone runs it.
 *
 * Delivery is at least once. Syslog over TCP has no application acknowledgement, so "acknowledged"
 * is defined here as: the record was written to the socket (the write callback fired: it left this
 * process) at least `settleMs` earlier, on a connection that has stayed up without error since. The
 * cursor (meta `siem_cursor`) advances only over such records. On any disconnect, error or restart
 * (of this exporter, the control plane or the receiver) sending resumes after the cursor, so the
 * unsettled tail is sent again; receivers dedupe on the record id (SD-PARAM `id`). A receiver that
 * vanishes without closing the connection (host crash, network cut) is noticed only when a write
 * fails: records written more than `settleMs` before that are counted as delivered.
 *
 * Memory is bounded (one page of records and the ids written within `settleMs`); the API is never
 * waited on: the exporter reads the store in pages and yields between them.
 */
export class SiemExporter {
  readonly stats: SiemStats = { sent: 0, resent: 0, connected: false, cursor: 0, connects: 0, failures: 0 };
  private readonly opts: Required<Pick<SiemExporterOptions, 'settleMs' | 'pageSize' | 'pollMs' | 'maxBackoffMs' | 'connectTimeoutMs'>> & SiemExporterOptions;
  private readonly stopping = new AbortController();
  private running: Promise<void> | undefined;
  private socket: Socket | undefined;
  /** The highest id ever written in this process: a write at or below it is a resend. */
  private highestSent = 0;
  private readonly host = { hostname: hostname(), procid: process.pid };

  constructor(private readonly store: Pick<Store, 'getMeta' | 'setMeta'>, private readonly audit: Pick<AuditLog, 'page'>, opts: SiemExporterOptions, private readonly log: Logger) {
    this.opts = { settleMs: 3000, pageSize: 200, pollMs: 250, maxBackoffMs: 30_000, connectTimeoutMs: 10_000, ...opts };
  }

  get destination(): string {
    const { transport, host, port } = this.opts.target;
    return `syslog+${transport}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  start(): void {
    this.running ??= this.run();
  }

  /** Stops sending and closes the connection; records not yet acknowledged are sent again after the next start. */
  async stop(): Promise<void> {
    this.stopping.abort();
    this.socket?.destroy();
    await this.running;
  }

  private async run(): Promise<void> {
    const signal = this.stopping.signal;
    let backoff = 500;
    while (!signal.aborted) {
      const startedAt = Date.now();
      try {
        await this.session(signal);
      } catch (err) {
        if (signal.aborted) break;
        this.stats.failures++;
        const wasConnected = this.stats.connected;
        this.stats.connected = false;
        // Connection state only: never record content.
        this.log.warn(wasConnected ? 'SIEM connection lost; resending from the cursor after reconnecting' : 'SIEM receiver unreachable; retrying',
          { destination: this.destination, error: (err as Error).message, retry_in_ms: backoff, cursor: this.stats.cursor });
      } finally {
        this.socket?.destroy();
        this.socket = undefined;
      }
      if (Date.now() - startedAt > this.opts.settleMs * 2) backoff = 500;
      await sleep(backoff, undefined, { signal }).catch(() => {});
      backoff = Math.min(backoff * 2, this.opts.maxBackoffMs);
    }
    this.stats.connected = false;
  }

  /** One connection: resend from the cursor, then follow the log until the connection fails. */
  private async session(signal: AbortSignal): Promise<void> {
    let cursor = Number((await this.store.getMeta(SIEM_CURSOR_META)) ?? '0');
    if (!Number.isSafeInteger(cursor) || cursor < 0) cursor = 0;
    this.stats.cursor = cursor;
    const sock = await this.connect(signal);
    let failure: Error | undefined;
    const failed = new Promise<never>((_, reject) => {
      const fail = (err: Error): void => { failure ??= err; reject(failure); };
      sock.on('error', fail);
      sock.on('close', () => fail(new Error('connection closed')));
      sock.on('end', () => fail(new Error('the receiver closed the connection')));
    });
    failed.catch(() => {});
    this.stats.connected = true;
    this.stats.connects++;
    this.log.info('SIEM connected', { destination: this.destination, resume_after: cursor });
    const inFlight: InFlight[] = [];
    let next = cursor;
    for (;;) {
      if (failure) throw failure;
      if (signal.aborted) return;
      const page = await this.audit.page(next, this.opts.pageSize);
      for (const { record, leafHash } of page) {
        const frame = frameOctetCounted(syslogMessage(exportRecord(record, leafHash), this.host));
        const id = record.id;
        // The callback fires once the frame has left this process (handed to the kernel), in order.
        const more = sock.write(frame, (err) => { if (!err) inFlight.push({ id, writtenAt: Date.now() }); });
        if (!more) await Promise.race([once(sock, 'drain'), failed]);
        if (id <= this.highestSent) this.stats.resent++;
        else {
          this.stats.sent++;
          this.highestSent = id;
        }
        next = id;
      }
      await this.settle(inFlight, failure);
      if (page.length === this.opts.pageSize) {
        await yieldTurn();
        continue;
      }
      await Promise.race([sleep(this.opts.pollMs, undefined, { signal }).catch(() => {}), failed]);
    }
  }

  /** Advances the stored cursor over records written `settleMs` ago or more, if the connection is still healthy. */
  private async settle(inFlight: InFlight[], failure: Error | undefined): Promise<void> {
    if (failure) throw failure;
    const limit = Date.now() - this.opts.settleMs;
    let acked = this.stats.cursor;
    while (inFlight.length > 0 && inFlight[0]!.writtenAt <= limit) acked = inFlight.shift()!.id;
    if (acked > this.stats.cursor) {
      await this.store.setMeta(SIEM_CURSOR_META, String(acked));
      this.stats.cursor = acked;
    }
  }

  private connect(signal: AbortSignal): Promise<Socket> {
    const { target, ca, cert, key, connectTimeoutMs } = this.opts;
    return new Promise((resolve, reject) => {
      const onReady = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        sock.off('error', onError);
        sock.setKeepAlive(true, 30_000);
        resolve(sock);
      };
      const sock: Socket = target.transport === 'tls'
        // The receiver's certificate must chain to --siem-ca and name the host of the URL (node's
        // default checkServerIdentity: DNS name or IP SAN), as RFC 5425 §5.2 asks.
        ? tlsConnect({
          host: target.host, port: target.port, minVersion: 'TLSv1.2',
          ...(/^[\d.]+$|:/.test(target.host) ? {} : { servername: target.host }),
          ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}),
        }, onReady)
        : tcpConnect({ host: target.host, port: target.port }, onReady);
      this.socket = sock;
      const onAbort = (): void => onError(new Error('stopping'));
      const onError = (err: Error): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        sock.destroy();
        reject(err);
      };
      const timer = setTimeout(() => onError(new Error(`no connection within ${connectTimeoutMs} ms`)), connectTimeoutMs);
      sock.once('error', onError);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }
}
