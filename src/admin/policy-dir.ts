import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { TesseraError } from '../core/errors.js';

/**
 * Reads a policy directory as it is in Git: every `*.cedar` file below it (names relative to it)
 * and, if present, `schema.json` (a Cedar JSON schema; default: Tessera's).
 */
export function readPolicyDir(dir: string): { policies: Record<string, string>; schema?: Record<string, unknown> } {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory()) throw new TesseraError('TESSERA_CONFIG_INVALID', `${dir} is not a directory of .cedar files`);
  const policies: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      if (name.startsWith('.')) continue;
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.cedar')) policies[relative(root, p)] = readFileSync(p, 'utf8');
    }
  };
  walk(root);
  if (Object.keys(policies).length === 0) throw new TesseraError('TESSERA_CONFIG_INVALID', `no .cedar files in ${dir}`);
  const schemaFile = join(root, 'schema.json');
  if (!existsSync(schemaFile)) return { policies };
  try {
    return { policies, schema: JSON.parse(readFileSync(schemaFile, 'utf8')) as Record<string, unknown> };
  } catch {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `${schemaFile} is not valid JSON`);
  }
}
