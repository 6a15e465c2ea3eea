/**
 * The risk engine's configuration as versioned, audited admin state (issue 11), over real HTTPS + mTLS
 * and a real SQLite file: set → show → history → rollback, the leader's engine switching to the new
 * version (a scan that quarantines under the defaults does not under a lenient version, and does again
 * after the rollback), the negative cases of every route, and `tessera risk config` (the built CLI, dist/).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode } from '../../core/errors.js';
import { createLogger } from '../../core/log.js';
import type { TelemetryWindow } from '../../core/risk/types.js';
import type { RiskConfigHistoryResponse, RiskConfigResponse, RiskConfigVersionView } from '../../core/wire/risk.js';
import { errorCode, joinAgent, rawJson, rawRequest, startControlPlane, type JoinedAgent, type RawResponse, type TestControlPlane } from '../../../test/support/server.js';
import { runTessera } from '../../../test/support/process.js';
import { RiskEngineLink } from './engine-link.js';

const TD = 'tessera.test';
const A = `spiffe://${TD}/shop/compromised`;
const B = `spiffe://${TD}/shop/orders`;
/** Lenient: the scan below stays far under every cold-start threshold, and nothing short of 100 acts. */
const LENIENT = { quarantine_at: 100, step_up_at: 100, cold_start: { denials: 1_000_000, paths: 1_000_000 } };

function expectError(res: RawResponse, code: ErrorCode): void {
  expect({ status: res.status, code: errorCode(res) }, res.text.slice(0, 300)).toEqual({ status: ERROR_CODES[code].status, code });
}

/** What orders' inbound saw from A in the window starting at `start`: a scan (as in engine-link.test.ts). */
function scan(start: number): TelemetryWindow {
  return {
    ts: new Date(start).toISOString(), window_s: 5, caller: A, callee: B, caller_site: 'eu', callee_site: 'eu', reporter: 'callee', action: 'http',
    requests: 120, errors: 0, denials: 60, bytes_in: 40_000, bytes_out: 9_000, latency_p50_ms: 2, latency_p99_ms: 9, paths_distinct: 110,
  };
}

