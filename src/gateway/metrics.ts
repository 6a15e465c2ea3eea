/**
 * The gateway's Prometheus metrics (`tessera gateway run --metrics-listen HOST:PORT`), besides the
 * default process metrics: requests by route and outcome, the people decision cache, request
 * latency, and session checks against the control plane. Names and labels are in the README's
 * "Gateway" section.
 *
 * Per request the server only adds to numbers (slots resolved once per route and outcome) and
 * observes the histogram; route names come from the route table (a closed set), so labels are bounded.
 */
import { Histogram, type Registry } from 'prom-client';
import { identityGauges } from '../agent/metrics.js';
import type { Agent } from '../agent/agent.js';
import type { PolicyEnforcer } from '../agent/enforce/policy.js';
import { LabelledTally, newRegistry, type Tally } from '../common/metrics.js';

/** What became of a routed request. */
export const GATEWAY_OUTCOMES = ['allowed', 'denied', 'step_up', 'unauthenticated', 'error'] as const;
export type GatewayOutcome = (typeof GATEWAY_OUTCOMES)[number];
export type SessionCheckResult = 'ok' | 'ended' | 'unavailable';

/** The hooks the HTTPS front calls (server.ts). */
export interface GatewayServerMetrics {
  request(route: string, outcome: GatewayOutcome, seconds: number): void;
  decision(cached: boolean): void;
  sessionCheck(result: SessionCheckResult): void;
}

/** From the gateway's answer to its return: 1 ms (a refusal) to 60 s (the app's timeout). */
const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class GatewayMetrics implements GatewayServerMetrics {
  readonly registry: Registry;
  readonly #requests: LabelledTally<'route' | 'outcome'>;
  readonly #slots = new Map<string, Tally>();
  readonly #cache: { hit: Tally; miss: Tally };
  readonly #checks: Record<SessionCheckResult, Tally>;
  readonly #seconds: Histogram<'outcome'>;

  constructor(registry: Registry = newRegistry()) {
    this.registry = registry;
    this.#requests = new LabelledTally(registry, 'tessera_gateway_requests_total',
      'Routed requests by route and outcome (allowed: forwarded to the app; denied: the policy refused; step_up: sent to redo MFA; unauthenticated: sent to sign in or 401; error: refused otherwise, e.g. a bad device certificate, the control plane away, the app unreachable)', ['route', 'outcome']);
    const cache = new LabelledTally(registry, 'tessera_gateway_decision_cache_total', 'People decisions (gateway:request) answered from the decision cache (hit) or by Cedar (miss)', ['result']);
    this.#cache = { hit: cache.slot({ result: 'hit' }), miss: cache.slot({ result: 'miss' }) };
    const checks = new LabelledTally(registry, 'tessera_gateway_session_checks_total',
      'Checks of gateway sessions against the control plane (ok; ended: logged out, expired or disabled; unavailable: not answered, the grace period over)', ['result']);
    this.#checks = { ok: checks.slot({ result: 'ok' }), ended: checks.slot({ result: 'ended' }), unavailable: checks.slot({ result: 'unavailable' }) };
    this.#seconds = new Histogram({
      name: 'tessera_gateway_request_duration_seconds', help: 'Routed requests: from the request\'s arrival to the last byte of the answer (the app\'s, or the gateway\'s redirect or refusal), by outcome',
      labelNames: ['outcome'], buckets: BUCKETS, registers: [registry],
    });
  }

  /** The SVID's remaining lifetime and the policy bundle version (read at scrape). */
  attach(agent: Pick<Agent, 'current'>, enforcer: () => Pick<PolicyEnforcer, 'version'> | undefined): void {
    identityGauges(this.registry, agent, enforcer);
  }

  request(route: string, outcome: GatewayOutcome, seconds: number): void {
    const key = `${route}\u0000${outcome}`;
    let t = this.#slots.get(key);
    if (t === undefined) {
      t = this.#requests.slot({ route, outcome });
      this.#slots.set(key, t);
    }
    t.n++;
    this.#seconds.observe({ outcome }, seconds);
  }

  decision(cached: boolean): void {
    (cached ? this.#cache.hit : this.#cache.miss).n++;
  }

  sessionCheck(result: SessionCheckResult): void {
    this.#checks[result].n++;
  }
}
