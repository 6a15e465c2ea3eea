/**
 * A real browser for the console's tests: Debian's Chromium (installed by
 * scripts/ensure-system-deps.sh) driven by playwright-core. Headless; `--no-sandbox` only when the
 * tests run as root (Chromium's sandbox refuses root); host names other than 127.0.0.1 resolve
 * nowhere, so a page that reached for a CDN or an external font would fail visibly.
 *
 * Trust: Chromium on Linux reads trust anchors from the NSS database in $HOME/.pki/nssdb. The
 * browser gets a fresh HOME whose database trusts the test control plane's CA (certutil), so the
 * server certificate is verified by Chromium itself, not waved through with ignoreHTTPSErrors.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

/** The Chromium binary: Debian's real one behind its /usr/bin/chromium wrapper script. */
export function chromiumPath(): string {
  for (const p of ['/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser']) if (existsSync(p)) return p;
  throw new Error('Chromium is not installed: run bash scripts/ensure-system-deps.sh (as root it installs Debian\'s chromium)');
}

export interface TrustedHome {
  /** The HOME to give Chromium. */
  home: string;
  remove(): void;
}

/** A fresh HOME whose NSS database trusts every certificate of `bundlePem` as a TLS server CA. */
export function homeTrusting(bundlePem: string): TrustedHome {
  const home = mkdtempSync(join(tmpdir(), 'tessera-chromium-'));
  const db = join(home, '.pki', 'nssdb');
  mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-N', '-d', `sql:${db}`, '--empty-password'], { stdio: 'pipe' });
  const certs = bundlePem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? [];
  if (certs.length === 0) throw new Error('the bundle holds no certificate');
  certs.forEach((pem, i) => {
    const file = join(home, `ca-${i}.pem`);
    writeFileSync(file, `${pem}\n`);
    // "C,,": a trusted CA for TLS servers only (not for e-mail or code signing).
    execFileSync('certutil', ['-A', '-d', `sql:${db}`, '-n', `tessera-test-ca-${i}`, '-t', 'C,,', '-i', file], { stdio: 'pipe' });
  });
  return { home, remove: () => rmSync(home, { recursive: true, force: true }) };
}

/**
 * Launches headless Chromium with HOME = `home` (see homeTrusting). Close it in afterAll.
 * `hosts`: names that resolve besides 127.0.0.1 (e.g. `localhost`, which a passkey's RP ID needs:
 * browsers refuse an IP address as RP ID).
 */
export async function launchChromium(home: string, opts: { hosts?: string[] } = {}): Promise<Browser> {
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: [
      ...(root ? ['--no-sandbox'] : []),
      `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1${(opts.hosts ?? []).map((h) => `, EXCLUDE ${h}`).join('')}`,
      '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync',
    ],
    env: { ...process.env, HOME: home },
    timeout: 60_000,
  });
}

/** The little of the DOM these helpers touch inside the page (the root tsconfig has no DOM types). */
interface El { tagName: string; textContent: string | null; getAttribute(n: string): string | null; blur?(): void }
interface Doc { activeElement: El | null; body: El }

export interface AxeViolation { id: string; impact: string | null; help: string; nodes: { target: unknown[] }[] }

/**
 * axe-core's source (node_modules/axe-core/axe.min.js), for `context.addInitScript({ content })`:
 * an init script is injected by the DevTools protocol, so the console's CSP (no inline script)
 * stays in force for everything else.
 */
export function axeSource(): string {
  return readFileSync(join(process.cwd(), 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');
}

/** Runs axe-core (injected with {@link axeSource}) on the page; returns its violations. */
export async function axe(page: Page): Promise<AxeViolation[]> {
  return page.evaluate(async () => {
    const w = globalThis as unknown as { axe?: { run: (ctx: unknown, opts: unknown) => Promise<{ violations: AxeViolation[] }> } };
    if (!w.axe) throw new Error('axe-core is not injected (context.addInitScript({ content: axeSource() }))');
    const res = await w.axe.run((globalThis as unknown as { document: unknown }).document, { resultTypes: ['violations'] });
    return res.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => ({ target: n.target })) }));
  });
}

/** Serious and critical violations only (what the tests refuse). */
export function serious(violations: AxeViolation[]): AxeViolation[] {
  return violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
}

/**
 * What keyboard focus visits when Tab is pressed `max` times from the top of the page: one
 * description per stop (tag, role, accessible text).
 */
export async function tabStops(page: Page, max: number): Promise<string[]> {
  await page.evaluate(() => (globalThis as unknown as { document: Doc }).document.activeElement?.blur?.());
  const stops: string[] = [];
  for (let i = 0; i < max; i++) {
    await page.keyboard.press('Tab');
    stops.push(await page.evaluate(() => {
      const doc = (globalThis as unknown as { document: Doc }).document;
      const el = doc.activeElement;
      if (!el || el === doc.body) return 'body';
      const text = (el.getAttribute('aria-label') ?? el.textContent ?? '').trim().replace(/\s+/g, ' ').slice(0, 60);
      return `${el.tagName.toLowerCase()}${el.getAttribute('role') ? `[${el.getAttribute('role')}]` : ''} ${text}`;
    }));
  }
  return stops;
}

/** Where the tests save screenshots (gitignored). */
export function screenshotDir(): string {
  const dir = join(process.cwd(), 'test-output', 'console');
  mkdirSync(dir, { recursive: true });
  return dir;
}
