/**
 * The HAProxy data plane (`tessera agent --data-plane haproxy`): the inbound proxy is Debian's
 * HAProxy, run by the agent as its child, in HTTP mode; the agent keeps every judgement.
 *
 * - TLS: HAProxy terminates mTLS with the agent's SVID and the trust bundle (`verify required`).
 *   Both are loaded at start from files in DATA_DIR/haproxy (the SVID file, which holds the key,
 *   is written 0600 and deleted as soon as HAProxy has read it) and replaced on every rotation or
 *   bundle change through the runtime API (`set ssl cert`/`commit ssl cert`, `set ssl ca-file`/
 *   `commit ssl ca-file`): no reload, no connection dropped.
 * - Peers: the X509-SVID rules (src/core/x509-svid.ts, the same function as the Node data plane),
 *   the revocation list and quarantine, and the Cedar decision are the agent's, asked over SPOE
 *   (spop.ts, spoa.ts) per connection (the certificate) and per request (method, URL).
 * - Allowed decisions are cached inside HAProxy (config.ts) and invalidated by `flush()`, which
 *   the sidecar calls (as `rejudge()`) on every policy bundle change.
 * - Telemetry, counters and metrics come from HAProxy's per-request log lines, written to a memory
 *   ring and streamed to the agent over the runtime API (`show events`).
 * - HAProxy dying leaves no listener (fail closed); the agent restarts it, and gives up with a
 *   clear error (`onFatal`) when it dies again and again.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import { TesseraError, type ErrorCode } from '../../core/errors.js';
import { STRICT_PATH, checkRequestTarget, type PathAllowances } from '../../core/http-head.js';
import { verifyPeerSvid } from '../../core/x509-svid.js';
import { keyPem, requireMaterial, trustDomainOf, type TlsSource } from '../../common/tls-source.js';
import { DEFAULT_INBOUND_LIMITS, type Inbound, type InboundLimits, type InboundOptions, type RefusalRecord } from '../inbound/inbound.js';
import { callAuthorize, newStats, type InboundStats } from '../inbound/http.js';
import { peerRefusal, standingCode, type RejudgeResult } from '../inbound/rejudge.js';
import { CACHE_TABLE, LOG_RING, LOG_TAG, REFUSALS, VERDICT, haproxyConfig, spoeConfig, type HaproxyConfigOptions, type HaproxyFiles } from './config.js';
import { RuntimeApi } from './runtime-api.js';
import { findHaproxy } from './find.js';
import { int, str, type Action, type Message, type TypedData } from './spop.js';
import { startSpoa, type Spoa } from './spoa.js';

export { findHaproxy };

export interface HaproxyInboundOptions extends InboundOptions {
  /** The agent's data directory: HAProxy's files and sockets go to DATA_DIR/haproxy (0700). */
  dataDir: string;
  /** The haproxy executable (default: `haproxy` on the PATH). */
  haproxy?: string;
  /** Entries of HAProxy's decision cache (default 100,000) and their lifetime in seconds (default 60). */
  cacheSize?: number;
  cacheSeconds?: number;
  /** How long HAProxy waits for the agent's decision before answering 503 (default 1000 ms). */
  decisionTimeoutMs?: number;
  /** HAProxy died too often to go on (or could not be started again): the agent must stop. */
  onFatal?: (err: TesseraError) => void;
  /** Non-fatal trouble worth a log line (a restart, a failed runtime API update). */
  onWarning?: (message: string, fields: Record<string, unknown>) => void;
}

export interface HaproxyInbound extends Inbound {
  /** Invalidates every cached decision (new cache generation); resolves once HAProxy uses it. */
  flush(): Promise<void>;
  /** The cache generation in force. */
  readonly generation: number;
  /** HAProxy's pid (undefined while it is down). */
  readonly pid: number | undefined;
  /** HAProxy (re)starts so far (1 after a clean start). */
  readonly starts: number;
  /** Seamless reloads done (new SVID or bundle). */
  readonly reloads: number;
  /** The pid of HAProxy's worker serving now. */
  readonly workerPid: number | undefined;
  /** Resolves once the SVID and bundle current at the call are in HAProxy (and the flushes asked before). */
  tlsSettled(): Promise<void>;
  /** The runtime API client (tests read the cache table through it). */
  readonly runtime: RuntimeApi;
}

