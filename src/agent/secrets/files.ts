/**
 * `tessera agent --unseal SEALED_FILE=OUTPUT_PATH`: once the agent has its identity, it opens each
 * sealed file for its app (blind unseal through the key servers, as its SVID) and writes the
 * plaintext to OUTPUT_PATH atomically, mode 0600, in a directory created 0700. A failure (refused,
 * key servers down, control plane unreachable) is logged with its code and retried with
 * exponential backoff; it never stops the agent. Only the policy id and the output path are logged.
 *
 * The sealed file is then watched (polled, default every 2 s): when its content changes (a new
 * secret sealed, or the same secret re-sealed under a new key epoch), it is opened again and the
 * output replaced atomically. An unchanged content is not unsealed again. A change while failing
 * (e.g. a file not there yet, or sealed under a retired epoch) retries at once, backoff reset.
 */
import { createHash } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { TesseraError, isTesseraError } from '../../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../../core/files.js';
import type { Logger } from '../../core/log.js';
import type { Agent } from '../agent.js';
import { KeyServerPool, unsealSealedText } from './unseal.js';

export interface SecretFileSpec { sealedFile: string; outputPath: string }

export interface SecretFilesOptions {
  /** First retry delay (default 1 s); doubles on each failure. */
  initialBackoffMs?: number;
  /** Longest delay between retries (default 5 min). */
  maxBackoffMs?: number;
  /** How often the sealed files are checked for changes (default 2 s; 0 turns watching off). */
  watchIntervalMs?: number;
}

export interface SecretFiles {
  /** Resolves once every file has been written (never, if one keeps failing). */
  readonly done: Promise<void>;
  close(): void;
}

/** `SEALED_FILE=OUTPUT_PATH`, both resolved against the working directory. */
export function parseUnsealSpec(spec: string): SecretFileSpec {
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1) throw new TesseraError('TESSERA_CONFIG_INVALID', '--unseal must be SEALED_FILE=OUTPUT_PATH, e.g. /etc/app/db.sealed=/run/app/db-url');
  return { sealedFile: resolve(spec.slice(0, eq)), outputPath: resolve(spec.slice(eq + 1)) };
}

type SecretAgent = Pick<Agent, 'current' | 'trustedCas' | 'call'>;

export function startSecretFiles(agent: SecretAgent, specs: SecretFileSpec[], log: Logger, opts: SecretFilesOptions = {}): SecretFiles {
  const first = opts.initialBackoffMs ?? 1000;
  const max = opts.maxBackoffMs ?? 5 * 60_000;
  const watchMs = opts.watchIntervalMs ?? 2000;
  const pool = new KeyServerPool();
  /** SHA-256 of the sealed text last written, per sealed file: an unchanged file is not opened again. */
  const opened = new Map<string, string>();
  let closed = false;
  /** A spec's retry wait, which a change of its sealed file (or close) cuts short. */
  const sleeping = new Map<SecretFileSpec, () => void>();
  /** Specs whose wait was cut short by a change: the next retry starts the backoff again. */
  const woken = new Set<SecretFileSpec>();
  const sleep = (ms: number, spec: SecretFileSpec): Promise<void> => new Promise((res) => {
    const wake = (): void => {
      clearTimeout(timer);
      sleeping.delete(spec);
      res();
    };
    const timer = setTimeout(wake, ms);
    sleeping.set(spec, wake);
  });

  async function openOnce(spec: SecretFileSpec): Promise<void> {
    const cur = agent.current();
    if (!cur) throw new TesseraError('TESSERA_CREDENTIAL_MISSING', 'agent has no identity yet');
    let text: string;
    try {
      text = readFileSync(spec.sealedFile, 'utf8');
    } catch {
      throw new TesseraError('TESSERA_SECRET_BLOB_INVALID', `cannot read ${spec.sealedFile}`);
    }
    const digest = createHash('sha256').update(text).digest('hex');
    if (opened.get(spec.sealedFile) === digest) return;
    const res = await unsealSealedText({
      text,
      call: (method, path, body) => agent.call(method, path, body),
      tls: { certPem: cur.certPem, keyPem: cur.key.export({ format: 'pem', type: 'pkcs8' }) as string, bundlePem: cur.bundlePem },
      trustedCas: agent.trustedCas(),
      log,
      pool,
    });
    try {
      if (closed) return;
      ensurePrivateDir(dirname(spec.outputPath));
      writeFileAtomic(spec.outputPath, res.plaintext, 0o600);
    } finally {
      res.plaintext.fill(0);
    }
    const again = opened.has(spec.sealedFile);
    opened.set(spec.sealedFile, digest);
    log.info(again ? 'secret re-opened (the sealed file changed)' : 'secret opened', { policy: res.policyId, epoch: res.epoch, output: spec.outputPath });
  }

  async function loop(spec: SecretFileSpec): Promise<void> {
    let delay = first;
    while (!closed) {
      try {
        await openOnce(spec);
        return;
      } catch (err) {
        if (closed) return;
        const code = isTesseraError(err) ? err.code : 'TESSERA_INTERNAL';
        log.warn('secret unseal failed', { sealed: spec.sealedFile, output: spec.outputPath, code, retry_in_ms: delay });
      }
      await sleep(delay, spec);
      delay = woken.delete(spec) ? first : Math.min(delay * 2, max);
    }
  }

  /** Opens a spec, and again (once more) if its file changes while it is being opened. */
  function watcher(spec: SecretFileSpec): () => Promise<void> {
    let running: Promise<void> | undefined;
    let again = false;
    const run = (): Promise<void> => {
      if (running) {
        again = true;
        // Failing and waiting to retry: the file changed, so try the new content now.
        const wake = sleeping.get(spec);
        if (wake) {
          woken.add(spec);
          wake();
        }
        return running;
      }
      running = (async () => {
        do {
          again = false;
          await loop(spec);
        } while (again && !closed);
      })().finally(() => { running = undefined; });
      return running;
    };
    return run;
  }

  const runs = specs.map((s) => watcher(s));
  const done = Promise.all(runs.map((r) => r())).then(() => {});
  if (watchMs > 0) {
    specs.forEach((s, i) => watchFile(s.sealedFile, { interval: watchMs, persistent: false }, (cur, prev) => {
      if (!closed && (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino)) void runs[i]!();
    }));
  }
  return {
    done,
    close() {
      closed = true;
      if (watchMs > 0) for (const s of specs) unwatchFile(s.sealedFile);
      for (const wake of [...sleeping.values()]) wake();
      pool.close();
    },
  };
}
