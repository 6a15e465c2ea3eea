import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CONSOLE_CSP } from '../src/server/console/static.js';
import { Browser, codeOf } from './support/http-browser.js';

const DEMO = fileURLToPath(new URL('../dist/demo/main.js', import.meta.url));
const DEMO_DIR = fileURLToPath(new URL('../.tessera/demo/', import.meta.url));

/** The demo's lines that report a failure (the first 40), wherever they are in its output. */
const failedLines = (out: string): string => out.split('\n').filter((l) => /FAILED|failed|timed out|Error/.test(l)).slice(0, 40).join('\n');

/** Processes still running whose command line names this worktree's demo directory (Linux /proc). */
function demoProcesses(): string[] {
  if (!existsSync('/proc/self/cmdline')) return [];
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(DEMO_DIR.replace(/\/$/, ''))) found.push(`${pid}: ${cmd.slice(0, 200)}`);
    } catch { /* gone meanwhile */ }
  }
  return found;
}

/** What a browser sees of the console and the printed one-time link, while the demo runs. */
interface ConsoleSeen {
  page: { status: number; csp: unknown };
  redeemed: { status: number; session: boolean };
  map: { status: number; code: string | undefined; services: string[] };
  secondUse: string | undefined;
}

/**
 * With a browser-like client (test/support/http-browser.ts) on the printed console URL: the page
 * with its CSP, the printed link redeemed once (a session, which then asks for the map), and a
 * second use of the same link.
 */
async function useConsole(base: string, link: string): Promise<ConsoleSeen> {
  const ca = readFileSync(`${DEMO_DIR}server/bundle.pem`, 'utf8');
  const b = new Browser(base, ca);
  const page = await b.request('/console/');
  const token = new URLSearchParams(new URL(link).hash.slice(1)).get('token');
  const redeemed = await b.post('/v1/auth/link', { token });
  const map = await b.request('/v1/map');
  const again = await new Browser(base, ca).post('/v1/auth/link', { token });
  return {
    page: { status: page.status, csp: page.headers['content-security-policy'] },
    redeemed: { status: redeemed.status, session: b.cookies.has('__Host-tessera_session') },
    map: { status: map.status, code: codeOf(map), services: ((map.json as { services?: { id: string }[] } | undefined)?.services ?? []).map((x) => x.id) },
    secondUse: codeOf(again),
  };
}

