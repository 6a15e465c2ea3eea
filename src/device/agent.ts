/**
 * The device agent (`tessera device run`): follows the trust bundle, keeps the device certificate
 * fresh (renewed at half life) and sends a signed posture report every interval. A failed round
 * is logged and retried at the next tick; a revoked device (TESSERA_IDENTITY_REVOKED) stops it.
 */
import { isTesseraError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { PostureFacts } from '../core/devices/posture.js';
import { loadDevice, mergeFacts, refreshBundle, readPostureFile, renewalDue, renewDevice, sendPosture, type DeviceIdentity } from './device.js';
import { collectPosture } from './posture-linux.js';

export interface DeviceAgentOptions {
  dataDir: string;
  /** Between posture reports (default 5 minutes). */
  intervalMs: number;
  /** Facts from an MDM or a test, read again at every report. */
  postureFile?: string;
  log: Logger;
  /** The collector (default: this machine). */
  collect?: () => Promise<PostureFacts>;
}

export class DeviceAgent {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private identity: DeviceIdentity;
  /** Resolves when the agent stops by itself (revoked) or is stopped. */
  readonly done: Promise<void>;
  private finish!: () => void;

  constructor(private readonly opts: DeviceAgentOptions) {
    this.identity = loadDevice(opts.dataDir);
    this.done = new Promise((resolve) => { this.finish = resolve; });
  }

  start(): void {
    this.opts.log.info('device agent started', { spiffe_id: this.identity.state.spiffeId, interval_ms: this.opts.intervalMs });
    this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    this.finish();
  }

  private tick(): void {
    this.running = this.round().finally(() => {
      this.running = undefined;
      if (!this.stopped) this.timer = setTimeout(() => this.tick(), this.nextDelay());
    });
  }

  /** The interval, shortened so that renewal happens at half life even with a long interval. */
  private nextDelay(): number {
    const half = this.identity.notBefore + (this.identity.notAfter - this.identity.notBefore) / 2;
    return Math.max(1000, Math.min(this.opts.intervalMs, half - Date.now()));
  }

  private async round(): Promise<void> {
    const { log } = this.opts;
    try {
      this.identity = await refreshBundle(this.identity);
      if (renewalDue(this.identity, Date.now())) {
        this.identity = await renewDevice(this.identity);
        log.info('device certificate renewed', { serial: this.identity.serial, not_after: new Date(this.identity.notAfter).toISOString() });
      }
      const supplied = this.opts.postureFile ? readPostureFile(this.opts.postureFile) : undefined;
      const facts = mergeFacts(await (this.opts.collect ?? collectPosture)(), supplied);
      const res = await sendPosture(this.identity, facts);
      log.info('posture reported', { posture_state: res.posture.posture_state, received_at: res.received_at });
    } catch (err) {
      const code = isTesseraError(err) ? err.code : 'TESSERA_INTERNAL';
      log.error('device agent round failed', { code, error: (err as Error).message });
      if (code === 'TESSERA_IDENTITY_REVOKED') {
        log.error('this device is revoked: the agent stops');
        this.stopped = true;
        this.finish();
      }
    }
  }
}
