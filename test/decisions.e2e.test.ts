/**
 * Issue 9, finding 8: a flood of forged decision records followed by `tessera policy apply` (which
 * replays recorded decisions) killed the control plane with a V8 fatal error ("FATAL ERROR: Reached
 * heap limit Allocation failed - JavaScript heap out of memory", SIGABRT).
 *
 * The cause: nothing bounded the size of one record (context *names* had no length limit, so one
 * record could fill the 1 MiB body), and a dry run loaded the newest 5000 records whole, parsed
 * them, keyed every flip by their JSON and echoed them in its answer: several times 5000 × 1 MB
 * on the heap. With the default heap (~4 GB here) 4000 such records did it; this test gives
 * `tessera server` a 128 MB heap so that 120 records (a few seconds of shipping) reproduce it.
 *
 * Now: such records are refused at ingestion (400), the sample a dry run replays is bounded in
 * count and per-row size (larger stored rows are skipped), and the answer lists at most 1000 flips.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from '../src/server/server.js';
import { freePort, runTessera, ServerProcess } from './support/process.js';
import { joinAgent, rawJson, type JoinedAgent } from './support/server.js';

const TD = 'example.org';
const ATTACKER = `spiffe://${TD}/shop/intruder`;
const FLOOD = 120;

describe('replaying a flood of forged decision records does not take the control plane down', () => {
  let dir: string;
  let server: ServerProcess;
  let attacker: JoinedAgent;
  let trust = '';

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tessera-decisions-e2e-'));
    server = new ServerProcess(join(dir, 'server'), await freePort(), ['--trust-domain', TD], { ...process.env, NODE_OPTIONS: '--max-old-space-size=128' });
    await server.start();
    const admin = server.admin();
    try {
      attacker = await joinAgent(server as unknown as ControlPlane, admin, ATTACKER);
    } finally {
      admin.close();
    }
    trust = join(server.adminDir, 'bundle.pem');
    writeFileSync(join(dir, 'v.cedar'), 'permit (principal, action == Tessera::Action::"http:request", resource) when { context.method == "GET" };\n');
  }, 60_000);

  afterAll(async () => {
    await server?.stop(false);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('ships records of maximal size, then `policy apply --dry-run` and `policy apply` answer and the server lives', async () => {
    const { readFileSync } = await import('node:fs');
    const ca = readFileSync(trust, 'utf8');
    const post = (decisions: unknown[]) => rawJson(server.url, { path: '/v1/decisions', json: { decisions }, ca, cert: attacker.certPem, key: attacker.keyPem, timeoutMs: 60_000 });
    // Records as large as the body allows, each with unique context and principal (refused now).
    for (let i = 0; i < FLOOD; i++) {
      const res = await post([{
        ts: Date.now(), principal: `spiffe://${TD}/p/${i}`, action: 'http:request', resource: ATTACKER,
        context: { [`k${i}`.padEnd(1000 * 1024, 'x')]: 'v' }, allow: true, reasons: [],
      }]);
      expect([200, 400], res.text.slice(0, 200)).toContain(res.status);
      expect(server.child?.exitCode, server.output.slice(-2000)).toBeNull();
    }
    // And the largest records accepted now: long principals, full context strings, every one unique.
    // (~10 KB each: 80 to a batch stay under the 1 MiB body limit.)
    for (let b = 0; b < 25; b++) {
      const batch = Array.from({ length: 80 }, (_, i) => ({
        ts: Date.now(), principal: `spiffe://${TD}/${`p${b}-${i}/`.padEnd(2000, 'q')}`, action: 'http:request', resource: ATTACKER,
        context: { method: 'GET', path: `/${b}/${i}/`.padEnd(2048, 'x'), site: 's'.repeat(1900), time: i, hour: 1, risk: 0 }, allow: false, reasons: Array.from({ length: 16 }, () => 'r'.repeat(256)),
      }));
      const res = await post(batch);
      expect(res.status, res.text.slice(0, 300)).toBe(200);
    }

    const env = { TESSERA_ADMIN_DIR: server.adminDir };
    const dry = await runTessera(['policy', 'apply', '-f', dir, '--dry-run'], { env, timeoutMs: 120_000 });
    expect(server.child?.exitCode ?? server.child?.signalCode ?? null, server.output.slice(-3000)).toBeNull();
    expect(dry.status, dry.stderr + server.output.slice(-3000)).toBe(0);
    expect(dry.stdout).toMatch(/replayed \d+ recorded decisions from 1 enforcer made \d{4}-\d\d-\d\dT\S+ \.\. \d{4}-\d\d-\d\dT\S+; \d+ would change/);
    const applied = await runTessera(['--json', 'policy', 'apply', '-f', dir], { env, timeoutMs: 120_000 });
    expect(applied.status, applied.stderr + server.output.slice(-3000)).toBe(0);
    expect(JSON.parse(applied.stdout)).toMatchObject({ version: 1, replayed: expect.any(Number), span: { from: expect.any(String), to: expect.any(String) } });
    expect(server.child?.exitCode ?? server.child?.signalCode ?? null).toBeNull();
  }, 300_000);
});
