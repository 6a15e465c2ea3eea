/**
 * The demo (`npm run demo`): a control plane, three agents for services in two sites and three key
 * servers in three sites, as real processes on 127.0.0.1, with short lifetimes so that rotations show
 * within a minute. It prints identities, rotations and a CA rotation as they happen, and blind
 * secrets: a database password sealed offline into the "repository" (DIR/repo) under a 2-of-3 secret
 * policy, opened by the orders agent (cloud-eu, PCI) into a 0600 file, refused to inventory (edge-7,
 * standard) by the key servers' Cedar policy (policies/secrets.cedar), and still opened with one key
 * server killed. The plaintext is never printed, only a masked form. Ctrl-C stops everything.
 *
 * The audit log: at ~13 s `tessera audit verify` checks it over the API and the latest signed
 * checkpoint is saved (DIR/audit-checkpoint.json, as an auditor would keep it elsewhere); when the demo
 * stops, `tessera audit verify --db` checks the stopped control plane's SQLite file offline against
 * it.
 *
 * `npm run demo -- --tamper` (agents long-poll the policy stream every 2 s, SVIDs live 30 s, no CA
 * rotation): after 20 s (unless DEMO_SECONDS says otherwise) only the control plane stops; the agents
 * and key servers keep running. Two attacker moves on its SQLite file: (a) one record's field edited —
 * `tessera audit verify --db` names the record (the edit is then undone); (b) the tail cut back
 * consistently (records, frontier, subtrees, checkpoints: demo/audit-tamper.ts), which the file alone
 * cannot show and the control plane's start-up check accepts. The control plane restarts on the same
 * data directory and port and signs checkpoints of the shorter log; each agent, at its next policy
 * long-poll, raises TESSERA_AUDIT_WITNESS_ALARM (a rewind), keeps its checkpoint and reports it (an
 * `audit.witness_alarm` record); `tessera audit verify --from-checkpoint` with the checkpoint saved at
 * ~13 s catches the truncation over the API. It then stops with a summary: exit 0 when all three
 * catches happened, 1 otherwise.
 *
 * Adaptive zero trust (issue 11, not with --tamper), from ~16 s: named admins alice and bob; alice sets
 * the risk engine's configuration (`tessera risk config set`: cold-start bytes out 1 MiB per window,
 * one window of grace) so that detection takes seconds. orders exfiltrates to inventory through its
 * own sidecar until the engine quarantines it; the reasons (`tessera risk show`), its spread to every
 * agent, the sidecars' refusals and the key servers' refusal of its unseal are printed; bob releases
 * it (`tessera risk release`) and its calls go through again; alice requests a 15 s grant for frontend
 * to DELETE on orders, her own approval is refused (two-person rule), bob approves, the call is
 * allowed, and refused again after the expiry. Then a CA rotation.
 *
 * People and devices (issue 12): the control plane's public URL is https://localhost:PORT (a browser
 * refuses an IP as a passkey's RP ID); the demo prints the web console's URL and a one-time sign-in
 * link for carol (group viewers, not enrolled), after adding a rule to the admin policy with
 * `tessera admin policy set` so that her group may read; what her session may do is found out with a
 * second link of the demo's own (demo/console.ts) and said in one line. The map (`GET /v1/map`) is
 * printed as one line before the exfiltration, during the quarantine and after the release. After the
 * adaptive scenes, a device scene: carol's laptop is enrolled, reports an MDM's posture file, shows as
 * `context.device`, is revoked, and its next report is refused.
 *
 * DEMO_SECONDS=N stops it after N seconds, and not before the adaptive and device scenes are done (used
 * by the test of the demo); exit 1 when one of those scenes did not have the expected outcome.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Agent as HttpAgent, createServer as createHttpServer, request as httpRequest, type Server as HttpServer } from 'node:http';
import Database from 'better-sqlite3';
import { ApiClient } from '../src/common/api-client.js';
import { cutAuditLogBack } from './audit-tamper.js';
import { answerCode, ConsoleSession, mapLine, type ConsoleAnswer } from './console.js';
import { readPolicyDir } from '../src/admin/policy-dir.js';
import { WITNESS_STATE_FILE } from '../src/agent/witness.js';
import { verifyJwtSvid } from '../src/core/jwt-svid.js';
import type { AppliedPolicyResponse, ApplyPolicyRequest, AuditListResponse, BundleResponse, CaRotateRequest, CaRotateResponse, CreateEntryRequest, CreateTokenRequest, CreateTokenResponse, EntryView, JwtSvidRequest, JwtSvidResponse, PolicyDryRunResponse } from '../src/core/wire/control-plane.js';
import { parseSealedText, ready as secretsReady } from '../src/core/secrets/index.js';
import type { DeviceShowResponse } from '../src/core/wire/devices.js';
import type { MapResponse } from '../src/core/wire/map.js';
import type { RiskChangeResponse, RiskConfigVersionView, RiskShowResponse } from '../src/core/wire/risk.js';

const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const DIR = join(ROOT, '.tessera', 'demo');
const TD = 'tessera.test';
const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: number, s: string): string => (color ? `\x1b[${code}m${s}\x1b[0m` : s);

const SERVICES = [
  { name: 'frontend', id: `spiffe://${TD}/shop/frontend`, site: 'cloud-eu', app: 'shop', compliance: 'standard', location: 'eu', colour: 36 },
  { name: 'orders', id: `spiffe://${TD}/shop/orders`, site: 'cloud-eu', app: 'shop', compliance: 'pci', location: 'eu', colour: 35 },
  { name: 'inventory', id: `spiffe://${TD}/shop/inventory`, site: 'edge-7', app: 'shop', compliance: 'standard', location: 'eu', colour: 33 },
];

// The key servers of blind secrets, one per site: a secret policy needs 2 of the 3.
const KEYSERVERS = [
  { name: 'ks-1', id: `spiffe://${TD}/keyserver/1`, site: 'cloud-eu', location: 'eu' },
  { name: 'ks-2', id: `spiffe://${TD}/keyserver/2`, site: 'edge-7', location: 'eu' },
  { name: 'ks-3', id: `spiffe://${TD}/keyserver/3`, site: 'cloud-us', location: 'us' },
];
const KS_COLOUR = 34;
const SECRETS_COLOUR = 94;
/** The key server killed to show that 2 of 3 still open the secret. */
const KILLED = 1;

/** `npm run demo -- --tamper`: stop the control plane, tamper with its SQLite file, catch it (see the top). */
const TAMPER = process.argv.includes('--tamper');
/** With --tamper the agents witness the log every 2 s (default 25 s), and SVIDs outlive the outage. */
const AGENT_WATCH = TAMPER ? ['--policy-watch', '2s'] : [];
const SVID_TTL = TAMPER ? '30s' : '20s';
/** The agent's log line of a witness alarm (src/agent/witness.ts). */
const ALARM_MSG = 'audit log witness alarm: keeping the held checkpoint';
const AUDIT_COLOUR = 92;
const SERVER_DIR = join(DIR, 'server');
const SAVED_CHECKPOINT = join(DIR, 'audit-checkpoint.json');

/** The named admins of the adaptive scenes: alice is added by the bootstrap admin, bob by alice. */
const ADMINS_DIR = join(DIR, 'admins');
const ADMIN_COLOUR = 95;
const RISK_COLOUR = 91;
/**
 * The risk engine's configuration the demo sets (`tessera risk config set`): every demo identity is
 * still learning (24 h by default), so the cold-start thresholds judge it; 1 MiB sent in one 5 s
 * window (default 50 MiB) is blatant, and a slot is judged one window after it ends (default 2).
 */
const DEMO_RISK_CONFIG = { grace_windows: 1, cold_start: { bytes_out: 1024 * 1024 } };
/** How long the demo's just-in-time grant lasts (the demo's control plane runs with --grant-min 10s). */
const GRANT_SECONDS = 15;
/**
 * orders' SVID lifetime: a quarantine refuses renewals and one that outlasts the SVID leaves the agent
 * without an identity, so orders' SVID (rotated at half life) outlives its quarantine even on a slow machine.
 */
const ORDERS_SVID_TTL_S = 60;
/** When the adaptive scenes start (after the policy change and the audit check), ms after the first calls. */
const ADAPTIVE_AT_MS = 16_000;

/** The console's person: carol, in group viewers, signs in with a one-time link (no passkey, no MFA). */
const CONSOLE_USER = 'carol';
const VIEWERS = 'viewers';
const CONSOLE_COLOUR = 96;
const DEVICE = 'lap-carol';
const DEVICE_COLOUR = 93;
/**
 * The rule the demo adds to the admin policy in force (`tessera admin policy set`): the built-in
 * rules let people read only with fresh MFA, which a console-link session never has.
 */
const VIEWERS_RULE = `
// Added by the demo (npm run demo): people in group "${VIEWERS}" read every console page (every
// admin:read action) without fresh MFA, e.g. from a one-time console link; they change nothing.
@id("demo-viewers-read")
permit (principal in Tessera::Group::"${VIEWERS}", action in Tessera::Action::"admin:read", resource);
`;
/** https://localhost:PORT: the control plane's --public-url (the console's origin, the passkeys' RP ID). */
const publicUrlOf = (port: number): string => `https://localhost:${port}`;

const children: ChildProcess[] = [];
let controlPlane: ChildProcess | undefined;
/** Witness alarms the service agents raised (--tamper), by service name. */
const alarms = new Map<string, { kind: string; held: number; seen: number }>();
let onAlarm: (() => void) | undefined;
/** Policy bundles each service's agent put in force: version, and when (its log line's time). */
const bundles = new Map<string, { version: number; at: number }[]>();
/** The last code each service's own outbound sidecar refused a call with (its `upstream refused` line). */
const outboundRefusals = new Map<string, string>();
const apps: HttpServer[] = [];
const timers: NodeJS.Timeout[] = [];
let stopping = false;

