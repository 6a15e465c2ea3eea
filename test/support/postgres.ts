/**
 * A real PostgreSQL server for tests: initdb in a temp directory, listening on 127.0.0.1 only (a
 * free port) with its unix socket in that directory, trust auth for one local role only, fsync off.
 * One server per test file; `createDatabase()` gives each suite its own database (TEMPLATE template0).
 *
 * When the tests run as root (initdb refuses root) the server runs as the system user `tessera-pg`,
 * created on first use. Binaries: /usr/lib/postgresql/<newest>/bin (`scripts/ensure-system-deps.sh`).
 *
 * Roles: `tessera` (superuser, trust from 127.0.0.1 and the socket) and `tessera_pw` (password
 * `PW_PASSWORD`, scram-sha-256 from 127.0.0.1: for wrong-password tests).
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './process.js';

export const PW_ROLE = 'tessera_pw';
export const PW_PASSWORD = 'correct-horse-7';
const SUPERUSER = 'tessera';
const SYSTEM_USER = 'tessera-pg';

export interface TestPostgres {
  /** postgres://tessera@127.0.0.1:<port>/postgres */
  url: string;
  port: number;
  /** Creates an empty database (a unique name unless given) and returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /**
   * Stops the server (`pg_ctl stop -m fast`: clients are disconnected) and starts it again on the
   * same data directory and port; resolves once it accepts connections again. For fault tests.
   */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function binDir(): string {
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) if (existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin');
  throw new Error('PostgreSQL is not installed (run scripts/ensure-system-deps.sh)');
}

/** uid/gid to run the server as: ourselves unless root, then `tessera-pg` (made once). */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string): number => Number(execFileSync('id', [flag, SYSTEM_USER], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  try {
    return { uid: id('-u'), gid: id('-g') };
  } catch {
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', SYSTEM_USER], { stdio: 'ignore' });
    return { uid: id('-u'), gid: id('-g') };
  }
}

let dbCounter = 0;

export async function startPostgres(): Promise<TestPostgres> {
  const bin = binDir();
  const user = serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'tessera-pg-'));
  const data = join(dir, 'data');
  if (user) chownSync(dir, user.uid, user.gid);
  const asUser = user ? { uid: user.uid, gid: user.gid } : {};
  const pwFile = join(dir, 'pw');
  writeFileSync(pwFile, 'unused\n', { mode: 0o600 });
  if (user) chownSync(pwFile, user.uid, user.gid);
  execFileSync(join(bin, 'initdb'), ['-D', data, '-U', SUPERUSER, '--auth=trust', '--no-sync', '--no-instructions', '-E', 'UTF8', '--locale=C'], {
    ...asUser, stdio: 'pipe', cwd: dir, env: { ...process.env, LC_ALL: 'C' },
  });
  writeFileSync(join(data, 'pg_hba.conf'), [
    `local all ${SUPERUSER} trust`,
    `host all ${SUPERUSER} 127.0.0.1/32 trust`,
    `host all ${PW_ROLE} 127.0.0.1/32 scram-sha-256`,
    '',
  ].join('\n'));
  if (user) chownSync(join(data, 'pg_hba.conf'), user.uid, user.gid);
  const port = await freePort();
  const url = `postgres://${SUPERUSER}@127.0.0.1:${port}/postgres`;
  let child!: ChildProcess;
  let exited!: Promise<void>;
  let log = '';
  /** Starts the postmaster and waits until it answers `sql` (its first start creates the password role). */
  const launch = async (sql: string): Promise<void> => {
    child = spawn(join(bin, 'postgres'), [
      '-D', data, '-h', '127.0.0.1', '-p', String(port), '-k', dir,
      '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=100',
      '-c', 'shared_buffers=32MB', '-c', 'log_min_messages=warning', '-c', 'logging_collector=off',
    ], { ...asUser, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    log = '';
    const started = child;
    started.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
    exited = new Promise<void>((resolve) => started.once('exit', () => resolve()));
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (started.exitCode !== null) throw new Error(`postgres exited at start: ${log}`);
      const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
      try {
        await c.connect();
        await c.query(sql);
        await c.end();
        return;
      } catch (err) {
        await c.end().catch(() => undefined);
        if (Date.now() > deadline) {
          started.kill('SIGKILL');
          throw new Error(`postgres did not accept connections: ${(err as Error).message}\n${log}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  await launch(`CREATE ROLE ${PW_ROLE} LOGIN PASSWORD '${PW_PASSWORD}'`);
  let stopped = false;
  return {
    url,
    port,
    async createDatabase(name?: string): Promise<string> {
      const db = name ?? `t${process.pid}_${++dbCounter}`;
      if (!/^[a-z_][a-z0-9_]{0,62}$/.test(db)) throw new Error(`bad database name ${db}`);
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${db} TEMPLATE template0`);
        await c.query(`GRANT ALL ON DATABASE ${db} TO ${PW_ROLE}`);
      } finally {
        await c.end();
      }
      return `postgres://${SUPERUSER}@127.0.0.1:${port}/${db}`;
    },
    async restart(): Promise<void> {
      if (stopped) throw new Error('postgres was stopped');
      await new Promise<void>((resolve, reject) => {
        execFile(join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', '-t', '30', 'stop'], { ...asUser, cwd: dir }, (err, _out, stderr) => (err ? reject(new Error(`pg_ctl stop: ${err.message} ${stderr}`)) : resolve()));
      });
      await exited;
      await launch('SELECT 1');
    },
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      // SIGINT: fast shutdown (clients are disconnected, no checkpoint wait beyond what it needs).
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGINT');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs one statement on `url` (own connection) and returns its rows: for tests that look into the database. */
export async function queryDb<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql)).rows;
  } finally {
    await c.end();
  }
}
