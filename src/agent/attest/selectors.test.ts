import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { callerSelectors, entryMatchesCaller } from './selectors.js';

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
