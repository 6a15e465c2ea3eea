/**
 * The agent's Prometheus metrics (`tessera agent --metrics-listen`): the sidecar's inbound proxy
 * (request and connection durations, decisions by outcome and by caller→callee edge, bytes, open
 * connections, refusals by code), the policy bundle in force, the SVID's remaining lifetime,
 * renewals, dropped decision records and witness alarms. Names and labels are listed in the
 * README's "Metrics" section.
 *
 * Per request the proxy only adds to numbers and observes a histogram: label values are resolved
 * once per caller (a Map lookup by the caller's SPIFFE ID), never built per request.
 */
import { Histogram, type Registry } from 'prom-client';
import { counterFrom, gaugeFrom, LabelledTally, newRegistry, type Tally } from '../common/metrics.js';
import type { Agent } from './agent.js';
import type { DecisionLog } from './enforce/decision-log.js';
import type { PolicyEnforcer } from './enforce/policy.js';
import type { InboundMetrics } from './inbound/inbound.js';
import type { Sidecar } from './sidecar.js';

/** Distinct caller→callee edges labelled one by one per process; decisions of further callers count under `caller="other"`. */
export const DEFAULT_MAX_EDGES = 200;
export const OTHER_EDGE = 'other';

/** Request and connection durations: 0.5 ms (a denial) to 60 s (the proxy's response timeout). */
const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const CONNECTION_BUCKETS = [0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600];

interface Edge { allow: Tally; deny: Tally }

/** What a workload's proxies report to (a sidecar's AgentMetrics, or one workload's view of a node agent's). */
export type ProxyMetrics = Pick<AgentMetrics, 'decision' | 'inbound' | 'outboundRefused'>;

/** The proxies whose byte counts and open connections are read at scrape. */
type ProxySet = Pick<Sidecar, 'inbound' | 'outbounds'>;

/**
 * The SVID's remaining lifetime and the policy bundle version, read at scrape: shared by the
 * agent and the key server (which runs an agent and an enforcer for its own identity).
 */
export function identityGauges(registry: Registry, agent: Pick<Agent, 'current'>, enforcer: () => Pick<PolicyEnforcer, 'version'> | undefined): void {
  gaugeFrom(registry, 'tessera_svid_time_to_expiry_seconds', 'Seconds until this process\'s X.509-SVID expires (negative once expired; absent before it has one)', () => {
    const cur = agent.current();
    return cur === undefined ? undefined : (cur.notAfter.getTime() - Date.now()) / 1000;
  });
  gaugeFrom(registry, 'tessera_policy_bundle_version', 'Version of the signed policy bundle in force (0: none yet, everything denied)', () => enforcer()?.version ?? 0);
}

export class AgentMetrics {
  readonly registry: Registry;
  readonly #maxEdges: number;
  #self = '';
  readonly #edges = new Map<string, Edge>();
  /** Edges labelled so far, all workloads together (bounded by maxEdges). */
  #edgeCount = 0;
  readonly #edgeTally: LabelledTally<'caller' | 'callee' | 'outcome'>;
  readonly #outcome: Edge;
  #other: Edge | undefined;
  readonly #refusals: LabelledTally<'direction' | 'code'>;
  readonly #refusalSlots = { inbound: new Map<string, Tally>(), outbound: new Map<string, Tally>() };
  readonly #witnessAlarms: Tally;
  readonly #renewals: { success: Tally; failure: Tally };
  #proxies: () => readonly ProxySet[] = () => [];
  #enforcer: Pick<PolicyEnforcer, 'version'> | undefined;
  #dropped: () => number = () => 0;
  /** The inbound proxy's hooks (InboundOptions.metrics). */
  readonly inbound: InboundMetrics;

