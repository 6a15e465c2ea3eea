import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { callerSelectors, entryMatchesCaller, selectEntryForCaller } from './selectors.js';

const peer = { pid: 4242, uid: 1000, gid: 100 };

describe('entryMatchesCaller', () => {
  it.each([
    [['unix:uid:1000']],
    [['unix:gid:100']],
    [['unix:pid:4242']],
    [['unix:uid:1000', 'unix:gid:100']],
    [['unix:uid:1000', 'unix:gid:100', 'unix:pid:4242']],
    [['unix:uid:1000', 'unix:uid:1000']],
  ])('matches %j', (selectors) => {
    expect(entryMatchesCaller(selectors, peer)).toEqual({ ok: true });
  });

  it.each([
    ['no selectors at all', []],
    ['another uid', ['unix:uid:1001']],
    ['another gid', ['unix:gid:101']],
    ['another pid', ['unix:pid:4243']],
    ['one of two not satisfied (every selector must hold)', ['unix:uid:1000', 'unix:gid:101']],
    ['two different uids', ['unix:uid:1000', 'unix:uid:1001']],
    ['a selector type this endpoint cannot attest', ['unix:uid:1000', 'k8s:ns:prod']],
    ['only foreign selectors', ['k8s:ns:prod']],
    ['an unsupported unix key', ['unix:user:alice']],
    ['a supplementary group (not attested)', ['unix:supplementary_gid:100']],
    ['a leading zero', ['unix:uid:01000']],
    ['a plus sign', ['unix:uid:+1000']],
    ['a space', ['unix:uid: 1000']],
    ['a trailing space', ['unix:uid:1000 ']],
    ['hex', ['unix:uid:0x3e8']],
    ['an exponent', ['unix:uid:1e3']],
    ['a fraction', ['unix:uid:1000.0']],
    ['an empty value', ['unix:uid:']],
    ['no value', ['unix:uid']],
    ['beyond 32 bits', ['unix:uid:4294968296']],
    ['an upper-case key', ['unix:UID:1000']],
    ['an upper-case type', ['UNIX:uid:1000']],
    ['pid 0', ['unix:pid:0']],
  ])('refuses %s', (_why, selectors) => {
    const r = entryMatchesCaller(selectors, peer);
    expect(r.ok).toBe(false);
  });

  it('refuses a caller whose credentials are 0 when the entry says pid 0 (no process has pid 0)', () => {
    expect(entryMatchesCaller(['unix:pid:0'], { pid: 0, uid: 0, gid: 0 }).ok).toBe(false);
    expect(entryMatchesCaller(['unix:uid:0'], { pid: 1, uid: 0, gid: 0 }).ok).toBe(true);
  });

  it('refuses non-list and non-string input instead of throwing', () => {
    expect(entryMatchesCaller('unix:uid:1000' as unknown as string[], peer).ok).toBe(false);
    expect(entryMatchesCaller([1000 as unknown as string], peer).ok).toBe(false);
  });

  it('a single uid selector matches exactly the callers with that uid (property)', () => {
    const id = fc.integer({ min: 0, max: 0xffffffff });
    fc.assert(
      fc.property(id, id, id, id, (uid, gid, pid, wanted) => {
        const caller = { uid, gid, pid: pid || 1 };
        expect(entryMatchesCaller([`unix:uid:${wanted}`], caller).ok).toBe(wanted === uid);
        // Every selector this endpoint derives for a caller matches that caller, alone or together.
        expect(entryMatchesCaller(callerSelectors(caller), caller).ok).toBe(true);
      }),
    );
  });
});

describe('selectEntryForCaller (one agent, many workloads)', () => {
  const e = (name: string, ...selectors: string[]): { name: string; selectors: string[] } => ({ name, selectors });
  const pick = (entries: { name: string; selectors: string[] }[]): string => {
    const r = selectEntryForCaller(entries, peer);
    return r.ok ? r.entry.name : `refused: ${r.reason}`;
  };

  it('gives the only matching entry; refuses a caller matching none', () => {
    expect(pick([e('a', 'unix:uid:1001'), e('b', 'unix:uid:1000'), e('c', 'unix:pid:1')])).toBe('b');
    expect(pick([e('a', 'unix:uid:1001'), e('c', 'unix:pid:1')])).toBe("refused: the caller matches no workload's entry");
    expect(pick([e('a', 'unix:uid:1001')])).toMatch(/^refused: selector unix:uid:1001 does not match/);
    expect(pick([])).toBe('refused: no workload is served here');
  });

  it('the most specific entry wins whatever the order; equally specific or unrelated matches are refused', () => {
    const general = e('general', 'unix:uid:1000');
    const narrow = e('narrow', 'unix:uid:1000', 'unix:pid:4242');
    const narrowest = e('narrowest', 'unix:uid:1000', 'unix:gid:100', 'unix:pid:4242');
    expect(pick([general, narrow])).toBe('narrow');
    expect(pick([narrow, general])).toBe('narrow');
    expect(pick([narrowest, general, narrow])).toBe('narrowest');
    expect(pick([general, e('twin', 'unix:uid:1000')])).toMatch(/^refused: the caller matches 2 workloads' entries and none is more specific/);
    expect(pick([e('by-gid', 'unix:uid:1000', 'unix:gid:100'), e('by-pid', 'unix:pid:4242')])).toMatch(/^refused/);
    // A larger set that is not a superset does not win.
    expect(pick([e('x', 'unix:uid:1000', 'unix:gid:100'), e('y', 'unix:pid:4242')])).toMatch(/^refused/);
  });

  it('property: the answer does not depend on the order, and a winner matches and covers every other match', () => {
    const sel = fc.constantFrom('unix:uid:1000', 'unix:uid:1001', 'unix:gid:100', 'unix:gid:7', 'unix:pid:4242', 'unix:pid:9', 'k8s:ns:x');
    const entries = fc.array(fc.array(sel, { maxLength: 4 }), { maxLength: 6 }).map((l) => l.map((s, i) => e(`e${i}`, ...s)));
    fc.assert(fc.property(entries, fc.nat(), (list, seed) => {
      const shuffled = [...list].sort((a, b) => ((a.name.charCodeAt(1) * 31 + seed) % 7) - ((b.name.charCodeAt(1) * 31 + seed) % 7));
      const r1 = selectEntryForCaller(list, peer);
      const r2 = selectEntryForCaller(shuffled, peer);
      expect(r1.ok && r1.entry.name).toBe(r2.ok && r2.entry.name);
      if (!r1.ok) return;
      expect(entryMatchesCaller(r1.entry.selectors, peer).ok).toBe(true);
      const mine = new Set(r1.entry.selectors);
      for (const o of list) {
        if (o === r1.entry || !entryMatchesCaller(o.selectors, peer).ok) continue;
        expect(o.selectors.every((s) => mine.has(s)) && new Set(o.selectors).size < mine.size).toBe(true);
      }
    }), { numRuns: 1000 });
  });
});
