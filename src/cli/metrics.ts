/**
 * `--metrics-listen HOST:PORT` of `tessera server`, `tessera agent`, `tessera keyserver` and `tessera gateway run`: the
 * flag, its parsing, and the listener started before the process's own work (a port in use fails
 * the command before an agent spends its one-time join token).
 */
import type { Command } from 'commander';
import type { Registry } from 'prom-client';
import { METRICS_LISTEN_HINT, startMetricsListener, type MetricsListener } from '../common/metrics.js';
import { TesseraError } from '../core/errors.js';
import type { Logger } from '../core/log.js';

export function metricsListenOption(cmd: Command): Command {
  return cmd.option('--metrics-listen <host:port>',
    `serve Prometheus metrics on http://HOST:PORT/metrics, e.g. ${METRICS_LISTEN_HINT} (default off). Unauthenticated: keep it on loopback or a scraper-only network`);
}

/** Starts the metrics listener when the flag was given; TESSERA_CONFIG_INVALID for a bad address. */
export async function serveMetricsFlag(value: unknown, registry: () => Registry, log: Logger, parseListen: (v: string) => { host: string; port: number }): Promise<MetricsListener | undefined> {
  if (value === undefined) return undefined;
  let listen: { host: string; port: number };
  try {
    listen = parseListen(String(value));
  } catch {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `--metrics-listen must be HOST:PORT with an explicit host, e.g. ${METRICS_LISTEN_HINT}`);
  }
  return startMetricsListener(registry(), listen, log);
}
