/**
 * How a gateway decision cache may key on `context.device.posture_age_seconds` without keying on
 * its exact value (which changes every second, so a cache keyed on it would only hit within one
 * second).
 *
 * The rule: a cached decision is reused only for a request whose age lies in the same class of
 * the thresholds the policies compare the age with. When every use of the age in every policy is
 * a comparison (`<`, `<=`, `>`, `>=`, `==`, `!=`) with an integer literal, each such comparison's
 * value is fixed by the age's position relative to that literal (below, equal, above); so two ages
 * in the same position relative to every literal get the same decision from Cedar, and a cached
 * allow never outlives the age crossing a threshold (the crossing changes the class, hence the
 * key). Any other use (arithmetic on the age, a comparison with another attribute, the whole
 * `context.device` or `context` record used as a value) makes the analysis give up: the exact age
 * stays in the key (correct, only less cached). Presence (`has posture_age_seconds`) and the other
 * device attributes (`posture_state`, the facts) stay in the key as they are.
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';

const AGE = 'posture_age_seconds';
const COMPARISONS = ['<', '<=', '>', '>=', '==', '!='] as const;

type Json = unknown;
const obj = (n: Json): n is Record<string, Json> => typeof n === 'object' && n !== null && !Array.isArray(n);
const isContext = (n: Json): boolean => obj(n) && n.Var === 'context';
const isDevice = (n: Json): boolean => obj(n) && obj(n['.']) && isContext(n['.'].left) && n['.'].attr === 'device';
const isAge = (n: Json): boolean => obj(n) && obj(n['.']) && isDevice(n['.'].left) && n['.'].attr === AGE;
const literal = (n: Json): number | undefined => (obj(n) && typeof n.Value === 'number' && Number.isInteger(n.Value) ? n.Value : undefined);

/**
 * The integer literals the policies compare the age with (sorted, distinct), or undefined when a
 * policy uses the age (or a record holding it) some other way, or a policy cannot be read: then
 * the exact age must stay in the cache key.
 *
 * @example
 * postureAgeThresholds(['permit (principal, action, resource) when { context.device.posture_age_seconds < 600 };']) // → [600]
 */
export function postureAgeThresholds(policyTexts: Iterable<string>): number[] | undefined {
  const found = new Set<number>();
  let safe = true;
  const walk = (n: Json): void => {
    if (!safe) return;
    if (Array.isArray(n)) {
      for (const x of n) walk(x);
      return;
    }
    if (!obj(n)) return;
    // Reached other than as one side of a comparison with a literal, or as the left of `.`/`has`.
    if (isAge(n) || isDevice(n) || isContext(n)) {
      safe = false;
      return;
    }
    for (const op of COMPARISONS) {
      const c = n[op];
      if (!obj(c)) continue;
      const l = literal(c.right) ?? literal(c.left);
      if (l !== undefined && (isAge(c.left) || isAge(c.right))) {
        found.add(l);
        return;
      }
    }
    for (const op of ['.', 'has']) {
      const a = n[op];
      if (obj(a) && (isDevice(a.left) || isContext(a.left))) return;
    }
    for (const v of Object.values(n)) walk(v);
  };
  for (const text of policyTexts) {
    // A policy that never names `context` cannot read the age (nor a record holding it).
    if (!text.includes('context')) continue;
    const j = cedar.policyToJson(text);
    if (j.type !== 'success') return undefined;
    walk(j.json);
    if (!safe) return undefined;
  }
  return [...found].sort((a, b) => a - b);
}

/**
 * The age's class among `thresholds` (sorted): 2 × the number of thresholds below it, plus 1 when
 * it equals one. Ages of the same class compare alike with every threshold.
 */
export function postureAgeClass(age: number, thresholds: readonly number[]): number {
  let below = 0;
  let equal = 0;
  for (const c of thresholds) {
    if (c < age) below++;
    else if (c === age) equal = 1;
    else break;
  }
  return 2 * below + equal;
}
