/**
 * `tessera login | logout | whoami`: a person's short-lived admin certificate for daily use, in
 * place of a long-lived admin key (the bootstrap credential stays for the first start and
 * break-glass). The key pair is generated here and never leaves this process's files; the control
 * plane signs a CSR for it once the person approved the login in a browser, by one of:
 *
 * - the browser flow (default): a one-request HTTP listener on 127.0.0.1 (random port) receives the
 *   one-time code (RFC 8252 §7.3), checked against a single-use `state`; the code is redeemed with
 *   the PKCE verifier (RFC 7636);
 * - `--device-code` (RFC 8628), for a shell without a browser: a user code to type at a URL in any
 *   browser, then polling at the interval the server gives (slower on slow_down).
 */
import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { ApiClient } from '../common/api-client.js';
import { adminDir } from '../admin/clients.js';
import { deleteLogin, loginDir, loginTls, readLogin, writeLogin, type LoginInfo } from '../admin/login-credential.js';
import { createCsr } from '../core/csr.js';
import { parseDuration } from '../core/duration.js';
import { TesseraError, isTesseraError } from '../core/errors.js';
import { pemEncode, spkiDer } from '../core/x509.js';
import { output, type GlobalOptions, type Run } from './context.js';

type Json = Record<string, unknown>;

interface Issued {
  username: string; spiffe_id: string; groups: string[]; serial: string; mfa_at: string | null; issued_at: string | null; not_after: string;
  trust_domain: string; cert_pem: string; bundle_pem: string;
}

/** How long the CLI waits for the browser flow's redirect. */
const BROWSER_WAIT_MS = 5 * 60_000;
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/** Messages for the person (URLs, codes): stderr, so --json output on stdout stays one document. */
function tell(line: string): void {
  process.stderr.write(`${line}\n`);
}

/** The server URL and the trust bundle to verify it with: flags, else the last login, else the default admin directory. */
function where(g: GlobalOptions, o: Json): { server: string; bundlePem: string } {
  const last = readLogin();
  const admin = adminDir(g);
  const adminInfo = existsSync(join(admin, 'server.json')) ? (JSON.parse(readFileSync(join(admin, 'server.json'), 'utf8')) as { url?: string }) : {};
  const server = g.server ?? process.env.TESSERA_SERVER ?? last?.server ?? adminInfo.url;
  if (!server) throw new TesseraError('TESSERA_CONFIG_INVALID', 'no server URL: pass --server https://HOST:PORT');
  let bundleFile: string | undefined;
  if (o.trustBundle !== undefined) bundleFile = resolve(String(o.trustBundle));
  else if (last !== undefined && existsSync(join(loginDir(), 'bundle.pem'))) bundleFile = join(loginDir(), 'bundle.pem');
  else if (existsSync(join(admin, 'bundle.pem'))) bundleFile = join(admin, 'bundle.pem');
  if (bundleFile === undefined || !existsSync(bundleFile)) {
    throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `no trust bundle to verify ${server} with: pass --trust-bundle FILE (the control plane's bundle.pem, from your administrator)`);
  }
  return { server, bundlePem: readFileSync(bundleFile, 'utf8') };
}