describe('npm run demo', () => {
  it('starts a control plane, three agents and three key servers, shows joins, rotations, a JWT-SVID, allowed and denied calls through sidecars, a live policy change, blind secrets, the web console and a one-time link, an exfiltrating service quarantined and released on the map, a JIT grant, a device enrolled, reporting and revoked, and stops cleanly', async () => {
    const started = Date.now();
    const child = spawn(process.execPath, [DEMO], { env: { ...process.env, DEMO_SECONDS: '16', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    // The printed console URL and link are used while the demo runs (a browser would).
    let seen: Promise<ConsoleSeen | Error> | undefined;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const base = /web console: (https:\/\/localhost:\d+)\/console\//.exec(out)?.[1];
      const link = /tessera console link --user carol: one use, until [0-9:]+: (https:\/\/localhost:\d+\/(?:console\/sign-in|auth\/link)#token=[A-Za-z0-9_-]+)\n/.exec(out)?.[1];
      if (seen === undefined && base !== undefined && link !== undefined) seen = useConsole(base, link).catch((err: unknown) => err as Error);
    });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    // Bounded: the demo must end by itself once its scenes are done; a hang is stopped (SIGTERM stops
    // its children too) and fails below.
    const term = setTimeout(() => child.kill('SIGTERM'), 420_000);
    const kill = setTimeout(() => child.kill('SIGKILL'), 435_000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    clearTimeout(term);
    clearTimeout(kill);
    // On failure, every line that says what failed, then the end of what the demo printed (it never
    // prints a secret or a token unmasked).
    expect(code, `${failedLines(out)}\n…\n${out.slice(-4000)}`).toBe(0);
    expect(Date.now() - started).toBeLessThan(420_000);
    // Nothing it started is left running.
    expect(demoProcesses()).toEqual([]);
    for (const name of ['frontend', 'orders', 'inventory']) {
      expect(out).toMatch(new RegExp(`${name}\\s+joined → spiffe://tessera.test/shop/${name}`));
      expect(out).toMatch(new RegExp(`${name}\\s+rotated SVID`));
    }
    expect(out).toContain('JWT-SVID for audience "orders-api" verified');
    // The data plane: allowed and denied calls through the sidecars, data residency, a live policy change.
    expect(out).toMatch(/frontend\s+→ orders GET \/orders\/42: 200 allowed \(orders served GET \/orders\/42 for spiffe:\/\/tessera.test\/shop\/frontend\)/);
    expect(out).toMatch(/frontend\s+→ orders POST \/orders: 403 denied \(TESSERA_PROXY_DENIED\)/);
    expect(out).toMatch(/orders\s+sidecar denied spiffe:\/\/tessera.test\/shop\/inventory GET \/orders\/42 by pci-stays-in-site/);
    expect(out).toMatch(/policy diff \(replayed \d+ recorded decisions\): POST \/orders deny→allow/);
    expect(out).toMatch(/POST \/orders allowed \d+ ms after the policy change/);
    // Blind secrets: three key servers, a 2-of-3 policy, sealed offline into the repository, opened
    // by orders (cloud-eu, PCI) into a 0600 file, refused to inventory (edge-7), still opened with a
    // key server killed.
    for (const i of [1, 2, 3]) expect(out).toMatch(new RegExp(`ks-${i}\\s+key server ready on https://127\\.0\\.0\\.1:\\d+ as spiffe://tessera.test/keyserver/${i}`));
    expect(out).toContain('policy v1 applied from policies/ (credentials.cedar, residency.cedar, secrets.cedar, shop.cedar)');
    expect(out).toMatch(/secrets\s+secret policy "db" created: 2 of 3 key servers \(ks-1 cloud-eu, ks-2 edge-7, ks-3 cloud-us\)/);
    expect(out).toMatch(/secrets\s+sealed offline with the signed record \(\.tessera\/demo\/repo\/db\.record\.json\) → \.tessera\/demo\/repo\/db-password\.sealed/);
    expect(out).toMatch(/secrets\s+safe to commit: \d+ characters of tessera-sealed:v1 text for policy "db" key epoch 1/);
    // Not even a piece of the sealed text is echoed.
    expect(out).not.toMatch(/tessera-sealed:v1:[A-Za-z0-9_-]/);
    expect(out).toMatch(/orders\s+opened db-password\.sealed → \.tessera\/demo\/orders\/run\/db-password \(0600, \d+ bytes\): postgres:\/\/orders:[^@\s]{3}…@db\.internal:5432\/orders/);
    expect(out).toMatch(/inventory\s+secret unseal refused: TESSERA_SECRET_THRESHOLD \([^)]*TESSERA_FORBIDDEN[^)]*\)/);
    expect(out).toMatch(/ks-\d\s+denied "db" for inventory \(TESSERA_FORBIDDEN\)/);
    expect(out).toMatch(/ks-2\s+killed \(SIGKILL\): the edge-7 key server is down/);
    expect(out).toMatch(/orders\s+still opened db-password\.sealed with ks-2 down: 2 of 3 key servers answered \((reported missing: ks-2 TESSERA_[A-Z_]+|ks-2 was not needed)\): postgres:\/\/orders:[^@\s]{3}…@/);
    expect(out).not.toMatch(/secret unseal failed|NOT refused|not the sealed password|blind secrets part failed/);
    // The plaintext is only in the 0600 file the agent wrote: never in the output (only its masked
    // form), nor in the sealed file in the repository. (Checked with includes() so that a failure
    // does not print it.)
    const opened = `${DEMO_DIR}orders/run/db-password`;
    expect(statSync(opened).mode & 0o777).toBe(0o600);
    const plain = readFileSync(opened, 'utf8');
    const password = /^postgres:\/\/orders:([^@]{16})@db\.internal:5432\/orders$/.exec(plain)?.[1];
    expect(password).toBeDefined();
    expect(out.includes(plain)).toBe(false);
    expect(out.includes(password!)).toBe(false);
    expect(existsSync(`${DEMO_DIR}repo/db-password.sealed`)).toBe(true);
    expect(readFileSync(`${DEMO_DIR}repo/db-password.sealed`, 'utf8').includes(password!)).toBe(false);
    expect(out).toContain('stopped cleanly');
    expect(out).not.toContain('internal error');
    // The audit log of the stopped control plane, rehashed offline from its SQLite file.
    expect(out).toMatch(/auditor\s+tessera audit verify --db \.tessera\/demo\/server\/tessera\.db.*: verified: \d+ records rehashed, \d+ signed checkpoints checked, intact up to size \d+/);
    expect(out).not.toMatch(/tjt_[A-Za-z0-9_-]{10}/);

    // Adaptive zero trust (issue 11). Two named admins and the risk configuration, through their real paths.
    expect(out).toMatch(/alice\s+admin added by the bootstrap admin \(tessera admin add alice\): spiffe:\/\/tessera\.test\/tessera\/admin\/alice/);
    expect(out).toMatch(/bob\s+admin added by alice \(tessera admin add bob\): spiffe:\/\/tessera\.test\/tessera\/admin\/bob/);
    expect(out).toMatch(/risk\s+risk engine configuration v1 set by alice \(tessera risk config set \.tessera\/demo\/risk-config\.json\)/);
    // 1. orders exfiltrates through its sidecar; the engine quarantines it, with its reasons.
    expect(out).toMatch(/control\s+risk engine: orders normal → quarantined, score \d+/);
    const q = /risk\s+orders QUARANTINED by the risk engine ([\d.]+) s after its first exfiltrating request: score (\d+)/.exec(out);
    expect(q, out.slice(-8000)).not.toBeNull();
    expect(Number(q![2])).toBeGreaterThanOrEqual(70);
    expect(Number(q![1])).toBeLessThan(30);
    expect(out).toMatch(/risk\s+ {2}reason bytes_out: observed [\d.]+ MiB, expected 1\.0 MiB, [\d.]+× as unusual: bytes sent .* \(cold start\)/);
    expect(out).toMatch(/risk\s+in force on every agent \(frontend, orders, inventory: policy bundle \d+\) within \d+ ms of the decision/);
    // ...refused by the sidecars (its own, and a caller's) and by the key servers.
    const refusedOwn = out.search(/orders\s+→ inventory POST \/stock\/sku-1: refused by its own sidecar: TESSERA_IDENTITY_QUARANTINED/);
    expect(refusedOwn).toBeGreaterThan(out.indexOf('orders QUARANTINED'));
    expect(out).toMatch(/frontend\s+→ orders GET \/orders\/42: refused by its own sidecar: TESSERA_PROXY_PEER_IDENTITY/);
    expect(out).toMatch(/orders\s+secret unseal refused: TESSERA_SECRET_THRESHOLD \([^)]*TESSERA_IDENTITY_QUARANTINED[^)]*\): the key servers refuse a quarantined identity/);
    // 2. bob releases it with a reason; its calls go through again.
    const released = out.search(/bob\s+tessera risk release spiffe:\/\/tessera\.test\/shop\/orders --reason "[^"]+": quarantined → normal/);
    expect(released).toBeGreaterThan(refusedOwn);
    const again = out.search(/orders\s+→ inventory POST \/stock\/sku-1: 200 allowed again \d+ ms after the release/);
    expect(again).toBeGreaterThan(released);
    // 3. A JIT grant: refused before, alice cannot approve her own, bob does, used, refused after its expiry.
    const denied = out.search(/frontend\s+→ orders DELETE \/orders\/42: 403 denied \(TESSERA_PROXY_DENIED\)/);
    expect(denied).toBeGreaterThan(again);
    const grant = /alice\s+tessera grant request --principal frontend --action http:request --resource orders --for 15s --reason "[^"]+": (g-[0-9a-f]+) pending/.exec(out)?.[1];
    expect(grant).toBeDefined();
    const self = out.search(new RegExp(`alice\\s+tessera grant approve ${grant}: refused, exit 4 TESSERA_GRANT_SELF_APPROVAL`));
    expect(self).toBeGreaterThan(denied);
    const approved = out.search(new RegExp(`bob\\s+tessera grant approve ${grant}: active from [0-9:]+ until [0-9:]+`));
    expect(approved).toBeGreaterThan(self);
    const used = out.search(new RegExp(`frontend\\s+→ orders DELETE /orders/42: 200 allowed \\d+ ms after bob's approval, by grant:${grant}`));
    expect(used).toBeGreaterThan(approved);
    const expired = out.search(/frontend\s+→ orders DELETE \/orders\/42: 403 denied again \d+ ms after the grant's expiry \(TESSERA_PROXY_DENIED\)/);
    expect(expired).toBeGreaterThan(used);
    expect(out).toMatch(new RegExp(`control\\s+grant ${grant}: expired`));
    expect(out).toContain('adaptive scenes done');
    expect(out).not.toMatch(/adaptive scenes FAILED|NOT refused|admins or risk configuration failed/);

    // The web console (issue 12): served on the printed URL with its CSP; the printed link signs in once.
    expect(out).toMatch(/console\s+admin policy v\d+ set \(tessera admin policy set \.tessera\/demo\/admin-policy\.cedar\): the rules of v\d+, plus "demo-viewers-read"/);
    expect(seen, 'the console URL and link were printed').toBeDefined();
    const c = await seen!;
    if (c instanceof Error) throw c;
    expect(c.page).toEqual({ status: 200, csp: CONSOLE_CSP });
    expect(c.redeemed).toEqual({ status: 200, session: true });
    expect(c.secondUse).toBe('TESSERA_LINK_INVALID');
    // What the demo said that session may do is what the test's session of the printed link got.
    const may = /console\s+that session: carol \(group viewers\), no MFA: (reads every page|reads nothing until a step-up)[^\n]*; changes nothing \(checked with a second link: GET \/v1\/map (\d+)(?: (TESSERA_[A-Z_]+))?, POST \/v1\/console\/links (\d+) (TESSERA_[A-Z_]+)\)/.exec(out);
    expect(may, out.slice(0, 20_000)).not.toBeNull();
    expect({ status: c.map.status, code: c.map.code }).toEqual({ status: Number(may![2]), code: may![3] });
    expect(may![1] === 'reads every page').toBe(c.map.status === 200);
    if (c.map.status === 200) expect(c.map.services).toEqual(expect.arrayContaining(['frontend', 'orders', 'inventory'].map((n) => `spiffe://tessera.test/shop/${n}`)));
    expect(Number(may![4])).toBeGreaterThanOrEqual(400);
    // The map, read by the demo at the scenes' moments: services, edges, and orders quarantined then released.
    const mapAt = (moment: string): { at: number; services: string; edges: string; quarantined: string } => {
      const m = new RegExp(`console\\s+the console's map, ${moment} \\(GET /v1/map (?:as carol|with the admin credential)\\): map: \\d+ services in \\d+ sites \\(([^)]*)\\), \\d+ edges \\((.*)\\); quarantined: (.*)\\n`).exec(out);
      expect(m, moment).not.toBeNull();
      return { at: m!.index, services: m![1]!, edges: m![2]!, quarantined: m![3]! };
    };
    const before = mapAt('before the exfiltration');
    const during = mapAt('orders quarantined');
    const after = mapAt('orders released');
    for (const m of [before, during, after]) {
      expect(m.services).toMatch(/cloud-eu: [^|]*\bfrontend\b[^|]*\borders\b/);
      expect(m.services).toMatch(/edge-7: [^|]*\binventory\b/);
      for (const edge of ['frontend→orders', 'frontend→inventory', 'orders→inventory', 'inventory→orders']) expect(m.edges).toContain(edge);
      expect(m.edges).toMatch(/inventory→orders \(\d+ denied\)/);
    }
    expect(before.quarantined).toBe('none');
    expect(during.quarantined).toMatch(/^orders \(score \d+\)$/);
    expect(after.quarantined).toBe('none');
    expect(before.at).toBeLessThan(out.indexOf('orders QUARANTINED'));
    expect(during.at).toBeGreaterThan(out.indexOf('orders QUARANTINED'));
    expect(during.at).toBeLessThan(released);
    expect(after.at).toBeGreaterThan(again);

    // The device scene: enrolled (key made on the device, 0600), an MDM's posture reported and seen as
    // context.device, revoked, its next report refused. The enrolment token is never printed.
    expect(out).toMatch(/alice\s+tessera device token create --name lap-carol --owner carol: single use, for spiffe:\/\/tessera\.test\/device\/lap-carol/);
    expect(out).not.toMatch(/tdt_[A-Za-z0-9_-]{10}/);
    const enrolled = out.search(/lap-carol\s+tessera device enroll: spiffe:\/\/tessera\.test\/device\/lap-carol, key made here \(device\.key 0600, never sent\)/);
    expect(enrolled).toBeGreaterThan(0);
    expect(statSync(`${DEMO_DIR}lap-carol/device.key`).mode & 0o777).toBe(0o600);
    const reported = out.search(/lap-carol\s+tessera device report --posture-file \.tessera\/demo\/mdm-posture\.json: signed with the device key, accepted: posture fresh/);
    expect(reported).toBeGreaterThan(enrolled);
    const shown = /alice\s+tessera device show lap-carol: context\.device = (\{.*\})\n/.exec(out);
    expect(shown).not.toBeNull();
    expect(JSON.parse(shown![1]!)).toMatchObject({ id: 'spiffe://tessera.test/device/lap-carol', enrolled: true, posture_state: 'fresh', disk_encrypted: true, screen_lock: true, firewall: true, patch_age_days: 3 });
    const revoked = out.search(/alice\s+tessera device revoke lap-carol --reason "[^"]+": revoked at [0-9:]+, on the revocation list of policy bundle \d+/);
    expect(revoked).toBeGreaterThan(shown!.index);
    expect(out.search(/lap-carol\s+tessera device report: refused, exit [1-9]\d* TESSERA_IDENTITY_REVOKED/)).toBeGreaterThan(revoked);
    expect(out).toContain('device scene done');
    expect(out).not.toMatch(/device scene FAILED|web console setup failed|the map did not show it/);
  }, 450_000);
});

