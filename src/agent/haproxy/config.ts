/**
 * The HAProxy configuration the agent writes for its HAProxy data plane (one frontend in HTTP
 * mode in front of the app) and the SPOE configuration of its decisions. Pure: strings in, strings out.
 *
 * Per request (the frontend's http-request rules, in order):
 * 1. First request of a connection only: the `peer` SPOE group sends the client certificate's DER
 *    (`ssl_c_der`; HAProxy verified its chain, `verify required`); the agent applies the
 *    X509-SVID rules and answers session variables (SPIFFE ID, serial, notAfter, a cache key: the
 *    certificate's SHA-256) or a refusal verdict.
 * 2. A caller whose certificate expired since the handshake is refused (403).
 * 3. The decision cache: a stick table keyed by SHA-256(certificate key, cache generation, minute,
 *    method, URL). A hit skips the agent. The minute: the enforcer's decisions depend on
 *    `context.time` in minute buckets (time-of-day rules), so an allow never outlives its minute. The generation comes from a map the agent bumps through the
 *    runtime API on every policy bundle (and revocation or quarantine) change: an allow stored
 *    under an older generation is never looked up again, whatever the order in which HAProxy
 *    processes an in-flight decision and the flush.
 * 4. Otherwise the `req` SPOE group asks the agent (peer, serial, method, URL); an allow
 *    (verdict 0) is stored in the cache.
 * 5. Anything but an allow or a cache hit is answered by HAProxy itself with the Node data
 *    plane's JSON refusal body and code; no verdict at all (the agent did not answer in time, or
 *    the SPOE connection failed) is 503 TESSERA_UNAVAILABLE: fail closed.
 * 6. Every spelling of the id header the caller sent is removed, and the verified ID set.
 */
import { ERROR_CODES, type ErrorCode } from '../../core/errors.js';

/** What the agent answers in `txn.tessera.verdict`. */
export const VERDICT = Object.freeze({
  ALLOW: 0,
  DENIED: 1,
  REVOKED: 2,
  QUARANTINED: 3,
  PEER_IDENTITY: 4,
  PATH_REFUSED: 5,
  BAD_REQUEST: 6,
});

/** The refusal HAProxy answers for each verdict (codes and messages as the Node data plane's). */
export const REFUSALS: Record<number, { code: ErrorCode; message: string }> = {
  [VERDICT.DENIED]: { code: 'TESSERA_PROXY_DENIED', message: 'denied by policy' },
  [VERDICT.REVOKED]: { code: 'TESSERA_IDENTITY_REVOKED', message: 'the caller is not a live workload' },
  [VERDICT.QUARANTINED]: { code: 'TESSERA_IDENTITY_QUARANTINED', message: 'the caller is quarantined' },
  [VERDICT.PEER_IDENTITY]: { code: 'TESSERA_PROXY_PEER_IDENTITY', message: 'the caller certificate is not an X509-SVID of this trust domain' },
  [VERDICT.PATH_REFUSED]: { code: 'TESSERA_PROXY_PATH_REFUSED', message: 'the request path is ambiguous' },
  [VERDICT.BAD_REQUEST]: { code: 'TESSERA_BAD_REQUEST', message: 'malformed request target' },
};

export interface HaproxyFiles {
  dir: string;
  config: string;
  spoeConfig: string;
  /** The SVID (certificate and key), present only while HAProxy starts (0600). */
  cert: string;
  bundle: string;
  /** One line: the SVID file with its client verification options (ca-file, verify required). */
  crtList: string;
  genMap: string;
  adminSocket: string;
  spoaSocket: string;
}

export interface HaproxyConfigOptions {
  files: HaproxyFiles;
  listen: { host: string; port: number };
  app: { host: string; port: number };
  /** Lowercase id header name. */
  idHeader: string;
  maxConnections: number;
  headTimeoutMs: number;
  idleTimeoutMs: number;
  responseTimeoutMs: number;
  /** Entries of the decision cache, and how long one lives (seconds). */
  cacheSize: number;
  cacheSeconds: number;
  /** How long HAProxy waits for a decision before answering 503 (ms). */
  decisionTimeoutMs: number;
}

export const CACHE_TABLE = 'tessera_cache';
export const LOG_TAG = 'T';
export const LOG_RING = 'tessera_log';

function body(code: ErrorCode, message: string): string {
  return JSON.stringify({ error: { code, message } });
}

/** An `http-request return` (or `http-error`) answer with our JSON error body. */
function answer(code: ErrorCode, message: string): string {
  const text = body(code, message);
  if (text.includes("'")) throw new Error('refusal bodies cannot hold a quote');
  return `status ${ERROR_CODES[code].status} content-type application/json string '${text}'`;
}

/** Every spelling of the id header a caller could send that an app may read as it (`-` or `_`). */
export function idHeaderSpellings(name: string): string[] {
  const parts = name.split(/[-_]/);
  let out = [parts[0]!];
  for (const p of parts.slice(1)) out = out.flatMap((s) => [`${s}-${p}`, `${s}_${p}`]);
  // Past 64 spellings (a name with 6+ separators), the two extremes only.
  return out.length <= 64 ? out : [name.replace(/_/g, '-'), name.replace(/-/g, '_')];
}

const hostPort = (a: { host: string; port: number }): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

