/**
 * Debian's rsyslogd as a real syslog receiver for the SIEM tests: a config of its own in a temp
 * directory (imtcp, with the gtls driver for TLS), every message written raw to a file, run in the
 * foreground as a child process so that a test can kill and restart it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { parseStructuredData } from '../../src/core/syslog.js';
import { signalChild, waitFor } from './process.js';

export interface RsyslogTls { ca: string; cert: string; key: string }

/**
 * A test PKI made with the openssl CLI: a CA and a server certificate for 127.0.0.1/localhost; the
 * same from a second, unrelated CA (other*); and one from the first CA for another name (misnamed*).
 */
export function makePki(dir: string): { ca: string; cert: string; key: string; otherCa: string; otherCert: string; otherKey: string; misnamedCert: string; misnamedKey: string } {
  mkdirSync(dir, { recursive: true });
  const ssl = (args: string[]): void => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  writeFileSync(join(dir, 'ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  for (const p of ['', 'other-']) {
    ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${p}ca.key`, '-out', `${p}ca.pem`, '-days', '2', '-subj', `/CN=${p}siem-test-ca`]);
    ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${p}server.key`, '-out', `${p}server.csr`, '-subj', '/CN=localhost']);
    ssl(['x509', '-req', '-in', `${p}server.csr`, '-CA', `${p}ca.pem`, '-CAkey', `${p}ca.key`, '-CAcreateserial', '-out', `${p}server.pem`, '-days', '2', '-extfile', 'ext.cnf']);
  }
  writeFileSync(join(dir, 'misnamed.cnf'), 'subjectAltName=DNS:siem.other.example\n');
  ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'misnamed.key', '-out', 'misnamed.csr', '-subj', '/CN=siem.other.example']);
  ssl(['x509', '-req', '-in', 'misnamed.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'misnamed.pem', '-days', '2', '-extfile', 'misnamed.cnf']);
  const f = (n: string): string => join(dir, n);
  return {
    ca: f('ca.pem'), cert: f('server.pem'), key: f('server.key'), otherCa: f('other-ca.pem'), otherCert: f('other-server.pem'), otherKey: f('other-server.key'),
    misnamedCert: f('misnamed.pem'), misnamedKey: f('misnamed.key'),
  };
}

export class Rsyslog {
  child: ChildProcess | undefined;
  output = '';
  readonly file: string;
  private readonly conf: string;

  constructor(readonly dir: string, readonly port: number, tls?: RsyslogTls) {
    mkdirSync(join(dir, 'work'), { recursive: true });
    this.file = join(dir, 'messages.log');
    this.conf = join(dir, 'rsyslog.conf');
    const drivers = tls
      ? `global(DefaultNetstreamDriverCAFile="${tls.ca}" DefaultNetstreamDriverCertFile="${tls.cert}" DefaultNetstreamDriverKeyFile="${tls.key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")`
      : 'module(load="imtcp")';
    // No imuxsock/imklog: nothing but the test's listener; records can be long (maxMessageSize).
    writeFileSync(this.conf, `global(workDirectory="${join(dir, 'work')}" maxMessageSize="64k")
${drivers}
input(type="imtcp" port="${port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
action(type="omfile" file="${this.file}" template="raw")
`);
  }

  /** `rsyslogd -N1`: the config validates. */
  validate(): { status: number | null; output: string } {
    const r = spawnSync('rsyslogd', ['-N1', '-f', this.conf], { encoding: 'utf8' });
    return { status: r.status, output: r.stdout + r.stderr };
  }

  async start(): Promise<void> {
    const child = spawn('rsyslogd', ['-n', '-f', this.conf, '-i', join(this.dir, 'rsyslogd.pid')], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout!.on('data', (d: Buffer) => { this.output += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { this.output += d.toString(); });
    await waitFor('rsyslogd to listen', () => {
      if (child.exitCode !== null) throw new Error(`rsyslogd exited: ${this.output}`);
      return new Promise<boolean>((resolve) => {
        const s = connect(this.port, '127.0.0.1', () => { s.destroy(); resolve(true); });
        s.on('error', () => resolve(false));
      });
    }, 15_000, 100);
  }

  /** SIGTERM (a clean stop: it drains its queues) by default; SIGKILL is a crash. */
  stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    return signalChild(this.child, signal);
  }

  lines(): string[] {
    return existsSync(this.file) ? readFileSync(this.file, 'utf8').split('\n').filter((l) => l !== '') : [];
  }
}

export interface ReceivedRecord { sdId: number; leafHash: string; msgid: string; record: Record<string, unknown>; line: string }

/** Parses one received RFC 5424 line: header, Tessera's SD-ELEMENT, the record's JSON in MSG. */
export function parseReceived(line: string): ReceivedRecord {
  const m = /^<(\d{1,3})>1 (\S+) (\S+) tessera (\S+) (\S+) (.*)$/.exec(line);
  if (!m) throw new Error(`not an RFC 5424 message from tessera: ${line.slice(0, 200)}`);
  const { elements, rest } = parseStructuredData(m[6]!);
  const sd = elements.find((e) => e.id === 'tessera@32473');
  if (!sd || !rest.startsWith(' ')) throw new Error(`no tessera@32473 structured data: ${line.slice(0, 200)}`);
  const param = (n: string): string => sd.params.find(([k]) => k === n)?.[1] ?? '';
  return { sdId: Number(param('id')), leafHash: param('leaf_hash'), msgid: m[5]!, record: JSON.parse(rest.slice(1)) as Record<string, unknown>, line };
}
