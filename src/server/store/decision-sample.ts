/**
 * How {@link Store.sampleDecisions} shares its bounds, the same for every engine (each supplies its
 * queries): enforcers share the total equally, principals share an enforcer's part equally.
 */

/**
 * The sampled ids of every enforcer: each gets an equal share of what is left (at most
 * `perEnforcer`); what one leaves unused goes to the ones after it.
 */
export async function shareEnforcers(enforcers: readonly string[], perEnforcer: number, maxTotal: number,
  sampleEnforcer: (enforcer: string, quota: number) => Promise<number[]>): Promise<number[]> {
  const ids: number[] = [];
  for (const [i, enforcer] of enforcers.entries()) {
    const quota = Math.min(perEnforcer, Math.ceil((maxTotal - ids.length) / (enforcers.length - i)));
    if (quota > 0) ids.push(...await sampleEnforcer(enforcer, quota));
  }
  return ids;
}

/**
 * The ids of up to `quota` decisions of one enforcer, its principals (null: rows stored before the
 * principal column existed) sharing the quota equally, newest first within each. Rounds: every
 * principal still holding rows gets an equal share of what is left; one that has fewer is done, and
 * the rest is shared again, so few rounds and at most quota + principals rows. `newest` returns up
 * to `room` ids of the principal below `before`, newest first.
 */
export async function shareQuota(principals: readonly (string | null)[], quota: number,
  newest: (principal: string | null, before: number, room: number) => number[] | Promise<number[]>): Promise<number[]> {
  const groups = principals.map((principal) => ({ principal, before: Number.MAX_SAFE_INTEGER, done: false }));
  const out: number[] = [];
  for (let active = groups; active.length > 0 && out.length < quota; active = active.filter((g) => !g.done)) {
    const share = Math.max(1, Math.floor((quota - out.length) / active.length));
    for (const g of active) {
      const room = Math.min(share, quota - out.length);
      if (room <= 0) return out;
      const ids = await newest(g.principal, g.before, room);
      out.push(...ids);
      if (ids.length < room) g.done = true;
      else g.before = ids[ids.length - 1]!;
    }
  }
  return out;
}
