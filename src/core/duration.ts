import { TesseraError } from './errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const PART = /^(\d{1,9})(ms|s|m|h|d)/;

/**
 * Parses a duration such as `90s`, `10m`, `1h30m` or `24h` into milliseconds.
 * A bare number is taken as seconds. Throws TESSERA_CONFIG_INVALID on anything else.
 */
export function parseDuration(input: string, what = 'duration'): number {
  const s = input.trim();
  if (/^\d{1,9}$/.test(s)) {
    // A bare number is seconds; zero is as meaningless here as "0s" below.
    if (Number(s) === 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} must be greater than zero`);
    return Number(s) * 1000;
  }
  let rest = s;
  let total = 0;
  if (rest.length === 0 || rest.length > 32) throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} must look like 30s, 10m, 1h30m or 24h`);
  while (rest.length > 0) {
    const m = PART.exec(rest);
    if (!m) throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} must look like 30s, 10m, 1h30m or 24h`);
    total += Number(m[1]) * (UNITS[m[2]!] ?? 0);
    rest = rest.slice(m[0].length);
  }
  if (total <= 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} must be greater than zero`);
  return total;
}

/** Formats milliseconds compactly: 90_000 → "1m30s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  let s = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]] as const) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`);
      s %= size;
    }
  }
  return parts.join('');
}
