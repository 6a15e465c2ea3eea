import { describe, expect, it } from 'vitest';
import { AgentMetrics, OTHER_EDGE } from './metrics.js';

async function samples(m: AgentMetrics, name: string): Promise<string[]> {
  return (await m.registry.getSingleMetricAsString(name)).split('\n').filter((l) => l.startsWith(name));
}

describe('agent metrics', () => {
  it('labels at most maxEdges caller edges; later callers count under "other", totals stay exact', async () => {
    const m = new AgentMetrics({ maxEdges: 3 });
    for (let i = 0; i < 10; i++) {
      for (let k = 0; k <= i; k++) m.decision(`spiffe://td/caller/${i}`, i % 2 === 0);
    }
    const edges = await samples(m, 'tessera_sidecar_edge_decisions_total');
    const callers = new Set(edges.map((l) => /caller="([^"]*)"/.exec(l)![1]));
    expect([...callers].sort()).toEqual(['other', 'spiffe://td/caller/0', 'spiffe://td/caller/1', 'spiffe://td/caller/2']);
    const value = (caller: string, outcome: string): number => Number(edges.find((l) => l.includes(`caller="${caller}"`) && l.includes(`outcome="${outcome}"`))!.split(' ').pop());
    expect(value('spiffe://td/caller/2', 'allow')).toBe(3);
    expect(value('spiffe://td/caller/1', 'deny')).toBe(2);
    // Callers 3..9: allows 5+7+9 = 21, denies 4+6+8+10 = 28.
    expect(value(OTHER_EDGE, 'allow')).toBe(21);
    expect(value(OTHER_EDGE, 'deny')).toBe(28);
    expect(await samples(m, 'tessera_sidecar_decisions_total')).toEqual(['tessera_sidecar_decisions_total{outcome="allow"} 25', 'tessera_sidecar_decisions_total{outcome="deny"} 30']);
    // A thousand more callers add no series.
    for (let i = 0; i < 1000; i++) m.decision(`spiffe://td/flood/${i}`, false);
    expect(await samples(m, 'tessera_sidecar_edge_decisions_total')).toHaveLength(edges.length);
  });

  it('counts refusals by direction and code, and witness alarms', async () => {
    const m = new AgentMetrics();
    m.inbound.refused('TESSERA_AUTH_INVALID');
    m.inbound.refused('TESSERA_AUTH_INVALID');
    m.outboundRefused('TESSERA_PROXY_PEER_IDENTITY');
    m.recordWitnessAlarm();
    expect(await samples(m, 'tessera_sidecar_refusals_total')).toEqual([
      'tessera_sidecar_refusals_total{direction="inbound",code="TESSERA_AUTH_INVALID"} 2',
      'tessera_sidecar_refusals_total{direction="outbound",code="TESSERA_PROXY_PEER_IDENTITY"} 1',
    ]);
    expect(await samples(m, 'tessera_audit_witness_alarms_total')).toEqual(['tessera_audit_witness_alarms_total 1']);
  });
});
