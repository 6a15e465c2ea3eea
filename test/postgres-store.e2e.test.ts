/**
 * `tessera server --store postgres://...` (issue 14): a control plane whose data lives in a real
 * PostgreSQL (test/support/postgres.ts) issues SVIDs, keeps them across a restart of the process,
 * and refuses bad URLs, unreachable servers and wrong passwords with a clear error and exit status,
 * never a hang and never the password in its output.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPostgres, PW_ROLE, type TestPostgres } from './support/postgres.js';
import { freePort, runTessera, ServerProcess } from './support/process.js';
import { joinAgent, makeCsrPem, startControlPlane } from './support/server.js';
import { ApiClient } from '../src/common/api-client.js';

let server: TestPostgres;
beforeAll(async () => { server = await startPostgres(); });
afterAll(async () => { await server?.stop(); });

async function query<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    await c.end();
  }
}

describe('control plane on PostgreSQL', () => {
  it('issues an X509-SVID; the entry, the spent token and the audit log are in the database', async () => {
    const url = await server.createDatabase();
    const t = await startControlPlane({ store: url });
    try {
      const agent = await joinAgent(t.cp, t.admin, 'spiffe://tessera.test/pg/web');
      const cert = new X509Certificate(agent.certPem);
      expect(cert.subjectAltName).toContain('URI:spiffe://tessera.test/pg/web');
      expect(cert.checkIssued(new X509Certificate(agent.bundlePem.split(/(?<=-----END CERTIFICATE-----)/)[0]!.trim()))).toBe(true);
      const entries = await query<{ spiffe_id: string }>(url, 'SELECT spiffe_id FROM entries');
      expect(entries.map((e) => e.spiffe_id)).toEqual(['spiffe://tessera.test/pg/web']);
      expect((await query<{ n: string }>(url, 'SELECT COUNT(*) AS n FROM join_tokens WHERE used_at IS NOT NULL'))[0]!.n).toBe('1');
      expect((await query<{ n: string }>(url, "SELECT COUNT(*) AS n FROM svid_serials WHERE spiffe_id = 'spiffe://tessera.test/pg/web'"))[0]!.n).toBe('1');
      // The audit records of the join, with the tree head the store keeps.
      await t.cp.ctx.audit.flush();
      const audit = await t.admin.call<{ records: { id: number; action: string; outcome: string }[] }>('GET', '/v1/audit?action=svid.join&limit=100');
      expect(audit.records.map((r) => [r.action, r.outcome])).toEqual([['svid.join', 'success']]);
      const top = (await query<{ top: string }>(url, 'SELECT MAX(id) AS top FROM audit'))[0]!.top;
      const value = (await query<{ value: string }>(url, "SELECT value FROM meta WHERE key = 'audit_frontier'"))[0]!.value;
      expect((JSON.parse(value) as { size: number }).size).toBe(Number(top));
      // The SQLite file is not made: the data directory holds only the KEK and the admin files.
      expect(existsSync(join(t.dataDir, 'tessera.db'))).toBe(false);
    } finally {
      await t.close();
    }
  });

  it('a `tessera server --store` process keeps its data across a restart (KEK in --data-dir, rows in PostgreSQL)', async () => {
    const url = await server.createDatabase();
    const dataDir = mkdtempSync(join(tmpdir(), 'tessera-pgstore-'));
    const proc = new ServerProcess(dataDir, await freePort(), ['--store', url, '--trust-domain', 'tessera.test']);
    try {
      await proc.start();
      let admin = proc.admin();
      const { id } = await admin.call<{ id: string }>('POST', '/v1/entries', { spiffe_id: 'spiffe://tessera.test/pg/kept' });
      admin.close();
      await proc.kill('SIGTERM');
      await proc.start();
      admin = proc.admin();
      const entries = await admin.call<{ entries: { id: string; spiffe_id: string }[] }>('GET', '/v1/entries');
      expect(entries.entries.map((e) => [e.id, e.spiffe_id])).toEqual([[id, 'spiffe://tessera.test/pg/kept']]);
      // The CA (its key sealed in PostgreSQL, the KEK in the data dir) still signs: a new token joins.
      const { token } = await admin.call<{ token: string }>('POST', '/v1/tokens', { entry_id: id });
      admin.close();
      const anon = new ApiClient(proc.url, { ca: readFileSync(join(proc.adminDir, 'bundle.pem'), 'utf8') });
      try {
        const joined = await anon.call<{ svid_pem: string; spiffe_id: string }>('POST', '/v1/agent/join', { join_token: token, csr: makeCsrPem().pem });
        expect(joined.spiffe_id).toBe('spiffe://tessera.test/pg/kept');
        expect(new X509Certificate(joined.svid_pem).subjectAltName).toContain('URI:spiffe://tessera.test/pg/kept');
      } finally {
        anon.close();
      }
      expect(proc.output).not.toMatch(/TESSERA_INTERNAL/);
    } finally {
      await proc.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('tessera server --store: refusals', () => {
  const serve = async (store: string | undefined, env: NodeJS.ProcessEnv = {}) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'tessera-pgbad-'));
    try {
      const started = Date.now();
      const r = await runTessera(['server', '--data-dir', dataDir, '--listen', `127.0.0.1:${await freePort()}`, ...(store !== undefined ? ['--store', store] : [])],
        { env: { TESSERA_STORE: '', ...env }, timeoutMs: 20_000 });
      return { ...r, ms: Date.now() - started };
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  };

  it('a URL that is not postgres:// or names no database: exit 2, TESSERA_CONFIG_INVALID (flag or $TESSERA_STORE)', async () => {
    for (const bad of ['mysql://u@127.0.0.1/db', 'postgres://u@127.0.0.1:5432', 'not a url']) {
      const r = await serve(bad);
      expect(r.status, bad).toBe(2);
      expect(r.stderr).toContain('TESSERA_CONFIG_INVALID');
      expect(r.stderr).toContain('--store');
    }
    const env = await serve(undefined, { TESSERA_STORE: 'sqlite:///tmp/x.db' });
    expect(env.status).toBe(2);
    expect(env.stderr).toContain('postgres://');
  });

  it('nothing listening: exit 3 (TESSERA_UNAVAILABLE) at once', async () => {
    const r = await serve(`postgres://tessera@127.0.0.1:${await freePort()}/x`);
    expect(r.status).toBe(3);
    expect(r.stderr).toContain('TESSERA_UNAVAILABLE');
    expect(r.stderr).toContain('ECONNREFUSED');
  });

  it('wrong password or no such database: exit 2, and the password is never printed', async () => {
    const port = server.port;
    const wrong = await serve(`postgres://${PW_ROLE}:Sup3rSecretPw@127.0.0.1:${port}/postgres`);
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(/password authentication failed/);
    expect(wrong.stdout + wrong.stderr).not.toContain('Sup3rSecretPw');
    expect(wrong.stderr).toContain('***');
    const nodb = await serve(`postgres://tessera@127.0.0.1:${port}/no_such_db`);
    expect(nodb.status).toBe(2);
    expect(nodb.stderr).toMatch(/no_such_db/);
  });

  it('a server that accepts and never answers: exit 3 after the connect timeout, not a hang', async () => {
    const sockets: Socket[] = [];
    const silent: Server = createServer((s) => { sockets.push(s); });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const port = (silent.address() as { port: number }).port;
      const r = await serve(`postgres://tessera:Hush123@127.0.0.1:${port}/x`);
      expect(r.status).toBe(3);
      expect(r.stderr).toMatch(/timeout/i);
      expect(r.stderr).not.toContain('Hush123');
      expect(r.ms).toBeLessThan(15_000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});