describe('risk engine configuration (versioned, audited)', () => {
  let t: TestControlPlane;
  let w: JoinedAgent;
  let clock: number;
  let link: RiskEngineLink;
  type Tls = { ca: string; cert?: string; key?: string };
  const admin = (): Tls => t.adminTls;
  const send = (method: string, path: string, json: unknown, tls = admin()): Promise<RawResponse> => rawJson(t.cp.url, { method, path, json, ...tls });
  const get = (path: string, tls = admin()): Promise<RawResponse> => rawRequest(t.cp.url, { path, ...tls });
  const as = (a: JoinedAgent): Tls => ({ ca: t.adminTls.ca, cert: a.certPem, key: a.keyPem });
  async function audit(action: string): Promise<{ outcome: string; code: string; actor: string; target: string; detail: Record<string, unknown> }[]> {
    return ((await get(`/v1/audit?limit=1000&action=${action}`)).json as { records: never[] }).records;
  }
  async function storeScan(): Promise<void> {
    const base = clock + 5000;
    const windows = [0, 1, 2].map((k) => scan(base + k * 5000));
    await t.cp.store.insertTelemetry(windows.map((window) => ({ window, reportedBy: B, receivedAt: clock })), { maxRows: 200_000, maxAgeMs: 7 * 86_400_000, now: clock });
    clock = base + 7 * 5000;
  }

  beforeAll(async () => {
    t = await startControlPlane({ trustDomain: TD });
    w = await joinAgent(t.cp, t.admin, `spiffe://${TD}/shop/web`);
    // The test drives its own link (the leader's, with the stored config) on its own clock; the wall-clock one stands down.
    t.cp.ctx.riskEngine = undefined;
    clock = Math.ceil(Date.now() / 5000) * 5000;
    link = new RiskEngineLink({ store: t.cp.store, risk: t.cp.ctx.risk, log: createLogger({ write: () => {} }), now: () => clock, config: t.cp.ctx.riskConfig });
    await link.init();
  });
  afterAll(async () => {
    await t?.close();
  });

  it('starts on the built-in default (version 0): the control plane\'s settings, two windows of grace', async () => {
    const res = await get('/v1/risk/config');
    expect(res.status, res.text).toBe(200);
    const cur = res.json as RiskConfigResponse;
    expect(cur).toMatchObject({ version: 0, author: '', config: { quarantine_at: 70, grace_windows: 2, window_s: 5 } });
    expect(cur.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(link.configVersion).toBe(0);
    expect((await get('/v1/risk/config/history')).json).toEqual({ versions: [], current: 0 });
  });

  it('set → show → history → rollback, each audited with the admin as actor', async () => {
    const set = await send('PUT', '/v1/risk/config', { config: { quarantine_at: 90, weights: { volume: 5 } }, reason: 'fewer false alarms' });
    expect(set.status, set.text).toBe(201);
    const v1 = set.json as RiskConfigVersionView;
    expect(v1).toMatchObject({ version: 1, author: t.cp.ctx.adminId, reason: 'fewer false alarms' });
    // Stored whole: the defaults fill every key not given.
    expect(v1.config).toMatchObject({ quarantine_at: 90, step_up_at: 40, quarantine_ttl: '3600s', weights: { volume: 5, paths: 40 } });
    expect((await get('/v1/risk/config')).json).toMatchObject({ version: 1, hash: v1.hash });
    const set2 = await send('PUT', '/v1/risk/config', { config: { quarantine_at: 95 }, reason: 'even fewer' });
    expect(set2.status, set2.text).toBe(201);
    const hist = (await get('/v1/risk/config/history')).json as RiskConfigHistoryResponse;
    expect(hist.current).toBe(2);
    expect(hist.versions.map((v) => v.version)).toEqual([2, 1]);
    expect((await get('/v1/risk/config/history?limit=1')).json).toMatchObject({ versions: [{ version: 2 }] });
    const rb = await send('POST', '/v1/risk/config/rollback', { version: 1, reason: 'too lax' });
    expect(rb.status, rb.text).toBe(201);
    expect(rb.json).toMatchObject({ version: 3, hash: v1.hash, reason: 'rollback to v1: too lax', config: v1.config });
    expect((await get('/v1/risk/config')).json).toMatchObject({ version: 3, hash: v1.hash });
    // Back to the built-in default: version 0 restores it.
    const rb0 = await send('POST', '/v1/risk/config/rollback', { version: 0, reason: 'defaults' });
    expect(rb0.json).toMatchObject({ version: 4, config: { quarantine_at: 70, grace_windows: 2 } });

    const sets = await audit('risk.config.set');
    expect(sets.filter((r) => r.outcome === 'success').map((r) => r.target)).toEqual(expect.arrayContaining(['risk config v1', 'risk config v2']));
    expect(sets.find((r) => r.target === 'risk config v1')).toMatchObject({ actor: t.cp.ctx.adminId, detail: { reason: 'fewer false alarms', hash: v1.hash } });
    expect((await audit('risk.config.rollback')).find((r) => r.target === 'risk config v3')).toMatchObject({ outcome: 'success', detail: { rolled_back_to: 1 } });
  });

  it('the leader\'s engine runs the version in force: a lenient version lets a scan pass, the rollback catches the next one', async () => {
    const lenient = await send('PUT', '/v1/risk/config', { config: LENIENT, reason: 'pen test week' });
    expect(lenient.status, lenient.text).toBe(201);
    const lenientVersion = (lenient.json as RiskConfigVersionView).version;
    // A leader starting now runs the stored version in force, not the built-in default.
    const fresh = new RiskEngineLink({ store: t.cp.store, risk: t.cp.ctx.risk, log: createLogger({ write: () => {} }), now: () => clock, config: t.cp.ctx.riskConfig });
    await fresh.init();
    expect(fresh.configVersion).toBe(lenientVersion);
    expect(fresh.engine.config).toMatchObject({ quarantineAt: 100, stepUpAt: 100, coldStart: { denials: 1_000_000 } });
    await storeScan();
    await link.step();
    expect(link.configVersion).toBe(lenientVersion);
    expect(link.engine.config.quarantineAt).toBe(100);
    expect((await t.cp.ctx.risk.standing(A)).state).toBe('normal');

    const back = await send('POST', '/v1/risk/config/rollback', { version: 0, reason: 'pen test over' });
    expect(back.status, back.text).toBe(201);
    clock += 5000;
    await link.step();
    expect(link.configVersion).toBe((back.json as RiskConfigVersionView).version);
    // The replayed scan was judged without acting: still normal until new evidence.
    expect((await t.cp.ctx.risk.standing(A)).state).toBe('normal');
    await storeScan();
    await link.step();
    expect((await t.cp.ctx.risk.standing(A)).state).toBe('quarantined');
    expect((await get('/v1/risk/config')).json).not.toHaveProperty('engine_version'); // the test's link is not the context's
  });

  it('refuses what it must, with stable codes, and stores nothing', async () => {
    const before = ((await get('/v1/risk/config/history')).json as RiskConfigHistoryResponse).current;
    // A workload is not an admin: neither reads nor changes the configuration.
    expectError(await get('/v1/risk/config', as(w)), 'TESSERA_FORBIDDEN');
    expectError(await get('/v1/risk/config/history', as(w)), 'TESSERA_FORBIDDEN');
    expectError(await send('PUT', '/v1/risk/config', { config: LENIENT, reason: 'me' }, as(w)), 'TESSERA_FORBIDDEN');
    expectError(await send('POST', '/v1/risk/config/rollback', { version: 1, reason: 'me' }, as(w)), 'TESSERA_FORBIDDEN');
    expectError(await get('/v1/risk/config', { ca: t.adminTls.ca }), 'TESSERA_AUTH_REQUIRED');
    // What the parser refuses: TESSERA_CONFIG_INVALID with its message.
    const unknown = await send('PUT', '/v1/risk/config', { config: { quarantine_at: 90, quarantine_after: 3 }, reason: 'x' });
    expectError(unknown, 'TESSERA_CONFIG_INVALID');
    expect(unknown.text).toContain('unknown key \\"quarantine_after\\"');
    expectError(await send('PUT', '/v1/risk/config', { config: { step_up_at: 90, quarantine_at: 80 }, reason: 'x' }), 'TESSERA_CONFIG_INVALID');
    expectError(await send('PUT', '/v1/risk/config', { config: { quarantine_ttl: 'forever' }, reason: 'x' }), 'TESSERA_CONFIG_INVALID');
    expectError(await send('PUT', '/v1/risk/config', { config: { weights: { volume: -1 } }, reason: 'x' }), 'TESSERA_CONFIG_INVALID');
    // A bad body: TESSERA_BAD_REQUEST.
    expectError(await send('PUT', '/v1/risk/config', { config: { quarantine_at: 90 } }), 'TESSERA_BAD_REQUEST');
    expectError(await send('PUT', '/v1/risk/config', { config: { quarantine_at: 90 }, reason: '' }), 'TESSERA_BAD_REQUEST');
    expectError(await send('PUT', '/v1/risk/config', { config: { quarantine_at: 90 }, reason: 'tab\there' }), 'TESSERA_BAD_REQUEST');
    expectError(await send('PUT', '/v1/risk/config', { config: [1], reason: 'x' }), 'TESSERA_BAD_REQUEST');
    expectError(await send('PUT', '/v1/risk/config', { config: 'quarantine_at: 90', reason: 'x' }), 'TESSERA_BAD_REQUEST');
    expectError(await send('PUT', '/v1/risk/config', { reason: 'x' }), 'TESSERA_BAD_REQUEST');
    expectError(await send('PUT', '/v1/risk/config', { config: {}, reason: 'x', extra: 1 }), 'TESSERA_BAD_REQUEST');
    expectError(await send('PUT', '/v1/risk/config', [1]), 'TESSERA_BAD_REQUEST');
    const notJson = await rawRequest(t.cp.url, { method: 'PUT', path: '/v1/risk/config', headers: { 'content-type': 'application/json' }, body: '{"config": {', ...admin() });
    expectError(notJson, 'TESSERA_BAD_REQUEST');
    expectError(await send('POST', '/v1/risk/config/rollback', { version: 999_999, reason: 'x' }), 'TESSERA_NOT_FOUND');
    expectError(await send('POST', '/v1/risk/config/rollback', { version: -1, reason: 'x' }), 'TESSERA_BAD_REQUEST');
    expectError(await send('POST', '/v1/risk/config/rollback', { version: '1', reason: 'x' }), 'TESSERA_BAD_REQUEST');
    expectError(await send('POST', '/v1/risk/config/rollback', { version: 1 }), 'TESSERA_BAD_REQUEST');
    expectError(await get('/v1/risk/config/history?limit=0'), 'TESSERA_BAD_REQUEST');
    expect(((await get('/v1/risk/config/history')).json as RiskConfigHistoryResponse).current).toBe(before);
    // The refusals are audited too.
    const refused = (await audit('risk.config.set')).filter((r) => r.outcome !== 'success');
    expect(refused.map((r) => r.code)).toEqual(expect.arrayContaining(['TESSERA_FORBIDDEN', 'TESSERA_CONFIG_INVALID', 'TESSERA_BAD_REQUEST']));
    expect((await audit('risk.config.rollback')).some((r) => r.code === 'TESSERA_NOT_FOUND')).toBe(true);
  });

  it('tessera risk config set|show|history|rollback, with clear exit statuses for bad input', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tessera-riskcfg-'));
    try {
      const cli = (...args: string[]) => runTessera(['risk', 'config', ...args], { env: { TESSERA_ADMIN_DIR: t.cp.adminDir } });
      const good = join(dir, 'risk.json');
      writeFileSync(good, JSON.stringify({ quarantine_at: 85, quarantine_ttl: '30m' }));
      const set = await cli('set', good, '--reason', 'by the CLI', '--json');
      expect(set.status, set.stderr).toBe(0);
      const v = JSON.parse(set.stdout) as RiskConfigVersionView;
      expect(v).toMatchObject({ author: t.cp.ctx.adminId, reason: 'by the CLI', config: { quarantine_at: 85, quarantine_ttl: '1800s' } });
      const show = await cli('show');
      expect(show.status, show.stderr).toBe(0);
      expect(show.stdout).toContain(`version: ${v.version}`);
      expect(show.stdout).toContain('"quarantine_at": 85');
      const hist = await cli('history', '--limit', '2');
      expect(hist.stdout).toMatch(new RegExp(`^${v.version}\\s.*by the CLI$`, 'm'));
      const rb = await cli('rollback', '0', '--reason', 'defaults again');
      expect(rb.status, rb.stderr).toBe(0);
      expect(rb.stdout).toContain(`risk config v0 restored as v${v.version + 1}`);

      // Refused before anything is sent: an unknown key, not JSON, no file, no reason.
      const bad = join(dir, 'bad.json');
      writeFileSync(bad, JSON.stringify({ quarantine_after: 3 }));
      const unknown = await cli('set', bad, '--reason', 'x');
      expect(unknown.status).toBe(2);
      expect(unknown.stderr).toContain('unknown key "quarantine_after"');
      writeFileSync(bad, '{ not json');
      expect((await cli('set', bad, '--reason', 'x')).stderr).toContain('not valid JSON');
      expect((await cli('set', join(dir, 'missing.json'), '--reason', 'x')).status).toBe(2);
      expect((await cli('set', good)).status).not.toBe(0);
      expect((await cli('rollback', 'v1', '--reason', 'x')).status).toBe(2);
      const none = await cli('rollback', '999999', '--reason', 'x');
      expect(none.status).toBe(1);
      expect(none.stderr).toContain('TESSERA_NOT_FOUND');
      expect(((await get('/v1/risk/config')).json as RiskConfigResponse).version).toBe(v.version + 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
