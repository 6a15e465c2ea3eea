/**
 * The pages a person approves a `tessera login` on, in real Chromium (playwright-core; the control
 * plane's CA trusted through NSS): /auth/device (the user code, which CLI asked, approve) and
 * /auth/cli (approve, then the browser goes to the CLI's loopback listener with the code). The
 * session is a real passkey + TOTP sign-in, its cookies handed to Chromium. Labels and axe checked.
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Browser as Chromium, BrowserContext, ConsoleMessage, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCsr } from '../src/core/csr.js';
import { pemEncode, spkiDer } from '../src/core/x509.js';
import { DEVICE_GRANT } from '../src/server/people/login-routes.js';
import { axe, axeSource, homeTrusting, launchChromium, serious, type TrustedHome } from './support/browser.js';
import { PeopleDriver, TestClock } from './support/people.js';
import { rawRequest, startControlPlane, type TestControlPlane } from './support/server.js';

let t: TestControlPlane;
let home: TrustedHome | undefined;
let chromium: Chromium | undefined;
let signedIn: BrowserContext;
const cspViolations: string[] = [];

function cliKey(): { pem: string; thumbprint: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { pem: pemEncode(createCsr({ privateKey, publicKey }), 'CERTIFICATE REQUEST'), thumbprint: createHash('sha256').update(spkiDer(publicKey)).digest('base64url') };
}

const anon = (path: string, body: unknown) => rawRequest(t.cp.url, { path, method: 'POST', ca: t.adminTls.ca, body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });

const watch = (page: Page): Page => {
  page.on('console', (m: ConsoleMessage) => {
    if (/Content[- ]Security[- ]Policy/i.test(m.text())) cspViolations.push(m.text());
  });
  return page;
};

beforeAll(async () => {
  const clock = new TestClock();
  t = await startControlPlane({ people: { now: clock.now } });
  const { browser } = await new PeopleDriver(t, clock).enrol('alice', ['admins']);
  home = homeTrusting(t.adminTls.ca);
  chromium = await launchChromium(home.home);
  signedIn = await chromium.newContext();
  await signedIn.addInitScript({ content: axeSource() });
  // The HTTP client's session, handed to Chromium as the browser would hold it.
  await signedIn.addCookies([...browser.cookies].map(([name, value]) => ({
    name, value, url: t.cp.url, secure: true, sameSite: 'Strict' as const, httpOnly: name === '__Host-tessera_session',
  })));
}, 120_000);

afterAll(async () => {
  await chromium?.close();
  home?.remove();
  await t?.close();
});

describe('login approval pages in Chromium', () => {
  it('/auth/device: the user code from the link, which CLI asked, Approve; the CLI then gets its certificate', async () => {
    const key = cliKey();
    const d = (await anon('/v1/login/device', { key_thumbprint: key.thumbprint })).json as { device_code: string; user_code: string; verification_uri_complete: string };
    const page = watch(await signedIn.newPage());
    await page.goto(d.verification_uri_complete);
    const input = page.getByLabel('Code shown by the command line');
    await expect.poll(() => input.inputValue(), { timeout: 20_000 }).toBe(d.user_code);
    expect(serious(await axe(page))).toEqual([]);
    await page.getByRole('button', { name: 'Continue' }).click();
    await expect.poll(() => page.locator('#ask').textContent(), { timeout: 20_000 }).toMatch(/Signed in as alice\. A command line at 127\.0\.0\.1 asked at .+ for a certificate valid 60 minutes/);
    await page.getByRole('button', { name: 'Approve' }).click();
    await expect.poll(() => page.getByRole('status').textContent(), { timeout: 20_000 }).toContain('Approved');
    const r = await anon('/v1/login/token', { grant_type: DEVICE_GRANT, device_code: d.device_code, csr: key.pem });
    expect(r.status, r.text).toBe(200);
    expect(cspViolations).toEqual([]);
    await page.close();
  }, 60_000);

  it('/auth/cli: Approve sends the browser to the loopback with the code and state; Deny with error=access_denied', async () => {
    const hits: URL[] = [];
    const loop: Server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://127.0.0.1');
      // Chromium also asks for /favicon.ico: only the redirects count.
      if (u.pathname === '/' && u.searchParams.has('state')) hits.push(u);
      res.setHeader('content-type', 'text/html');
      res.end('<!doctype html><title>done</title><p>ok</p>');
    });
    await new Promise<void>((r) => loop.listen(0, '127.0.0.1', r));
    try {
      const redirect = `http://127.0.0.1:${(loop.address() as { port: number }).port}/`;
      const key = cliKey();
      const verifier = randomBytes(32).toString('base64url');
      const state = randomBytes(16).toString('base64url');
      const q = new URLSearchParams({ redirect_uri: redirect, state, code_challenge: createHash('sha256').update(verifier).digest('base64url'), code_challenge_method: 'S256', key_thumbprint: key.thumbprint, ttl_seconds: '1800' });
      const page = watch(await signedIn.newPage());
      await page.goto(`${t.cp.url}/auth/cli?${q.toString()}`);
      await expect.poll(() => page.locator('#ask').textContent(), { timeout: 20_000 }).toMatch(/for alice, valid 30 minutes/);
      expect(serious(await axe(page))).toEqual([]);
      await page.getByRole('button', { name: 'Approve' }).click();
      await expect.poll(() => hits.length, { timeout: 20_000 }).toBe(1);
      expect(hits[0]!.searchParams.get('state')).toBe(state);
      const code = hits[0]!.searchParams.get('code')!;
      const r = await anon('/v1/login/token', { grant_type: 'authorization_code', code, code_verifier: verifier, redirect_uri: redirect, csr: key.pem });
      expect(r.status, r.text).toBe(200);
      // The loopback saw the request before the browser finished navigating there: wait for that
      // navigation to end, or the next goto is interrupted by it.
      await page.waitForURL((u) => u.href.startsWith(redirect), { timeout: 20_000 });
      // Denied.
      await page.goto(`${t.cp.url}/auth/cli?${q.toString()}`);
      await page.getByRole('button', { name: 'Deny' }).click();
      await expect.poll(() => hits.length, { timeout: 20_000 }).toBe(2);
      expect(hits[1]!.searchParams.get('error')).toBe('access_denied');
      expect(hits[1]!.searchParams.get('code')).toBeNull();
      expect(cspViolations).toEqual([]);
      await page.close();
    } finally {
      loop.close();
    }
  }, 60_000);

  it('not signed in: a link to the sign-in page that comes back here', async () => {
    const ctx = await chromium!.newContext();
    try {
      const page = watch(await ctx.newPage());
      await page.goto(`${t.cp.url}/auth/device?user_code=BCDF-GHJK`);
      const link = page.getByRole('link', { name: 'Sign in first' });
      await expect.poll(() => link.getAttribute('href'), { timeout: 20_000 }).toBe(`/auth/signin?return_to=${encodeURIComponent('/auth/device?user_code=BCDF-GHJK')}`);
      expect(cspViolations).toEqual([]);
    } finally {
      await ctx.close();
    }
  }, 60_000);
});
