/**
 * GrantService on a real SQLite store with a controlled clock: pending requests lapse after 24 h,
 * the window is counted from approval, racing approvals cannot both win, ended grants leave the
 * bundle; and the store's meta prefix listing takes its prefix literally.
 */
import { describe, expect, it } from 'vitest';
import { sqliteTestFiles } from '../store/test-files.js';
import { GrantService, PENDING_TTL_MS } from './grants.js';

const files = sqliteTestFiles('grants');
const P = 'spiffe://example.org/ops/debugger';
const R = 'spiffe://example.org/shop/orders';
const A = 'spiffe://example.org/tessera/admin/alice';
const B = 'spiffe://example.org/tessera/admin/bob';

function setup(): { svc: GrantService; clock: { now: number }; published: number[] } {
  const store = files.open(files.tmpFile());
  const clock = { now: Date.UTC(2026, 0, 1) };
  const published: number[] = [];
  const svc = new GrantService(store, { now: () => clock.now, minSeconds: 60, changed: async () => { published.push(clock.now); return published.length; } });
  return { svc, clock, published };
}

const req = { principal: P, action: 'http:request', resource: R, durationSeconds: 1800, reason: 'INC-1' };

describe('GrantService', () => {
  it('a pending request lapses after 24 h: it cannot be approved, and the sweep marks it expired', async () => {
    const { svc, clock } = setup();
    const g = await svc.request(req, A);
    clock.now += PENDING_TTL_MS;
    await expect(svc.approve(g.id, B)).rejects.toMatchObject({ code: 'TESSERA_GRANT_STATE' });
    const ended = await svc.sweep();
    expect(ended.map((e) => [e.id, e.state])).toEqual([[g.id, 'expired']]);
    expect(await svc.sweep()).toEqual([]);
  });

  it('the window starts at approval, not at the request; it ends in the bundle at expiry', async () => {
    const { svc, clock, published } = setup();
    const g = await svc.request(req, A);
    clock.now += 3 * 3600_000;
    const { grant } = await svc.approve(g.id, B);
    expect(grant.start).toBe(clock.now / 1000);
    expect(grant.expiry).toBe(clock.now / 1000 + 1800);
    expect(await svc.forBundle(clock.now)).toHaveLength(1);
    clock.now += 1800_000 - 1000;
    expect(await svc.sweep()).toEqual([]);
    clock.now += 1000;
    expect((await svc.sweep()).map((e) => e.state)).toEqual(['expired']);
    expect(await svc.forBundle(clock.now)).toEqual([]);
    expect(published).toHaveLength(2); // approval, then the end
  });

  it('a scheduled start later than the approval is kept; one already past at approval starts then', async () => {
    const { svc, clock } = setup();
    const later = await svc.request({ ...req, start: new Date(clock.now + 7200_000).toISOString() }, A);
    const soon = await svc.request({ ...req, start: new Date(clock.now + 60_000).toISOString() }, A);
    clock.now += 600_000;
    expect((await svc.approve(later.id, B)).grant.start).toBe((clock.now + 6600_000) / 1000);
    expect((await svc.approve(soon.id, B)).grant.start).toBe(clock.now / 1000);
    expect(svc.view((await svc.get(later.id)))).toBe('scheduled');
    expect(svc.view((await svc.get(soon.id)))).toBe('active');
  });

  it('two admins approving and denying at once: exactly one wins', async () => {
    const { svc } = setup();
    const g = await svc.request(req, A);
    const results = await Promise.allSettled([svc.approve(g.id, B), svc.deny(g.id, 'spiffe://example.org/tessera/admin', 'no')]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason.code)).toEqual(['TESSERA_GRANT_STATE']);
  });

  it('the meta prefix listing takes % and _ literally', async () => {
    const store = files.open(files.tmpFile());
    await store.setMeta('grant:x', '1');
    await store.setMeta('grantXx', '2');
    await store.setMeta('g%', '3');
    expect((await store.listMeta('grant:')).map((r) => r.key)).toEqual(['grant:x']);
    expect((await store.listMeta('g%')).map((r) => r.key)).toEqual(['g%']);
    expect(await store.replaceMeta('grant:x', '0', '9')).toBe(false);
    expect(await store.replaceMeta('grant:x', '1', '9')).toBe(true);
    expect(await store.getMeta('grant:x')).toBe('9');
  });
});
