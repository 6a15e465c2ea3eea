import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TesseraError } from '../core/errors.js';

let cached: string | undefined;

/**
 * The folder holding Tessera's package.json, found by walking up from this module, so that files
 * shipped beside the code (`proto/`, `native/`) are found both from `src/` (vitest, tsx) and from
 * `dist/src/` (the compiled `tessera` command).
 */
export function projectRoot(): string {
  if (cached !== undefined) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'proto', 'workload.proto'))) {
      cached = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new TesseraError('TESSERA_INTERNAL', 'cannot find the Tessera installation folder (proto/workload.proto)');
    dir = up;
  }
}