function say(who: string, colour: number, msg: string): void {
  const t = new Date().toISOString().slice(11, 19);
  process.stdout.write(`${paint(90, t)} ${paint(colour, who.padEnd(10))} ${msg}\n`);
}

/** A service's or key server's short name for its SPIFFE ID (the ID itself for anyone else). */
function nameOf(id: unknown): string {
  return SERVICES.find((s) => s.id === id)?.name ?? KEYSERVERS.find((k) => k.id === id)?.name ?? String(id);
}

function freePort(preferred: number): Promise<number> {
  const tryPort = (p: number): Promise<number> => new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(p, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => res(typeof addr === 'object' && addr ? addr.port : p));
    });
  });
  return tryPort(preferred).catch(() => tryPort(0));
}

/** A tiny application: answers who called it, as the sidecar told it (x-spiffe-id). */
function startApp(name: string): Promise<number> {
  const server = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => res.end(`${name} served ${req.method} ${req.url} for ${String(req.headers['x-spiffe-id'])}`));
  });
  apps.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

const keepAlive = new HttpAgent({ keepAlive: true, maxSockets: 4 });

/** One plain HTTP call to a local outbound port (what the app would do): status and body (0 and the error when the connection failed). */
function call(port: number, method: string, path: string, body?: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: '127.0.0.1', port, method, path, agent: keepAlive, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
    req.end(body ?? (method === 'POST' ? '{"sku":"sku-1","qty":1}' : undefined));
  });
}

function tessera(args: string[], onLine?: (obj: Record<string, unknown>) => void): ChildProcess {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: false });
  children.push(child);
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      try {
        onLine?.(JSON.parse(line) as Record<string, unknown>);
      } catch {
        if (line.trim()) process.stdout.write(`${line}\n`);
      }
    });
  }
  return child;
}

/** A one-shot `tessera` command: its exit status and output (kept in memory, never echoed). */
function runTessera(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 30_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
  });
}

/** The stable TESSERA_* code of a failed command (`tessera: ... [CODE]` or `--json` `{error: {code}}`). */
function errorCode(r: { stdout: string; stderr: string }): string {
  return /\[(TESSERA_[A-Z_]+)\]\s*$/m.exec(r.stderr)?.[1] ?? /"code":\s*"(TESSERA_[A-Z_]+)"/.exec(r.stdout)?.[1] ?? (r.stderr.trim().split('\n').pop() ?? 'no output').slice(0, 120);
}

/** Key servers an unseal reported as failed on stderr (`key server ID (index N) failed: CODE`), by name. */
function keyServerFailures(stderr: string): string[] {
  return [...stderr.matchAll(/key server (\S+) \(index \d+\) failed: (TESSERA_[A-Z_]+)/g)]
    .map((m) => `${KEYSERVERS.find((k) => k.id === m[1])?.name ?? m[1]!} ${m[2]!}`);
}

/** The demo database URL with the password masked: its first 3 characters and "…". */
function masked(plain: string): string {
  const m = /^(postgres:\/\/[^:]+:)([^@]*)(@.*)$/.exec(plain);
  return m ? `${m[1]!}${m[2]!.slice(0, 3)}…${m[3]!}` : `${plain.slice(0, 3)}…`;
}