describe('npm run demo -- --tamper', () => {
  it('two moves on the stopped control plane\'s SQLite file are caught: the edited record by verify --db, the consistent cut-back by the three agents (rewind) and verify --from-checkpoint', async () => {
    const started = Date.now();
    const child = spawn(process.execPath, [DEMO, '--tamper'], { env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    // Bounded: the demo must end by itself; a hang is killed and fails below.
    const kill = setTimeout(() => child.kill('SIGKILL'), 150_000);
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    clearTimeout(kill);
    expect(code, `${failedLines(out)}\n…\n${out.slice(-6000)}`).toBe(0);
    expect(Date.now() - started).toBeLessThan(150_000);
    // Only the control plane stopped; the agents stayed up and kept serving.
    expect(out).toMatch(/control\s+stopped \(SIGTERM\)/);
    // (a) the edited field, named offline, then undone.
    const edited = /tamper\s+\(a\) edited record (\d+) in \.tessera\/demo\/server\/tessera\.db/.exec(out)?.[1];
    expect(edited).toBeDefined();
    expect(out).toMatch(new RegExp(`auditor\\s+tessera audit verify --db: exit 1 TESSERA_AUDIT_TAMPERED: edited: record ${edited} `));
    // (b) the consistent cut-back: the file alone verifies, the control plane starts on it.
    const cut = /tamper\s+\(b\) deleted records (\d+)\.\.(\d+) .*above size (\d+)/.exec(out);
    expect(cut).not.toBeNull();
    const keep = Number(cut![3]);
    expect(Number(cut![1])).toBe(keep + 1);
    expect(out).toMatch(new RegExp(`tessera audit verify --db \\(no saved checkpoint\\): verified: ${keep} records rehashed.*nothing in the file itself shows the cut`));
    expect(out).toMatch(/control\s+restarted on the same data directory and port/);
    // Each agent: the alarm (held vs shown), its state file unchanged, the alarm recorded at the control plane.
    for (const name of ['frontend', 'orders', 'inventory']) {
      const m = new RegExp(`${name}\\s+WITNESS ALARM TESSERA_AUDIT_WITNESS_ALARM \\(rewind\\): holds the checkpoint of (\\d+) records \\(root [^)]+\\), was shown (\\d+) .*still holds size (\\d+)`).exec(out);
      expect(m, name).not.toBeNull();
      expect(Number(m![2])).toBeLessThan(Number(m![1]));
      expect(m![3]).toBe(m![1]);
      expect(out).toMatch(new RegExp(`tessera audit list --action audit\\.witness_alarm: record \\d+ at [0-9:]+: ${name} reported a rewind: held ${m![1]}, shown ${m![2]}`));
    }
    expect(out).toMatch(/tessera audit verify --from-checkpoint \(saved at ~13 s, size \d+\): exit 1 TESSERA_AUDIT_TAMPERED: truncated: /);
    expect(out).toMatch(new RegExp(`caught by: verify --db \\(record ${edited} edited\\), 3 agents \\(rewind\\), verify --from-checkpoint \\(truncated\\)`));
    expect(out).not.toContain('NOT caught');
    expect(out).not.toContain('internal error');
    expect(out).toContain('stopped cleanly');
    expect(out).not.toMatch(/tjt_[A-Za-z0-9_-]{10}/);
  }, 160_000);
});
