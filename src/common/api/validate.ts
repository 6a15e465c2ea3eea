import { TesseraError } from '../../core/errors.js';

/** Small, strict body validators: unknown fields are refused, types are never coerced. */

export type Json = Record<string, unknown>;

export function body(input: unknown, allowed: readonly string[]): Json {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new TesseraError('TESSERA_BAD_REQUEST', 'the request body must be a JSON object');
  }
  for (const key of Object.keys(input)) {
    if (!allowed.includes(key)) throw new TesseraError('TESSERA_BAD_REQUEST', `unknown field "${key.slice(0, 64)}"`);
  }
  return input as Json;
}

export function str(b: Json, field: string, opts: { max?: number; optional?: boolean; pattern?: RegExp } = {}): string | undefined {
  const v = b[field];
  if (v === undefined && opts.optional) return undefined;
  if (typeof v !== 'string' || v.length === 0) throw new TesseraError('TESSERA_BAD_REQUEST', `"${field}" must be a non-empty string`);
  if (v.length > (opts.max ?? 256)) throw new TesseraError('TESSERA_BAD_REQUEST', `"${field}" is longer than ${opts.max ?? 256} characters`);
  if (opts.pattern && !opts.pattern.test(v)) throw new TesseraError('TESSERA_BAD_REQUEST', `"${field}" has an invalid format`);
  return v;
}

export function reqStr(b: Json, field: string, opts: { max?: number; pattern?: RegExp } = {}): string {
  return str(b, field, opts) as string;
}

export function int(b: Json, field: string, opts: { min: number; max: number; optional?: boolean }): number | undefined {
  const v = b[field];
  if (v === undefined && opts.optional) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < opts.min || v > opts.max) {
    throw new TesseraError('TESSERA_BAD_REQUEST', `"${field}" must be an integer from ${opts.min} to ${opts.max}`);
  }
  return v;
}

export function strList(b: Json, field: string, opts: { maxItems: number; maxLength: number; pattern?: RegExp; optional?: boolean; minItems?: number }): string[] | undefined {
  let v = b[field];
  if (v === undefined && opts.optional) return undefined;
  if (typeof v === 'string') v = [v];
  if (!Array.isArray(v) || v.length > opts.maxItems || v.length < (opts.minItems ?? 0)) {
    throw new TesseraError('TESSERA_BAD_REQUEST', `"${field}" must be a list of ${opts.minItems ?? 0} to ${opts.maxItems} strings`);
  }
  for (const item of v) {
    if (typeof item !== 'string' || item.length === 0 || item.length > opts.maxLength || (opts.pattern && !opts.pattern.test(item))) {
      throw new TesseraError('TESSERA_BAD_REQUEST', `"${field}" has an invalid item`);
    }
  }
  return [...new Set(v as string[])];
}

export function queryInt(q: unknown, field: string, dflt: number, min: number, max: number): number {
  const v = (q as Record<string, unknown> | undefined)?.[field];
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || !/^\d{1,12}$/.test(v)) throw new TesseraError('TESSERA_BAD_REQUEST', `query "${field}" must be an integer`);
  const n = Number(v);
  if (n < min || n > max) throw new TesseraError('TESSERA_BAD_REQUEST', `query "${field}" must be from ${min} to ${max}`);
  return n;
}

export function queryStr(q: unknown, field: string, pattern: RegExp): string | undefined {
  const v = (q as Record<string, unknown> | undefined)?.[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !pattern.test(v)) throw new TesseraError('TESSERA_BAD_REQUEST', `query "${field}" is invalid`);
  return v;
}
