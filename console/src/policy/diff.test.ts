import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { diffLines, diffPolicySets } from './diff.js';

describe('policy diff', () => {
  it('keeps common lines and marks added and removed ones', () => {
    expect(diffLines(['a', 'b', 'c'], ['a', 'x', 'c'])).toEqual([
      { kind: 'same', text: 'a' }, { kind: 'del', text: 'b' }, { kind: 'add', text: 'x' }, { kind: 'same', text: 'c' },
    ]);
  });

  it('names files added, removed, changed and unchanged', () => {
    const d = diffPolicySets({ 'a.cedar': 'x\n', 'b.cedar': 'y\n', 'c.cedar': 'z' }, { 'a.cedar': 'x\n', 'b.cedar': 'y2\n', 'd.cedar': 'w' });
    expect(d.map((f) => [f.name, f.status])).toEqual([['a.cedar', 'same'], ['b.cedar', 'changed'], ['c.cedar', 'removed'], ['d.cedar', 'added']]);
    expect(d[2]!.lines).toEqual([{ kind: 'del', text: 'z' }]);
  });

  it('property: the old side is the kept and removed lines, the new side the kept and added ones, and kept is an LCS', () => {
    const lines = fc.array(fc.constantFrom('a', 'b', 'c', 'd'), { maxLength: 30 });
    fc.assert(fc.property(lines, lines, (a, b) => {
      const d = diffLines(a, b);
      expect(d.filter((l) => l.kind !== 'add').map((l) => l.text)).toEqual(a);
      expect(d.filter((l) => l.kind !== 'del').map((l) => l.text)).toEqual(b);
      if (a.join() === b.join()) expect(d.every((l) => l.kind === 'same')).toBe(true);
    }));
  });

  it('very large files fall back to removed-then-added without quadratic work', () => {
    const a = Array.from({ length: 3000 }, (_, i) => `a${i}`);
    const b = Array.from({ length: 3000 }, (_, i) => `b${i}`);
    const d = diffLines(a, b);
    expect(d.length).toBe(6000);
    expect(d[0]!.kind).toBe('del');
  });
});
