/**
 * The gateway's routes: `--route [NAME:]HOST[/PREFIX]=http://127.0.0.1:PORT` (repeatable). A request
 * goes to the route of its Host (name only, port ignored, case-insensitive) whose path prefix is the
 * longest that matches on a segment boundary (`/wiki` matches `/wiki` and `/wiki/x`, not `/wikis`).
 * NAME (the Cedar `Tessera::App` id) defaults to the host's first label, then the prefix's segments,
 * joined by `-`: `wiki.example.com/docs` → `wiki-docs`.
 */
import { TesseraError } from '../core/errors.js';
import { ROUTE_NAME } from '../core/wire/gateway.js';

export interface GatewayRoute {
  name: string;
  host: string;
  /** `/` or `/a/b` (no trailing slash). */
  prefix: string;
  upstream: { host: string; port: number };
}

const HOST = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
const PREFIX = /^(\/[A-Za-z0-9._~-]+)*$/;

function invalid(spec: string, why: string): TesseraError {
  return new TesseraError('TESSERA_CONFIG_INVALID', `--route ${JSON.stringify(spec.slice(0, 200))}: ${why} (expected [NAME:]HOST[/PREFIX]=http://127.0.0.1:PORT)`);
}

/** Parses one `--route` value. Throws TESSERA_CONFIG_INVALID. */
export function parseRoute(spec: string): GatewayRoute {
  const eq = spec.indexOf('=');
  if (eq <= 0) throw invalid(spec, 'no "="');
  let left = spec.slice(0, eq);
  const target = spec.slice(eq + 1);
  let name: string | undefined;
  const colon = left.indexOf(':');
  if (colon >= 0) {
    name = left.slice(0, colon);
    left = left.slice(colon + 1);
    if (!ROUTE_NAME.test(name)) throw invalid(spec, 'NAME must be 1-63 of a-z, 0-9 and -');
  }
  const slash = left.indexOf('/');
  const host = (slash < 0 ? left : left.slice(0, slash)).toLowerCase();
  let prefix = slash < 0 ? '' : left.slice(slash).replace(/\/+$/, '');
  if (!HOST.test(host)) throw invalid(spec, 'HOST must be a DNS name');
  if (!PREFIX.test(prefix) || prefix.split('/').some((seg) => seg === '.' || seg === '..')) throw invalid(spec, 'PREFIX must be /segment[/segment...] of unreserved characters, no dot segments');
  if (prefix === '') prefix = '/';
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw invalid(spec, 'the app URL is not a URL');
  }
  if (url.protocol !== 'http:' || url.pathname !== '/' || url.search || url.hash || url.username || url.password) throw invalid(spec, 'the app must be http://HOST:PORT (plain HTTP on a loopback or private address, no path)');
  name ??= [host.split('.')[0]!, ...prefix.split('/').filter(Boolean)].join('-').toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 63);
  if (!ROUTE_NAME.test(name)) throw invalid(spec, `the derived route name ${JSON.stringify(name)} is not valid: give NAME:`);
  const port = url.port === '' ? 80 : Number(url.port);
  return { name, host, prefix, upstream: { host: url.hostname.replace(/^\[|\]$/g, ''), port } };
}

export class RouteTable {
  readonly #byHost = new Map<string, GatewayRoute[]>();
  readonly routes: readonly GatewayRoute[];

  constructor(routes: GatewayRoute[]) {
    const names = new Set<string>();
    const keys = new Set<string>();
    for (const r of routes) {
      if (names.has(r.name)) throw new TesseraError('TESSERA_CONFIG_INVALID', `two routes are named ${r.name}: give each NAME: explicitly`);
      if (keys.has(`${r.host}${r.prefix}`)) throw new TesseraError('TESSERA_CONFIG_INVALID', `two routes for ${r.host}${r.prefix}`);
      names.add(r.name);
      keys.add(`${r.host}${r.prefix}`);
      const list = this.#byHost.get(r.host) ?? [];
      list.push(r);
      // Longest prefix first: the first match wins.
      list.sort((a, b) => b.prefix.length - a.prefix.length);
      this.#byHost.set(r.host, list);
    }
    this.routes = Object.freeze([...routes]);
  }

  /** The hosts routed (each needs its origin registered with the control plane: `tessera gateway add --url`). */
  get hosts(): string[] {
    return [...this.#byHost.keys()];
  }

  /** The route for `hostHeader` (a Host header value) and `path`, or undefined. */
  match(hostHeader: string | undefined, path: string): GatewayRoute | undefined {
    if (hostHeader === undefined) return undefined;
    const host = hostOf(hostHeader);
    const list = host === undefined ? undefined : this.#byHost.get(host);
    if (list === undefined) return undefined;
    for (const r of list) {
      if (r.prefix === '/' || path === r.prefix || path.startsWith(`${r.prefix}/`)) return r;
    }
    return undefined;
  }
}

/** The host name of a Host header (port removed, lower case), or undefined when malformed. */
export function hostOf(hostHeader: string): string | undefined {
  const m = /^([A-Za-z0-9.-]{1,253})(:\d{1,5})?$/.exec(hostHeader);
  return m ? m[1]!.toLowerCase() : undefined;
}
