/**
 * A named admin's credential directory (`tessera admin add --out DIR`) across a CA rotation. The
 * control plane rewrites only its own admin directory's bundle.pem; DIR's bundle lists the CAs of
 * the day it was made. Found by the demo (issue 11): once the rotated CA signed the control plane's
 * certificate, `tessera grant approve` as bob failed with TESSERA_SERVER_UNREACHABLE. Each admin
 * command now refreshes DIR/bundle.pem from the control plane it reached, so a command run between
 * the rotation and the activation keeps the directory working; a copy of the directory that ran
 * nothing meanwhile shows the failure the refresh prevents.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runTessera } from './support/process.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';

const certs = (pem: string): number => pem.split('-----BEGIN CERTIFICATE-----').length - 1;

describe('a named admin\'s trust bundle across a CA rotation', () => {
  let t: TestControlPlane;
  let dir: string;

  beforeAll(async () => {
    expect(existsSync(CLI), 'run `npx tsc -p tsconfig.json` first: the test runs dist/src/cli/main.js').toBe(true);
    // The server certificate moves to a new CA once that CA has been published for the refresh hint
    // and a 10 s margin (federated relying parties fetch at the hint): a 1 s hint keeps that short.
    t = await startControlPlane({ trustDomain: 'example.org', federation: { refreshHintSeconds: 1 } });
    dir = mkdtempSync(join(tmpdir(), 'tessera-admins-'));
  });

  afterAll(async () => {
    await t?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('every admin command refreshes bundle.pem, so the admin still reaches the control plane once the new CA signs', async () => {
    const alice = join(dir, 'alice');
    const stale = join(dir, 'alice-stale');
    const as = (d: string, args: string[]) => runTessera(['--json', ...args], { env: { TESSERA_ADMIN_DIR: d }, timeoutMs: 20_000 });
    const added = await as(t.cp.adminDir, ['admin', 'add', 'alice', '--out', alice]);
    expect(added.status, added.stderr).toBe(0);
    expect(certs(readFileSync(join(alice, 'bundle.pem'), 'utf8'))).toBe(1);
    cpSync(alice, stale, { recursive: true });

    const keyBefore = readFileSync(join(t.cp.adminDir, 'admin.key'), 'utf8');
    const certBefore = readFileSync(join(t.cp.adminDir, 'admin.pem'), 'utf8');
    await t.admin.call('POST', '/v1/ca/rotate', { grace_seconds: 3 });
    // Between the rotation and the activation: one command as alice, and her bundle lists both CAs.
    const listed = await as(alice, ['admin', 'list']);
    expect(listed.status, listed.stderr).toBe(0);
    expect(certs(readFileSync(join(alice, 'bundle.pem'), 'utf8'))).toBe(2);
    expect(readFileSync(join(alice, 'bundle.pem'), 'utf8')).toBe(readFileSync(join(t.cp.adminDir, 'bundle.pem'), 'utf8'));

    // Once the new CA signs the control plane's certificate, a copy that ran nothing cannot reach it...
    // Each attempt runs on a fresh copy of the untouched directory: an attempt that still got through
    // (before the activation) refreshed its own bundle.pem, as every admin command now does.
    const deadline = Date.now() + 30_000;
    let attempt = 0;
    const staleOnce = async (): Promise<Awaited<ReturnType<typeof as>>> => {
      const d = `${stale}-${attempt++}`;
      cpSync(stale, d, { recursive: true });
      return as(d, ['admin', 'list']);
    };
    let staleRun = await staleOnce();
    while (staleRun.status === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      staleRun = await staleOnce();
    }
    expect(staleRun.status).not.toBe(0);
    expect(`${staleRun.stdout}${staleRun.stderr}`).toContain('TESSERA_SERVER_UNREACHABLE');
    // ...and alice's own directory still does.
    const after = await as(alice, ['admin', 'list']);
    expect(after.status, after.stderr).toBe(0);
    expect((JSON.parse(after.stdout) as { admins: { name: string }[] }).admins.map((a) => a.name)).toContain('alice');
    // The control plane's own admin directory: the certificate was re-issued by the new CA for the same
    // key, so a reader of the pair never sees a new key with the old certificate.
    const certAfter = readFileSync(join(t.cp.adminDir, 'admin.pem'), 'utf8');
    expect(certAfter).not.toBe(certBefore);
    expect(readFileSync(join(t.cp.adminDir, 'admin.key'), 'utf8')).toBe(keyBefore);
    expect(new X509Certificate(certAfter).checkPrivateKey(createPrivateKey(keyBefore))).toBe(true);
  }, 70_000);
});
