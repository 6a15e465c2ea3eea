#!/usr/bin/env node
// The compiled CLI lives in dist/ (built by `npm run build`, which `npm test` and `npm run demo` run).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../dist/src/cli/main.js', import.meta.url));
if (!existsSync(main)) {
  process.stderr.write('tessera: not built yet; run `npm run build` in the project directory\n');
  process.exit(2);
}
await import(main);