const RESTART_WINDOW_MS = 60_000;
const SETTLE_MS = 150;
const WATCHDOG_MS = 1000;
const MAX_RESTARTS = 5;
// Unix socket paths are limited to 108 bytes (sun_path).
const MAX_SOCKET_PATH = 100;


const VERDICT_ACTIONS: Action[][] = Object.values(VERDICT).map((v) => Object.freeze([{ type: 'set-var', scope: 'txn', name: 'verdict', value: int(v) }]) as Action[]);
const ALLOW_ACTIONS = VERDICT_ACTIONS[VERDICT.ALLOW]!;

function arg(m: Message, name: string): TypedData | undefined {
  for (const a of m.args) if (a.name === name) return a.value;
  return undefined;
}

function argString(m: Message, name: string): string | undefined {
  const v = arg(m, name);
  return v?.type === 'string' ? v.value : undefined;
}

/**
 * Starts HAProxy as the inbound proxy, with the agent's SPOE decision service. Resolves once
 * HAProxy listens; TESSERA_CONFIG_INVALID for bad options or a missing haproxy, TESSERA_UNAVAILABLE
 * when HAProxy does not start (its own message included).
 */
export async function startHaproxyInbound(opts: HaproxyInboundOptions): Promise<HaproxyInbound> {
  if (opts.mode !== 'http') throw new TesseraError('TESSERA_CONFIG_INVALID', 'the HAProxy data plane runs the inbound proxy in http mode only');
  if (typeof opts.authorize !== 'function') throw new TesseraError('TESSERA_CONFIG_INVALID', 'inbound needs an authorize function');
  const limits: InboundLimits = { ...DEFAULT_INBOUND_LIMITS, ...opts.limits };
  const idHeader = (opts.idHeader ?? 'x-spiffe-id').toLowerCase();
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(idHeader)) throw new TesseraError('TESSERA_CONFIG_INVALID', 'idHeader must be a header field name of letters, digits, - and _');
  const allowPath: PathAllowances = { ...STRICT_PATH, ...opts.allowPath };
  const haproxyPath = opts.haproxy ?? findHaproxy();
  if (haproxyPath === undefined) throw new TesseraError('TESSERA_CONFIG_INVALID', '--data-plane haproxy needs HAProxy installed (Debian: apt-get install haproxy; scripts/ensure-system-deps.sh does it)');

  const dir = resolve(opts.dataDir, 'haproxy');
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const files: HaproxyFiles = {
    dir, config: join(dir, 'haproxy.cfg'), spoeConfig: join(dir, 'spoe.cfg'), cert: join(dir, 'svid.pem'), bundle: join(dir, 'bundle.pem'), crtList: join(dir, 'svid.crtlist'),
    genMap: join(dir, 'generation.map'), adminSocket: join(dir, 'admin.sock'), spoaSocket: join(dir, 'spoa.sock'),
  };
  if (files.adminSocket.length > MAX_SOCKET_PATH) throw new TesseraError('TESSERA_CONFIG_INVALID', `the data directory path is too long for HAProxy's Unix sockets (${files.adminSocket.length} > ${MAX_SOCKET_PATH} bytes)`);

  let trustDomain = opts.trustDomain ?? trustDomainOf(requireMaterial(opts.tls).spiffeId);
  const stats = newStats();
  const bytes = { received: 0, sent: 0 };
  const ctx = { authorize: opts.authorize, onDecision: opts.onDecision, stats };
  const tel = opts.telemetry;
  const metrics = opts.metrics;
  const refusalTimes = new Map<string, { second: number; n: number }>();
  const refused = (code: ErrorCode, reason: string): void => {
    metrics?.refused(code);
    if (opts.onRefused === undefined) return;
    const now = Date.now();
    const second = Math.floor(now / 1000);
    const t = refusalTimes.get(code);
    if (t === undefined || t.second !== second) refusalTimes.set(code, { second, n: 1 });
    else if (++t.n > limits.refusalRecordsPerSecond) {
      stats.refusalsNotRecorded++;
      return;
    }
    try {
      opts.onRefused({ code, reason, remote: undefined, time: now } satisfies RefusalRecord);
    } catch {
      /* ignored */
    }
  };

  // -------------------------------------------------------------------------------------------
  // Decisions (SPOE)
  // -------------------------------------------------------------------------------------------

  const judgePeer = (m: Message): Action[] => {
    const cert = arg(m, 'cert');
    const der = cert?.type === 'binary' ? cert.value : undefined;
    // HAProxy verified the chain to the bundle (`verify required`) before any request.
    const v = verifyPeerSvid(der, der !== undefined, { trustDomain }, Date.now());
    if (!v.ok) {
      stats.identityRefused++;
      refused('TESSERA_PROXY_PEER_IDENTITY', v.reason);
      return VERDICT_ACTIONS[VERDICT.PEER_IDENTITY]!;
    }
    stats.connections++;
    const key = createHash('sha256').update(der!).digest('hex');
    return [
      { type: 'set-var', scope: 'sess', name: 'peer', value: str(v.spiffeId) },
      { type: 'set-var', scope: 'sess', name: 'serial', value: str(v.serial) },
      { type: 'set-var', scope: 'sess', name: 'exp', value: int(Math.floor(v.notAfter / 1000)) },
      { type: 'set-var', scope: 'sess', name: 'key', value: str(key) },
    ];
  };

  const judgeRequest = (m: Message): Action[] => {
    const peer = argString(m, 'peer');
    const serial = argString(m, 'serial') ?? '';
    const method = argString(m, 'method');
    const url = argString(m, 'url');
    if (peer === undefined || method === undefined || url === undefined) return VERDICT_ACTIONS[VERDICT.PEER_IDENTITY]!;
    let path: string;
    try {
      path = checkRequestTarget(url, allowPath);
    } catch (err) {
      stats.badRequests++;
      const code = (err as TesseraError).code;
      metrics?.refused(code);
      return VERDICT_ACTIONS[code === 'TESSERA_PROXY_PATH_REFUSED' ? VERDICT.PATH_REFUSED : VERDICT.BAD_REQUEST]!;
    }
    const standing = peerRefusal(opts.peerStatus, peer, serial);
    // Asked anyway when the standing refuses, so that the decision is recorded with its reason.
    const allowed = callAuthorize(ctx, { peer, serial, action: 'http:request', method, path });
    if (standing !== undefined) {
      stats.identityRefused++;
      return VERDICT_ACTIONS[standingCode(standing) === 'TESSERA_IDENTITY_QUARANTINED' ? VERDICT.QUARANTINED : VERDICT.REVOKED]!;
    }
    return allowed ? ALLOW_ACTIONS : VERDICT_ACTIONS[VERDICT.DENIED]!;
  };

  const handler = (messages: Message[]): Action[] => {
    let out: Action[] = [];
    for (const m of messages) {
      const a = m.name === 'tessera-peer' ? judgePeer(m) : m.name === 'tessera-req' ? judgeRequest(m) : [];
      out = out.length === 0 ? a : [...out, ...a];
    }
    return out;
  };

  const spoa: Spoa = await startSpoa({ socketPath: files.spoaSocket, handler, onError: () => { stats.internalErrors++; } });

  // -------------------------------------------------------------------------------------------
  // Telemetry from HAProxy's log lines
  // -------------------------------------------------------------------------------------------

  /** `T <peer> <status> <bytes in> <bytes out> <Ta ms> <verdict> <hit> <path>` (config.ts). */
  const onLogLine = (line: string): void => {
    if (!line.startsWith(`${LOG_TAG} `)) return;
    const f = line.split(' ', 9);
    if (f.length < 9) return;
    const peer = f[1]!;
    const status = Number(f[2]);
    const bytesIn = Number(f[3]) || 0;
    const bytesOut = Number(f[4]) || 0;
    const ms = Number(f[5]);
    const verdict = f[6] === '-' ? -1 : Number(f[6]);
    const hit = f[7] === '1';
    bytes.received += bytesIn;
    bytes.sent += bytesOut;
    // Refused before any decision (no verified caller, a malformed or ambiguous target): like the
    // Node data plane, not a request of the caller's edge.
    if (peer === '-' || verdict === VERDICT.PATH_REFUSED || verdict === VERDICT.BAD_REQUEST) return;
    stats.requests++;
    const forwarded = hit || verdict === VERDICT.ALLOW;
    if (hit) stats.allowed++;
    if (forwarded && Number.isFinite(ms) && ms >= 0) metrics?.observeRequest(ms / 1000);
    if (status === 502 || status === 504) stats.upstreamErrors++;
    if (tel !== undefined) {
      const e = tel.edge(peer);
      e.requests++;
      e.path(fieldFrom(line, 8));
      e.bytesIn += bytesIn;
      e.bytesOut += bytesOut;
      if (!forwarded && verdict > 0) e.denials++;
      if (status >= 500) e.errors++;
      if (forwarded && Number.isFinite(ms) && ms >= 0) e.latency(ms);
    }
  };

  // -------------------------------------------------------------------------------------------
  // The HAProxy process
  // -------------------------------------------------------------------------------------------

  const runtime = new RuntimeApi({ socketPath: files.adminSocket });
  const listen = { host: opts.listen.host, port: opts.listen.port === 0 ? await freePort(opts.listen.host) : opts.listen.port };
  const cfgOptions: HaproxyConfigOptions = {
    files, listen, app: opts.app, idHeader,
    maxConnections: limits.maxConnections, headTimeoutMs: limits.headTimeoutMs, idleTimeoutMs: limits.idleTimeoutMs, responseTimeoutMs: limits.responseTimeoutMs,
    cacheSize: opts.cacheSize ?? 100_000, cacheSeconds: opts.cacheSeconds ?? 60, decisionTimeoutMs: opts.decisionTimeoutMs ?? 1000,
  };
  writeFileSync(files.config, haproxyConfig(cfgOptions), { mode: 0o600 });
  writeFileSync(files.spoeConfig, spoeConfig(cfgOptions), { mode: 0o600 });

  let generation = 1;
  let child: ChildProcess | undefined;
  let closing = false;
  let starts = 0;
  const exits: number[] = [];
  let stderrTail: string[] = [];

  const writeStartFiles = (): void => {
    const m = requireMaterial(opts.tls);
    writeFileSync(files.cert, m.certPem.trim() + '\n' + keyPem(m.key), { mode: 0o600 });
    chmodSync(files.cert, 0o600);
    writeFileSync(files.bundle, m.bundlePem.trim() + '\n', { mode: 0o600 });
    writeFileSync(files.genMap, `g ${generation}\n`, { mode: 0o600 });
    writeFileSync(files.crtList, `${files.cert} [ca-file ${files.bundle} verify required]\n`, { mode: 0o600 });
  };
  const removeKeyFile = (): void => {
    try {
      unlinkSync(files.cert);
    } catch {
      /* gone */
    }
  };

  // The per-request log lines of each worker, streamed from its memory ring (config.ts).
  const logStreams = new Set<() => void>();
  const readLog = (): void => {
    if (closing) return;
    const stop = runtime.stream(`show events ${LOG_RING} -w -n`, (line) => {
      try {
        onLogLine(line);
      } catch {
        stats.internalErrors++;
      }
    }, () => logStreams.delete(stop));
    logStreams.add(stop);
  };

  /** Processes given up on (a start that failed): their exit is no crash. */
  const retired = new WeakSet<ChildProcess>();
  /** Every HAProxy master process running. */
  const live = new Set<ChildProcess>();
  /** The pid of HAProxy's current worker (the master-worker mode's process that serves). */
  let workerPid: number | undefined;
  let reloads = 0;

  /**
   * New SVID or bundle files are taken by HAProxy's own seamless reload: the master (`-W`) starts
   * a new worker with the new files, passing it the listening sockets, and the old worker finishes
   * its connections (soft stop; `hard-stop-after` bounds it). Resolves once the new worker answers.
   */
  const handover = async (): Promise<void> => {
    const p = child;
    if (p === undefined) return;
    const old = workerPid;
    writeStartFiles();
    try {
      // A reload asked while the master is still busy with the previous one can be dropped: ask again.
      for (let attempt = 1; ; attempt++) {
        p.kill('SIGUSR2');
        try {
          workerPid = await waitReady(runtime, new Promise(() => {}), (pid) => pid !== old, 3000);
          break;
        } catch (err) {
          if (attempt === 3) throw err;
        }
      }
      reloads++;
      readLog();
      // The master tells the old worker to stop accepting once the new one is ready; so do we, at
      // once (soft stop: it finishes its connections), then give it a moment to close its listener.
      if (old !== undefined) {
        try {
          process.kill(old, 'SIGUSR1');
        } catch {
          /* already gone */
        }
      }
      await new Promise((r) => setTimeout(r, SETTLE_MS));
    } finally {
      removeKeyFile();
    }
  };

  const launch = async (): Promise<void> => {
    writeStartFiles();
    stderrTail = [];
    // `exec` keeps HAProxy's pid the shell's; the background `cat` returns when the agent's end
    // of stdin closes (the agent exited, even SIGKILLed) and then kills HAProxy: no orphan. (fd 3:
    // an asynchronous list's stdin would otherwise be /dev/null.)
    const p = spawn('sh', ['-c', 'pid=$$; exec 3<&0; (cat <&3 >/dev/null; kill -9 $pid) >/dev/null 2>&1 & exec "$0" -W -db -f "$1" </dev/null 3<&-', haproxyPath, files.config], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    live.add(p);
    starts++;
    p.stdin!.on('error', () => {});
    p.stdout!.resume();
    createInterface({ input: p.stderr! }).on('line', (line) => {
      stderrTail.push(line);
      if (stderrTail.length > 20) stderrTail.shift();
    });
    const exited = new Promise<string>((res) => p.once('exit', (code, sig) => res(String(sig ?? code))));
    p.once('exit', (code, signal) => onExit(p, code, signal));
    try {
      workerPid = await waitReady(runtime, exited, () => true, 10_000);
    } catch (err) {
      retired.add(p);
      removeKeyFile();
      const drained = new Promise((res) => p.once('close', res));
      p.kill('SIGKILL');
      await Promise.race([drained, new Promise((res) => setTimeout(res, 500))]);
      const why = stderrTail.slice(-4).join(' / ');
      throw new TesseraError('TESSERA_UNAVAILABLE', `HAProxy did not start: ${why || (err as Error).message}`);
    }
    // HAProxy has read the SVID file: the key now lives only in its memory (and the agent's).
    removeKeyFile();
    child = p;
    readLog();
  };

  const onExit = (p: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void => {
    p.stdin?.destroy();
    live.delete(p);
    if (retired.has(p)) return;
    if (child === p) child = undefined;
    if (closing) return;
    const now = Date.now();
    exits.push(now);
    while (exits.length > 0 && now - exits[0]! > RESTART_WINDOW_MS) exits.shift();
    if (exits.length > MAX_RESTARTS) {
      opts.onFatal?.(new TesseraError('TESSERA_UNAVAILABLE', `HAProxy exited ${exits.length} times within ${RESTART_WINDOW_MS / 1000} s (last: ${signal ?? `status ${code}`}); the inbound proxy is down`));
      return;
    }
    opts.onWarning?.('HAProxy exited; no listener until it is restarted (fail closed)', { code, signal, restarts: exits.length });
    const delay = 100 * 2 ** (exits.length - 1);
    setTimeout(() => {
      if (closing) return;
      launch().catch((err: TesseraError) => {
        if (!closing) opts.onFatal?.(err);
      });
    }, delay).unref();
  };

  // Reloads and cache flushes run one at a time, in order: a flush never lands on a worker that a
  // reload in progress is about to replace (the new worker reads the generation from its file).
  let ops: Promise<void> = Promise.resolve();
  const serial = (fn: () => Promise<void>): Promise<void> => (ops = ops.then(fn));

  // A new SVID or bundle: HAProxy's seamless reload (handover), and several changes in a row make
  // one reload. Not `set ssl cert`/`commit ssl cert` nor
  // `set ssl ca-file`/`commit ssl ca-file`: on HAProxy 2.6 (Debian 12's), a committed certificate's
  // listener stops asking callers for a client certificate (`verify required` is lost), and after a
  // committed CA file later certificate commits reach no listener (see the e2e test that shows
  // both). The agent's peer check refuses callers without a certificate either way (fail closed).
  let tlsPending = false;
  const pushTls = (): void => {
    if (tlsPending) return;
    tlsPending = true;
    void serial(async () => {
      tlsPending = false;
      if (child === undefined || closing) return;
      const m = requireMaterial(opts.tls);
      if (opts.trustDomain === undefined) trustDomain = trustDomainOf(m.spiffeId);
      try {
        await handover();
      } catch (err) {
        stats.internalErrors++;
        opts.onWarning?.('a new HAProxy process with the new SVID or bundle did not start; the running one keeps serving', { error: (err as Error).message });
      }
    });
  };
  const onSvid = (): void => pushTls();
  const onBundle = (): void => pushTls();

  // Cache generations: bumped, then the old entries cleared (memory only: they can no longer match).
  const flush = (): Promise<void> => {
    generation++;
    const g = generation;
    return serial(async () => {
      if (child === undefined || closing) return;
      try {
        await runtime.setMap(files.genMap, 'g', String(g));
        await runtime.clearTable(CACHE_TABLE);
      } catch (err) {
        stats.internalErrors++;
        // A cache that cannot be invalidated must not answer: a restarted HAProxy starts empty.
        opts.onWarning?.('flushing HAProxy\'s decision cache failed; restarting it', { error: (err as Error).message });
        child?.kill('SIGKILL');
      }
    });
  };

  // The master stays up when its worker dies (nothing would listen, for good): a worker that does
  // not answer on the runtime API twice in a row gets the master killed, and so restarted.
  let missed = 0;
  const watchdog = setInterval(() => {
    void serial(async () => {
      const p = child;
      if (p === undefined || closing) return;
      try {
        await runtime.expect('show info', /^Pid: \d+$/m);
        missed = 0;
      } catch {
        if (++missed < 2 || child !== p) return;
        missed = 0;
        opts.onWarning?.('HAProxy\'s worker does not answer; restarting HAProxy', {});
        p.kill('SIGKILL');
      }
    });
  }, WATCHDOG_MS);
  watchdog.unref();

  try {
    await launch();
  } catch (err) {
    clearInterval(watchdog);
    closing = true;
    await spoa.close();
    throw err;
  }
  opts.tls.on('svid', onSvid);
  opts.tls.on('bundle', onBundle);

  let closed: Promise<void> | undefined;
  return {
    get port() {
      return listen.port;
    },
    get stats(): InboundStats {
      return { ...stats };
    },
    bytes: () => ({ ...bytes }),
    rejudge(): RejudgeResult {
      void flush();
      return { checked: 0, closed: 0, peers: 0 };
    },
    flush,
    get generation() {
      return generation;
    },
    get pid() {
      return child?.pid;
    },
    get starts() {
      return starts;
    },
    get reloads() {
      return reloads;
    },
    get workerPid() {
      return workerPid;
    },
    tlsSettled: () => ops,
    runtime,
    close(): Promise<void> {
      closed ??= (async () => {
        closing = true;
        clearInterval(watchdog);
        for (const stop of logStreams) stop();
        opts.tls.off('svid', onSvid);
        opts.tls.off('bundle', onBundle);
        await Promise.all([...live].map(async (p) => {
          if (p.exitCode !== null || p.signalCode !== null) return;
          const gone = new Promise<void>((res) => p.once('exit', () => res()));
          p.kill('SIGTERM');
          const t = setTimeout(() => p.kill('SIGKILL'), 300);
          await gone;
          clearTimeout(t);
        }));
        removeKeyFile();
        await spoa.close();
      })();
      return closed;
    },
  };
}

/** The rest of `line` after its first `n` space-separated fields. */
function fieldFrom(line: string, n: number): string {
  let at = -1;
  for (let i = 0; i < n; i++) {
    at = line.indexOf(' ', at + 1);
    if (at === -1) return '';
  }
  return line.slice(at + 1);
}

/** A free TCP port on `host` (HAProxy must be told one: it cannot report a port it chose). */
async function freePort(host: string): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((res, rej) => {
    srv.once('error', rej);
    srv.listen(0, host, () => res());
  });
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Waits until HAProxy answers on its runtime API (it listens by then), or exits, or `ms` pass. */
async function waitReady(runtime: RuntimeApi, exited: Promise<string>, accept: (pid: number) => boolean, ms: number): Promise<number> {
  const deadline = Date.now() + ms;
  let dead: string | undefined;
  void exited.then((how) => {
    dead = how;
  });
  for (;;) {
    if (dead !== undefined) throw new Error(`HAProxy exited at start (${dead})`);
    try {
      const info = await runtime.expect('show info', /^Pid: \d+$/m);
      const pid = Number(/^Pid: (\d+)$/m.exec(info)![1]);
      if (accept(pid)) return pid;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > deadline) throw new Error(`no answer within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export { REFUSALS, VERDICT };
