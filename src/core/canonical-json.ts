/**
 * Canonical JSON, the one text form of a JSON value that Tessera signs and hashes (policy bundles,
 * secret-policy records, policy hashes). Pure, no I/O; its own error code, so that a caller knows
 * whether the value or the signature was the problem.
 */
import { TesseraError } from './errors.js';

const MAX_DEPTH = 64;

function notCanonical(message: string): TesseraError {
  return new TesseraError('TESSERA_CANONICAL_JSON_INVALID', message);
}

/**
 * Canonical JSON: object keys sorted (by UTF-16 code units, as `Array.prototype.sort` and RFC 8785
 * do), no whitespace, strings and numbers as `JSON.stringify` writes them. Equal content gives
 * equal text whatever the key order. Refuses what JSON cannot carry faithfully: `undefined`,
 * functions, symbols, bigints, non-finite numbers, array holes, non-plain objects (Date, Map,
 * Buffer, class instances), cycles and nesting deeper than 64.
 *
 * @example canonicalJson({ b: 1, a: [true, null] }) // '{"a":[true,null],"b":1}'
 * @throws TesseraError TESSERA_CANONICAL_JSON_INVALID
 */
export function canonicalJson(value: unknown): string {
  return tryCanonicalJson(value) ?? canonicalJsonChecked(value);
}

/**
 * The canonical JSON of a value that is plain JSON, or undefined (no message) when it is not: the
 * fast path of {@link canonicalJson}, one pass with no bookkeeping, for the audit append (a few
 * hundred bytes per record, tens of thousands of records a second). Same output and same refusals as
 * {@link canonicalJsonChecked} (a fast-check property holds them equal); a cycle is refused by the
 * depth limit it runs into.
 *
 * @example tryCanonicalJson({ b: 1, a: 2 }) // '{"a":2,"b":1}'; tryCanonicalJson({ a: undefined }) // undefined
 */
export function tryCanonicalJson(value: unknown): string | undefined {
  try {
    return fast(value, 0);
  } catch (err) {
    if (err === REFUSED) return undefined;
    throw err;
  }
}

/** Thrown inside {@link fast} to unwind at once; made once, so refusing costs no stack trace. */
const REFUSED = new Error('not plain JSON');

/**
 * A string as JSON.stringify writes it (ECMA-262 QuoteJSONString). Most strings need no escape:
 * those are quoted as they are, which costs a third of calling JSON.stringify on each small string;
 * any quote, backslash, control character or surrogate (lone ones are escaped) goes to JSON.stringify.
 *
 * @example jsonString('a/b') // '"a/b"'
 */
export function jsonString(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return JSON.stringify(s);
  }
  return `"${s}"`;
}

function fast(v: unknown, depth: number): string {
  switch (typeof v) {
    case 'string':
      return jsonString(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(v)) throw REFUSED;
      // For finite numbers JSON.stringify is Number::toString (ECMA-262 SerializeJSONProperty), -0 as "0".
      return String(v);
    case 'object':
      break;
    default:
      throw REFUSED;
  }
  if (v === null) return 'null';
  if (depth >= MAX_DEPTH) throw REFUSED;
  if (Array.isArray(v)) {
    let s = '[';
    for (let i = 0; i < v.length; i++) {
      if (!(i in v)) throw REFUSED;
      if (i > 0) s += ',';
      s += fast(v[i], depth + 1);
    }
    return `${s}]`;
  }
  const proto: unknown = Object.getPrototypeOf(v);
  if (proto !== Object.prototype && proto !== null) throw REFUSED;
  if (Object.getOwnPropertySymbols(v).length > 0) throw REFUSED;
  const obj = v as Record<string, unknown>;
  const keys = Object.keys(obj);
  const n = keys.length;
  // Sorted by UTF-16 code units as Array.prototype.sort does (`>` on strings compares the same
  // way); an insertion sort in place is cheaper for the few keys a record's objects have.
  if (n > 16) keys.sort();
  else {
    for (let i = 1; i < n; i++) {
      const k = keys[i]!;
      let j = i - 1;
      for (; j >= 0 && keys[j]! > k; j--) keys[j + 1] = keys[j]!;
      keys[j + 1] = k;
    }
  }
  let s = '{';
  for (let i = 0; i < n; i++) {
    const k = keys[i]!;
    if (i > 0) s += ',';
    s += `${jsonString(k)}:${fast(obj[k], depth + 1)}`;
  }
  return `${s}}`;
}

/**
 * The reference encoder: the same text as {@link canonicalJson}, checking as it goes and naming
 * where a value is not JSON (JSON path, e.g. `$.detail.when`). canonicalJson calls it only for the
 * message of a refusal; tests hold the fast path equal to it.
 *
 * @throws TesseraError TESSERA_CANONICAL_JSON_INVALID
 */
export function canonicalJsonChecked(value: unknown): string {
  const parts: string[] = [];
  writeCanonical(value, parts, '$', 0, new Set());
  return parts.join('');
}

function writeCanonical(v: unknown, out: string[], path: string, depth: number, seen: Set<object>): void {
  switch (typeof v) {
    case 'string':
      out.push(JSON.stringify(v));
      return;
    case 'boolean':
      out.push(v ? 'true' : 'false');
      return;
    case 'number':
      if (!Number.isFinite(v)) throw notCanonical(`not JSON: ${path} is a non-finite number`);
      out.push(JSON.stringify(v));
      return;
    case 'object':
      break;
    default:
      throw notCanonical(`not JSON: ${path} is a ${typeof v}`);
  }
  if (v === null) {
    out.push('null');
    return;
  }
  if (depth >= MAX_DEPTH) throw notCanonical(`not JSON: ${path} is nested deeper than ${MAX_DEPTH}`);
  if (seen.has(v)) throw notCanonical(`not JSON: ${path} is a cycle`);
  seen.add(v);
  if (Array.isArray(v)) {
    out.push('[');
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out.push(',');
      if (!(i in v)) throw notCanonical(`not JSON: ${path}[${i}] is a hole`);
      writeCanonical(v[i], out, `${path}[${i}]`, depth + 1, seen);
    }
    out.push(']');
  } else {
    const proto: unknown = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) throw notCanonical(`not JSON: ${path} is not a plain object`);
    if (Object.getOwnPropertySymbols(v).length > 0) throw notCanonical(`not JSON: ${path} has symbol keys`);
    const obj = v as Record<string, unknown>;
    const keys = Object.keys(obj).sort();
    out.push('{');
    keys.forEach((k, i) => {
      if (i > 0) out.push(',');
      out.push(JSON.stringify(k), ':');
      writeCanonical(obj[k], out, `${path}.${k.length > 32 ? `${k.slice(0, 32)}…` : k}`, depth + 1, seen);
    });
    out.push('}');
  }
  seen.delete(v);
}
