/**
 * Syslog for the SIEM exporter (issue 10): the `--siem` URL, RFC 5424 messages and octet-counted
 * framing (RFC 6587 §3.4.1, the only framing RFC 5425 §4.3 allows over TLS). Pure: no I/O.
 */
import { isIP } from 'node:net';
import { TesseraError } from './errors.js';

export interface SiemTarget {
  transport: 'tls' | 'tcp';
  host: string;
  port: number;
}

const HOST_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Parses `syslog+tls://HOST:PORT` or `syslog+tcp://HOST:PORT` strictly: a DNS name, an IPv4
 * address or a bracketed IPv6 address, a port from 1 to 65535, nothing else (no user, path, query).
 *
 * @example parseSiemUrl('syslog+tls://siem.example.org:6514') // { transport: 'tls', host: 'siem.example.org', port: 6514 }
 * @throws TesseraError TESSERA_CONFIG_INVALID
 */
export function parseSiemUrl(text: string): SiemTarget {
  const bad = (why: string): TesseraError => new TesseraError('TESSERA_CONFIG_INVALID', `--siem ${why}: expected syslog+tls://HOST:PORT or syslog+tcp://HOST:PORT`);
  const m = /^syslog\+(tls|tcp):\/\/(\[[^\]]*\]|[^:/?#@[\]]*):([0-9]{1,5})$/.exec(text);
  if (!m) throw bad('is not a syslog URL');
  const port = Number(m[3]);
  if (port < 1 || port > 65535 || m[3]!.startsWith('0')) throw bad('has a port outside 1-65535');
  let host = m[2]!;
  if (host.startsWith('[')) {
    host = host.slice(1, -1);
    if (isIP(host) !== 6) throw bad('has a bracketed host that is not an IPv6 address');
  } else if (isIP(host) !== 4) {
    const labels = host.replace(/\.$/, '').split('.');
    // An all-digit last label would be a malformed IPv4 address, not a name.
    if (host.length === 0 || host.length > 253 || !labels.every((l) => HOST_LABEL.test(l)) || /^[0-9]+$/.test(labels[labels.length - 1]!)) throw bad('has an invalid host name');
  }
  return { transport: m[1] as 'tls' | 'tcp', host, port };
}

/**
 * Escapes an SD-PARAM value (RFC 5424 §6.3.3): `"`, `\` and `]` are preceded by a backslash;
 * nothing else is changed.
 */
export function escapeSdParam(value: string): string {
  return value.replace(/["\\\]]/g, (c) => `\\${c}`);
}

/**
 * Undoes {@link escapeSdParam}. RFC 5424 §6.3.3: a backslash before any other character is kept
 * as is (both characters).
 */
export function unescapeSdParam(value: string): string {
  return value.replace(/\\(["\\\]])/g, '$1');
}

/** SD-NAME (RFC 5424 §6.3.2/6.3.3): 1–32 printable US-ASCII characters except `=`, space, `]` and `"`. */
const SD_NAME = /^[!#-<>-\\^-~]{1,32}$/;

/** One SD-ELEMENT: `[SD-ID name="value" ...]`, values escaped. */
export function formatSdElement(id: string, params: ReadonlyArray<readonly [string, string]>): string {
  const names = [id.replace(/@.*$/, ''), ...params.map(([n]) => n)];
  if (!SD_NAME.test(id) || !names.every((n) => SD_NAME.test(n) && !n.includes('@'))) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', 'invalid structured-data name');
  }
  return `[${id}${params.map(([n, v]) => ` ${n}="${escapeSdParam(v)}"`).join('')}]`;
}

/**
 * Parses the STRUCTURED-DATA at the start of `text` (RFC 5424 §6.3): `-`, or one or more
 * SD-ELEMENTs. Returns the elements (values unescaped) and the rest of the text after them.
 * Throws TESSERA_BAD_REQUEST when it is malformed. (Tests and receivers use it; the exporter only writes.)
 */
export function parseStructuredData(text: string): { elements: { id: string; params: [string, string][] }[]; rest: string } {
  const fail = (why: string): TesseraError => new TesseraError('TESSERA_BAD_REQUEST', `structured data: ${why}`);
  if (text.startsWith('-')) return { elements: [], rest: text.slice(1) };
  const elements: { id: string; params: [string, string][] }[] = [];
  let i = 0;
  const name = (): string => {
    const start = i;
    while (i < text.length && !'= ]"'.includes(text[i]!)) i++;
    const n = text.slice(start, i);
    if (!SD_NAME.test(n.replace(/@.*$/, '')) || n.length > 32) throw fail(`bad name at ${start}`);
    return n;
  };
  while (text[i] === '[') {
    i++;
    const el = { id: name(), params: [] as [string, string][] };
    while (text[i] === ' ') {
      i++;
      const n = name();
      if (text.slice(i, i + 2) !== '="') throw fail(`expected =" at ${i}`);
      i += 2;
      let raw = '';
      for (;;) {
        const c = text[i];
        if (c === undefined) throw fail('unterminated value');
        if (c === '\\' && i + 1 < text.length) { raw += c + text[i + 1]!; i += 2; continue; }
        if (c === '"') break;
        if (c === ']') throw fail(`unescaped ] at ${i}`);
        raw += c;
        i++;
      }
      i++;
      el.params.push([n, unescapeSdParam(raw)]);
    }
    if (text[i] !== ']') throw fail(`expected ] at ${i}`);
    i++;
    elements.push(el);
  }
  if (elements.length === 0) throw fail('expected - or [');
  return { elements, rest: text.slice(i) };
}

/** RFC 5424 facility 13, "log audit"; severities 6 (informational) and 5 (notice). */
const FACILITY_LOG_AUDIT = 13;

export interface SyslogFields {
  /** Milliseconds since the epoch. */
  ts: number;
  hostname: string;
  procid: number | string;
  msgid: string;
  /** Severity 0–7 (RFC 5424 §6.2.1). */
  severity: number;
  /** The SD-ELEMENTs, already formatted (formatSdElement). */
  structuredData: string;
  /** MSG: sent as is; keep it US-ASCII (no BOM is written, RFC 5424 §6.4 MSG-ANY). */
  msg: string;
}

/** A header field: printable US-ASCII (33–126) only, cut to `max`, `-` (NILVALUE) when empty. */
function headerField(value: string, max: number): string {
  const v = value.replace(/[^!-~]/g, '').slice(0, max);
  return v === '' ? '-' : v;
}

/**
 * One RFC 5424 message (§6): `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`, APP-NAME `tessera`.
 */
export function formatSyslog5424(f: SyslogFields): string {
  const pri = FACILITY_LOG_AUDIT * 8 + f.severity;
  return `<${pri}>1 ${new Date(f.ts).toISOString()} ${headerField(f.hostname, 255)} tessera ${headerField(String(f.procid), 128)} ${headerField(f.msgid, 32)} ${f.structuredData} ${f.msg}`;
}

export const SEVERITY = { notice: 5, informational: 6 } as const;

/** Octet-counted framing (RFC 6587 §3.4.1, RFC 5425 §4.3): `MSG-LEN SP SYSLOG-MSG`, MSG-LEN in octets. */
export function frameOctetCounted(message: string): Buffer {
  const body = Buffer.from(message, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length} `, 'ascii'), body]);
}

/**
 * Splits an octet-counted stream back into messages (for tests and receivers). Feed it chunks as
 * they arrive; it keeps an incomplete tail. Throws TESSERA_BAD_REQUEST on a malformed length
 * (not NONZERO-DIGIT *DIGIT followed by a space) or one above `maxLength`.
 */
export class OctetCountedDecoder {
  private buf: Buffer = Buffer.alloc(0);

  constructor(private readonly maxLength = 1 << 20) {}

  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Buffer[] = [];
    for (;;) {
      const sp = this.buf.indexOf(0x20);
      const digits = this.buf.subarray(0, sp === -1 ? Math.min(this.buf.length, 11) : sp).toString('latin1');
      if (!/^[1-9][0-9]*$/.test(digits) && !(sp === -1 && digits === '')) {
        throw new TesseraError('TESSERA_BAD_REQUEST', 'octet counting: a frame must start with a length (NONZERO-DIGIT *DIGIT) and a space');
      }
      if (sp === -1) {
        if (digits.length > 10) throw new TesseraError('TESSERA_BAD_REQUEST', 'octet counting: length too long');
        return out;
      }
      const len = Number(digits);
      if (len > this.maxLength) throw new TesseraError('TESSERA_BAD_REQUEST', `octet counting: frame of ${len} octets exceeds ${this.maxLength}`);
      if (this.buf.length < sp + 1 + len) return out;
      out.push(this.buf.subarray(sp + 1, sp + 1 + len));
      this.buf = this.buf.subarray(sp + 1 + len);
    }
  }

  /** Octets received but not yet a whole frame. */
  get pending(): number {
    return this.buf.length;
  }
}