  constructor(opts: { maxEdges?: number; registry?: Registry } = {}) {
    const registry = opts.registry ?? newRegistry();
    this.registry = registry;
    this.#maxEdges = opts.maxEdges ?? DEFAULT_MAX_EDGES;
    const decisions = new LabelledTally(registry, 'tessera_sidecar_decisions_total', 'Policy decisions of the inbound proxy (http: per request, tcp: per connection), by outcome', ['outcome']);
    this.#outcome = { allow: decisions.slot({ outcome: 'allow' }), deny: decisions.slot({ outcome: 'deny' }) };
    this.#edgeTally = new LabelledTally(registry, 'tessera_sidecar_edge_decisions_total',
      `Policy decisions by caller→callee edge and outcome; at most ${this.#maxEdges} edges per process, later callers under caller="${OTHER_EDGE}",callee="${OTHER_EDGE}"`, ['caller', 'callee', 'outcome']);
    this.#refusals = new LabelledTally(registry, 'tessera_sidecar_refusals_total',
      'Connections and requests refused with an error code other than a policy denial (handshake failures, refused identities, malformed or oversized requests, timeouts, app unreachable), by direction and code', ['direction', 'code']);
    const alarms = new LabelledTally(registry, 'tessera_audit_witness_alarms_total', 'Audit log checkpoints this agent refused as a witness (fork, rollback, other log key)', []);
    this.#witnessAlarms = alarms.slot({});
    const renewals = new LabelledTally(registry, 'tessera_agent_svid_renewals_total', 'X.509-SVID renewal attempts with the control plane, by outcome', ['outcome']);
    this.#renewals = { success: renewals.slot({ outcome: 'success' }), failure: renewals.slot({ outcome: 'failure' }) };
    const requestSeconds = new Histogram({
      name: 'tessera_sidecar_request_duration_seconds', help: 'http mode: time from a request head\'s arrival to the last byte of the app\'s response, for requests forwarded to the app',
      buckets: REQUEST_BUCKETS, registers: [registry],
    });
    const connectionSeconds = new Histogram({
      name: 'tessera_sidecar_tcp_connection_duration_seconds', help: 'tcp mode: lifetime of each accepted caller connection',
      buckets: CONNECTION_BUCKETS, registers: [registry],
    });
    const refused = this.#refusalSlots.inbound;
    this.inbound = {
      observeRequest: (s) => requestSeconds.observe(s),
      observeConnection: (s) => connectionSeconds.observe(s),
      refused: (code) => this.#refusal(refused, 'inbound', code).n++,
    };
    const bytes = (k: 'received' | 'sent'): number => {
      let n = 0;
      for (const p of this.#proxies()) n += p.inbound?.bytes()[k] ?? 0;
      return n;
    };
    counterFrom(registry, 'tessera_sidecar_received_bytes_total', 'Bytes received from callers on inbound connections (TLS records included)', () => bytes('received'));
    counterFrom(registry, 'tessera_sidecar_sent_bytes_total', 'Bytes sent to callers on inbound connections (TLS records included)', () => bytes('sent'));
    gaugeFrom(registry, 'tessera_sidecar_open_connections', 'Proxied connections open now, by direction', () => {
      const all = this.#proxies();
      if (all.length === 0) return undefined;
      let inbound = 0;
      let outbound = 0;
      for (const p of all) {
        inbound += p.inbound?.stats.active ?? 0;
        for (const o of p.outbounds) outbound += o.stats.active;
      }
      return [{ labels: { direction: 'inbound' }, value: inbound }, { labels: { direction: 'outbound' }, value: outbound }];
    }, ['direction']);
    counterFrom(registry, 'tessera_sidecar_decision_records_dropped_total', 'Decision records dropped because the buffer waiting to be shipped to the control plane was full (--decision-buffer)',
      () => this.#dropped());
  }

  /** Once the agent has its identity (before the sidecar starts): the edges' callee, the SVID gauges, renewals. */
  attachAgent(agent: Agent): void {
    this.#self = agent.spiffeId ?? '';
    identityGauges(this.registry, agent, () => this.#enforcer);
    this.#countRenewals(agent);
  }

  /** Once the sidecar runs: its proxies' and enforcer's counts are read at scrape. */
  attachSidecar(sidecar: Sidecar): void {
    this.#proxies = () => [sidecar];
    this.#enforcer = sidecar.enforcer;
    this.#dropped = () => sidecar.enforcer.decisions.dropped;
  }

  /**
   * A node agent's (`tessera agent --node`): the SVID gauge shows the workload SVID that expires
   * first, renewals of every workload are counted, bytes and open connections summed over every
   * workload's proxies. Each workload's proxies report through {@link forWorkload}.
   */
  attachNode(node: { agents: readonly Agent[]; proxies: () => readonly ProxySet[]; enforcer: PolicyEnforcer; decisionLogs: readonly Pick<DecisionLog, 'dropped'>[] }): void {
    const soonest = {
      current: () => {
        let first: ReturnType<Agent['current']>;
        for (const a of node.agents) {
          const c = a.current();
          if (c !== undefined && (first === undefined || c.notAfter < first.notAfter)) first = c;
        }
        return first;
      },
    };
    identityGauges(this.registry, soonest, () => this.#enforcer);
    for (const a of node.agents) this.#countRenewals(a);
    this.#proxies = node.proxies;
    this.#enforcer = node.enforcer;
    // The node's log hands records over to each workload's, which ship them: drops can happen in either.
    this.#dropped = () => node.decisionLogs.reduce((n, l) => n + l.dropped, node.enforcer.decisions.dropped);
  }

  /** One workload of a node agent: its inbound decisions are counted on edges with it as the callee. */
  forWorkload(self: string): ProxyMetrics {
    const edges = new Map<string, Edge>();
    return {
      inbound: this.inbound,
      outboundRefused: (code) => this.outboundRefused(code),
      decision: (caller, allow) => this.#count(edges.get(caller) ?? this.#newEdge(edges, caller, self), allow),
    };
  }

  #countRenewals(agent: Agent): void {
    agent.on('svid', (e: { reason: string }) => { if (e.reason === 'renew') this.#renewals.success.n++; });
    agent.on('renew-failed', () => { this.#renewals.failure.n++; });
  }

  /** One decision of the inbound proxy (the sidecar's onDecision). Hot path: a Map lookup and two additions. */
  decision(caller: string, allow: boolean): void {
    this.#count(this.#edges.get(caller) ?? this.#newEdge(this.#edges, caller, this.#self), allow);
  }

  #count(e: Edge, allow: boolean): void {
    if (allow) {
      e.allow.n++;
      this.#outcome.allow.n++;
    } else {
      e.deny.n++;
      this.#outcome.deny.n++;
    }
  }

  /** A refusal by an outbound proxy (the target failed its handshake or identity check, or a local caller was refused). */
  outboundRefused(code: string): void {
    this.#refusal(this.#refusalSlots.outbound, 'outbound', code).n++;
  }

  /**
   * An audit checkpoint this agent refused as a witness (the witness calls it once per alarm):
   * `tessera_audit_witness_alarms_total`.
   */
  recordWitnessAlarm(): void {
    this.#witnessAlarms.n++;
  }

  #newEdge(edges: Map<string, Edge>, caller: string, callee: string): Edge {
    if (this.#edgeCount >= this.#maxEdges) {
      // Not cached: the maps stay bounded whatever the number of callers.
      this.#other ??= this.#edgeSlots(OTHER_EDGE, OTHER_EDGE);
      return this.#other;
    }
    const e = this.#edgeSlots(caller, callee);
    edges.set(caller, e);
    this.#edgeCount++;
    return e;
  }

  #edgeSlots(caller: string, callee: string): Edge {
    return { allow: this.#edgeTally.slot({ caller, callee, outcome: 'allow' }), deny: this.#edgeTally.slot({ caller, callee, outcome: 'deny' }) };
  }

  /** Codes come from ERROR_CODES (a closed set), so this map is bounded. */
  #refusal(slots: Map<string, Tally>, direction: 'inbound' | 'outbound', code: string): Tally {
    let t = slots.get(code);
    if (t === undefined) {
      t = this.#refusals.slot({ direction, code });
      slots.set(code, t);
    }
    return t;
  }
}
