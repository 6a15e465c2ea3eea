/**
 * Strict shape checks for JSON received from elsewhere (signed bundles and records): exactly the
 * expected keys, nothing more. Failures go through the caller's `fail`, so each format keeps its
 * own stable error code.
 */
import type { TesseraError } from './errors.js';

/**
 * `v` as an object with exactly `keys` (those in `optional` may be absent); any other key, a
 * missing one, or a non-object is `fail(message)`.
 */
export function exactObject<K extends string>(v: unknown, keys: readonly K[], what: string, fail: (message: string) => TesseraError, optional: ReadonlySet<string> = NONE): Record<K, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw fail(`${what} must be an object`);
  const allowed: ReadonlySet<string> = new Set(keys);
  for (const k of Object.keys(v)) {
    if (!allowed.has(k)) throw fail(`${what}: unknown field ${JSON.stringify(k.slice(0, 64))}`);
  }
  for (const k of keys) {
    if (!Object.hasOwn(v, k) && !optional.has(k)) throw fail(`${what}: missing field ${k}`);
  }
  return v as Record<K, unknown>;
}

const NONE: ReadonlySet<string> = new Set();
