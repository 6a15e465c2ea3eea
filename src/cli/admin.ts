/**
 * `tessera admin add|renew|list|remove`: one admin credential per person. The key pair is made
 * here, in the process that writes the credential; only a CSR goes to the control plane.
 */
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { adminDir } from '../admin/clients.js';
import { createCsr } from '../core/csr.js';
import { TesseraError } from '../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../core/files.js';
import { pemEncode } from '../core/x509.js';
import { output, table, withAdmin, type GlobalOptions, type Run } from './context.js';
import { adminPolicyCommands } from './admin-policy.js';

type Json = Record<string, unknown>;
interface AdminView { name: string; spiffe_id: string; state: string; created_by: string | null; not_after: string | null; removed_at: string | null; cert_pem?: string; bundle_pem?: string }

/** A fresh P-256 key and a CSR for it (no identity in it: the control plane names the admin). */
function keyAndCsr(): { keyPem: string; csr: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, csr: pemEncode(createCsr({ privateKey, publicKey }), 'CERTIFICATE REQUEST') };
}

/** Writes a credential directory laid out like the server's DATA_DIR/admin/ (usable as --admin-dir). */
function writeCredential(dir: string, keyPem: string, res: AdminView, serverJson: string): void {
  ensurePrivateDir(dir);
  writeFileAtomic(join(dir, 'admin.key'), keyPem, 0o600);
  writeFileAtomic(join(dir, 'admin.pem'), res.cert_pem!, 0o600);
  writeFileAtomic(join(dir, 'bundle.pem'), res.bundle_pem!);
  writeFileAtomic(join(dir, 'server.json'), serverJson);
}

/** The calling admin's server.json (URL and trust domain), carried into the new credential. */
function serverJson(g: GlobalOptions, url: string): string {
  const file = join(adminDir(g), 'server.json');
  const info = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Json) : {};
  return `${JSON.stringify({ ...info, url }, null, 2)}\n`;
}

export function adminCommands(program: Command, run: Run): void {
  const admin = program.command('admin').description('named admins: one credential per person (add, renew, list, remove), and the admin policy');
  adminPolicyCommands(admin, run);

  admin.command('add').description('issue an admin credential for a person (spiffe://<td>/tessera/admin/NAME); the key is generated here')
    .argument('<name>', 'lowercase name: a-z 0-9 . _ - (1..63)')
    .option('--out <dir>', 'where to write the credential (admin.key, admin.pem, bundle.pem, server.json)', '.tessera/admins/<name>')
    .action(run(async (g, name: string, o: Json) => {
      const dir = resolve(o.out === '.tessera/admins/<name>' ? join('.tessera', 'admins', name) : String(o.out));
      if (existsSync(join(dir, 'admin.key'))) throw new TesseraError('TESSERA_CONFIG_INVALID', `${dir} already holds an admin credential: choose another --out`);
      const { keyPem, csr } = keyAndCsr();
      const res = await withAdmin(g, async (c) => ({ res: await c.call<AdminView>('POST', '/v1/admins', { name, csr }), url: c.baseUrl }));
      writeCredential(dir, keyPem, res.res, serverJson(g, res.url));
      const { cert_pem: _c, bundle_pem: _b, ...shown } = res.res;
      output(g, { ...shown, dir }, () => `admin ${name} added: ${res.res.spiffe_id}, valid until ${String(res.res.not_after)}\ncredential in ${dir} (use --admin-dir ${dir} or TESSERA_ADMIN_DIR); renew it with \`tessera admin renew\` before then`);
    }));

  admin.command('renew').description('renew the calling named admin\'s own credential (new key, same identity), in place')
    .action(run(async (g) => {
      const dir = adminDir(g);
      const { keyPem, csr } = keyAndCsr();
      const res = await withAdmin(g, async (c) => ({ res: await c.call<AdminView>('POST', '/v1/admins/renew', { csr }), url: c.baseUrl }));
      writeCredential(dir, keyPem, res.res, serverJson(g, res.url));
      const { cert_pem: _c, bundle_pem: _b, ...shown } = res.res;
      output(g, shown, () => `renewed ${res.res.spiffe_id}: valid until ${String(res.res.not_after)}`);
    }));

  admin.command('list').description('list admins (the bootstrap credential first)')
    .action(run(async (g) => {
      const res = await withAdmin(g, (c) => c.call<{ admins: AdminView[] }>('GET', '/v1/admins'));
      output(g, res, () => table(['NAME', 'STATE', 'SPIFFE ID', 'VALID UNTIL', 'ADDED BY'],
        res.admins.map((a) => [a.name, a.state, a.spiffe_id, a.not_after ?? '-', a.created_by ?? '-'])));
    }));

  admin.command('remove').description('remove (revoke) an admin: its credential is refused from now on')
    .argument('<name>', 'the admin\'s name')
    .requiredOption('--reason <text>', 'why (audited)')
    .action(run(async (g, name: string, o: Json) => {
      const res = await withAdmin(g, (c) => c.call<AdminView>('POST', `/v1/admins/${encodeURIComponent(name)}/remove`, { reason: String(o.reason) }));
      output(g, res, () => `admin ${name} removed at ${String(res.removed_at)}: ${res.spiffe_id} is refused from now on`);
    }));
}