function ttlSeconds(v: unknown): number | undefined {
  if (v === undefined) return undefined;
  const ms = parseDuration(String(v), '--ttl');
  if (ms < 5 * 60_000 || ms % 1000 !== 0) throw new TesseraError('TESSERA_CONFIG_INVALID', '--ttl must be whole seconds, at least 5m (the server caps it at its --login-max-ttl)');
  return ms / 1000;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** RFC 8628 §3.4/3.5 from the client side: poll at the interval, 5 s slower on each slow_down. */
async function deviceLogin(client: ApiClient, ask: Json, csr: string, json: boolean): Promise<Issued> {
  const start = await client.call<{ device_code: string; user_code: string; verification_uri: string; verification_uri_complete: string; expires_in: number; interval: number }>('POST', '/v1/login/device', ask);
  tell(`To sign in, open ${start.verification_uri} in a browser and enter the code ${start.user_code}`);
  tell(`(or open ${start.verification_uri_complete}); it expires in ${Math.round(start.expires_in / 60)} minutes.`);
  if (json) tell(JSON.stringify({ user_code: start.user_code, verification_uri: start.verification_uri, verification_uri_complete: start.verification_uri_complete, expires_in: start.expires_in }));
  let interval = Math.max(1, start.interval);
  const deadline = Date.now() + start.expires_in * 1000 + 5000;
  for (;;) {
    await sleep(interval * 1000);
    try {
      return await client.call<Issued>('POST', '/v1/login/token', { grant_type: DEVICE_GRANT, device_code: start.device_code, csr });
    } catch (err) {
      if (!isTesseraError(err)) throw err;
      if (err.code === 'TESSERA_LOGIN_PENDING' && Date.now() < deadline) continue;
      if (err.code === 'TESSERA_LOGIN_SLOW_DOWN') {
        interval += 5;
        continue;
      }
      throw err;
    }
  }
}

/** Opens `url` in the person's browser when a desktop is there; the URL is printed either way. */
function openBrowser(url: string): void {
  const cmd = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? undefined : 'xdg-open';
  if (cmd === undefined || (process.platform === 'linux' && !process.env.DISPLAY && !process.env.WAYLAND_DISPLAY)) return;
  try {
    const child = spawn(cmd, [url], { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
  } catch {
    // No opener: the printed URL is enough.
  }
}

const PAGE = (msg: string): string => `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Tessera login</title></head><body><p>${msg}</p></body></html>`;

/**
 * Waits for the one redirect of the browser flow on 127.0.0.1 (random port). Only `GET /?state=S`
 * with this login's state counts (compared in constant time); it ends the listener whatever it
 * carries (a code, or `error`). Anything else is answered 404 and ignored.
 */
async function loopback(state: string, timeoutMs: number): Promise<{ redirectUri: string; result: Promise<{ code?: string; error?: string }>; close: () => void }> {
  let settle!: (v: { code?: string; error?: string }) => void;
  let fail!: (e: Error) => void;
  const result = new Promise<{ code?: string; error?: string }>((res, rej) => {
    settle = res;
    fail = rej;
  });
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const given = url.searchParams.get('state') ?? '';
    const ok = req.method === 'GET' && url.pathname === '/' && given.length === state.length && timingSafeEqual(Buffer.from(given), Buffer.from(state));
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.setHeader('cache-control', 'no-store');
    res.setHeader('referrer-policy', 'no-referrer');
    if (!ok) {
      res.statusCode = 404;
      res.end(PAGE('Not this login.'));
      return;
    }
    const error = url.searchParams.get('error') ?? undefined;
    const code = url.searchParams.get('code') ?? undefined;
    res.end(PAGE(error ? 'The login was denied. You can close this tab.' : 'Signed in: you can close this tab and go back to the command line.'));
    server.close();
    settle(error ? { error } : code ? { code } : { error: 'no code' });
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res());
  });
  const timer = setTimeout(() => {
    server.close();
    fail(new TesseraError('TESSERA_LOGIN_EXPIRED', 'no approval came back from the browser within 5 minutes: run `tessera login` again (or `tessera login --device-code`)'));
  }, timeoutMs);
  timer.unref();
  const port = (server.address() as { port: number }).port;
  return { redirectUri: `http://127.0.0.1:${port}/`, result: result.finally(() => clearTimeout(timer)), close: () => { clearTimeout(timer); server.close(); } };
}

async function browserLogin(client: ApiClient, ask: Json, csr: string, open: boolean, json: boolean): Promise<Issued> {
  const state = randomBytes(24).toString('base64url');
  const verifier = randomBytes(48).toString('base64url');
  const challenge = createHash('sha256').update(verifier, 'ascii').digest('base64url');
  const config = await client.call<{ public_url: string }>('GET', '/v1/auth/config');
  const lb = await loopback(state, BROWSER_WAIT_MS);
  try {
    const q = new URLSearchParams({
      redirect_uri: lb.redirectUri, state, code_challenge: challenge, code_challenge_method: 'S256', key_thumbprint: String(ask.key_thumbprint),
      ...(ask.ttl_seconds !== undefined ? { ttl_seconds: String(ask.ttl_seconds) } : {}), ...(ask.step_up === true ? { step_up: '1' } : {}),
    });
    const url = `${config.public_url.replace(/\/+$/, '')}/auth/cli?${q.toString()}`;
    tell(`Approve this login in your browser: ${url}`);
    if (json) tell(JSON.stringify({ approve_url: url }));
    if (open) openBrowser(url);
    const r = await lb.result;
    if (r.error !== undefined) throw new TesseraError('TESSERA_LOGIN_DENIED', r.error === 'access_denied' ? 'the login was denied in the browser' : `the browser came back with ${r.error.slice(0, 64)}`);
    return await client.call<Issued>('POST', '/v1/login/token', { grant_type: 'authorization_code', code: r.code, code_verifier: verifier, redirect_uri: lb.redirectUri, csr });
  } finally {
    lb.close();
  }
}

function describe(i: LoginInfo | Issued, mfaMaxAgeS?: number): string {
  const mfa = i.mfa_at === null ? 'none' : `${i.mfa_at} (${Math.round((Date.now() - Date.parse(i.mfa_at)) / 60_000)} min ago)`;
  const lines = [`${i.username} (${i.spiffe_id})`, `groups: ${i.groups.join(', ') || '-'}`, `MFA: ${mfa}`, `valid until ${i.not_after}`];
  if (mfaMaxAgeS !== undefined && (i.mfa_at === null || Date.now() - Date.parse(i.mfa_at) > mfaMaxAgeS * 1000)) lines.push('changes need fresh MFA: run `tessera login --step-up` first');
  return lines.join('\n');
}

