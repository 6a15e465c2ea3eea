/**
 * The node configuration of `tessera agent --node FILE`: the workloads one agent process serves on
 * this host, each with what the per-workload `tessera agent` flags take (join token, inbound proxy,
 * outbound proxies, sealed files). JSON, parsed strictly: an unknown key, a wrong type, a duplicate
 * name, port, socket or output path is refused as a whole, with the path of the value at fault
 * (`workloads[2].inbound.listen`), before anything starts (a half-started node would spend join
 * tokens). Join tokens never appear in an error message or a log line.
 *
 *   {
 *     "workload_api_socket": "/run/tessera/agent.sock",
 *     "workloads": [
 *       { "name": "orders", "join_token_file": "/etc/tessera/orders.token",
 *         "inbound": { "listen": "0.0.0.0:8443", "app": "127.0.0.1:8080", "mode": "http" },
 *         "outbounds": ["unix:/run/tessera/orders-payments.sock=10.0.0.7:8443@spiffe://td/payments"],
 *         "unseal": ["/etc/orders/db.sealed=/run/orders/db-url"] }
 *     ]
 *   }
 */
import { readFileSync, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { TesseraError, isTesseraError } from '../../core/errors.js';
import { parsePathAllowances, type PathAllowances } from '../inbound/inbound.js';
import { parseHostPort, parseOutboundSpec, type HostPort, type OutboundSpec } from '../listen-spec.js';
import type { SecretFileSpec } from '../secrets/files.js';

export interface NodeWorkloadConfig {
  /** Unique on the node; its state lives in DATA_DIR/workloads/NAME. */
  name: string;
  /** The one-time join token (`join_token`, or the content of `join_token_file` once loaded). */
  joinToken?: string;
  /** Where `join_token_file` points (read by {@link loadNodeConfig}). */
  joinTokenFile?: string;
  inbound?: { listen: HostPort; app: HostPort; mode: 'http' | 'tcp'; allowPath?: Partial<PathAllowances> };
  outbounds: OutboundSpec[];
  unseal: SecretFileSpec[];
}

export interface NodeConfig {
  /** The node's one SPIFFE Workload API socket: each caller gets the SVID of the workload its credentials match. */
  workloadApiSocket?: string;
  workloads: NodeWorkloadConfig[];
}

export const MAX_NODE_WORKLOADS = 1000;
const MAX_LIST = 64;
const MAX_CONFIG_BYTES = 1024 * 1024;
const MAX_TOKEN = 4096;
const NAME_RE = /^[a-z0-9][a-z0-9_.-]{0,62}$/;
const TOKEN_RE = /^[\x21-\x7e]+$/;
const TOP_KEYS = ['workload_api_socket', 'workloads'];
const WORKLOAD_KEYS = ['name', 'join_token', 'join_token_file', 'inbound', 'outbounds', 'unseal'];
const INBOUND_KEYS = ['listen', 'app', 'mode', 'allow'];

function invalid(path: string, msg: string): TesseraError {
  return new TesseraError('TESSERA_CONFIG_INVALID', `node config: ${path} ${msg}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function object(v: unknown, path: string, keys: readonly string[]): Record<string, unknown> {
  if (!isObject(v)) throw invalid(path, 'must be an object');
  for (const k of Object.keys(v)) if (!keys.includes(k)) throw invalid(path, `has an unknown key ${JSON.stringify(k.slice(0, 64))} (known: ${keys.join(', ')})`);
  return v;
}

function string(v: unknown, path: string, max = 4096): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > max) throw invalid(path, `must be a non-empty string of at most ${max} characters`);
  return v;
}

function absolutePath(v: unknown, path: string): string {
  const s = string(v, path);
  if (!isAbsolute(s) || s.includes('\0')) throw invalid(path, 'must be an absolute path');
  return s;
}

function list(v: unknown, path: string): unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > MAX_LIST) throw invalid(path, `must be a list of at most ${MAX_LIST} strings`);
  return v;
}

/** Runs a spec parser of the flags, its error reworded for `path` (its message names no secret). */
function spec<T>(path: string, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (isTesseraError(err)) throw invalid(path, `is invalid: ${err.message}`);
    throw err;
  }
}

function unsealSpec(v: unknown, path: string): SecretFileSpec {
  const s = string(v, path);
  const eq = s.indexOf('=');
  if (eq <= 0 || eq === s.length - 1) throw invalid(path, 'must be SEALED_FILE=OUTPUT_PATH, e.g. /etc/app/db.sealed=/run/app/db-url');
  return { sealedFile: absolutePath(s.slice(0, eq), `${path} (sealed file)`), outputPath: absolutePath(s.slice(eq + 1), `${path} (output path)`) };
}

function inbound(v: unknown, path: string): NonNullable<NodeWorkloadConfig['inbound']> {
  const o = object(v, path, INBOUND_KEYS);
  const mode = o.mode ?? 'http';
  if (mode !== 'http' && mode !== 'tcp') throw invalid(`${path}.mode`, 'must be "http" or "tcp"');
  const out: NonNullable<NodeWorkloadConfig['inbound']> = {
    listen: spec(`${path}.listen`, () => parseHostPort(o.listen, 'listen')),
    app: spec(`${path}.app`, () => parseHostPort(o.app, 'app')),
    mode,
  };
  if (o.allow !== undefined) out.allowPath = spec(`${path}.allow`, () => parsePathAllowances(string(o.allow, `${path}.allow`, 256)));
  return out;
}

function workload(v: unknown, path: string): NodeWorkloadConfig {
  const o = object(v, path, WORKLOAD_KEYS);
  const name = string(o.name, `${path}.name`, 63);
  if (!NAME_RE.test(name)) throw invalid(`${path}.name`, 'must be 1 to 63 characters a-z 0-9 . _ - starting with a letter or digit');
  if (o.join_token !== undefined && o.join_token_file !== undefined) throw invalid(path, 'takes join_token or join_token_file, not both');
  const w: NodeWorkloadConfig = {
    name,
    outbounds: list(o.outbounds, `${path}.outbounds`).map((s, i) => spec(`${path}.outbounds[${i}]`, () => parseOutboundSpec(s, 'outbound'))),
    unseal: list(o.unseal, `${path}.unseal`).map((s, i) => unsealSpec(s, `${path}.unseal[${i}]`)),
  };
  if (o.join_token !== undefined) w.joinToken = token(o.join_token, `${path}.join_token`);
  if (o.join_token_file !== undefined) w.joinTokenFile = absolutePath(o.join_token_file, `${path}.join_token_file`);
  if (o.inbound !== undefined) w.inbound = inbound(o.inbound, `${path}.inbound`);
  return w;
}

/** A join token as written in the config or its file (surrounding white space trimmed); never echoed. */
function token(v: unknown, path: string): string {
  const t = typeof v === 'string' ? v.trim() : undefined;
  if (t === undefined || t.length === 0 || t.length > MAX_TOKEN || !TOKEN_RE.test(t)) throw invalid(path, `must be a join token (printable, no spaces, at most ${MAX_TOKEN} characters)`);
  return t;
}

/** Refuses two listeners on one port, two sockets on one path, two secrets written to one file. */
function checkUnique(c: NodeConfig): void {
  const names = new Map<string, string>();
  const ports = new Map<number, string>();
  const sockets = new Map<string, string>();
  const outputs = new Map<string, string>();
  const claim = <K>(seen: Map<K, string>, key: K, path: string, what: string): void => {
    const first = seen.get(key);
    if (first !== undefined) throw invalid(path, `uses the same ${what} as ${first}`);
    seen.set(key, path);
  };
  if (c.workloadApiSocket !== undefined) claim(sockets, c.workloadApiSocket, 'workload_api_socket', 'socket path');
  c.workloads.forEach((w, i) => {
    const at = `workloads[${i}]`;
    claim(names, w.name, `${at}.name`, 'name');
    // Port 0 is "any free port": never a clash.
    if (w.inbound && w.inbound.listen.port !== 0) claim(ports, w.inbound.listen.port, `${at}.inbound.listen`, 'port');
    w.outbounds.forEach((o, j) => {
      if ('path' in o.listen) claim(sockets, o.listen.path, `${at}.outbounds[${j}]`, 'socket path');
      else if (o.listen.port !== 0) claim(ports, o.listen.port, `${at}.outbounds[${j}]`, 'port');
    });
    w.unseal.forEach((u, j) => claim(outputs, u.outputPath, `${at}.unseal[${j}]`, 'output path'));
  });
}

/**
 * Parses the node configuration's JSON text (no file is read: see {@link loadNodeConfig}).
 * TESSERA_CONFIG_INVALID, naming the value at fault, for anything else than the documented shape.
 *
 * @example
 * parseNodeConfig('{"workloads":[{"name":"web","inbound":{"listen":"0.0.0.0:8443","app":"127.0.0.1:8080"}}]}')
 */
export function parseNodeConfig(text: string): NodeConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    // The parser's message may quote the text (a token): only the position is kept.
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    throw new TesseraError('TESSERA_CONFIG_INVALID', `node config: not valid JSON${at !== undefined ? ` (at character ${at})` : ''}`);
  }
  const top = object(raw, 'the top level', TOP_KEYS);
  if (!Array.isArray(top.workloads) || top.workloads.length === 0 || top.workloads.length > MAX_NODE_WORKLOADS) {
    throw invalid('workloads', `must be a list of 1 to ${MAX_NODE_WORKLOADS} workloads`);
  }
  const config: NodeConfig = { workloads: top.workloads.map((w, i) => workload(w, `workloads[${i}]`)) };
  if (top.workload_api_socket !== undefined) config.workloadApiSocket = absolutePath(top.workload_api_socket, 'workload_api_socket');
  checkUnique(config);
  return config;
}

/** A file holding a join token must not be readable by group or others (like a key file: 0600). */
function checkPrivate(mode: number, what: string): void {
  if ((mode & 0o077) !== 0) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', `${what} holds a join token and is readable by other users (mode 0${(mode & 0o777).toString(8)}): chmod 600 it`);
  }
}

/**
 * Reads `file` (at most 1 MiB), parses it, and reads every `join_token_file` into `joinToken`.
 * A file holding a join token (the config with an inline `join_token`, or a token file) must not be
 * readable by group or others.
 */
export function loadNodeConfig(file: string): NodeConfig {
  let text: string;
  let mode: number;
  try {
    const st = statSync(file);
    if (st.size > MAX_CONFIG_BYTES) throw new TesseraError('TESSERA_CONFIG_INVALID', `node config ${file} is larger than 1 MiB`);
    mode = st.mode;
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if (isTesseraError(err)) throw err;
    throw new TesseraError('TESSERA_CONFIG_INVALID', `cannot read the node config ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const config = parseNodeConfig(text);
  if (config.workloads.some((w) => w.joinToken !== undefined)) checkPrivate(mode, `node config ${file}`);
  config.workloads.forEach((w, i) => {
    if (w.joinTokenFile === undefined) return;
    let content: string;
    try {
      checkPrivate(statSync(w.joinTokenFile).mode, `node config: workloads[${i}].join_token_file`);
      content = readFileSync(w.joinTokenFile, 'utf8');
    } catch (err) {
      if (isTesseraError(err)) throw err;
      throw invalid(`workloads[${i}].join_token_file`, `cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    w.joinToken = token(content, `workloads[${i}].join_token_file (its content)`);
  });
  return config;
}
