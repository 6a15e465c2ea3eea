/**
 * The risk engine inside the control plane (issue 11): the leader feeds it every telemetry window the
 * control plane stored (from any process on the store, in id order), lets its clock run on the wall
 * clock, and applies the state changes it proposes through RiskService (audited, pushed in the signed
 * bundle). People's actions flow back: an admin's release, quarantine or a TTL that ended resets the
 * engine's view of that identity, so it does not re-judge old windows into a new quarantine.
 *
 * At start the engine rebuilds its baselines from the stored windows (the telemetry retention: at
 * most 200,000 windows or 7 days) without acting on them: what it would have decided then is history.
 * Its view of each identity is then aligned with the states in force (a person's release or
 * quarantine, a TTL that ended), so replayed windows do not leave it believing otherwise.
 *
 * With a RiskConfigService, the settings are the admin's stored version in force: each step checks the
 * version number (one meta read) and, when it changed (set or rolled back from any process), builds a
 * new engine with the new settings and rebuilds it the same way. Nothing else of the old engine is kept:
 * baselines learned under other settings (a window length, a learning period) would not be the same.
 */
import { DEFAULT_RISK_CONFIG, type RiskConfig } from '../../core/risk/config.js';
import { RiskEngine } from '../../core/risk/engine.js';
import type { RiskChange } from '../../core/risk/types.js';
import type { Logger } from '../../core/log.js';
import type { Store } from '../store/store.js';
import type { RiskService } from './service.js';
import type { RiskConfigService } from './config-service.js';

const PAGE = 5_000;

/** The engine's settings in the control plane: shipped windows arrive up to one flush late, so two windows of grace. */
export const CONTROL_PLANE_RISK_CONFIG: Readonly<RiskConfig> = Object.freeze({ ...DEFAULT_RISK_CONFIG, graceWindows: 2 });

export class RiskEngineLink {
  #engine: RiskEngine;
  #cursor = 0;
  /** The stored configuration version the engine runs on (0: the default); undefined without a config service. */
  #configVersion: number | undefined;
  #running: Promise<void> | undefined;
  /** Stored windows the engine refused (e.g. another window length), counted, never fatal. */
  refused = 0;
  /** Engine changes applied, and refused by the service's rules (a quarantine only a person or its TTL ends). */
  applied = 0;
  notApplied = 0;

  /** `config`: the settings when there is no config service (else the service's version in force). */
  constructor(private readonly deps: { store: Store; risk: RiskService; log: Logger; now?: () => number; config?: RiskConfigService }, config: RiskConfig = CONTROL_PLANE_RISK_CONFIG) {
    this.#engine = new RiskEngine(config);
    deps.risk.onChange((rec, previous) => {
      if (rec.setBy === 'engine') return;
      if (rec.state === 'quarantined') this.engine.quarantine(rec.spiffeId, rec.since, rec.until ?? rec.since);
      else if (rec.state === 'normal' && previous !== 'normal') this.engine.release(rec.spiffeId, rec.since);
    });
  }

  get engine(): RiskEngine {
    return this.#engine;
  }

  /** The stored risk configuration version in force in the engine (0: the default). */
  get configVersion(): number | undefined {
    return this.#configVersion;
  }

  /** Loads the configuration in force (if there is a config service), then rebuilds the baselines from the stored windows without applying anything. */
  async init(): Promise<void> {
    if (this.deps.config) {
      const v = await this.deps.config.current();
      this.#engine = new RiskEngine(this.deps.config.settings(v));
      this.#configVersion = v.version;
    }
    this.#cursor = 0;
    for (;;) {
      const rows = await this.deps.store.listTelemetry({ after: this.#cursor, limit: PAGE });
      for (const r of rows) this.#ingest(r.window);
      if (rows.length > 0) this.#cursor = rows[rows.length - 1]!.id;
      if (rows.length < PAGE) break;
    }
    const now = (this.deps.now ?? Date.now)();
    this.#engine.tick(now);
    await this.#align(now);
  }

  /** Makes the engine's view agree with the states in force: what a replay decided was never applied. */
  async #align(now: number): Promise<void> {
    const inForce = new Map((await this.deps.risk.list()).map((r) => [r.spiffeId, r]));
    for (const s of this.#engine.list()) {
      const rec = inForce.get(s.identity);
      const held = rec?.state ?? 'normal';
      if (s.state !== 'normal' && s.state !== held && held !== 'quarantined') this.#engine.release(s.identity, now);
    }
    for (const rec of inForce.values()) {
      if (rec.state === 'quarantined') this.#engine.quarantine(rec.spiffeId, rec.since, rec.until ?? rec.since);
    }
  }

  /** One step of the leader's tick: new windows in, the clock forward, the changes applied. One at a time. */
  step(): Promise<void> {
    this.#running ??= this.#step().finally(() => { this.#running = undefined; });
    return this.#running;
  }

  async #step(): Promise<void> {
    if (this.deps.config && (await this.deps.config.currentVersion()) !== this.#configVersion) {
      await this.init();
      this.deps.log.info('risk engine restarted with a new configuration', { version: this.#configVersion });
    }
    const changes: RiskChange[] = [];
    for (;;) {
      const rows = await this.deps.store.listTelemetry({ after: this.#cursor, limit: PAGE });
      for (const r of rows) changes.push(...this.#ingest(r.window));
      if (rows.length > 0) this.#cursor = rows[rows.length - 1]!.id;
      if (rows.length < PAGE) break;
    }
    changes.push(...this.#engine.tick((this.deps.now ?? Date.now)()));
    for (const c of changes) {
      const res = await this.deps.risk.apply(c, { setBy: 'engine' });
      if (res.applied) {
        this.applied++;
        if (c.state !== c.previous) this.deps.log.warn('risk engine changed a state', { identity: c.identity, state: c.state, previous: c.previous, score: c.score, reasons: c.reasons.map((r) => r.text) });
      } else {
        this.notApplied++;
      }
    }
  }

  #ingest(w: Parameters<RiskEngine['ingest']>[0]): RiskChange[] {
    try {
      return this.#engine.ingest(w);
    } catch {
      this.refused++;
      return [];
    }
  }
}