export function loginCommands(program: Command, run: Run): void {
  program.command('login').description('sign in as a person: a short-lived admin certificate for this CLI (browser, or --device-code for a headless shell); the key is generated here')
    .option('--trust-bundle <file>', 'the control plane\'s trust bundle (default: the last login\'s, or the admin directory\'s)')
    .option('--device-code', 'no browser here: show a code to enter at a URL in any browser (RFC 8628 device authorization)')
    .option('--ttl <duration>', 'lifetime of the certificate, e.g. 30m, 2h (default 1h; the server caps it, default 8h)')
    .option('--step-up', 'do MFA again (both factors within the last 5 minutes) for a fresh certificate, e.g. before a change')
    .option('--no-open', 'print the approval URL without opening a browser')
    .addHelpText('after', `
The credential is stored in $TESSERA_HOME/login/ (else ~/.config/tessera/login/): key 0600, directory 0700.
Every admin command then uses it, unless --admin-dir or $TESSERA_ADMIN_DIR names another credential.
Reads need an MFA of the last 12 hours; changes need fresh MFA (--admin-mfa-max-age, default 15m): \`tessera login --step-up\`.`)
    .action(run(async (g, o: Json) => {
      const { server, bundlePem } = where(g, o);
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const keyPem = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
      const csr = pemEncode(createCsr({ privateKey, publicKey }), 'CERTIFICATE REQUEST');
      const ttl = ttlSeconds(o.ttl);
      const ask: Json = { key_thumbprint: createHash('sha256').update(spkiDer(publicKey)).digest('base64url'), ...(ttl !== undefined ? { ttl_seconds: ttl } : {}), ...(o.stepUp === true ? { step_up: true } : {}) };
      const client = new ApiClient(server, { ca: bundlePem }, 30_000);
      let r: Issued;
      try {
        r = o.deviceCode === true ? await deviceLogin(client, ask, csr, Boolean(g.json)) : await browserLogin(client, ask, csr, o.open !== false, Boolean(g.json));
      } finally {
        client.close();
      }
      const info: LoginInfo = { server, trust_domain: r.trust_domain, username: r.username, spiffe_id: r.spiffe_id, serial: r.serial, groups: r.groups, mfa_at: r.mfa_at, issued_at: r.issued_at, not_after: r.not_after };
      const dir = loginDir();
      writeLogin(dir, { keyPem, certPem: r.cert_pem, bundlePem: r.bundle_pem, info });
      output(g, { ...info, dir }, () => `signed in: ${describe(info)}\ncredential in ${dir}`);
    }));

  program.command('logout').description('delete this CLI\'s login credential and revoke its certificate on the control plane (--all: every certificate and session of yours)')
    .option('--all', 'log out everywhere: all your login certificates and browser sessions')
    .action(run(async (g, o: Json) => {
      const dir = loginDir();
      const info = readLogin(dir);
      let server: Json | undefined;
      let serverError: string | undefined;
      if (info !== undefined) {
        const client = new ApiClient(g.server ?? info.server, { ...loginTls(dir), serverId: `spiffe://${info.trust_domain}/tessera/server` });
        try {
          server = await client.call('POST', o.all === true ? '/v1/login/logout-all' : '/v1/login/logout', {});
        } catch (err) {
          // The local credential goes anyway; say why the server did not hear of it.
          serverError = isTesseraError(err) ? `${err.code}: ${err.message}` : String(err);
        } finally {
          client.close();
        }
      }
      const deleted = deleteLogin(dir);
      output(g, { deleted, dir, ...(server ? { server } : {}), ...(serverError ? { server_error: serverError } : {}) }, () => !deleted ? `not logged in (nothing in ${dir})`
        : `logged out: ${dir} cleared${server ? (o.all === true ? `; ${String(server.certs_revoked)} certificate(s) revoked, ${String(server.sessions_ended)} session(s) ended` : '; certificate revoked') : `; the control plane was not told (${serverError ?? 'no record'})`}`);
    }));

  program.command('whoami').description('who the CLI acts as: the `tessera login` person (asked of the control plane), or the admin credential directory in use')
    .action(run(async (g) => {
      const dir = loginDir();
      const info = g.adminDir === undefined && !process.env.TESSERA_ADMIN_DIR ? readLogin(dir) : undefined;
      if (info === undefined) {
        const admin = adminDir(g);
        output(g, { kind: 'admin-dir', admin_dir: admin }, () => `no tessera login in use: admin commands use the credential in ${admin}`);
        return;
      }
      if (Date.parse(info.not_after) <= Date.now()) throw new TesseraError('TESSERA_CREDENTIAL_EXPIRED', `the login of ${info.username} expired at ${info.not_after}: run \`tessera login\``);
      const client = new ApiClient(g.server ?? info.server, { ...loginTls(dir), serverId: `spiffe://${info.trust_domain}/tessera/server` });
      try {
        const me = await client.call<LoginInfo & { mfa_max_age_seconds: number }>('GET', '/v1/login/whoami');
        output(g, { kind: 'login', ...me, dir }, () => describe(me, me.mfa_max_age_seconds));
      } finally {
        client.close();
      }
    }));
}
