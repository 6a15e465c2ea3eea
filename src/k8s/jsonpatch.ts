/**
 * A small JSONPatch (RFC 6902) applier for the operations the webhook writes (add, replace, remove),
 * used to check a patch before it is sent (it must apply to the pod it was made for) and by the tests
 * that validate the patched pod against the Kubernetes schema. Returns a new document; the input is
 * not modified. A path that does not resolve throws TESSERA_INTERNAL (the webhook wrote a bad patch).
 */
import { TesseraError } from '../core/errors.js';
import type { PatchOp } from './admission.js';

const fail = (why: string): TesseraError => new TesseraError('TESSERA_INTERNAL', `JSONPatch does not apply: ${why}`);

function tokens(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw fail(`bad pointer ${path}`);
  return path.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function index(arr: unknown[], t: string, forAdd: boolean): number {
  if (forAdd && t === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(t)) throw fail(`bad array index ${t}`);
  const i = Number(t);
  if (i > arr.length || (!forAdd && i === arr.length)) throw fail(`index ${t} out of range`);
  return i;
}

export function applyJsonPatch<T>(doc: T, patch: readonly PatchOp[]): T {
  const root = structuredClone(doc) as unknown;
  for (const op of patch) {
    const path = tokens(op.path);
    if (path.length === 0) throw fail('the root cannot be patched');
    let parent: unknown = root;
    for (const t of path.slice(0, -1)) {
      if (Array.isArray(parent)) parent = parent[index(parent, t, false)];
      else if (typeof parent === 'object' && parent !== null && Object.hasOwn(parent, t)) parent = (parent as Record<string, unknown>)[t];
      else throw fail(`${op.path}: ${t} does not exist`);
    }
    const last = path[path.length - 1]!;
    if (Array.isArray(parent)) {
      const i = index(parent, last, op.op === 'add');
      if (op.op === 'add') parent.splice(i, 0, structuredClone(op.value));
      else if (op.op === 'replace') parent[i] = structuredClone(op.value);
      else parent.splice(i, 1);
    } else if (typeof parent === 'object' && parent !== null) {
      const o = parent as Record<string, unknown>;
      if (op.op !== 'add' && !Object.hasOwn(o, last)) throw fail(`${op.path} does not exist`);
      if (op.op === 'remove') delete o[last];
      else o[last] = structuredClone(op.value);
    } else {
      throw fail(`${op.path}: the parent is not a container`);
    }
  }
  return root as T;
}
