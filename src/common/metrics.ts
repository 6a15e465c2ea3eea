/**
 * Prometheus metrics shared by the three processes (control plane, agent, key server): one
 * prom-client Registry per process (never the global one, so that several processes' worth of
 * metrics can live in one test process), default process metrics prefixed `tessera_`, and a
 * separate plain-HTTP listener (`--metrics-listen HOST:PORT`) that answers GET /metrics only.
 *
 * The listener is unauthenticated (as Prometheus scrape targets usually are): it carries counts,
 * versions and SPIFFE IDs of callers, never a key, token or secret, and belongs on loopback or a
 * scraper-only network.
 *
 * Hot paths do not call prom-client: its labelled `inc()` builds a label hash string on every call.
 * They bump plain numbers ({@link Tally}, {@link LabelledTally}) that are copied into the metric when
 * Prometheus scrapes (`collect`), so a request costs an addition.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { listenFailure } from '../core/errors.js';
import type { Logger } from '../core/log.js';

export const METRICS_PREFIX = 'tessera_';
/** The address `--metrics-listen` suggests in help (9464: the port OpenTelemetry's Prometheus exporter uses by convention). */
export const METRICS_LISTEN_HINT = '127.0.0.1:9464';

/** A registry with the default process metrics (CPU, memory, event loop lag, GC) as `tessera_process_*`, `tessera_nodejs_*`. */
export function newRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: METRICS_PREFIX });
  return registry;
}

/** A count bumped on a hot path: `n++` and nothing else. */
export interface Tally { n: number }

/**
 * Counts per label value, copied into a prom-client Counter at scrape. `slot(value)` is called
 * once per label value (at set-up, or once per new caller) and the returned Tally is kept by the
 * caller, so the hot path is a property increment.
 */
export class LabelledTally<L extends string> {
  readonly #slots = new Map<string, { labels: Partial<Record<L, string>>; tally: Tally }>();

  constructor(registry: Registry, name: string, help: string, readonly labelNames: readonly L[]) {
    const slots = this.#slots;
    new Counter<L>({
      name, help, labelNames: [...labelNames], registers: [registry],
      collect() {
        // A counter's value is the tally's: reset, then set each series (never goes down).
        this.reset();
        for (const s of slots.values()) this.inc(s.labels, s.tally.n);
      },
    });
  }

  /** The tally of one label set (created at 0 and exported from then on). */
  slot(labels: Record<L, string>): Tally {
    const key = this.labelNames.map((l) => labels[l]).join('\u0000');
    let s = this.#slots.get(key);
    if (s === undefined) {
      s = { labels: { ...labels }, tally: { n: 0 } };
      this.#slots.set(key, s);
    }
    return s.tally;
  }
}

/** A `--metrics-listen` listener. */
export interface MetricsListener {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

/** Loopback addresses: anything else gets a warning at start (the endpoint is unauthenticated). */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * Serves `registry` on http://HOST:PORT/metrics (GET only: 405 for other methods, 404 for any
 * other path). Small limits: a scraper sends one short request, so the listener cannot be used
 * to hold many connections or slow requests open. Resolves once listening; TESSERA_ADDRESS_IN_USE
 * or TESSERA_CONFIG_INVALID when it cannot.
 *
 * @example
 * const m = await startMetricsListener(newRegistry(), { host: '127.0.0.1', port: 9464 }, log);
 */
export async function startMetricsListener(registry: Registry, listen: { host: string; port: number }, log: Logger): Promise<MetricsListener> {
  const server: Server = createServer({ requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 30_000, maxHeaderSize: 8 * 1024 }, (req, res) => {
    void serveMetrics(registry, req, res, log);
  });
  server.maxConnections = 32;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: unknown) => {
    throw listenFailure(err, 'the metrics listener', `${listen.host}:${listen.port}`);
  });
  server.on('error', (err) => log.error('metrics listener error', { error: err.message }));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : listen.port;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  const url = `http://${host}:${port}/metrics`;
  if (!isLoopback(listen.host)) log.warn('metrics listener on a non-loopback address: it is unauthenticated, keep it on a scraper-only network', { url });
  log.info('metrics listening', { url });
  return {
    port, url,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

async function serveMetrics(registry: Registry, req: IncomingMessage, res: ServerResponse, log: Logger): Promise<void> {
  const q = req.url?.indexOf('?') ?? -1;
  const path = q === -1 ? req.url : req.url!.slice(0, q);
  if (path !== '/metrics') {
    plain(res, 404, 'not found: metrics are at /metrics\n');
    return;
  }
  if (req.method !== 'GET') {
    res.setHeader('allow', 'GET');
    plain(res, 405, 'method not allowed: GET /metrics\n');
    return;
  }
  try {
    const body = await registry.metrics();
    res.writeHead(200, { 'content-type': registry.contentType, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
    res.end(body);
  } catch (err) {
    log.error('metrics collection failed', { error: (err as Error).message });
    plain(res, 500, 'metrics collection failed\n');
  }
}

function plain(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

type Labelled<L extends string> = { labels: Record<L, string>; value: number };

/**
 * A gauge read when Prometheus scrapes (`read` may be async: it runs off every hot path).
 * `read` returns the value, `undefined` for no sample (e.g. no SVID yet), or labelled samples.
 */
export function gaugeFrom<L extends string = never>(registry: Registry, name: string, help: string, read: () => number | undefined | Labelled<L>[] | Promise<number | undefined>, labelNames: readonly L[] = []): void {
  new Gauge<L>({
    name, help, labelNames: [...labelNames], registers: [registry],
    async collect() {
      this.reset();
      const v = await read();
      if (typeof v === 'number') this.set(v);
      else if (v !== undefined) for (const s of v) this.set(s.labels as Partial<Record<L, string | number>>, s.value);
    },
  });
}

/** A counter whose value is a count kept elsewhere (a stats field), copied at scrape. */
export function counterFrom<L extends string = never>(registry: Registry, name: string, help: string, read: () => number | Labelled<L>[], labelNames: readonly L[] = []): void {
  new Counter<L>({
    name, help, labelNames: [...labelNames], registers: [registry],
    collect() {
      this.reset();
      const v = read();
      if (typeof v === 'number') this.inc(v);
      else for (const s of v) this.inc(s.labels as Partial<Record<L, string | number>>, s.value);
    },
  });
}
