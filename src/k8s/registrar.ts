/**
 * The webhook's side of the control plane: registration entries created when the first pod of an
 * identity is admitted and deleted when its last known pod goes, one-time join tokens per pod. It
 * never lists entries: an entry is looked up by its SPIFFE ID (GET /v1/entries/<id>), created if
 * absent (a 409 from a concurrent creator is read back), and the pods holding it are counted in a
 * small state file (refs the webhook wrote into each pod's annotations at CREATE, since a pod has no
 * uid yet then). Every operation is idempotent: a DELETE seen twice releases a ref once; an entry
 * already gone is fine. Operations on one SPIFFE ID are serialized, so a release never deletes an
 * entry an admission is about to hand a token for.
 *
 * The credential is an admin client (a named admin whose admin policy permits only
 * entry.create/show/delete and token.create; see the README).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { TesseraError, isTesseraError } from '../core/errors.js';
import { writeFileAtomic } from '../core/files.js';
import type { Logger } from '../core/log.js';
import type { CreateTokenResponse, EntryView } from '../core/wire/control-plane.js';
import { PodRefused, type PodIdentity } from './inject.js';

export interface AdminCaller {
  call<T = Record<string, unknown>>(method: string, path: string, body?: unknown): Promise<T>;
}

interface State { version: 1; entries: Record<string, { entryId: string; refs: Record<string, { at: number; ns: string }> }> }

export interface Admitted { entryId: string; token: string; podRef: string; warnings: string[] }

export interface RegistrarOptions {
  stateFile: string;
  tokenTtlSeconds: number;
  log: Logger;
  now?: () => number;
}

export class Registrar {
  #state: State;
  #locks = new Map<string, Promise<unknown>>();
  readonly #now: () => number;

  constructor(private readonly client: AdminCaller, private readonly opts: RegistrarOptions) {
    this.#now = opts.now ?? Date.now;
    this.#state = Registrar.load(opts.stateFile);
  }

  private static load(file: string): State {
    if (!existsSync(file)) return { version: 1, entries: {} };
    try {
      const s = JSON.parse(readFileSync(file, 'utf8')) as State;
      if (s.version !== 1 || typeof s.entries !== 'object' || s.entries === null) throw new Error('unknown shape');
      return s;
    } catch (err) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `the webhook state file ${file} cannot be read: ${(err as Error).message}`);
    }
  }

  /** Pods currently counted for `spiffeId` (for tests and /healthz-like views). */
  podsOf(spiffeId: string): number {
    return Object.keys(this.#state.entries[spiffeId]?.refs ?? {}).length;
  }

  private save(): void {
    writeFileAtomic(this.opts.stateFile, JSON.stringify(this.#state), 0o600);
  }

  private async locked<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.#locks.set(key, tail);
    try {
      return await run;
    } finally {
      if (this.#locks.get(key) === tail) this.#locks.delete(key);
    }
  }

  private async lookup(spiffeId: string): Promise<EntryView | undefined> {
    try {
      return await this.client.call<EntryView>('GET', `/v1/entries/${encodeURIComponent(spiffeId)}`);
    } catch (err) {
      if (isTesseraError(err) && err.code === 'TESSERA_ENTRY_NOT_FOUND') return undefined;
      throw err;
    }
  }

  private async ensureEntry(id: PodIdentity): Promise<{ entry: EntryView; created: boolean }> {
    const found = await this.lookup(id.spiffeId);
    if (found) return { entry: found, created: false };
    try {
      const entry = await this.client.call<EntryView>('POST', '/v1/entries', { spiffe_id: id.spiffeId, selectors: [id.selector], attributes: id.attributes });
      return { entry, created: true };
    } catch (err) {
      if (!isTesseraError(err) || err.code !== 'TESSERA_CONFLICT') throw err;
      const again = await this.lookup(id.spiffeId);
      if (!again) throw err;
      return { entry: again, created: false };
    }
  }

  /** The entry for `id` (created if absent), a fresh join token, and a pod ref counted for it. */
  admit(id: PodIdentity, namespace: string): Promise<Admitted> {
    return this.locked(id.spiffeId, async () => {
      const { entry, created } = await this.ensureEntry(id);
      if (entry.revoked_at !== undefined) throw new PodRefused(`the entry for ${id.spiffeId} is revoked (${entry.revoked_reason ?? ''}): it gets no join token`);
      if (!entry.selectors.includes(id.selector)) {
        throw new PodRefused(`the entry for ${id.spiffeId} admits ${entry.selectors.join(' ') || 'no caller'}, not this pod's ${id.selector}: run every pod of a service account as one uid`);
      }
      const warnings: string[] = [];
      const differs = (Object.keys(id.attributes) as (keyof PodIdentity['attributes'])[]).filter((k) => entry.attributes[k] !== id.attributes[k]);
      if (!created && differs.length > 0) warnings.push(`tessera: the entry for ${id.spiffeId} keeps the attributes of its first pod (${differs.join(', ')} differ)`);
      const t = await this.client.call<CreateTokenResponse>('POST', '/v1/tokens', { entry_id: entry.id, ttl_seconds: this.opts.tokenTtlSeconds });
      const podRef = randomBytes(18).toString('base64url');
      const slot = this.#state.entries[id.spiffeId];
      const held = { at: this.#now(), ns: namespace };
      if (slot && slot.entryId === entry.id) slot.refs[podRef] = held;
      else this.#state.entries[id.spiffeId] = { entryId: entry.id, refs: { [podRef]: held } };
      this.save();
      if (created) this.opts.log.info('entry created for pods', { spiffe_id: id.spiffeId, entry_id: entry.id });
      return { entryId: entry.id, token: t.token, podRef, warnings };
    });
  }

  /**
   * A pod went away: its ref is released, and the entry deleted (revoking its SVIDs) when no pod
   * holds it any more. `released: false` when the ref was not counted (already released, not ours,
   * or written on a pod of another namespace: annotations are editable, refs are not transferable).
   */
  release(spiffeId: string, podRef: string, namespace: string): Promise<{ released: boolean; entryDeleted: boolean }> {
    return this.locked(spiffeId, async () => {
      const slot = this.#state.entries[spiffeId];
      if (!slot || !Object.hasOwn(slot.refs, podRef) || slot.refs[podRef]!.ns !== namespace) return { released: false, entryDeleted: false };
      if (Object.keys(slot.refs).length > 1) {
        delete slot.refs[podRef];
        this.save();
        return { released: true, entryDeleted: false };
      }
      // The last pod: delete first, forget after, so a failed delete is retried by the next DELETE.
      try {
        await this.client.call('DELETE', `/v1/entries/${encodeURIComponent(slot.entryId)}`);
      } catch (err) {
        if (!isTesseraError(err) || err.code !== 'TESSERA_ENTRY_NOT_FOUND') throw err;
      }
      delete this.#state.entries[spiffeId];
      this.save();
      this.opts.log.info('entry deleted: its last pod went away', { spiffe_id: spiffeId, entry_id: slot.entryId });
      return { released: true, entryDeleted: true };
    });
  }
}
