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
