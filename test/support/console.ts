/**
 * Signing a person in to the console from a browser test: a virtual passkey authenticator in
 * Chromium (DevTools protocol WebAuthn domain) and the person's TOTP app (RFC 6238 codes computed
 * from the enrolment's otpauth URI). Shared by test/console.e2e.test.ts and
 * test/console-map-scale.e2e.test.ts.
 */
import { TOTP, URI } from 'otpauth';
import type { BrowserContext, Page } from 'playwright-core';

/** A virtual authenticator in `page` (CDP WebAuthn): a platform passkey with user verification. */
export async function addVirtualAuthenticator(ctx: BrowserContext, page: Page): Promise<void> {
  const cdp = await ctx.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  });
}

/** A person's authenticator app. */
export class TotpApp {
  private lastStep = -1;

  constructor(readonly uri: string) {}

  /**
   * The next code: a step after the last one used (the server never accepts a code twice) and
   * within its window of one step either side of now (waits when a step must pass first).
   */
  async next(): Promise<string> {
    const totp = URI.parse(this.uri) as TOTP;
    let now = Math.floor(Date.now() / 30_000);
    let step = Math.max(this.lastStep + 1, now - 1);
    while (step > now + 1) {
      await new Promise((r) => setTimeout(r, 1000));
      now = Math.floor(Date.now() / 30_000);
    }
    step = Math.max(step, now - 1);
    this.lastStep = step;
    return totp.generate({ timestamp: step * 30_000 });
  }
}

/**
 * Opens `username`'s enrolment link (of `tessera user add`) (its origin replaced by `origin`), creates a
 * passkey in the page's virtual authenticator and confirms the TOTP app with a code: the person is
 * then signed in with both factors. Returns the TOTP app.
 */
export async function enrolPasskeyAndTotp(page: Page, username: string, enrolmentUrl: string, origin: string): Promise<TotpApp> {
  await page.goto(enrolmentUrl.replace(/^https:\/\/[^/]+/, origin));
  await page.locator('#totp-uri').filter({ hasText: 'otpauth://' }).waitFor();
  const app = new TotpApp((await page.locator('#totp-uri').textContent())!);
  await page.getByRole('button', { name: 'Create a passkey' }).click();
  await page.getByLabel('Code from your authenticator app').fill(await app.next());
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByText(`Signed in as ${username}.`).waitFor();
  return app;
}
