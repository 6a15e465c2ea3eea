/**
 * A line diff of two policy sets (file name → text) for the Policies page: per file, the longest
 * common subsequence of lines, as kept / added / removed lines. Policy files are small; a file pair
 * over MAX_CELLS line pairs is shown as removed-then-added rather than risk a slow page.
 */
export type DiffLine = { kind: 'same' | 'add' | 'del'; text: string };
export interface FileDiff { name: string; status: 'added' | 'removed' | 'changed' | 'same'; lines: DiffLine[] }

const MAX_CELLS = 4_000_000;

export function diffLines(a: string[], b: string[]): DiffLine[] {
  const n = a.length;
  const m = b.length;
  if (n * m > MAX_CELLS) return [...a.map((text) => ({ kind: 'del' as const, text })), ...b.map((text) => ({ kind: 'add' as const, text }))];
  // lcs[i][j]: length of the LCS of a[i..] and b[j..] (row-major in one array).
  const w = m + 1;
  const lcs = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i * w + j] = a[i] === b[j] ? lcs[(i + 1) * w + j + 1]! + 1 : Math.max(lcs[(i + 1) * w + j]!, lcs[i * w + j + 1]!);
    }
  }
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) {
      out.push({ kind: 'same', text: a[i]! });
      i++;
      j++;
    } else if (lcs[(i + 1) * w + j]! >= lcs[i * w + j + 1]!) {
      out.push({ kind: 'del', text: a[i++]! });
    } else {
      out.push({ kind: 'add', text: b[j++]! });
    }
  }
  while (i < n) out.push({ kind: 'del', text: a[i++]! });
  while (j < m) out.push({ kind: 'add', text: b[j++]! });
  return out;
}

const split = (t: string): string[] => (t === '' ? [] : t.replace(/\n$/, '').split('\n'));

/** Every file of either set, by name, with its line diff from `from` to `to`. */
export function diffPolicySets(from: Record<string, string>, to: Record<string, string>): FileDiff[] {
  const names = [...new Set([...Object.keys(from), ...Object.keys(to)])].sort();
  return names.map((name) => {
    const a = from[name];
    const b = to[name];
    const lines = diffLines(split(a ?? ''), split(b ?? ''));
    const status = a === undefined ? 'added' : b === undefined ? 'removed' : a === b ? 'same' : 'changed';
    return { name, status, lines };
  });
}
