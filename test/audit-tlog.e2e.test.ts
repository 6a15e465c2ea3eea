/**
 * `tessera audit checkpoint` and `tessera audit prove` through the real command (dist/) against a
 * real `tessera server` process: the checkpoint's signature and the inclusion proof are checked by the
 * CLI, with the key the server names or a pinned one; bad arguments and unknown records give stable
 * codes and exit statuses.
 */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditLogOrigin } from '../src/core/checkpoint.js';
import { encodeVerifierKey } from '../src/core/signed-note.js';
import { CLI, freePort, ServerProcess, waitFor } from './support/process.js';

interface Run { status: number | null; stdout: string; stderr: string; json: Record<string, any> }

let dir: string;
let server: ServerProcess;

function tessera(args: string[]): Run {
  const r = spawnSync(process.execPath, [CLI, ...args], { env: { ...process.env, TESSERA_ADMIN_DIR: server.adminDir }, encoding: 'utf8', timeout: 30_000 });
  let json: Record<string, unknown> = {};
  try { json = JSON.parse(r.stdout) as Record<string, unknown>; } catch { /* human output */ }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tessera-tlog-'));
  server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', 'example.org']);
  await server.start();
});

afterAll(async () => {
  await server?.stop(false);
  rmSync(dir, { recursive: true, force: true });
});

describe('tessera audit checkpoint / prove', () => {
  it('shows a verified checkpoint and proves a record in it', async () => {
    expect(tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org/shop/orders']).status).toBe(0);
    const cp = await waitFor('a checkpoint with records', () => {
      const r = tessera(['audit', 'checkpoint', '--json']);
      return r.status === 0 && (r.json.checkpoint.size as number) >= 1 ? r : undefined;
    }, 10_000);
    expect(cp.json.verified).toBe(true);
    expect(cp.json.pinned).toBe(false);
    expect(cp.json.log_key).toMatch(/^example\.org\/tessera\/audit\+[0-9a-f]{8}\+/);
    const human = tessera(['audit', 'checkpoint']);
    expect(human.status).toBe(0);
    expect(human.stdout).toContain('signature:  verified with the server\'s log key');
    expect(human.stdout).toContain('example.org/tessera/audit');

    const pinned = tessera(['audit', 'prove', '1', '--log-key', cp.json.log_key as string, '--json']);
    expect(pinned.status).toBe(0);
    expect(pinned.json).toMatchObject({ verified: true, pinned: true, leaf_index: 0 });
    const proved = tessera(['audit', 'prove', '1']);
    expect(proved.status).toBe(0);
    expect(proved.stdout).toMatch(/record 1 \(.*\) is leaf 0 of the checkpoint of size \d+/);
    expect(proved.stdout).toContain('verified against root');
  });

  it('refuses another pinned key, bad ids and unknown records with stable codes', () => {
    const other = encodeVerifierKey(auditLogOrigin('example.org'), generateKeyPairSync('ed25519').publicKey);
    const wrongKey = tessera(['audit', 'prove', '1', '--log-key', other, '--json']);
    expect([wrongKey.status, wrongKey.json.error?.code]).toEqual([1, 'TESSERA_AUDIT_PROOF_INVALID']);
    const badKey = tessera(['audit', 'checkpoint', '--log-key', 'not-a-key', '--json']);
    expect([badKey.status, badKey.json.error?.code]).toEqual([1, 'TESSERA_AUDIT_CHECKPOINT_INVALID']);
    for (const id of ['0', '-1', 'x', '1.5']) {
      const r = tessera(['audit', 'prove', id, '--json']);
      expect(`${id}: ${r.status} ${r.json.error?.code}`).toBe(`${id}: 2 TESSERA_CONFIG_INVALID`);
    }
    const unknown = tessera(['audit', 'prove', '999999', '--json']);
    expect([unknown.status, unknown.json.error?.code]).toEqual([1, 'TESSERA_NOT_FOUND']);
    const noSize = tessera(['audit', 'prove', '1', '--size', '999999', '--json']);
    expect([noSize.status, noSize.json.error?.code]).toEqual([1, 'TESSERA_NOT_FOUND']);
  });

  it('proves one signed size extends another (tessera audit consistency), with stable codes for bad sizes', async () => {
    const first = tessera(['audit', 'checkpoint', '--json']);
    expect(first.status).toBe(0);
    const from = first.json.checkpoint.size as number;
    expect(tessera(['entry', 'create', '--spiffe-id', 'spiffe://example.org/shop/consistency']).status).toBe(0);
    const later = await waitFor('a larger checkpoint', () => {
      const r = tessera(['audit', 'checkpoint', '--json']);
      return r.status === 0 && (r.json.checkpoint.size as number) > from ? r : undefined;
    }, 10_000);
    const to = later.json.checkpoint.size as number;
    const ok = tessera(['audit', 'consistency', String(from), String(to), '--log-key', first.json.log_key as string, '--json']);
    expect(ok.status).toBe(0);
    expect(ok.json).toMatchObject({ from, to, verified: true, pinned: true });
    const human = tessera(['audit', 'consistency', String(from)]);
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`the log of size \\d+ extends the log of size ${from}`));
    const backwards = tessera(['audit', 'consistency', String(to), String(from), '--json']);
    expect([backwards.status, backwards.json.error?.code]).toEqual([1, 'TESSERA_AUDIT_RANGE']);
    const other = encodeVerifierKey(auditLogOrigin('example.org'), generateKeyPairSync('ed25519').publicKey);
    const wrongKey = tessera(['audit', 'consistency', String(from), '--log-key', other, '--json']);
    expect([wrongKey.status, wrongKey.json.error?.code]).toEqual([1, 'TESSERA_AUDIT_PROOF_INVALID']);
    const unsigned = tessera(['audit', 'consistency', '999999', '--json']);
    expect(unsigned.status).toBe(1);
    for (const bad of ['0', 'x', '-3']) {
      const r = tessera(['audit', 'consistency', bad, '--json']);
      expect(`${bad}: ${r.status} ${r.json.error?.code}`).toBe(`${bad}: 2 TESSERA_CONFIG_INVALID`);
    }
  });
});
