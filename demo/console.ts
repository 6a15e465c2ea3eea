/**
 * The demo's side of the web console (issue 12): a person's console session held as a browser holds
 * it (the cookies a one-time link sets, and the CSRF token), and the map as one compact text line.
 *
 * The demo reads the map with a session of the same person as the printed link, from a second link,
 * so that the link it prints is still unused for whoever opens it.
 */
import { request } from 'node:https';
import type { MapResponse } from '../src/core/wire/map.js';

export interface ConsoleAnswer {
  status: number;
  json: unknown;
  headers: Record<string, string | string[] | undefined>;
}

/** The error code of a JSON error answer (or its status when there is none). */
export function answerCode(a: ConsoleAnswer): string {
  return (a.json as { error?: { code?: string } } | undefined)?.error?.code ?? `HTTP ${a.status}`;
}

/**
 * A console session: cookie-keeping HTTPS calls to the control plane as its public URL names it
 * (https://localhost:PORT: passkeys need a host name, never an IP), over a connection to
 * `connectHost` with the public host name as TLS server name, Host and Origin.
 */
export class ConsoleSession {
  readonly #cookies = new Map<string, string>();
  readonly #origin: string;

  private constructor(publicUrl: string, private readonly connectHost: string, private readonly ca: string) {
    this.#origin = new URL(publicUrl).origin;
  }

  /** Redeems a one-time console link (`…/console/sign-in#token=…`): the session it opens, or the refusal's code. */
  static async open(linkUrl: string, connectHost: string, ca: string): Promise<ConsoleSession | string> {
    const url = new URL(linkUrl);
    const token = new URLSearchParams(url.hash.slice(1)).get('token') ?? '';
    const s = new ConsoleSession(url.origin, connectHost, ca);
    const a = await s.call('POST', '/v1/auth/link', { token });
    return a.status === 200 ? s : answerCode(a);
  }

  /**
   * One call as the console makes it: the session cookies; for a state-changing request the Origin
   * and the CSRF header from the readable `__Host-tessera_csrf` cookie (double submit).
   */
  call(method: string, path: string, body?: unknown): Promise<ConsoleAnswer> {
    const url = new URL(path, this.#origin);
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { host: url.host, accept: 'application/json' };
    if (this.#cookies.size > 0) headers.cookie = [...this.#cookies].map(([k, v]) => `${k}=${v}`).join('; ');
    if (method !== 'GET') {
      headers.origin = this.#origin;
      const csrf = this.#cookies.get('__Host-tessera_csrf');
      if (csrf !== undefined) headers['x-tessera-csrf'] = csrf;
    }
    if (data) Object.assign(headers, { 'content-type': 'application/json', 'content-length': data.length });
    return new Promise((resolve, reject) => {
      const req = request({
        host: this.connectHost, port: url.port, servername: url.hostname, path: `${url.pathname}${url.search}`,
        method, headers, ca: this.ca, agent: false, timeout: 10_000,
      }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => { text += c; });
        res.on('end', () => {
          this.keep(res.headers['set-cookie']);
          let json: unknown;
          try { json = JSON.parse(text); } catch { /* not JSON */ }
          resolve({ status: res.statusCode ?? 0, json, headers: res.headers });
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(data);
    });
  }

  /** Set-Cookie as a browser keeps it: a value replaces, an empty value or Max-Age=0 deletes. */
  private keep(lines: string[] | undefined): void {
    for (const line of lines ?? []) {
      const [pair, ...attrs] = line.split(';').map((s) => s.trim());
      const eq = pair!.indexOf('=');
      if (eq <= 0) continue;
      const [name, value] = [pair!.slice(0, eq), pair!.slice(eq + 1)];
      if (value === '' || attrs.some((a) => /^max-age=0$/i.test(a))) this.#cookies.delete(name);
      else this.#cookies.set(name, value);
    }
  }
}

/**
 * The map as one line: its services (short names) by site, its edges (with their denials), and the
 * quarantined services, e.g.
 * `map: 6 services in 3 sites (cloud-eu: frontend ks-1 orders | …), 9 edges (frontend→orders, …); quarantined: orders (score 100)`.
 */
export function mapLine(m: MapResponse, nameOf: (id: string) => string): string {
  const sites = new Map<string, string[]>();
  for (const s of m.services) {
    const site = s.site ?? 'no site';
    sites.set(site, [...(sites.get(site) ?? []), nameOf(s.id)]);
  }
  const services = [...sites].map(([site, names]) => `${site}: ${names.sort().join(' ')}`);
  const edges = m.edges.map((e) => `${nameOf(e.caller)}→${nameOf(e.callee)}${e.denied > 0 ? ` (${e.denied} denied)` : ''}`);
  const quarantined = m.services.filter((s) => s.quarantined).map((s) => `${nameOf(s.id)} (score ${s.risk.score})`);
  return `map: ${m.totals.services} services in ${m.totals.sites} sites (${services.join(' | ')}), ${m.totals.edges} edges (${edges.join(', ')}); quarantined: ${quarantined.join(', ') || 'none'}`;
}
