import { describe, expect, it } from 'vitest';
import type { AuthorizeRequest, DecisionRecord } from './http.js';
import { peerRefusal, rejudge, type Judged, type PeerStatus } from './rejudge.js';

function conn(peer: string, serial: string, action: Judged['action'] = 'tcp:connect'): Judged & { retired: number } {
  return {
    peer, serial, action, retired: 0,
    retire() {
      this.retired++;
    },
  };
}

describe('rejudge', () => {
  it('asks the authorizer once per tcp caller, the status once per certificate, and retires only the refused', () => {
    const asked: AuthorizeRequest[] = [];
    const looked: string[] = [];
    const conns = [conn('spiffe://td/a', '01'), conn('spiffe://td/b', '02'), conn('spiffe://td/a', '01'), conn('spiffe://td/a', '03'), conn('spiffe://td/c', '04')];
    const records: DecisionRecord[] = [];
    const r = rejudge(conns, {
      authorize: (q) => (asked.push(q), { allow: q.peer !== 'spiffe://td/b', reasons: ['forbid'] }),
      peerStatus: (id, serial) => (looked.push(`${id}#${serial}`), serial === '03' ? { ok: false, reason: 'revoked' } : { ok: true }),
      onDecision: (d) => records.push(d),
    });
    expect(r).toEqual({ checked: 5, closed: 2, peers: 3 });
    expect(conns.map((c) => c.retired)).toEqual([0, 1, 0, 1, 0]);
    expect(asked.map((q) => q.peer)).toEqual(['spiffe://td/a', 'spiffe://td/b', 'spiffe://td/c']);
    expect(looked).toEqual(['spiffe://td/a#01', 'spiffe://td/b#02', 'spiffe://td/a#03', 'spiffe://td/c#04']);
    expect(records).toEqual([
      expect.objectContaining({ peer: 'spiffe://td/a', action: 'tcp:connect', allow: false, reasons: ['re-judged: peer revoked', '1 open connection(s) closed'] }),
      expect.objectContaining({ peer: 'spiffe://td/b', action: 'tcp:connect', allow: false, reasons: ['re-judged: denied after policy change', 'forbid', '1 open connection(s) closed'] }),
    ]);
  });

  it('does not put http-mode connections to the authorizer (requests are decided one by one)', () => {
    const conns = [conn('spiffe://td/a', '01', 'http:request')];
    const r = rejudge(conns, { authorize: () => { throw new Error('must not be called'); }, peerStatus: undefined, onDecision: undefined });
    expect(r.closed).toBe(0);
    expect(conns[0]!.retired).toBe(0);
  });

  it('fails closed when the authorizer or the status lookup throws, and survives a throwing onDecision', () => {
    const conns = [conn('spiffe://td/a', '01'), conn('spiffe://td/b', '02', 'http:request')];
    const r = rejudge(conns, {
      authorize: (q) => {
        if (q.peer === 'spiffe://td/a') throw new Error('engine gone');
        return { allow: true };
      },
      peerStatus: (id) => {
        if (id === 'spiffe://td/b') throw new Error('list gone');
        return { ok: true };
      },
      onDecision: () => { throw new Error('log gone'); },
    });
    expect(r.closed).toBe(2);
    expect(conns.map((c) => c.retired)).toEqual([1, 1]);
  });

  it('peerRefusal: undefined without a status source or for an accepted peer, the reason otherwise', () => {
    const ps: PeerStatus = (id) => (id.endsWith('/x') ? { ok: false, reason: 'unknown' } : { ok: true });
    expect(peerRefusal(undefined, 'spiffe://td/x', '01')).toBeUndefined();
    expect(peerRefusal(ps, 'spiffe://td/y', '01')).toBeUndefined();
    expect(peerRefusal(ps, 'spiffe://td/x', '01')).toBe('peer unknown');
  });

  it('costs little over 100,000 connections of 100 callers (no per-connection allocation or call)', () => {
    const conns = Array.from({ length: 100_000 }, (_, i) => conn(`spiffe://td/c${i % 100}`, `s${i % 100}`));
    let calls = 0;
    const deps = { authorize: () => (calls++, { allow: true }), peerStatus: (() => ({ ok: true })) as PeerStatus, onDecision: undefined };
    rejudge(conns, deps); // warm up
    calls = 0;
    const t = performance.now();
    const r = rejudge(conns, deps);
    const ms = performance.now() - t;
    expect(r).toEqual({ checked: 100_000, closed: 0, peers: 100 });
    expect(calls).toBe(100);
    // Some tens of ms on a loaded machine; a per-connection decision or quadratic pass is far above.
    expect(ms).toBeLessThan(1000);
  });
});
