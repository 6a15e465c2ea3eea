/**
 * A client of HAProxy's runtime API (the `stats socket ... level admin` Unix socket, see HAProxy's
 * management guide §9.3): one command per connection, HAProxy answers in text and closes. Used to
 * load SVIDs and the trust bundle (`set ssl cert` + `commit ssl cert`, `set ssl ca-file` +
 * `commit ssl ca-file`, no reload) and to flush the decision cache (`set map`, `clear table`).
 *
 * HAProxy has no status codes on this socket: each command's success has a known shape (an empty
 * answer, "Transaction created", "Success!"), anything else is its error message. Every call has
 * a deadline; a payload never appears in an error (it holds a private key).
 */
import { connect } from 'node:net';
import { TesseraError } from '../../core/errors.js';

export interface RuntimeApiOptions {
  socketPath: string;
  /** Deadline of one command, connect to close (default 5 s). */
  timeoutMs?: number;
}

const MAX_ANSWER = 1 << 20;

export class RuntimeApi {
  readonly #path: string;
  readonly #timeoutMs: number;

  constructor(opts: RuntimeApiOptions) {
    this.#path = opts.socketPath;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
  }

  /**
   * Sends one command (and its multi-line payload, with HAProxy's `<<` syntax) and returns the
   * answer, trailing blank lines removed. TESSERA_UNAVAILABLE when the socket cannot be reached,
   * closes early or the deadline passes.
   */
  raw(command: string, payload?: string): Promise<string> {
    if (/[\r\n]/.test(command)) return Promise.reject(new TesseraError('TESSERA_CONFIG_INVALID', 'a runtime API command is one line'));
    if (payload !== undefined && /\n\s*\n/.test(payload.trim())) return Promise.reject(new TesseraError('TESSERA_CONFIG_INVALID', 'a runtime API payload cannot hold an empty line'));
    const verb = command.split(' ').slice(0, 3).join(' ');
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const fail = (why: string): void => {
        if (settled) return;
        settled = true;
        socket.destroy();
        reject(new TesseraError('TESSERA_UNAVAILABLE', `HAProxy runtime API (${verb}): ${why}`));
      };
      const socket = connect(this.#path);
      const timer = setTimeout(() => fail(`no answer within ${this.#timeoutMs} ms`), this.#timeoutMs);
      socket.on('connect', () => {
        socket.end(payload === undefined ? `${command}\n` : `${command} <<\n${payload.trim()}\n\n`);
      });
      socket.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_ANSWER) fail('answer too large');
        else chunks.push(c);
      });
      socket.on('error', (err: NodeJS.ErrnoException) => fail(err.code ?? 'socket error'));
      socket.on('close', () => {
        clearTimeout(timer);
        if (settled) return;
        settled = true;
        resolve(Buffer.concat(chunks).toString('utf8').replace(/\s+$/, ''));
      });
    });
  }

  /**
   * Keeps one connection open on a streaming command (`show events <ring> -w -n`) and passes every
   * line to `onLine`; `onClose` when HAProxy ends it (its process stopped). Returns the closer.
   */
  stream(command: string, onLine: (line: string) => void, onClose: () => void): () => void {
    const socket = connect(this.#path);
    let partial = '';
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${command}\n`));
    socket.on('data', (text: string) => {
      const parts = (partial + text).split('\n');
      partial = parts.pop() ?? '';
      if (partial.length > MAX_ANSWER) partial = '';
      for (const line of parts) onLine(line);
    });
    socket.on('error', () => {});
    socket.on('close', onClose);
    return () => {
      socket.off('close', onClose);
      socket.destroy();
    };
  }

  /** Runs `command` and checks its answer against `ok`; TESSERA_UNAVAILABLE with HAProxy's text otherwise. */
  async expect(command: string, ok: RegExp, payload?: string): Promise<string> {
    const answer = await this.raw(command, payload);
    if (!ok.test(answer)) {
      const verb = command.split(' ').slice(0, 3).join(' ');
      throw new TesseraError('TESSERA_UNAVAILABLE', `HAProxy refused "${verb}": ${answer.split('\n').slice(0, 3).join(' / ').slice(0, 300) || '(no answer)'}`);
    }
    return answer;
  }

  /** Replaces the certificate (and key) HAProxy loaded from `name`, atomically for new handshakes. */
  async setCertificate(name: string, pem: string): Promise<void> {
    try {
      await this.expect(`set ssl cert ${name}`, /^Transaction (created|updated)/i, pem);
      await this.expect(`commit ssl cert ${name}`, /Success!/);
    } catch (err) {
      await this.raw(`abort ssl cert ${name}`).catch(() => {});
      throw err;
    }
  }

  /** Replaces the CA file HAProxy loaded from `name` (the trust bundle that verifies clients). */
  async setCaFile(name: string, pem: string): Promise<void> {
    try {
      await this.expect(`set ssl ca-file ${name}`, /^Transaction (created|updated)/i, pem);
      await this.expect(`commit ssl ca-file ${name}`, /Success!/);
    } catch (err) {
      await this.raw(`abort ssl ca-file ${name}`).catch(() => {});
      throw err;
    }
  }

  /** Sets `key` to `value` in the map loaded from `map`. */
  async setMap(map: string, key: string, value: string): Promise<void> {
    await this.expect(`set map ${map} ${key} ${value}`, /^$/);
  }

  /** Removes every entry of a stick table. */
  async clearTable(table: string): Promise<void> {
    await this.expect(`clear table ${table}`, /^$/);
  }

  /** Entries in a stick table (its `show table` header's `used:`). */
  async tableUsed(table: string): Promise<number> {
    const answer = await this.expect(`show table ${table}`, /used:\d+/);
    return Number(/used:(\d+)/.exec(answer)![1]);
  }
}
