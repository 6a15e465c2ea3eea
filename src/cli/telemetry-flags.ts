/**
 * `--telemetry-window` / `--no-telemetry`, shared by `tessera agent` and `tessera keyserver`: both
 * ship telemetry windows to the control plane (README "Telemetry").
 */
import type { Command } from 'commander';
import { parseDuration } from '../core/duration.js';
import { TesseraError } from '../core/errors.js';

/** `--telemetry-window`: whole seconds, 1 to 3600. */
export function telemetryWindow(value: string): number {
  const ms = parseDuration(value, '--telemetry-window');
  if (ms < 1000 || ms % 1000 !== 0 || ms > 3600_000) throw new TesseraError('TESSERA_CONFIG_INVALID', '--telemetry-window must be whole seconds from 1s to 1h, e.g. 5s');
  return ms / 1000;
}

/** Adds the two flags; `what` says what is counted per window and edge. */
export function telemetryFlags(cmd: Command, what: string): Command {
  return cmd
    .option('--telemetry-window <duration>', `telemetry window: whole seconds from 1s to 1h; per window and edge ${what} are shipped to the control plane`, '5s')
    .option('--no-telemetry', 'collect and ship no telemetry');
}

/** The node option from the parsed flags: `false` or the window length. */
export function telemetryOption(o: Record<string, unknown>): false | { windowSeconds: number } {
  return o.telemetry === false ? false : { windowSeconds: telemetryWindow(String(o.telemetryWindow)) };
}
