/**
 * The web console in a real browser (Debian's Chromium through playwright-core) against a real
 * control plane over HTTPS on 127.0.0.1. Chromium trusts the test CA through its NSS database
 * (test/support/browser.ts), so the server's certificate is verified by the browser itself.
 *
 * This round (sign-in lands with the people/sessions part): the pages' unauthenticated render
 * (sign-in page, a data page answering "not signed in"), accessibility (axe-core: no serious or
 * critical violation; Tab reaches the navigation and the sign-in controls), the CSP in force with
 * no violation, and the Map with data, read by a browser context that presents the admin client
 * certificate (Playwright's client-certificate support terminates TLS in Node, so that context alone
 * needs ignoreHTTPSErrors; it stands in for a signed-in session until sessions exist).
 * Screenshots go to test-output/console/ (gitignored).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, ConsoleMessage, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fabric } from '../src/server/map/test-fabric.js';
import { axe, axeSource, homeTrusting, launchChromium, screenshotDir, serious, tabStops, type TrustedHome } from './support/browser.js';
import { startControlPlane, type TestControlPlane } from './support/server.js';

describe('web console in Chromium', () => {
  let t: TestControlPlane;
  let home: TrustedHome | undefined;
  let browser: Browser | undefined;
  let anon: BrowserContext;
  const shots = screenshotDir();
  const cspViolations: string[] = [];

  const watch = (page: Page): Page => {
    page.on('console', (m: ConsoleMessage) => {
      if (/Content[- ]Security[- ]Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    return page;
  };

  beforeAll(async () => {
    if (!existsSync(join(process.cwd(), 'dist', 'console', 'index.html'))) throw new Error('dist/console is not built: run npm run build:console');
    t = await startControlPlane();
    // A small fabric for the map: 60 services over 3 sites, 180 edges, one quarantined service.
    const now = Date.now();
    const fab = fabric({ services: 60, perService: 3, sites: 3, windows: 2, now });
    await t.cp.store.insertTelemetry(fab.telemetry, { maxRows: 100_000, maxAgeMs: 3600_000, now });
    await t.cp.store.appendAudit(fab.decisions);
    await t.cp.store.putRiskState({ spiffeId: fab.services[0]!, state: 'quarantined', score: 97, since: now, until: now + 3600_000, reasons: [], setBy: 'admin', actor: t.cp.ctx.adminId, note: 'e2e' }, 'normal');
    home = homeTrusting(t.adminTls.ca);
    browser = await launchChromium(home.home);
    anon = await browser.newContext();
    await anon.addInitScript({ content: axeSource() });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    home?.remove();
    await t?.close();
  });

  it('the sign-in page renders over verified HTTPS, with labels, no serious axe violation, and Tab reaching nav and sign-in', async () => {
    const page = watch(await anon.newPage());
    const res = await page.goto(`${t.cp.url}/console/sign-in`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("frame-ancestors 'none'");
    await expect.poll(() => page.locator('h1').textContent()).toBe('Sign in');
    expect(await page.title()).toBe('Sign in · Tessera console');
    // Keyboard first, from a freshly loaded page.
    const stops = await tabStops(page, 16);
    // Controls are found by their accessible names.
    await page.getByLabel('Username').fill('alice');
    expect(await page.getByRole('button', { name: 'Sign in with a passkey' }).isVisible()).toBe(true);
    expect(await page.getByRole('navigation', { name: 'Console' }).getByRole('link').count()).toBe(7);
    const violations = await axe(page);
    expect(serious(violations), JSON.stringify(violations, null, 1)).toEqual([]);
    expect(stops[0]).toBe('a Skip to content');
    expect(stops).toContain('a Map');
    expect(stops).toContain('a Secrets');
    expect(stops).toContain('input ');
    expect(stops).toContain('button Sign in with a passkey');
    expect(stops).toContain('button Sign in with single sign-on');
    // The nav comes before the form in tab order.
    expect(stops.indexOf('a Map')).toBeLessThan(stops.indexOf('button Sign in with a passkey'));
    await page.screenshot({ path: join(shots, 'sign-in.png'), fullPage: true });
    await page.close();
  });

  it('the map page without a session says "not signed in" and links to sign-in; no CSP violation anywhere', async () => {
    const page = watch(await anon.newPage());
    const apiAnswers: number[] = [];
    page.on('response', (r) => {
      if (r.url().includes('/v1/map')) apiAnswers.push(r.status());
    });
    await page.goto(`${t.cp.url}/console/`);
    await expect.poll(() => page.getByText('You are not signed in.').isVisible()).toBe(true);
    expect(apiAnswers).toEqual([401]);
    expect(serious(await axe(page))).toEqual([]);
    await page.screenshot({ path: join(shots, 'map-signed-out.png'), fullPage: true });
    // Client-side navigation: the sign-in link routes in the page.
    await page.getByRole('main').getByRole('link', { name: 'Sign in' }).click();
    await expect.poll(() => page.locator('h1').textContent()).toBe('Sign in');
    expect(new URL(page.url()).pathname).toBe('/console/sign-in');
    // Every list page renders its prompt too.
    for (const name of ['Identities', 'Policies', 'Risk', 'Grants', 'Audit', 'Secrets']) {
      await page.getByRole('navigation', { name: 'Console' }).getByRole('link', { name }).click();
      await expect.poll(() => page.locator('h1').textContent()).toBe(name);
      await expect.poll(() => page.getByText('You are not signed in.').isVisible()).toBe(true);
    }
    expect(cspViolations).toEqual([]);
    await page.close();
  });

  it('the map renders sites, a site\'s services (quarantined marked) and an edge\'s deciding policies', async () => {
    const { port } = new URL(t.cp.url);
    const ctx = await browser!.newContext({
      ignoreHTTPSErrors: true,
      clientCertificates: [{ origin: `https://127.0.0.1:${port}`, cert: Buffer.from(t.adminTls.cert), key: Buffer.from(t.adminTls.key) }],
    });
    try {
      await ctx.addInitScript({ content: axeSource() });
      const page = watch(await ctx.newPage());
      await page.goto(`${t.cp.url}/console/map`);
      await expect.poll(() => page.getByRole('status').filter({ hasText: 'services' }).textContent(), { timeout: 20_000 }).toBe('3 sites · 60 services · 180 edges');
      const sites = page.getByRole('button', { name: /^site-\d+: \d+ services/ });
      expect(await sites.count()).toBe(3);
      expect(await page.getByRole('button', { name: /^site-0: 20 services, 1 quarantined/ }).count()).toBe(1);
      expect(serious(await axe(page))).toEqual([]);
      await page.screenshot({ path: join(shots, 'map-sites.png'), fullPage: true });
      // Into a site with the keyboard.
      await page.getByRole('button', { name: /^site-0: / }).focus();
      await page.keyboard.press('Enter');
      await expect.poll(() => page.locator('svg.map circle.risk-quarantined').count(), { timeout: 20_000 }).toBe(1);
      expect(await page.locator('svg.map text.q-mark').count()).toBe(1);
      expect(await page.locator('svg.map g.service').count()).toBe(20);
      await page.screenshot({ path: join(shots, 'map-site.png'), fullPage: true });
      // An edge's decisions: the fabric denies on every tenth edge with policy "policy0".
      await page.getByRole('button', { name: /^Decisions of / }).first().click();
      const panel = page.getByRole('region', { name: /→/ });
      await expect.poll(() => panel.getByRole('cell', { name: 'policy0' }).count(), { timeout: 20_000 }).toBeGreaterThan(0);
      expect(serious(await axe(page))).toEqual([]);
      await page.screenshot({ path: join(shots, 'map-edge.png'), fullPage: true });
      expect(cspViolations).toEqual([]);
    } finally {
      await ctx.close();
    }
  });
});
