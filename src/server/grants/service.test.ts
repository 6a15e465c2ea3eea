/**
 * GrantService on a real SQLite store with a controlled clock: pending requests lapse after 24 h,
 * the window is counted from approval, racing approvals cannot both win, ended grants leave the
 * bundle; and the store's meta prefix listing takes its prefix literally.
 */
import { describe, expect, it } from 'vitest';
import { sqliteTestFiles } from '../store/test-files.js';
import { GRANT_RETENTION_MS, GrantService, PENDING_TTL_MS } from './grants.js';

const files = sqliteTestFiles('grants');
const P = 'spiffe://example.org/ops/debugger';
const R = 'spiffe://example.org/shop/orders';
const A = 'spiffe://example.org/tessera/admin/alice';
const B = 'spiffe://example.org/tessera/admin/bob';

function setup(retentionMs?: number): { svc: GrantService; clock: { now: number }; published: number[]; store: ReturnType<typeof files.open> } {
  const store = files.open(files.tmpFile());
  const clock = { now: Date.UTC(2026, 0, 1) };
  const published: number[] = [];
  const svc = new GrantService(store, { now: () => clock.now, minSeconds: 60, changed: async () => { published.push(clock.now); return published.length; }, ...(retentionMs !== undefined ? { retentionMs } : {}) });
  return { svc, clock, published, store };
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

  it('a lapsed request lists as expired at once, before the sweep marks it', async () => {
    const { svc, clock } = setup();
    const g = await svc.request(req, A);
    clock.now += PENDING_TTL_MS - 1;
    expect(svc.view(await svc.get(g.id))).toBe('pending');
    clock.now += 1;
    expect(svc.view(await svc.get(g.id))).toBe('expired');
    expect((await svc.get(g.id)).state).toBe('pending');
  });

  it('ended grants (expired, denied, revoked) are deleted from the store after the retention (30 days by default), not before; open ones never', async () => {
    const { svc, clock, store } = setup();
    const expired = await svc.request(req, A);
    await svc.approve(expired.id, B);
    const denied = await svc.request(req, A);
    await svc.deny(denied.id, B, 'no');
    const revoked = await svc.request(req, A);
    await svc.approve(revoked.id, B);
    await svc.revoke(revoked.id, B, 'done');
    const pending = await svc.request(req, A);
    clock.now += 1800_000;
    expect((await svc.sweep()).map((g) => g.id)).toEqual([expired.id]);
    // Later grants, still open when the others are pruned.
    clock.now += GRANT_RETENTION_MS - 1800_000 - 60_000;
    const active = await svc.request({ ...req, durationSeconds: 7 * 86_400 }, A);
    await svc.approve(active.id, B);
    const waiting = await svc.request(req, A);
    clock.now += 60_000 - 1;
    // Denied and revoked ended 30 min before the expiry: at retention minus 1 ms nothing goes.
    expect(await svc.prune(true)).toEqual([]);
    clock.now += 1;
    expect((await svc.prune(true)).map((g) => g.id).sort()).toEqual([denied.id, revoked.id].sort());
    // The lapsed request was marked expired by this sweep; it too is kept its retention.
    expect((await svc.sweep()).map((g) => g.id)).toEqual([pending.id]);
    clock.now += 1800_000;
    expect((await svc.prune(true)).map((g) => g.id)).toEqual([expired.id]);
    expect((await svc.list()).map((g) => g.id).sort()).toEqual([active.id, pending.id, waiting.id].sort());
    await expect(svc.get(denied.id)).rejects.toMatchObject({ code: 'TESSERA_NOT_FOUND' });
    clock.now += GRANT_RETENTION_MS;
    await svc.sweep();
    expect((await svc.prune(true)).map((g) => g.id)).toEqual([pending.id]);
    expect(await store.getMeta(`grant:${active.id}`)).toBeDefined();
  });

  it('prunes at most once a minute unless forced; a grant changed since it was listed stays', async () => {
    const { svc, clock, store } = setup(1000);
    const g = await svc.request(req, A);
    await svc.deny(g.id, B, 'no');
    clock.now += 1000;
    expect(await svc.prune()).toHaveLength(1);
    const h = await svc.request(req, A);
    await svc.deny(h.id, B, 'no');
    clock.now += 30_000;
    expect(await svc.prune()).toEqual([]);
    clock.now += 30_000;
    expect((await svc.prune()).map((x) => x.id)).toEqual([h.id]);
    // Compare and delete: the stored value must be the one listed.
    await store.setMeta('grant:g-0000000000000000', '{"state":"denied","decidedAt":0,"requestedAt":0}');
    expect(await store.deleteMetaIf('grant:g-0000000000000000', '{"state":"denied"}')).toBe(false);
    expect(await store.deleteMetaIf('grant:g-0000000000000000', '{"state":"denied","decidedAt":0,"requestedAt":0}')).toBe(true);
    expect(await store.getMeta('grant:g-0000000000000000')).toBeUndefined();
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
