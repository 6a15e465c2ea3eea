import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../../core/errors.js';
import { ensurePrivateDir, writeFileAtomic } from '../../core/files.js';
import type { EntryView } from '../../core/wire/control-plane.js';

/** What the agent keeps on disk so that it survives its own restarts and control-plane outages. */
export interface AgentState {
  spiffeId: string;
  trustDomain: string;
  serverUrl: string;
  bundleSequence: number;
  /** SHA-256 reference of the join token that was spent, so a restart with the same flag does not retry it. */
  joinTokenHash?: string;
  /** The registration entry, as the last join or renewal answered it. */
  entry?: EntryView;
}

export interface Svid {
  spiffeId: string;
  certPem: string;
  key: KeyObject;
  notBefore: number;
  notAfter: number;
  serial: string;
}

export const FILES = {
  svid: 'svid.pem',
  key: 'svid.key',
  bundle: 'bundle.pem',
  state: 'agent.json',
} as const;

/** Reads and writes the agent's files: every write is atomic (temp file + rename), keys 0600. */
export class StateDir {
  constructor(readonly dir: string) {
    ensurePrivateDir(dir);
  }

  path(name: keyof typeof FILES): string {
    return join(this.dir, FILES[name]);
  }

  readState(): AgentState | undefined {
    if (!existsSync(this.path('state'))) return undefined;
    try {
      return JSON.parse(readFileSync(this.path('state'), 'utf8')) as AgentState;
    } catch {
      throw new TesseraError('TESSERA_CREDENTIAL_MISSING', `${this.path('state')} is unreadable; remove the data directory and join again`);
    }
  }

  readSvid(spiffeId: string): Svid | undefined {
    if (!existsSync(this.path('svid')) || !existsSync(this.path('key'))) return undefined;
    const certPem = readFileSync(this.path('svid'), 'utf8');
    const key = createPrivateKey(readFileSync(this.path('key')));
    const cert = new X509Certificate(certPem);
    if (!cert.checkPrivateKey(key)) return undefined;
    return { spiffeId, certPem, key, notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo), serial: cert.serialNumber };
  }

  readBundle(): string | undefined {
    return existsSync(this.path('bundle')) ? readFileSync(this.path('bundle'), 'utf8') : undefined;
  }

  /**
   * Writes the key before the certificate: a legacy app that reloads on the certificate's change
   * then finds the matching key already in place.
   */
  writeSvid(svid: Svid): void {
    writeFileAtomic(this.path('key'), svid.key.export({ format: 'pem', type: 'pkcs8' }) as string, 0o600);
    writeFileAtomic(this.path('svid'), svid.certPem, 0o644);
  }

  writeBundle(pem: string): void {
    writeFileAtomic(this.path('bundle'), pem, 0o644);
  }

  writeState(state: AgentState): void {
    writeFileAtomic(this.path('state'), `${JSON.stringify(state, null, 2)}\n`, 0o600);
  }
}
