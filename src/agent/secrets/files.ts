/**
 * `tessera agent --unseal SEALED_FILE=OUTPUT_PATH`: once the agent has its identity, it opens each
 * sealed file for its app (blind unseal through the key servers, as its SVID) and writes the
 * plaintext to OUTPUT_PATH atomically, mode 0600, in a directory created 0700. A failure (refused,
 * key servers down, control plane unreachable) is logged with its code and retried with
 * exponential backoff; it never stops the agent. Only the policy id and the output path are logged.
 */
import { readFileSync } from 'node:fs';
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
  const pool = new KeyServerPool();
  let closed = false;
  const timers = new Set<{ timer: NodeJS.Timeout; wake: () => void }>();
  const sleep = (ms: number): Promise<void> => new Promise((res) => {
    const entry = { timer: setTimeout(() => { timers.delete(entry); res(); }, ms), wake: res };
    timers.add(entry);
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
    log.info('secret opened', { policy: res.policyId, epoch: res.epoch, output: spec.outputPath });
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
      await sleep(delay);
      delay = Math.min(delay * 2, max);
    }
  }

  const done = Promise.all(specs.map((s) => loop(s))).then(() => {});
  return {
    done,
    close() {
      closed = true;
      for (const t of timers) {
        clearTimeout(t.timer);
        t.wake();
      }
      timers.clear();
      pool.close();
    },
  };
}
