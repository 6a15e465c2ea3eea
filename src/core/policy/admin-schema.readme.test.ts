import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ADMIN_ACTIONS } from './admin-schema.js';

/** The README's action table (section "Admin authorization") is what admins write policies from: it must list every action, in its group. */
describe('admin actions in the README', () => {
  it('lists every admin action under its group, and nothing else', () => {
    const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    const row = (group: string): string[] => {
      const line = readme.split('\n').find((l) => l.startsWith(`| \`admin:${group}\` |`));
      expect(line, `README row for admin:${group}`).toBeDefined();
      return [...line!.split('|')[2]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!).sort();
    };
    const want = (group: 'read' | 'write'): string[] => Object.entries(ADMIN_ACTIONS).filter(([, g]) => g === group).map(([a]) => a.slice('admin:'.length)).sort();
    expect(row('read')).toEqual(want('read'));
    expect(row('write')).toEqual(want('write'));
  });
});
