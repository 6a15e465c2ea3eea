/** Telemetry windows and decision records for the map's tests, and a generated fabric of any size. */
import type { TelemetryWindow } from '../../core/risk/types.js';
import type { AuditRecord, TelemetryRow } from '../store/store.js';

export const TD = 'spiffe://tessera.test';
export const NOW = Date.parse('2026-03-01T12:00:00.000Z');

export function window(caller: string, callee: string, reporter: 'caller' | 'callee', over: Partial<TelemetryWindow> = {}): TelemetryWindow {
  return {
    ts: new Date(NOW - 60_000).toISOString(), window_s: 5, caller, callee, caller_site: 'eu', callee_site: 'eu', reporter, action: 'http',
    requests: 10, errors: 0, denials: 0, bytes_in: 100, bytes_out: 200, latency_p50_ms: 1, latency_p99_ms: 2, paths_distinct: 1, ...over,
  };
}

export function decision(caller: string, callee: string, allow: boolean, over: Partial<AuditRecord> = {}, reasons = ['policy0']): AuditRecord {
  return {
    ts: NOW - 30_000, actor: callee, action: 'decision', target: callee, outcome: allow ? 'success' : 'denied', code: allow ? 'ALLOW' : 'DENY', principal: caller,
    detail: { enforcer: callee, principal: caller, action: 'http:request', context: { site: 'eu', method: 'GET', path: '/orders?token=abc' }, reasons }, ...over,
  };
}


export interface Fabric {
  services: string[];
  /** caller → callee, each once. */
  edges: [string, string][];
  site: (id: string) => string;
  telemetry: TelemetryRow[];
  decisions: AuditRecord[];
}

/**
 * `services` services over `sites` sites, `perService` outgoing edges each (to services further on,
 * so edges are distinct), reported by both sides (`windows` windows each, inside the last minute
 * before `now`), and two decisions per edge (one denied on every tenth edge).
 */
export function fabric(opts: { services: number; perService: number; sites: number; windows: number; now: number }): Fabric {
  const services = Array.from({ length: opts.services }, (_, i) => `${TD}/svc/s${String(i).padStart(5, '0')}`);
  const site = (id: string): string => `site-${Number(id.slice(-5)) % opts.sites}`;
  const edges: [string, string][] = [];
  services.forEach((caller, i) => {
    for (let k = 0; k < opts.perService; k++) edges.push([caller, services[(i + 1 + k * 37) % services.length]!]);
  });
  const telemetry: TelemetryRow[] = [];
  const decisions: AuditRecord[] = [];
  edges.forEach(([caller, callee], e) => {
    for (let w = 0; w < opts.windows; w++) {
      const ts = new Date(opts.now - 55_000 + w * 5000).toISOString();
      for (const reporter of ['caller', 'callee'] as const) {
        telemetry.push({
          reportedBy: reporter === 'caller' ? caller : callee, receivedAt: opts.now,
          window: window(caller, callee, reporter, { ts, caller_site: site(caller), callee_site: site(callee), requests: 10, denials: e % 10 === 0 ? 2 : 0, errors: e % 7 === 0 ? 1 : 0 }),
        });
      }
    }
    decisions.push({ ...decision(caller, callee, true), ts: opts.now - 20_000 }, { ...decision(caller, callee, e % 10 !== 0), ts: opts.now - 10_000 });
  });
  return { services, edges, site, telemetry, decisions };
}
