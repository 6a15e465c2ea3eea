/** `tessera server --siem ...`: the SIEM exporter's flags, checked before the server starts. */
import { existsSync, readFileSync } from 'node:fs';
import { TesseraError } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';
import { parseSiemUrl } from '../core/syslog.js';
import type { SiemExporterOptions } from '../server/audit/siem.js';

function pemFile(file: string, flag: string, label: RegExp): string {
  if (!existsSync(file)) throw new TesseraError('TESSERA_CONFIG_INVALID', `${flag}: no file at ${file}`);
  const text = readFileSync(file, 'utf8');
  // Name the flag, never echo the file's content (it may be a key).
  if (!label.test(text)) throw new TesseraError('TESSERA_CONFIG_INVALID', `${flag}: ${file} holds no PEM ${label.source.includes('KEY') ? 'private key' : 'certificate'}`);
  return text;
}

/** The exporter's options from `--siem`, `--siem-ca`, `--siem-cert`, `--siem-key`, `--siem-settle`; undefined without --siem. */
export function siemOptions(o: Record<string, unknown>): SiemExporterOptions | undefined {
  const extra = ['siemCa', 'siemCert', 'siemKey', 'siemSettle'].filter((k) => o[k] !== undefined);
  if (o.siem === undefined) {
    if (extra.length > 0) throw new TesseraError('TESSERA_CONFIG_INVALID', '--siem-ca, --siem-cert, --siem-key and --siem-settle need --siem');
    return undefined;
  }
  const target = parseSiemUrl(String(o.siem));
  if (target.transport === 'tcp' && ['siemCa', 'siemCert', 'siemKey'].some((k) => o[k] !== undefined)) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', '--siem-ca, --siem-cert and --siem-key are for syslog+tls:// only');
  }
  if ((o.siemCert === undefined) !== (o.siemKey === undefined)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--siem-cert and --siem-key go together');
  const CERT = /-----BEGIN CERTIFICATE-----/;
  const KEY = /-----BEGIN (?:EC |RSA )?PRIVATE KEY-----/;
  const settleMs = o.siemSettle === undefined ? undefined : parseDuration(String(o.siemSettle), '--siem-settle');
  if (settleMs !== undefined && (settleMs < 500 || settleMs > 600_000)) throw new TesseraError('TESSERA_CONFIG_INVALID', '--siem-settle must be from 500ms to 10m');
  return {
    target,
    ...(o.siemCa !== undefined ? { ca: pemFile(String(o.siemCa), '--siem-ca', CERT) } : {}),
    ...(o.siemCert !== undefined ? { cert: pemFile(String(o.siemCert), '--siem-cert', CERT), key: pemFile(String(o.siemKey), '--siem-key', KEY) } : {}),
    ...(settleMs !== undefined ? { settleMs } : {}),
  };
}