export function haproxyConfig(o: HaproxyConfigOptions): string {
  const f = o.files;
  const known = '{ var(sess.tessera.key) -m found }';
  const hit = '{ var(txn.tessera_hit) -m int eq 1 }';
  const allowed = `{ var(txn.tessera.verdict) -m int eq ${VERDICT.ALLOW} }`;
  const refusals = Object.entries(REFUSALS).map(([v, r]) => `  http-request return ${answer(r.code, r.message)} if { var(txn.tessera.verdict) -m int eq ${v} }`);
  return `# Written by the Tessera agent (--data-plane haproxy) at each start; do not edit.
global
  nbthread 1
  stats socket ${f.adminSocket} mode 600 level admin expose-fd listeners
  stats timeout 10s
  hard-stop-after 30s
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ssl-default-server-options ssl-min-ver TLSv1.2
  tune.ssl.default-dh-param 2048

# Per-request log lines (telemetry, counters) go to a memory ring the agent reads through the
# runtime API (\`show events\`): no write system call per request; when the agent falls behind, the
# oldest lines are overwritten (bounded memory), never blocking HAProxy.
ring ${LOG_RING}
  format raw
  size 4194304

defaults
  mode http
  log ring@${LOG_RING} local0
  option http-keep-alive
  # A process handing over (soft stop) answers the next request on an idle connection with
  # "Connection: close" instead of closing it under a caller that is sending.
  option idle-close-on-response
  timeout connect 5s
  timeout client ${o.idleTimeoutMs}ms
  timeout http-request ${o.headTimeoutMs}ms
  timeout http-keep-alive ${o.idleTimeoutMs}ms
  timeout server ${o.responseTimeoutMs}ms
  timeout client-fin 2s

frontend tessera_inbound
  bind ${hostPort(o.listen)} ssl crt-list ${f.crtList}
  maxconn ${o.maxConnections}
  log-format "${LOG_TAG} %[var(sess.tessera.peer)] %ST %U %B %Ta %[var(txn.tessera.verdict)] %[var(txn.tessera_hit)] %HP"
  http-error ${answer('TESSERA_BAD_REQUEST', 'malformed request')}
  http-error ${answer('TESSERA_REQUEST_TIMEOUT', 'the request head was not received in time')}
  http-error ${answer('TESSERA_PROXY_UPSTREAM', 'the application could not be reached')}
  http-error ${answer('TESSERA_PROXY_UPSTREAM_TIMEOUT', 'the application did not answer in time')}
  filter spoe engine tessera config ${f.spoeConfig}
  http-request send-spoe-group tessera peer unless ${known}
  http-request return ${answer('TESSERA_PROXY_PEER_IDENTITY', REFUSALS[VERDICT.PEER_IDENTITY]!.message)} if !${known} { var(txn.tessera.verdict) -m int eq ${VERDICT.PEER_IDENTITY} }
  http-request return ${answer('TESSERA_UNAVAILABLE', 'the sidecar could not decide')} if !${known}
  http-request set-var(txn.tessera_now) date
  http-request return ${answer('TESSERA_PROXY_PEER_IDENTITY', 'the caller certificate has expired')} if { var(sess.tessera.exp),sub(txn.tessera_now) le 0 }
  http-request set-var(txn.tessera_g) str(g),map(${f.genMap},none)
  http-request set-var(txn.tessera_t) date,div(60)
  http-request set-var(txn.tessera_m) method
  http-request set-var(txn.tessera_u) url
  http-request set-var(txn.tessera_ck) var(sess.tessera.key),concat(" ",txn.tessera_g," "),concat(,txn.tessera_t," "),concat(,txn.tessera_m," "),concat(,txn.tessera_u,),digest(sha256)
  http-request set-var(txn.tessera_hit) var(txn.tessera_ck),table_gpt0(${CACHE_TABLE})
  http-request send-spoe-group tessera req unless ${hit}
  http-request track-sc0 var(txn.tessera_ck) table ${CACHE_TABLE} if ${allowed} !${hit}
  http-request sc-set-gpt0(0) 1 if ${allowed} !${hit}
${refusals.join('\n')}
  http-request return ${answer('TESSERA_UNAVAILABLE', 'the sidecar could not decide')} if !${allowed} !${hit}
${idHeaderSpellings(o.idHeader).map((h) => `  http-request del-header ${h}`).join('\n')}
  http-request set-header ${o.idHeader} %[var(sess.tessera.peer)]
  default_backend tessera_app

backend tessera_app
  server app ${hostPort(o.app)}

backend ${CACHE_TABLE}
  stick-table type binary len 32 size ${o.cacheSize} expire ${o.cacheSeconds}s store gpt0

backend tessera_spoa
  mode tcp
  timeout connect 1s
  # HAProxy 2.6 does not apply the SPOE processing timeout to send-spoe-group: an agent that stops
  # answering is caught by the connection's read timeout instead (its streams then get no verdict: 503).
  timeout server ${2 * Math.max(1, o.decisionTimeoutMs)}ms
  server agent unix@${f.spoaSocket}
`;
}

export function spoeConfig(o: HaproxyConfigOptions): string {
  const t = Math.max(1, o.decisionTimeoutMs);
  return `[tessera]
spoe-agent tessera
  groups peer req
  option var-prefix tessera
  option pipelining
  no option async
  register-var-names peer key serial exp verdict
  max-waiting-frames 1000
  timeout hello 2s
  timeout idle ${Math.max(1, o.decisionTimeoutMs)}ms
  timeout processing ${t}ms
  use-backend tessera_spoa

spoe-message tessera-peer
  args cert=ssl_c_der

spoe-message tessera-req
  args peer=var(sess.tessera.peer) serial=var(sess.tessera.serial) method=method url=url

spoe-group peer
  messages tessera-peer

spoe-group req
  messages tessera-req
`;
}
