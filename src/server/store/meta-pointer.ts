/**
 * A meta row holding the number of the newest version of something versioned (the risk engine's
 * configuration, the admin policy), moved forward only: several processes may store versions at
 * once, numbered by an atomic counter, and a slower writer with a lower number must not undo a
 * newer version.
 */
import type { Store } from './store.js';

/** Sets `key` to `version` unless it already holds `version` or a higher one (compare and set, retried). */
export async function advanceMetaPointer(store: Store, key: string, version: number): Promise<void> {
  for (;;) {
    const cur = await store.getMeta(key);
    if (cur === undefined) {
      if ((await store.setMetaIfAbsent(key, String(version))) === String(version)) return;
      continue;
    }
    if (Number(cur) >= version || (await store.replaceMeta(key, cur, String(version)))) return;
  }
}
