/**
 * A real OpenID Connect provider for tests (oidc-provider 9) on http://127.0.0.1 (an http issuer is
 * accepted on loopback only), with one confidential client and an interaction that signs in the
 * account the test chose (its claims, `amr` and `acr`) and consents at once, in place of the
 * provider's HTML forms. `follow` drives a browser's redirects through it.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

export interface TestAccount {
  sub: string;
  claims: Record<string, unknown>;
  amr?: string[];
  acr?: string;
}

export interface TestOidcProvider {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** The account the next interaction signs in. */
  account: TestAccount;
  /**
   * Follows redirects from `url` through the provider (its own cookies kept) until one leaves it;
   * returns that URL (the client's redirect URI with code and state, or an error). Each call is a
   * new browser (no provider session of an earlier call).
   */
  follow(url: string): Promise<URL>;
  close(): Promise<void>;
}

export async function startOidcProvider(port: number, redirectUri: string): Promise<TestOidcProvider> {
  const issuer = `http://127.0.0.1:${port}`;
  const clientId = 'tessera';
  const clientSecret = 'test-client-secret-0123456789abcdef';
  const accounts = new Map<string, TestAccount>();
  const state: { account: TestAccount } = { account: { sub: 'nobody', claims: {} } };
  const provider = new Provider(issuer, {
    clients: [{ client_id: clientId, client_secret: clientSecret, redirect_uris: [redirectUri], grant_types: ['authorization_code'], response_types: ['code'] }],
    findAccount: (_ctx: unknown, id: string) => {
      const a = accounts.get(id);
      return a && { accountId: id, claims: () => ({ sub: id, ...a.claims }) };
    },
    // Like most providers, amr, acr and auth_time in every ID token (here: with the openid scope).
    claims: { openid: ['sub', 'amr', 'acr', 'auth_time'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username', 'groups'] },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    features: { devInteractions: { enabled: false } },
    cookies: { keys: ['test-cookie-key-0123456789abcdef'] },
    pkce: { required: () => true },
    acrValues: ['urn:test:mfa', 'urn:test:pwd'],
  });
  const callback = provider.callback();
  const server = http.createServer((req, res) => {
    if (!req.url?.startsWith('/interaction/')) {
      callback(req, res);
      return;
    }
    void (async () => {
      const details = await provider.interactionDetails(req, res);
      if (details.prompt.name === 'login') {
        const a = state.account;
        accounts.set(a.sub, a);
        await provider.interactionFinished(req, res, { login: { accountId: a.sub, ...(a.amr ? { amr: a.amr } : {}), ...(a.acr ? { acr: a.acr } : {}) } }, { mergeWithLastSubmission: false });
      } else {
        const grant = new provider.Grant({ accountId: details.session!.accountId, clientId: String(details.params.client_id) });
        grant.addOIDCScope('openid email profile');
        await provider.interactionFinished(req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true });
      }
    })().catch((e: unknown) => {
      res.statusCode = 500;
      res.end(String(e));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    issuer: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    clientId,
    clientSecret,
    get account() {
      return state.account;
    },
    set account(a: TestAccount) {
      state.account = a;
    },
    async follow(start: string): Promise<URL> {
      // A fresh browser each time: no provider session carried over from an earlier flow.
      const jar = new Map<string, string>();
      let url = new URL(start);
      for (let hops = 0; hops < 20; hops++) {
        if (url.origin !== issuer) return url;
        const res = await fetch(url, { redirect: 'manual', headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') } });
        for (const c of res.headers.getSetCookie()) {
          const [pair] = c.split(';');
          const eq = pair!.indexOf('=');
          const value = pair!.slice(eq + 1);
          if (value === '' || /expires=Thu, 01 Jan 1970/i.test(c)) jar.delete(pair!.slice(0, eq));
          else jar.set(pair!.slice(0, eq), value);
        }
        const location = res.headers.get('location');
        if (!location) throw new Error(`the provider answered ${res.status} without a redirect: ${(await res.text()).slice(0, 300)}`);
        await res.body?.cancel();
        url = new URL(location, url);
      }
      throw new Error('too many redirects');
    },
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
