/**
 * The key server's Prometheus metrics (`tessera keyserver --metrics-listen`): partial-decryption
 * (evaluate) requests by outcome and their latency, the policy bundle version and the SVID's
 * remaining lifetime of its own agent. Names and labels are listed in the README's "Metrics" section.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import { newRegistry } from '../common/metrics.js';
import { identityGauges } from '../agent/metrics.js';
import type { Agent } from '../agent/agent.js';
import type { PolicyEnforcer } from '../agent/enforce/policy.js';
import type { KeyAuditEvent } from './service.js';
import type { DkgSessionEvent } from './dkg.js';

const DKG_EVENTS: readonly DkgSessionEvent[] = ['started', 'finished', 'committed', 'aborted', 'expired'];

const OUTCOMES: readonly KeyAuditEvent['outcome'][] = ['allowed', 'denied', 'error'];

export class KeyServerMetrics {
  readonly registry: Registry;
  readonly #evaluations: Counter<'outcome'>;
  readonly #seconds: Histogram;
  readonly #dkg: Counter<'event'>;

  constructor(registry: Registry = newRegistry()) {
    this.registry = registry;
    this.#evaluations = new Counter({
      name: 'tessera_keyserver_evaluations_total', labelNames: ['outcome'], registers: [registry],
      help: 'Unseal (blind partial decryption) requests by outcome: allowed, denied (policy), error (rate limited, unknown share, bad input)',
    });
    for (const outcome of OUTCOMES) this.#evaluations.inc({ outcome }, 0);
    this.#seconds = new Histogram({
      name: 'tessera_keyserver_evaluation_duration_seconds', help: 'Time to answer POST /v1/evaluate, whatever the outcome', registers: [registry],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    });
    this.#dkg = new Counter({
      name: 'tessera_keyserver_dkg_sessions_total', labelNames: ['event'], registers: [registry],
      help: 'Distributed key generation sessions by event: started, finished (result computed), committed (share installed), aborted, expired (TTL)',
    });
    for (const event of DKG_EVENTS) this.#dkg.inc({ event }, 0);
  }

  /** A DKG session's lifecycle event. */
  observeDkg(event: DkgSessionEvent): void {
    this.#dkg.inc({ event });
  }

  /** The key server's audit events: evaluations are counted by outcome (provisioning is not). */
  audit(ev: KeyAuditEvent): void {
    if (ev.action === 'secret:evaluate') this.#evaluations.inc({ outcome: ev.outcome });
  }

  observeEvaluate(seconds: number): void {
    this.#seconds.observe(seconds);
  }

  /** SVID lifetime and policy bundle version of the node's agent and enforcer, read at scrape. */
  attach(agent: Agent, enforcer: PolicyEnforcer): void {
    identityGauges(this.registry, agent, () => enforcer);
  }
}