async function waitForFile(file: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!existsSync(file)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${file}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
function stopChild(c: ChildProcess): Promise<void> {
  return new Promise<void>((r) => {
    if (c.exitCode !== null || c.signalCode !== null) return r();
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    c.once('exit', () => { clearTimeout(t); r(); });
    c.kill('SIGTERM');
  });
}

async function stopAll(code = 0): Promise<never> {
  if (!stopping) {
    stopping = true;
    process.stdout.write(`\n${paint(1, 'stopping')}: agents, key servers and control plane...\n`);
    for (const t of timers) clearInterval(t);
    for (const a of apps) a.close();
    await Promise.all(children.map(stopChild));
    process.stdout.write('stopped cleanly.\n');
    // With --tamper the file was checked (and tampered with) before; the scene gave the code.
    if (!TAMPER) code = (await auditAtStop()) ? code : 1;
  }
  process.exit(code);
}

interface VerifyJson { ok: boolean; records: number; verified_size: number; checkpoints: number; unsigned: number; pinned: boolean; problems: { kind: string; id?: number; size?: number; message: string }[]; error?: { code: string } }

/** `tessera audit verify --json ...`: its exit status and result (undefined when it printed none). */
async function auditVerify(args: string[]): Promise<{ status: number | null; result: VerifyJson | undefined; code: string }> {
  const r = await runTessera(['--json', 'audit', 'verify', ...args], { TESSERA_ADMIN_DIR: join(SERVER_DIR, 'admin') }, 60_000);
  let result: VerifyJson | undefined;
  try { result = JSON.parse(r.stdout) as VerifyJson; } catch { /* no result */ }
  return { status: r.status, result, code: result?.error?.code ?? errorCode(r) };
}

function verifiedLine(what: string, v: VerifyJson): string {
  return `${paint(32, `${what}: verified`)}: ${v.records} records rehashed, ${v.checkpoints} signed checkpoints checked, intact up to size ${v.verified_size}${v.unsigned ? ` (${v.unsigned} newer records not yet signed)` : ''}, log key ${v.pinned ? 'pinned' : 'unpinned'}`;
}

const DB = join(SERVER_DIR, 'tessera.db');
const SAVED = ['--from-checkpoint', SAVED_CHECKPOINT];

/**
 * When the demo stops: the stopped control plane's SQLite file is checked offline against the
 * checkpoint saved during the run. False when the check did not pass.
 */
async function auditAtStop(): Promise<boolean> {
  if (!existsSync(DB)) return true;
  const saved = existsSync(SAVED_CHECKPOINT) ? SAVED : [];
  const clean = await auditVerify(['--db', DB, ...saved]);
  if (clean.status !== 0 || !clean.result?.ok) {
    say('auditor', 31, `tessera audit verify --db failed on the untouched file: ${clean.code}`);
    return false;
  }
  say('auditor', AUDIT_COLOUR, verifiedLine(`tessera audit verify --db ${relative(ROOT, DB)}${saved.length ? ' --from-checkpoint (saved at ~13 s)' : ''}`, clean.result));
  return true;
}

/**
 * Move (a): an insider with the file drops the append-only trigger and rewrites who registered
 * orders; `tessera audit verify --db` must name that record. The edit is then undone, so that move (b)
 * is shown on its own. The record's id when it was named.
 */
async function editMove(): Promise<number | undefined> {
  const d = new Database(DB);
  let row: { id: number; actor: string } | undefined;
  try {
    row = d.prepare<[string], { id: number; actor: string }>("SELECT id, actor FROM audit WHERE action = 'entry.create' AND target = ? ORDER BY id LIMIT 1").get(SERVICES[1]!.id)
      ?? d.prepare<[], { id: number; actor: string }>("SELECT id, actor FROM audit WHERE action = 'entry.create' ORDER BY id LIMIT 1").get();
    if (row) {
      d.exec('DROP TRIGGER IF EXISTS audit_no_update');
      d.prepare('UPDATE audit SET actor = ? WHERE id = ?').run(`spiffe://${TD}/ops/mallory`, row.id);
    }
  } finally {
    d.close();
  }
  if (!row) {
    say('tamper', 31, 'no entry.create record to edit');
    return undefined;
  }
  const { id } = row;
  say('tamper', 31, `(a) edited record ${id} in ${relative(ROOT, DB)}: the registration of orders (entry.create) now says it was done by spiffe://${TD}/ops/mallory, not ${row.actor} (append-only trigger dropped first)`);
  const caught = await auditVerify(['--db', DB, ...SAVED]);
  const first = caught.result?.problems[0];
  const named = caught.status === 1 && first?.id === id;
  if (named) say('auditor', AUDIT_COLOUR, `${paint(31, `tessera audit verify --db: exit 1 ${caught.code}`)}: ${first.kind}: ${first.message}`);
  else say('auditor', 31, `tessera audit verify --db did not name record ${id}: exit ${String(caught.status)} ${caught.code}`);
  const undo = new Database(DB);
  try {
    undo.prepare('UPDATE audit SET actor = ? WHERE id = ?').run(row.actor, id);
  } finally {
    undo.close();
  }
  say('tamper', 31, `(a) undone: record ${id} put back as it was`);
  return named ? id : undefined;
}

/**
 * Move (b): the attacker hides the tail — everything since the secret policy "db" was created (its
 * dealing, orders opening the secret, the policy change) — and makes the file agree with the shorter
 * log, so that neither the file alone nor the control plane's start-up check shows it. The size kept.
 */
function cutMove(savedSize: number): { keep: number; last: number } {
  const d = new Database(DB);
  try {
    const since = d.prepare<[], { id: number | null }>("SELECT MIN(id) AS id FROM audit WHERE action = 'secret.policy.create'").get()?.id;
    // Below the saved checkpoint, or that checkpoint cannot catch it.
    const keep = since != null && since - 1 < savedSize ? since - 1 : Math.floor(savedSize / 2);
    const last = d.prepare<[], { id: number | null }>('SELECT MAX(id) AS id FROM audit').get()?.id ?? 0;
    const actions = d.prepare<[number], { action: string; n: number }>('SELECT action, COUNT(*) AS n FROM audit WHERE id > ? GROUP BY action ORDER BY MIN(id)').all(keep);
    const removed = cutAuditLogBack(d, keep);
    say('tamper', 31, `(b) deleted records ${keep + 1}..${last} (${removed}: ${actions.map((a) => `${a.action}${a.n > 1 ? ` ×${a.n}` : ''}`).join(', ')}) and rewrote the frontier (meta audit_frontier), subtrees and checkpoints above size ${keep}: the file is consistent with a log of ${keep} records`);
    return { keep, last };
  } finally {
    d.close();
  }
}

/** The alarm line of an agent's or key server's witness alarm log record. */
function alarmLine(o: Record<string, unknown>): string {
  const root = (v: unknown): string => `${String(v).slice(0, 12)}…`;
  return `${paint(31, `WITNESS ALARM ${String(o.code)} (${String(o.kind)})`)}: holds the checkpoint of ${String(o.heldSize)} records (root ${root(o.heldRoot)}), was shown ${String(o.seenSize)} (root ${root(o.seenRoot)}); keeps its own and reports it`;
}

/**
 * --tamper, after DEMO_SECONDS: only the control plane stops; the two moves on its file; it restarts
 * on the same data directory and port; the agents and the saved checkpoint must catch move (b).
 * True when every expected catch happened.
 */
async function tamperScene(port: number): Promise<boolean> {
  process.stdout.write(`\n${paint(1, 'tamper')}: the control plane stops; the agents and key servers keep running on what they hold.\n`);
  if (controlPlane) await stopChild(controlPlane);
  say('control', 1, 'stopped (SIGTERM)');
  if (!existsSync(SAVED_CHECKPOINT)) {
    say('auditor', 31, 'no checkpoint was saved during the run');
    return false;
  }
  if (!(await auditAtStop())) return false;
  const savedSize = (JSON.parse(readFileSync(SAVED_CHECKPOINT, 'utf8')) as { checkpoint: { size: number } }).checkpoint.size;

  const edited = await editMove();
  const { keep, last } = cutMove(savedSize);
  const plain = await auditVerify(['--db', DB]);
  if (plain.status === 0 && plain.result?.ok) say('auditor', AUDIT_COLOUR, `${verifiedLine('tessera audit verify --db (no saved checkpoint)', plain.result)}: nothing in the file itself shows the cut`);
  else say('auditor', 31, `tessera audit verify --db on the cut-back file: exit ${String(plain.status)} ${plain.code}`);

  const agentsCaught = new Promise<void>((resolve) => {
    onAlarm = () => { if (SERVICES.every((s) => alarms.has(s.name))) resolve(); };
    onAlarm();
  });
  try {
    await startControlPlane(port, true);
  } catch (err) {
    say('control', 31, `did not restart: ${(err as Error).message}`);
    return false;
  }
  // Each agent sees the shorter log at its next policy long-poll (2 s here, after its reconnection backoff).
  await Promise.race([agentsCaught, new Promise((r) => setTimeout(r, 30_000))]);
  const env = { TESSERA_ADMIN_DIR: join(SERVER_DIR, 'admin') };
  const listed = await runTessera(['--json', 'audit', 'list', '--action', 'audit.witness_alarm'], env);
  if (listed.status === 0) {
    const records = (JSON.parse(listed.stdout) as AuditListResponse).records;
    for (const r of records.slice().reverse()) {
      const d = r.detail as { kind?: string; held?: { size?: number }; seen?: { size?: number } };
      const who = nameOf(r.actor);
      say('auditor', AUDIT_COLOUR, `tessera audit list --action audit.witness_alarm: record ${r.id} at ${r.ts.slice(11, 19)}: ${who} reported a ${String(d.kind)}: held ${String(d.held?.size)}, shown ${String(d.seen?.size)}`);
    }
    if (records.length === 0) say('auditor', 31, 'tessera audit list --action audit.witness_alarm: no alarm recorded');
  } else say('auditor', 31, `tessera audit list failed: ${errorCode(listed)}`);

  const v = await auditVerify(SAVED);
  const truncated = v.status === 1 ? v.result?.problems.find((p) => p.kind === 'truncated') : undefined;
  if (truncated) say('auditor', AUDIT_COLOUR, `${paint(31, `tessera audit verify --from-checkpoint (saved at ~13 s, size ${savedSize}): exit 1 ${v.code}`)}: ${truncated.kind}: ${truncated.message}`);
  else say('auditor', 31, `tessera audit verify --from-checkpoint did not find the truncation: exit ${String(v.status)} ${v.code}${v.result?.problems[0] ? ` (${v.result.problems[0].kind})` : ''}`);

  const rewinds = SERVICES.filter((s) => alarms.get(s.name)?.kind === 'rewind');
  const kinds = [...new Set(SERVICES.map((s) => alarms.get(s.name)?.kind).filter((k) => k !== undefined))];
  const caught = [
    edited !== undefined ? `verify --db (record ${edited} edited)` : undefined,
    rewinds.length > 0 ? `${rewinds.length} agent${rewinds.length > 1 ? 's' : ''} (${kinds.join(', ')})` : undefined,
    truncated ? 'verify --from-checkpoint (truncated)' : undefined,
  ].filter((c) => c !== undefined);
  const missed = [
    edited === undefined ? 'the edited record (verify --db)' : undefined,
    ...SERVICES.filter((s) => alarms.get(s.name)?.kind !== 'rewind').map((s) => `the cut at ${s.name} (${alarms.get(s.name)?.kind ?? 'no alarm'})`),
    truncated ? undefined : 'the truncation (verify --from-checkpoint)',
  ].filter((c) => c !== undefined);
  process.stdout.write(`\n${paint(1, 'summary')}: (a) record edited, (b) log cut back from ${last} to ${keep} records and the control plane restarted on it.\n`);
  process.stdout.write(`${paint(32, 'caught by')}: ${caught.join(', ') || 'nothing'}\n`);
  if (missed.length > 0) process.stdout.write(`${paint(31, 'NOT caught')}: ${missed.join(', ')}\n`);
  return missed.length === 0;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const asAdmin = (name: string): NodeJS.ProcessEnv => ({ TESSERA_ADMIN_DIR: join(ADMINS_DIR, name) });
const hms = (iso: string | null | undefined): string => String(iso).slice(11, 19);
/** A call's outcome as the traffic lines show it. */
const verdict = (r: { status: number; body: string }): string => (r.status === 200 ? `${paint(32, '200 allowed')} (${r.body})`
  : r.status === 0 ? `${paint(31, 'refused')} (connection closed: ${r.body})` : `${paint(31, `${r.status} denied`)} (${/"code":"([A-Z_]+)"/.exec(r.body)?.[1] ?? r.body.slice(0, 80)})`);

/** Calls until `done(answer)` or `ms` pass; the last answer and how long it took. */
async function callUntil(port: number, method: string, path: string, done: (status: number) => boolean, ms: number): Promise<{ r: { status: number; body: string }; took: number }> {
  const t0 = Date.now();
  for (;;) {
    const r = await call(port, method, path);
    if (done(r.status) || Date.now() - t0 > ms || stopping) return { r, took: Date.now() - t0 };
    await sleep(150);
  }
}

/**
 * Before the adaptive scenes: two named admins (alice, added by the bootstrap admin; bob, added by
 * alice) and the risk engine's configuration, set by alice through its versioned path.
 */
async function adaptiveSetup(bootstrapDir: string): Promise<void> {
  for (const [name, by, byName] of [['alice', bootstrapDir, 'the bootstrap admin'], ['bob', join(ADMINS_DIR, 'alice'), 'alice']] as const) {
    const r = await runTessera(['--json', 'admin', 'add', name, '--out', join(ADMINS_DIR, name)], { TESSERA_ADMIN_DIR: by });
    if (r.status !== 0) throw new Error(`tessera admin add ${name}: ${errorCode(r)}`);
    say(name, ADMIN_COLOUR, `admin added by ${byName} (tessera admin add ${name}): ${String((JSON.parse(r.stdout) as { spiffe_id: string }).spiffe_id)}, a credential of their own`);
  }
  const file = join(DIR, 'risk-config.json');
  writeFileSync(file, JSON.stringify(DEMO_RISK_CONFIG));
  const r = await runTessera(['--json', 'risk', 'config', 'set', file, '--reason', 'demo: catch exfiltration in seconds'], asAdmin('alice'));
  if (r.status !== 0) throw new Error(`tessera risk config set: ${errorCode(r)}`);
  say('risk', RISK_COLOUR, `risk engine configuration v${(JSON.parse(r.stdout) as RiskConfigVersionView).version} set by alice (tessera risk config set ${relative(ROOT, file)}): every demo identity is still learning, so 1 MiB sent in one 5 s window (default 50 MiB) is blatant, judged one window after it ends: detection takes seconds`);
}

/**
 * The adaptive scenes (issue 11): orders exfiltrates and the risk engine quarantines it; bob releases
 * it; a just-in-time grant requested by alice, refused to her own approval, approved by bob, used,
 * and expired. True when every outcome was the expected one.
 */
async function adaptiveScenes(p: { admin: ApiClient; ordToInv: number; feToOrders: number; sealedFile: string | undefined; map?: (moment: string, ordersQuarantined: boolean) => Promise<boolean> }): Promise<boolean> {
  const [frontend, orders] = [SERVICES[0]!, SERVICES[1]!];
  let ok = true;
  const fail = (who: string, msg: string): void => {
    ok = false;
    say(who, 31, msg);
  };

  // 1. Exfiltration through orders' real sidecar, on a path its policy allows.
  process.stdout.write(`\n${paint(1, 'exfiltration')}: orders (PCI, cloud-eu) starts sending a 256 KiB body to inventory (edge-7) every 100 ms, through its own sidecar, on a path its policy allows.\n`);
  const body = randomBytes(256 * 1024);
  const t0 = Date.now();
  let sent = 0;
  let cut: { status: number; body: string } | undefined;
  while (cut === undefined && !stopping && Date.now() - t0 < 45_000) {
    const r = await call(p.ordToInv, 'POST', '/stock/sku-1', body);
    if (r.status === 200) sent += 1;
    else cut = r;
    await sleep(100);
  }
  if (stopping) return false;
  say('orders', 35, `sent ${sent} bodies (${(sent / 4).toFixed(1)} MiB) to inventory in ${((Date.now() - t0) / 1000).toFixed(1)} s, then: ${cut ? verdict(cut) : 'nothing stopped it within 45 s'}`);
  const shown = await runTessera(['--json', 'risk', 'show', orders.id], asAdmin('alice'));
  if (shown.status !== 0) {
    fail('risk', `tessera risk show: ${errorCode(shown)}`);
    return false;
  }
  const st = (JSON.parse(shown.stdout) as RiskShowResponse).state;
  if (st.state !== 'quarantined') {
    fail('risk', `orders was not quarantined: ${st.state}, score ${st.score}`);
    return false;
  }
  const since = Date.parse(st.since);
  say('risk', RISK_COLOUR, `${paint(31, 'orders QUARANTINED')} by the ${st.set_by === 'engine' ? 'risk engine' : st.set_by} ${((since - t0) / 1000).toFixed(1)} s after its first exfiltrating request: score ${st.score}, until ${hms(st.until)} (tessera risk show):`);
  for (const r of st.reasons) {
    const q = (n: number): string => (r.signal.startsWith('bytes') ? `${(n / 1048576).toFixed(1)} MiB` : String(n));
    say('risk', RISK_COLOUR, `  reason ${r.signal}: observed ${q(r.observed)}, expected ${q(r.expected)}, ${r.unusual}× as unusual${r.edge ? ` on ${r.edge.split(' -> ').map(nameOf).join(' → ')}` : ''}: ${r.text}`);
  }
  // Every service agent puts the next bundle (its risk list) in force.
  const until = Date.now() + 5000;
  const first = (name: string): { version: number; at: number } | undefined => bundles.get(name)?.find((b) => b.at >= since);
  while (SERVICES.some((s) => !first(s.name)) && Date.now() < until) await sleep(50);
  const late = SERVICES.filter((s) => !first(s.name)).map((s) => s.name);
  if (late.length) fail('risk', `the quarantine was not in force on ${late.join(', ')} within 5 s`);
  else say('risk', RISK_COLOUR, `in force on every agent (${SERVICES.map((s) => s.name).join(', ')}: policy bundle ${Math.max(...SERVICES.map((s) => first(s.name)!.version))}) within ${Math.max(...SERVICES.map((s) => first(s.name)!.at - since))} ms of the decision`);
  if (p.map && !(await p.map('the console\'s map, orders quarantined', true))) ok = false;
  // The sidecars' refusals: orders' own outbound refuses to carry its calls, frontend's refuses orders as a target.
  for (const [from, to, port, method, path, colour, why] of [
    ['orders', 'inventory', p.ordToInv, 'POST', '/stock/sku-1', 35, 'a quarantined workload cannot call out'],
    ['frontend', 'orders', p.feToOrders, 'GET', '/orders/42', 36, 'no sidecar carries a call to a quarantined workload'],
  ] as const) {
    const r = await call(port, method, path);
    await sleep(200); // its agent's log line, which names the code
    const code = outboundRefusals.get(from);
    if (r.status === 0 && code !== undefined) say(from, colour, `→ ${to} ${method} ${path}: ${paint(31, `refused by its own sidecar: ${code}`)}: ${why}`);
    else fail(from, `→ ${to} ${method} ${path} while orders is quarantined: ${verdict(r)}`);
  }
  if (p.sealedFile) {
    const u = await runTessera(['secret', 'unseal', '--agent-dir', join(DIR, 'orders'), '--in', p.sealedFile]);
    // Never print what an unseal wrote: a success is a failure of the scene, named without its output.
    if (u.status === 0) fail('orders', 'secret unseal of db-password.sealed was NOT refused while quarantined');
    else say('orders', 35, `${paint(31, 'secret unseal refused')}: ${errorCode(u)} (${keyServerFailures(u.stderr).join(', ')}): the key servers refuse a quarantined identity the policy allowed before`);
  }

  // 2. An admin releases it, with a reason; its calls go through again.
  process.stdout.write(`\n${paint(1, 'release')}: bob reads the reasons and releases orders.\n`);
  const reason = 'demo: the exfiltrating job is stopped';
  const rel = await runTessera(['--json', 'risk', 'release', orders.id, '--reason', reason], asAdmin('bob'));
  if (rel.status !== 0) {
    fail('bob', `tessera risk release: ${errorCode(rel)}`);
    return false;
  }
  const released = JSON.parse(rel.stdout) as RiskChangeResponse;
  say('bob', ADMIN_COLOUR, `tessera risk release ${orders.id} --reason "${reason}": ${released.previous} → ${released.state.state} (policy bundle ${String(released.bundle_version)})`);
  const again = await callUntil(p.ordToInv, 'POST', '/stock/sku-1', (s) => s === 200, 10_000);
  if (again.r.status === 200) say('orders', 35, `→ inventory POST /stock/sku-1: ${paint(32, `200 allowed again ${again.took} ms after the release`)} (${again.r.body})`);
  else fail('orders', `→ inventory POST /stock/sku-1 after the release: ${verdict(again.r)}`);
  if (p.map && !(await p.map('the console\'s map, orders released', false))) ok = false;

  // 3. A just-in-time grant: requested by alice, not approvable by her, approved by bob, used, expired.
  process.stdout.write(`\n${paint(1, 'just-in-time grant')}: frontend must cancel a stuck order, which no policy allows; alice asks for ${GRANT_SECONDS} s, bob approves.\n`);
  const before = await call(p.feToOrders, 'DELETE', '/orders/42');
  say('frontend', 36, `→ orders DELETE /orders/42: ${verdict(before)}`);
  const req = await runTessera(['--json', 'grant', 'request', '--principal', frontend.id, '--action', 'http:request', '--resource', orders.id,
    '--for', `${GRANT_SECONDS}s`, '--reason', 'INC-42: cancel a stuck order'], asAdmin('alice'));
  if (req.status !== 0) {
    fail('alice', `tessera grant request: ${errorCode(req)}`);
    return false;
  }
  const g = JSON.parse(req.stdout) as { id: string; state: string };
  say('alice', ADMIN_COLOUR, `tessera grant request --principal frontend --action http:request --resource orders --for ${GRANT_SECONDS}s --reason "INC-42: cancel a stuck order": ${g.id} ${g.state}`);
  const selfApproval = await runTessera(['grant', 'approve', g.id], asAdmin('alice'));
  if (selfApproval.status === 0) fail('alice', `tessera grant approve ${g.id}: her own grant was NOT refused`);
  else say('alice', ADMIN_COLOUR, `tessera grant approve ${g.id}: ${paint(31, `refused, exit ${String(selfApproval.status)} ${errorCode(selfApproval)}`)}: two-person rule, the requester cannot approve`);
  const ap = await runTessera(['--json', 'grant', 'approve', g.id], asAdmin('bob'));
  if (ap.status !== 0) {
    fail('bob', `tessera grant approve: ${errorCode(ap)}`);
    return false;
  }
  const approved = JSON.parse(ap.stdout) as { state: string; start: string; expiry: string; bundle_version?: number };
  say('bob', ADMIN_COLOUR, `tessera grant approve ${g.id}: ${approved.state} from ${hms(approved.start)} until ${hms(approved.expiry)} (the clock starts at approval; policy bundle ${String(approved.bundle_version)})`);
  const used = await callUntil(p.feToOrders, 'DELETE', '/orders/42', (s) => s === 200, 5000);
  if (used.r.status === 200) say('frontend', 36, `→ orders DELETE /orders/42: ${paint(32, `200 allowed ${used.took} ms after bob's approval`)}, by grant:${g.id} (${used.r.body})`);
  else fail('frontend', `→ orders DELETE /orders/42 with the grant: ${verdict(used.r)}`);
  const expiry = Date.parse(approved.expiry);
  say('frontend', 36, `the grant expires at ${hms(approved.expiry)}: waiting ${Math.max(0, Math.round((expiry - Date.now()) / 1000))} s`);
  await sleep(Math.max(0, expiry - Date.now() - 300));
  const after = await callUntil(p.feToOrders, 'DELETE', '/orders/42', (s) => s !== 200 || Date.now() > expiry + 5000, 10_000);
  if (after.r.status === 403) say('frontend', 36, `→ orders DELETE /orders/42: ${paint(31, `403 denied again ${Date.now() - expiry} ms after the grant's expiry`)} (${/"code":"([A-Z_]+)"/.exec(after.r.body)?.[1] ?? ''}): agents stop honouring it on their own clock`);
  else fail('frontend', `→ orders DELETE /orders/42 after the grant's expiry: ${verdict(after.r)}`);
  // The leader marks it expired within a second.
  let state = 'unknown';
  for (let i = 0; i < 20 && state !== 'expired'; i++) {
    state = (await p.admin.call<{ grants: { id: string; state: string }[] }>('GET', '/v1/grants')).grants.find((x) => x.id === g.id)?.state ?? 'missing';
    if (state !== 'expired') await sleep(250);
  }
  say('control', 1, `grant ${g.id}: ${state} (tessera grant list)`);
  return ok;
}

/** Who reads the map for the demo's map lines, and how. */
interface MapReader {
  who: string;
  read(): Promise<MapResponse>;
}

/**
 * The web console (issue 12): its URL, carol (group viewers, not enrolled) and the admin policy
 * rule that lets her group read, and a one-time sign-in link for her (`tessera console link`),
 * printed unused. The demo's own session of carol, from a second link, finds out what such a session
 * may do (said in one line) and reads the map during the scenes; when that session may not read,
 * the map lines are read with the admin credential, and say so.
 */
async function consoleSetup(admin: ApiClient, adminDir: string, port: number): Promise<MapReader> {
  const env = { TESSERA_ADMIN_DIR: adminDir };
  const consoleUrl = `${publicUrlOf(port)}/console/`;
  // The admin policy in force (the built-in default on a fresh start) plus the viewers' rule.
  const current = await admin.call<{ version: number; policy: string }>('GET', '/v1/admin/policy');
  const file = join(DIR, 'admin-policy.cedar');
  writeFileSync(file, `${current.policy.trimEnd()}\n${VIEWERS_RULE}`);
  const set = await runTessera(['--json', 'admin', 'policy', 'set', file, '--reason', `demo: group ${VIEWERS} reads the console without MFA`], env);
  if (set.status !== 0) throw new Error(`tessera admin policy set: ${errorCode(set)}`);
  say('console', CONSOLE_COLOUR, `admin policy v${String((JSON.parse(set.stdout) as { version: number }).version)} set (tessera admin policy set ${relative(ROOT, file)}): the rules of v${current.version}, plus "demo-viewers-read": group ${VIEWERS} may read every page, no MFA asked`);
  // carol is not enrolled (no passkey, no TOTP): a link is her only way in. Her enrolment link is not shown.
  await admin.call('POST', '/v1/users', { username: CONSOLE_USER, groups: [VIEWERS], display_name: 'Carol (on call)' });
  const link = await runTessera(['--json', 'console', 'link', '--user', CONSOLE_USER, '--ttl', '30m'], env);
  if (link.status !== 0) throw new Error(`tessera console link: ${errorCode(link)}`);
  const l = JSON.parse(link.stdout) as { url: string; expires_at: string };
  // What such a session may do, found out with the demo's own session of carol from a second link.
  const own = await admin.call<{ url: string }>('POST', '/v1/console/links', { username: CONSOLE_USER, ttl_seconds: 600 });
  const session = await ConsoleSession.open(own.url, '127.0.0.1', readFileSync(join(SERVER_DIR, 'bundle.pem'), 'utf8'));
  if (typeof session === 'string') throw new Error(`the demo's own console link was refused: ${session}`);
  const read = await session.call('GET', '/v1/map');
  const change = await session.call('POST', '/v1/console/links', { username: CONSOLE_USER });
  const status = (a: ConsoleAnswer): string => (a.status < 400 ? String(a.status) : `${a.status} ${answerCode(a)}`);
  process.stdout.write(`\n${paint(1, 'web console')}: ${paint(4, consoleUrl)} (trust ${relative(ROOT, join(SERVER_DIR, 'bundle.pem'))} as a CA, or accept the warning)\n`);
  say('console', CONSOLE_COLOUR, `tessera console link --user ${CONSOLE_USER}: one use, until ${hms(l.expires_at)}: ${l.url}`);
  const may = read.status === 200
    ? `reads every page (map, identities, policies, risk, grants, audit, secrets)`
    : `reads nothing until a step-up with MFA (not enrolled, so she cannot)`;
  say('console', CONSOLE_COLOUR, `that session: ${CONSOLE_USER} (group ${VIEWERS}), no MFA: ${may}; changes nothing (checked with a second link: GET /v1/map ${status(read)}, POST /v1/console/links ${status(change)})`);
  if (change.status < 400) throw new Error(`${CONSOLE_USER}'s session was NOT refused a change (POST /v1/console/links ${change.status})`);
  if (read.status === 200) return { who: `as ${CONSOLE_USER}`, read: async () => {
    const a = await session.call('GET', '/v1/map?window=5m');
    if (a.status !== 200) throw new Error(answerCode(a));
    return a.json as MapResponse;
  } };
  return { who: 'with the admin credential', read: () => admin.call<MapResponse>('GET', '/v1/map?window=5m') };
}

/** Edges the demo's traffic makes (caller → callee); the inventory → orders calls are denied. */
const DEMO_EDGES: [string, string][] = [['frontend', 'orders'], ['frontend', 'inventory'], ['inventory', 'orders'], ['orders', 'inventory']];

/**
 * `GET /v1/map` until the map shows what just happened: every demo service and edge, and orders
 * quarantined or not. Prints one line; false when the map did not show it within 15 s.
 */
async function mapCheck(reader: MapReader, moment: string, ordersQuarantined: boolean): Promise<boolean> {
  const orders = SERVICES[1]!.id;
  const end = Date.now() + 15_000;
  let last = 'no answer';
  while (!stopping) {
    try {
      const m = await reader.read();
      last = mapLine(m, nameOf);
      const ok = SERVICES.every((s) => m.services.some((x) => x.id === s.id))
        && DEMO_EDGES.every(([from, to]) => m.edges.some((e) => nameOf(e.caller) === from && nameOf(e.callee) === to))
        && m.services.some((x) => x.id === orders && x.quarantined === ordersQuarantined);
      if (ok) {
        say('console', CONSOLE_COLOUR, `${moment} (GET /v1/map ${reader.who}): ${last}`);
        return true;
      }
    } catch (err) {
      last = (err as Error).message;
    }
    if (Date.now() > end) break;
    await sleep(500);
  }
  if (!stopping) say('console', 31, `${moment}: the map did not show it within 15 s: ${last}`);
  return false;
}

/**
 * The device scene: carol's laptop is enrolled (its key made on it), reports its posture from an
 * MDM's file, shows as `context.device`, is revoked, and its next report is refused. True when every
 * step had the expected outcome.
 */
async function deviceScene(url: string): Promise<boolean> {
  process.stdout.write(`\n${paint(1, 'device')}: carol's laptop gets an identity of its own and reports its posture (an MDM's file); revoked, its next report is refused.\n`);
  const dataDir = join(DIR, DEVICE);
  const fail = (who: string, msg: string): false => {
    say(who, 31, msg);
    return false;
  };
  const tok = await runTessera(['--json', 'device', 'token', 'create', '--name', DEVICE, '--owner', CONSOLE_USER, '--ttl', '10m', '--cert-ttl', '1h'], asAdmin('alice'));
  if (tok.status !== 0) return fail('alice', `tessera device token create: ${errorCode(tok)}`);
  const t = JSON.parse(tok.stdout) as { token: string; spiffe_id: string; expires_at: string };
  say('alice', ADMIN_COLOUR, `tessera device token create --name ${DEVICE} --owner ${CONSOLE_USER}: single use, for ${t.spiffe_id}, until ${hms(t.expires_at)} (not shown; only its hash is stored)`);
  // The token goes in the environment, not on the command line (which other local users can read).
  const en = await runTessera(['--json', '--server', url, 'device', 'enroll', '--data-dir', dataDir, '--trust-bundle', join(SERVER_DIR, 'bundle.pem')], { TESSERA_DEVICE_TOKEN: t.token });
  if (en.status !== 0) return fail(DEVICE, `tessera device enroll: ${errorCode(en)}`);
  const e = JSON.parse(en.stdout) as { spiffe_id: string; not_after: string };
  const keyMode = statSync(join(dataDir, 'device.key')).mode & 0o777;
  say(DEVICE, DEVICE_COLOUR, `tessera device enroll: ${e.spiffe_id}, key made here (device.key ${keyMode === 0o600 ? '0600' : paint(31, `mode 0${keyMode.toString(8)}`)}, never sent), certificate until ${hms(e.not_after)}`);
  // What an MDM would export: bare values are observed at the file's time; the patch age with its own.
  const file = join(DIR, 'mdm-posture.json');
  writeFileSync(file, `${JSON.stringify({ disk_encrypted: true, screen_lock: true, firewall: true, patch_age_days: { value: 3, observed_at: new Date(Date.now() - 60_000).toISOString() } }, null, 2)}\n`);
  const rep = await runTessera(['--json', 'device', 'report', '--data-dir', dataDir, '--posture-file', file]);
  if (rep.status !== 0) return fail(DEVICE, `tessera device report: ${errorCode(rep)}`);
  say(DEVICE, DEVICE_COLOUR, `tessera device report --posture-file ${relative(ROOT, file)}: signed with the device key, ${paint(32, `accepted: posture ${(JSON.parse(rep.stdout) as { posture: { posture_state: string } }).posture.posture_state}`)}`);
  const shown = await runTessera(['--json', 'device', 'show', DEVICE], asAdmin('alice'));
  if (shown.status !== 0) return fail('alice', `tessera device show: ${errorCode(shown)}`);
  const posture = (JSON.parse(shown.stdout) as DeviceShowResponse).posture;
  say('alice', ADMIN_COLOUR, `tessera device show ${DEVICE}: context.device = ${JSON.stringify(posture)}`);
  let ok = posture.posture_state === 'fresh' && posture.enrolled && posture.disk_encrypted === true && posture.patch_age_days === 3;
  if (!ok) say('alice', 31, 'context.device is not the fresh, enrolled posture of the MDM file');
  const rev = await runTessera(['--json', 'device', 'revoke', DEVICE, '--reason', 'demo: laptop reported lost'], asAdmin('alice'));
  if (rev.status !== 0) return fail('alice', `tessera device revoke: ${errorCode(rev)}`);
  const r = JSON.parse(rev.stdout) as { revoked_at: string; bundle_version: number };
  say('alice', ADMIN_COLOUR, `tessera device revoke ${DEVICE} --reason "demo: laptop reported lost": revoked at ${hms(r.revoked_at)}, on the revocation list of policy bundle ${r.bundle_version}`);
  const again = await runTessera(['--json', 'device', 'report', '--data-dir', dataDir, '--posture-file', file]);
  if (again.status === 0) return fail(DEVICE, 'tessera device report after the revocation was NOT refused');
  say(DEVICE, DEVICE_COLOUR, `tessera device report: ${paint(31, `refused, exit ${String(again.status)} ${errorCode(again)}`)}: a revoked device reports no more`);
  ok &&= errorCode(again) === 'TESSERA_IDENTITY_REVOKED';
  return ok;
}

/** `tessera server` on the demo's data directory and port; resolves once it listens. */
function startControlPlane(port: number, restart = false): Promise<void> {
  return new Promise((resolve, reject) => {
    // The public URL names localhost, not 127.0.0.1: a browser refuses an IP as a passkey's RP ID.
    // Agents, key servers and the CLI keep calling https://127.0.0.1:PORT (the certificate names both).
    controlPlane = tessera(['server', '--json', '--data-dir', SERVER_DIR, '--listen', `127.0.0.1:${port}`, '--public-url', publicUrlOf(port), '--trust-domain', TD, '--ca-ttl', '4m', '--svid-ttl', SVID_TTL, '--grant-min', '10s', '--log-level', 'info'], (o) => {
      if (o.msg === 'control plane listening') {
        say('control', 1, restart
          ? `restarted on the same data directory and port (${String(o.url)}): its start-up check accepts the file; it signs checkpoints of the shorter log`
          : `listening on ${String(o.url)} (trust domain ${TD})`);
        resolve();
      } else if (o.msg === 'CA activated') say('control', 1, paint(32, `new CA is now signing (${String(o.ca).slice(0, 8)})`));
      else if (o.msg === 'risk engine changed a state') say('control', RISK_COLOUR, `risk engine: ${nameOf(o.identity)} ${String(o.previous)} → ${String(o.state)}, score ${String(o.score)}`);
      else if (o.msg === 'audit witness alarm reported') {
        const held = o.held as { size?: number } | undefined;
        const seen = o.seen as { size?: number } | undefined;
        say('control', 31, `witness alarm reported by ${nameOf(o.witness)} (${String(o.kind)}: held ${String(held?.size)}, shown ${String(seen?.size)}), recorded as audit.witness_alarm`);
      } else if (o.level === 'error' || o.level === 'warn') say('control', 31, `${String(o.msg)}${o.code ? ` (${String(o.code)})` : ''}${o.route ? ` on ${String(o.route)}` : ''}${o.error ? `: ${String(o.error)}` : ''}`);
    });
    controlPlane.once('exit', (code) => reject(new Error(`the control plane exited with status ${String(code)}`)));
  });
}

async function main(): Promise<void> {
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));
  rmSync(DIR, { recursive: true, force: true });
  mkdirSync(DIR, { recursive: true });
  const port = await freePort(8443);
  const url = `https://127.0.0.1:${port}`;

  process.stdout.write(`${paint(1, 'Tessera demo')}: a control plane, three services with sidecars in two sites (cloud-eu, edge-7) and three key servers (cloud-eu, edge-7, cloud-us), all on 127.0.0.1.\n`);
  process.stdout.write(`Blind secrets: a database password sealed offline into the repository (2 of 3 key servers), opened by orders (cloud-eu, PCI), refused to inventory (edge-7), still opened with a key server killed.\n`);
  process.stdout.write(TAMPER
    ? `SVIDs live 30 s (rotated at half life); a policy change at ~10 s and the audit log verified at ~13 s (its checkpoint saved). --tamper: at 20 s the control plane stops, its SQLite file is tampered with twice, it restarts, and the auditor and the agents (witnessing every 2 s) must catch it.\n\n`
    : `SVIDs live 20 s (orders' ${ORDERS_SVID_TTL_S} s; rotated at half life), the CA 4 min; a policy change at ~10 s and the audit log verified at ~13 s.\nAdaptive zero trust from ~16 s: orders starts exfiltrating and the risk engine quarantines it everywhere; bob releases it; alice asks for a ${GRANT_SECONDS} s grant, bob approves, it is used and expires (about 40 s).\nThe web console's URL and a one-time sign-in link are printed; its map is checked as orders is quarantined and released. Then a device is enrolled, reports its posture and is revoked (a few seconds), and a CA rotation. Ctrl-C stops everything.\n\n`);

  const serverDir = SERVER_DIR;
  startControlPlane(port).catch(() => {});
  await waitForFile(join(serverDir, 'admin', 'server.json'));
  const adminDir = join(serverDir, 'admin');
  const f = (n: string): string => readFileSync(join(adminDir, n), 'utf8');
  const admin = new ApiClient(url, { ca: f('bundle.pem'), cert: f('admin.pem'), key: f('admin.key') });

  for (const s of SERVICES) {
    await admin.call<EntryView>('POST', '/v1/entries', {
      spiffe_id: s.id, selectors: [`unix:uid:${process.getuid?.() ?? 0}`],
      attributes: { app: s.app, site: s.site, compliance: s.compliance, location: s.location, env: 'demo' },
      // A quarantine refuses renewals: orders' SVID must outlive its quarantine (README, "Renewal is refused").
      ...(s.name === 'orders' && !TAMPER ? { x509_ttl_seconds: ORDERS_SVID_TTL_S } : {}),
    } satisfies CreateEntryRequest);
    say(s.name, s.colour, `registered ${s.id} [site ${s.site}, compliance ${s.compliance}]${s.name === 'orders' && !TAMPER ? `, SVIDs for ${ORDERS_SVID_TTL_S} s` : ''}`);
  }
  for (const k of KEYSERVERS) {
    await admin.call<EntryView>('POST', '/v1/entries', {
      spiffe_id: k.id, selectors: [`unix:uid:${process.getuid?.() ?? 0}`],
      attributes: { app: 'keyserver', site: k.site, location: k.location, env: 'demo' },
    } satisfies CreateEntryRequest);
    say(k.name, KS_COLOUR, `registered ${k.id} [site ${k.site}]`);
  }

  // Policy as code: the repository's policies/ directory, applied as version 1.
  const policyDir = join(ROOT, 'policies');
  const v1 = readPolicyDir(policyDir);
  const applied = await admin.call<AppliedPolicyResponse>('POST', '/v1/policies', { files: v1.policies, reason: 'demo: initial policy from policies/' } satisfies ApplyPolicyRequest);
  say('control', 1, `policy v${applied.version} applied from policies/ (${Object.keys(v1.policies).join(', ')}): default deny, frontend reads, orders updates stock, PCI data stays in its site, the db secret opens only for PCI in cloud-eu, frontend may get JWT-SVIDs for orders-api`);

  // Blind secrets: three key servers, each a process with its own agent (entry, join token, SVID)
  // that decides every unseal with the Cedar policy (secret:unseal) and holds one key share.
  const keyServers = await Promise.all(KEYSERVERS.map(async (k, i) => {
    const { token } = await admin.call<CreateTokenResponse>('POST', '/v1/tokens', { entry_id: k.id, ttl_seconds: 120 } satisfies CreateTokenRequest);
    let onReady!: (ksUrl: string) => void;
    const ksUrl = new Promise<string>((r) => { onReady = r; });
    const child = tessera(['keyserver', '--json', '--server', url, '--data-dir', join(DIR, `ks${i + 1}`), '--join-token', token,
      '--trust-bundle', join(serverDir, 'bundle.pem'), '--listen', '127.0.0.1:0'], (o) => {
      if (o.msg === 'key server ready') {
        say(k.name, KS_COLOUR, `key server ready on ${String(o.url)} as ${String(o.spiffe_id)} [site ${k.site}]`);
        onReady(String(o.url));
      } else if (o.msg === 'keyserver audit' && o.action === 'secret:share-install') {
        say(k.name, KS_COLOUR, `took its key share of "${String(o.policy)}" (epoch ${String(o.epoch)}), sealed at rest`);
      } else if (o.msg === 'keyserver audit') {
        say(k.name, KS_COLOUR, `${o.outcome === 'allowed' ? paint(32, 'evaluated') : paint(31, String(o.outcome))} "${String(o.policy)}" for ${nameOf(o.actor)}${o.code ? ` (${String(o.code)})` : ''}`);
      } else if (o.msg === ALARM_MSG) say(k.name, KS_COLOUR, alarmLine(o));
      else if (o.level === 'warn' || o.level === 'error') say(k.name, 31, String(o.msg));
    });
    const exited = new Promise<never>((_, rej) => child.once('exit', () => rej(new Error(`key server ${k.name} exited`))));
    exited.catch(() => {});
    return { ...k, child, url: Promise.race([ksUrl, exited]) };
  }));

  // The admin deals the policy key to the key servers (in the CLI, zeroed after) and the control
  // plane signs the public record; the record then seals offline. Runs while the agents start.
  const repoDir = join(DIR, 'repo');
  const sealedFile = join(repoDir, 'db-password.sealed');
  const plain = `postgres://orders:${randomBytes(12).toString('base64url')}@db.internal:5432/orders`;
  const sealing = (async (): Promise<boolean> => {
    const urls = await Promise.all(keyServers.map((k) => k.url));
    const env = { TESSERA_ADMIN_DIR: adminDir };
    const created = await runTessera(['--json', '--server', url, 'secret', 'policy', 'create', 'db', '--threshold', '2',
      '--servers', keyServers.map((k, i) => `${urls[i]!}@${k.id}`).join(',')], env);
    if (created.status !== 0) throw new Error(`secret policy create: ${errorCode(created)}`);
    const c = JSON.parse(created.stdout) as { t: number; n: number; epoch: number };
    say('secrets', SECRETS_COLOUR, `secret policy "db" created: ${c.t} of ${c.n} key servers (${keyServers.map((k) => `${k.name} ${k.site}`).join(', ')}), key epoch ${c.epoch}; the policy key was dealt as shares and zeroed, no one holds it`);
    mkdirSync(repoDir, { recursive: true });
    const record = join(repoDir, 'db.record.json');
    const shown = await runTessera(['--json', '--server', url, 'secret', 'policy', 'show', 'db'], env);
    if (shown.status !== 0) throw new Error(`secret policy show: ${errorCode(shown)}`);
    writeFileSync(record, shown.stdout);
    const tmp = mkdtempSync(join(tmpdir(), 'tessera-demo-'));
    const plainFile = join(tmp, 'db-password');
    let sealed: Awaited<ReturnType<typeof runTessera>>;
    try {
      writeFileSync(plainFile, plain, { mode: 0o600 });
      sealed = await runTessera(['secret', 'seal', '--policy', 'db', '--record', record, '--trust-bundle', join(serverDir, 'bundle.pem'), '--in', plainFile, '--out', sealedFile]);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    if (sealed.status !== 0) throw new Error(`secret seal: ${errorCode(sealed)}`);
    say('secrets', SECRETS_COLOUR, `sealed offline with the signed record (${relative(ROOT, record)}) → ${relative(ROOT, sealedFile)}; the plaintext file is deleted`);
    // The sealed text itself is not echoed (house rule): its size and public header say enough.
    const sealedText = readFileSync(sealedFile, 'utf8').trim();
    await secretsReady();
    const header = parseSealedText(sealedText);
    say('secrets', SECRETS_COLOUR, `safe to commit: ${sealedText.length} characters of tessera-sealed:v1 text for policy "${header.policyId}" key epoch ${header.epoch}; only the key servers together, for a workload the policy allows, can open it`);
    return true;
  })().catch((err: unknown) => {
    say('secrets', 31, `blind secrets part failed: ${(err as Error).message}`);
    return false;
  });

  // Applications and their sidecars: orders (cloud-eu, PCI) and inventory (edge-7) serve over
  // inbound mTLS proxies; frontend and inventory call out through outbound proxies.
  const [ordersApp, inventoryApp] = [await startApp('orders'), await startApp('inventory')];
  const [ordersIn, inventoryIn, feToOrders, feToInventory, invToOrders, ordToInv] = [await freePort(0), await freePort(0), await freePort(0), await freePort(0), await freePort(0), await freePort(0)];
  const sidecarArgs: Record<string, string[]> = {
    orders: ['--inbound', `127.0.0.1:${ordersIn}`, '--app', `127.0.0.1:${ordersApp}`, '--mode', 'http',
      '--outbound', `127.0.0.1:${ordToInv}=127.0.0.1:${inventoryIn}@${SERVICES[2]!.id}`],
    inventory: ['--inbound', `127.0.0.1:${inventoryIn}`, '--app', `127.0.0.1:${inventoryApp}`, '--mode', 'http',
      '--outbound', `127.0.0.1:${invToOrders}=127.0.0.1:${ordersIn}@${SERVICES[1]!.id}`],
    frontend: ['--outbound', `127.0.0.1:${feToOrders}=127.0.0.1:${ordersIn}@${SERVICES[1]!.id}`, `127.0.0.1:${feToInventory}=127.0.0.1:${inventoryIn}@${SERVICES[2]!.id}`],
  };
  let ready = 0;
  const joined = new Map<string, Promise<void>>();
  let onOpened!: () => void;
  const opened = new Promise<void>((r) => { onOpened = r; });
  const lastWitnessLine = new Map<string, number>();
  const startAgent = async (s: (typeof SERVICES)[number], extra: string[] = []): Promise<void> => {
    const { token } = await admin.call<CreateTokenResponse>('POST', '/v1/tokens', { entry_id: s.id, ttl_seconds: 120 } satisfies CreateTokenRequest);
    let onJoined!: () => void;
    joined.set(s.name, new Promise<void>((r) => { onJoined = r; }));
    tessera(['agent', '--json', '--server', url, '--data-dir', join(DIR, s.name), '--join-token', token, '--trust-bundle', join(serverDir, 'bundle.pem'), ...AGENT_WATCH, ...sidecarArgs[s.name]!, ...extra], (o) => {
      if (o.msg === 'joined: SVID issued') {
        say(s.name, s.colour, `joined → ${String(o.spiffe_id)}, serial ${String(o.serial).slice(0, 8)}, valid until ${String(o.not_after).slice(11, 19)}, signed by ${String(o.issuer)}`);
        onJoined();
      } else if (o.msg === 'SVID rotated') say(s.name, s.colour, `${paint(32, 'rotated')} SVID, serial ${String(o.serial).slice(0, 8)}, valid until ${String(o.not_after).slice(11, 19)}, signed by ${String(o.issuer)}`);
      else if (o.msg === 'trust bundle updated') say(s.name, s.colour, `trust bundle #${String(o.sequence)}: ${String(o.authorities)} CA(s)`);
      else if (o.msg === 'policy bundle in force') {
        say(s.name, s.colour, `policy bundle ${String(o.version)} in force (${String(o.reason)})`);
        bundles.set(s.name, [...(bundles.get(s.name) ?? []), { version: Number(o.version), at: Date.parse(String(o.ts)) || Date.now() }]);
        ready += 1;
      } else if (o.msg === ALARM_MSG) {
        // The agent keeps the checkpoint it held: its state file says so.
        let kept = '';
        try {
          kept = `; its ${WITNESS_STATE_FILE} still holds size ${String((JSON.parse(readFileSync(join(DIR, s.name, WITNESS_STATE_FILE), 'utf8')) as { size: number }).size)}`;
        } catch { /* no state file to show */ }
        say(s.name, s.colour, `${alarmLine(o)}${kept}`);
        if (!alarms.has(s.name)) alarms.set(s.name, { kind: String(o.kind), held: Number(o.heldSize), seen: Number(o.seenSize) });
        onAlarm?.();
      } else if (o.msg === 'audit checkpoint witnessed') {
        // With --tamper the agents witness every 2 s: one line per agent every 10 s is enough to follow.
        if (TAMPER && Date.now() - (lastWitnessLine.get(s.name) ?? 0) < 10_000) return;
        lastWitnessLine.set(s.name, Date.now());
        say(s.name, s.colour, `witnessed audit checkpoint: ${String(o.size)} records, root ${String(o.root_hash).slice(0, 12)}…${Number(o.from) === 0 ? ' (first seen: signed by the log key in the policy bundle)' : `: signed, and consistent with the ${String(o.from)} it held`}`);
      } else if (o.msg === 'denied') say(s.name, s.colour, `${paint(31, 'sidecar denied')} ${String(o.peer)}${o.method !== undefined ? ` ${String(o.method)} ${String(o.path)}` : ''}${Array.isArray(o.reasons) && o.reasons.length ? ` by ${o.reasons.join(', ')}` : ' (no permit)'}`);
      else if (o.msg === 'secret opened') {
        // The agent logs only the policy and the path; the demo checks the file and shows a masked form.
        const out = String(o.output);
        try {
          const st = statSync(out);
          const mode = st.mode & 0o777;
          const text = readFileSync(out, 'utf8');
          say(s.name, s.colour, `${paint(32, 'opened')} ${basename(sealedFile)} → ${relative(ROOT, out)} (${mode === 0o600 ? '0600' : paint(31, `mode 0${mode.toString(8)}`)}, ${st.size} bytes): ${masked(text)}${text === plain ? '' : paint(31, ' (not the sealed password!)')}`);
        } catch (err) {
          say(s.name, 31, `secret opened but ${relative(ROOT, out)} is unreadable: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
        }
        onOpened();
      } else if (o.msg === 'secret unseal failed') say(s.name, 31, `secret unseal failed (${String(o.code)}), retrying in ${String(o.retry_in_ms)} ms`);
      else if (o.msg === 'upstream refused') {
        outboundRefusals.set(s.name, String(o.code));
        say(s.name, s.colour, `${paint(31, 'its own sidecar refused')} a call to ${nameOf(o.expected)}: ${String(o.code)} (${String(o.reason)})`);
      } else if (o.msg === 'renewal failed; will retry') say(s.name, 31, `SVID renewal refused: ${String(o.code)}, retrying in ${String(o.retry_in_ms)} ms`);
      else if (o.msg === 'key server failed') say(s.name, 31, `key server ${KEYSERVERS.find((k) => k.id === o.spiffe_id)?.name ?? String(o.spiffe_id)} failed: ${String(o.code)}`);
      else if (o.level === 'warn' || o.level === 'error') say(s.name, 31, String(o.msg));
    });
  };
  /** Refused: inventory (edge-7, standard) tries. Then a key server is killed and orders still opens. */
  const secretScenes = async (): Promise<void> => {
    await joined.get('inventory');
    const refused = await runTessera(['secret', 'unseal', '--agent-dir', join(DIR, 'inventory'), '--in', sealedFile]);
    if (refused.status === 0) say('inventory', 31, 'secret unseal of db-password.sealed was NOT refused');
    else say('inventory', 33, `${paint(31, 'secret unseal refused')}: ${errorCode(refused)} (${keyServerFailures(refused.stderr).join(', ') || 'no key server answered'}); wrong site and compliance level, nothing written`);
    await opened;
    await new Promise((r) => setTimeout(r, 2500));
    if (stopping) return;
    const victim = keyServers[KILLED]!;
    const gone = new Promise((r) => victim.child.once('exit', r));
    victim.child.kill('SIGKILL');
    await gone;
    say(victim.name, 31, `killed (SIGKILL): the ${victim.site} key server is down, 2 of 3 remain`);
    const again = await runTessera(['secret', 'unseal', '--agent-dir', join(DIR, 'orders'), '--in', sealedFile]);
    const missing = keyServerFailures(again.stderr);
    if (again.status === 0 && again.stdout === plain) {
      say('orders', 35, `${paint(32, 'still opened')} db-password.sealed with ${victim.name} down: 2 of 3 key servers answered (${missing.length ? `reported missing: ${missing.join(', ')}` : `${victim.name} was not needed`}): ${masked(again.stdout)}`);
    } else say('orders', 31, `secret unseal with ${victim.name} down failed: ${again.status === 0 ? 'not the sealed password' : errorCode(again)}`);
  };

  // frontend and inventory start now; orders, which opens the sealed password, once it is sealed.
  await startAgent(SERVICES[0]!);
  await startAgent(SERVICES[2]!);
  const sealedOk = await sealing;
  // The web console: its URL and a one-time sign-in link (after the sealing, as the admins below);
  // not with --tamper, whose scene is the audit log's.
  const consoleReady = TAMPER ? Promise.resolve(undefined) : consoleSetup(admin, adminDir, port).catch((err: unknown) => {
    say('console', 31, `web console setup failed: ${(err as Error).message}`);
    return undefined;
  });
  // Named admins and the risk engine's configuration, for the adaptive scenes: while orders' agent
  // starts, after the sealing (fewer CLI processes at once on a busy machine).
  const setup = TAMPER ? Promise.resolve(false) : adaptiveSetup(adminDir).then(() => true, (err: unknown) => {
    say('risk', 31, `admins or risk configuration failed: ${(err as Error).message}`);
    return false;
  });
  await startAgent(SERVICES[1]!, sealedOk ? ['--unseal', `${sealedFile}=${join(DIR, 'orders', 'run', 'db-password')}`] : []);
  const secretsDone = sealedOk ? secretScenes().catch((err: unknown) => say('secrets', 31, `blind secrets part failed: ${(err as Error).message}`)) : Promise.resolve();

  const until = Date.now() + 20_000;
  while (ready < SERVICES.length && Date.now() < until) await new Promise((r) => setTimeout(r, 50));

  const calls: [string, number, string, string, number][] = [
    ['frontend', feToOrders, 'GET', '/orders/42', 36],
    ['frontend', feToOrders, 'POST', '/orders', 36],
    ['frontend', feToInventory, 'GET', '/stock/sku-1', 36],
    ['inventory', invToOrders, 'GET', '/orders/42', 33],
    ['orders', ordToInv, 'POST', '/stock/sku-1', 35],
  ];
  const target = (port: number): string => (port === feToInventory || port === ordToInv ? 'inventory' : 'orders');
  const traffic = async (): Promise<void> => {
    for (const [from, port, method, path, colour] of calls) say(from, colour, `→ ${target(port)} ${method} ${path}: ${verdict(await call(port, method, path))}`);
  };
  await traffic();
  timers.push(setInterval(() => void (stopping ? undefined : traffic()), 5000));

  // A policy change: frontend may now create orders. Measure until the sidecar lets it through.
  setTimeout(() => void (async () => {
    const v2 = { ...v1.policies, 'frontend-writes.cedar': `@id("frontend-creates-orders")
permit (
  principal == Tessera::Workload::"${SERVICES[0]!.id}",
  action == Tessera::Action::"http:request",
  resource == Tessera::Workload::"${SERVICES[1]!.id}"
) when { context.method == "POST" && context.path == "/orders" };
` };
    const diff = await admin.call<PolicyDryRunResponse>(
      'POST', '/v1/policies', { files: v2, reason: 'demo: frontend may create orders', dry_run: true } satisfies ApplyPolicyRequest);
    say('control', 1, `policy diff (replayed ${diff.replayed} recorded decisions): ${diff.flips.map((f) => `${f.context.method ?? ''} ${f.context.path ?? ''} ${f.before}→${f.after}`).join(', ') || 'no flips'}`);
    const t0 = Date.now();
    const res = await admin.call<AppliedPolicyResponse>('POST', '/v1/policies', { files: v2, reason: 'demo: frontend may create orders' } satisfies ApplyPolicyRequest);
    say('control', 1, paint(32, `policy v${res.version} applied: frontend may POST /orders`));
    for (;;) {
      const r = await call(feToOrders, 'POST', '/orders');
      if (r.status === 200) {
        say('frontend', 36, paint(32, `POST /orders allowed ${Date.now() - t0} ms after the policy change`));
        break;
      }
      if (Date.now() - t0 > 10_000) {
        say('frontend', 31, 'the policy change did not take effect within 10 s');
        break;
      }
      await new Promise((r2) => setTimeout(r2, 20));
    }
  })().catch((err: unknown) => say('control', 31, `policy change failed: ${(err as Error).message}`)), 10_000).unref();

  // A derived credential: a JWT-SVID for an audience, checked against the public JWKS.
  setTimeout(() => void (async () => {
    const dir = join(DIR, 'frontend');
    const client = new ApiClient(url, { ca: readFileSync(join(dir, 'bundle.pem'), 'utf8'), cert: readFileSync(join(dir, 'svid.pem'), 'utf8'), key: readFileSync(join(dir, 'svid.key'), 'utf8') });
    try {
      const jwt = await client.call<JwtSvidResponse>('POST', '/v1/svid/jwt', { audience: ['orders-api'] } satisfies JwtSvidRequest);
      const jwks = await client.call<BundleResponse>('GET', '/v1/bundle');
      const v = await verifyJwtSvid(jwt.token, jwks, { audience: 'orders-api', trustDomain: TD });
      say('frontend', 36, `JWT-SVID for audience "orders-api" verified: sub=${v.spiffeId}, expires ${jwt.expires_at.slice(11, 19)}`);
    } catch (err) {
      say('frontend', 31, `JWT-SVID demo failed: ${(err as Error).message}`);
    } finally {
      client.close();
    }
  })(), 6000).unref();

  // After the adaptive scenes (their named admins' CLI runs keep their bundle.pem current, but need
  // not run inside the rotation's grace); not with --tamper: the control plane is down then.
  const rotateCa = async (): Promise<void> => {
    if (stopping) return;
    const res = await admin.call<CaRotateResponse>('POST', '/v1/ca/rotate', { grace_seconds: 10 } satisfies CaRotateRequest);
    say('control', 1, paint(32, `CA rotation: prepared ${res.prepared.id.slice(0, 8)}, published in the bundle now, signing from ${String(res.prepared.activateAt).slice(11, 19)}`));
  };

  setInterval(() => {
    const rows = SERVICES.map((s) => {
      const file = join(DIR, s.name, 'svid.pem');
      if (!existsSync(file)) return `${s.name}: -`;
      const c = new X509Certificate(readFileSync(file));
      return `${s.name}: ${c.serialNumber.slice(0, 8)} until ${new Date(c.validTo).toISOString().slice(11, 19)}`;
    });
    say('files', 90, rows.join('  |  '));
  }, 15_000).unref();

  // The audit log, checked over the API as an auditor would; the checkpoint is saved for the end.
  setTimeout(() => void (async () => {
    const env = { TESSERA_ADMIN_DIR: adminDir };
    const cp = await runTessera(['--json', '--server', url, 'audit', 'checkpoint'], env);
    if (cp.status === 0) writeFileSync(SAVED_CHECKPOINT, cp.stdout);
    const v = await auditVerify([...(cp.status === 0 ? ['--from-checkpoint', SAVED_CHECKPOINT] : [])]);
    if (v.status === 0 && v.result?.ok) say('auditor', AUDIT_COLOUR, verifiedLine('tessera audit verify (over the API)', v.result));
    else say('auditor', 31, `tessera audit verify failed: ${v.code}`);
  })().catch((err: unknown) => say('auditor', 31, `audit verify failed: ${(err as Error).message}`)), 13_000).unref();

  // Exfiltration and quarantine (on the console's map too), release, a just-in-time grant, then the
  // device scene (not with --tamper: the control plane stops then).
  const adaptive = TAMPER ? Promise.resolve(true) : new Promise<boolean>((resolve) => {
    setTimeout(() => void (async () => {
      const [prepared] = await Promise.all([setup, secretsDone]);
      if (!prepared || stopping) return false;
      // The console's map before the exfiltration, then at the quarantine and at the release.
      const reader = await consoleReady;
      const map = reader ? (moment: string, quarantined: boolean): Promise<boolean> => mapCheck(reader, moment, quarantined) : undefined;
      const mapOk = map ? await map('the console\'s map, before the exfiltration', false) : false;
      const ok = await adaptiveScenes({ admin, ordToInv, feToOrders, sealedFile: sealedOk ? sealedFile : undefined, ...(map ? { map } : {}) });
      if (stopping) return false;
      process.stdout.write(`\n${ok ? paint(32, 'adaptive scenes done') : paint(31, 'adaptive scenes FAILED')}.\n`);
      const deviceOk = await deviceScene(url).catch((err: unknown) => {
        say(DEVICE, 31, `device scene failed: ${(err as Error).message}`);
        return false;
      });
      if (!stopping) process.stdout.write(`\n${deviceOk ? paint(32, 'device scene done') : paint(31, 'device scene FAILED')}${process.env.DEMO_SECONDS ? '' : '; Ctrl-C stops everything'}.\n`);
      return ok && mapOk && deviceOk;
    })().catch((err: unknown) => {
      say('risk', 31, `adaptive scenes failed: ${(err as Error).message}`);
      return false;
    }).then(resolve), ADAPTIVE_AT_MS);
  });

  if (!TAMPER) void adaptive.then(() => new Promise((r) => setTimeout(r, 2000))).then(rotateCa).catch((err: unknown) => say('control', 31, `CA rotation failed: ${(err as Error).message}`));

  // DEMO_SECONDS: stop after that many seconds, and not before the adaptive scenes are done.
  const seconds = Number(process.env.DEMO_SECONDS ?? (TAMPER ? 20 : 0));
  if (seconds > 0) {
    setTimeout(() => void (TAMPER ? tamperScene(port).catch((err: unknown) => {
      say('tamper', 31, `failed: ${(err as Error).message}`);
      return false;
    }).then((ok) => stopAll(ok ? 0 : 1)) : adaptive.then((ok) => stopAll(ok ? 0 : 1))), seconds * 1000);
  }
  setInterval(() => {}, 1 << 30);
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  void stopAll(1);
});
