import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TesseraError } from '../core/errors.js';
import { writeFileAtomic } from '../core/files.js';

const VERSION = 1;

/**
 * The key-encryption key that seals CA and JWT signing keys at rest (AES-256-GCM, the record id as
 * associated data so a sealed key cannot be swapped between records).
 *
 * Source, in order: `TESSERA_KEK` (32 bytes as 64 hex chars or base64), else `<dataDir>/kek.key`
 * (created 0600 on first start).
 */
export class KeyEncryptionKey {
  private constructor(private readonly key: Buffer, readonly source: 'env' | 'file') {}

  static load(dataDir: string, env: NodeJS.ProcessEnv = process.env): KeyEncryptionKey {
    const fromEnv = env.TESSERA_KEK;
    if (fromEnv !== undefined && fromEnv !== '') {
      return new KeyEncryptionKey(decodeKek(fromEnv), 'env');
    }
    const file = join(dataDir, 'kek.key');
    if (!existsSync(file)) {
      writeFileAtomic(file, `${randomBytes(32).toString('hex')}\n`, 0o600);
    } else if ((statSync(file).mode & 0o077) !== 0) {
      throw new TesseraError('TESSERA_CONFIG_INVALID', `${file} must not be readable by group or others (chmod 600)`);
    }
    return new KeyEncryptionKey(decodeKek(readFileSync(file, 'utf8').trim()), 'file');
  }

  seal(plain: Buffer, aad: string): Buffer {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', this.key, iv);
    c.setAAD(Buffer.from(aad));
    const body = Buffer.concat([c.update(plain), c.final()]);
    return Buffer.concat([Buffer.of(VERSION), iv, c.getAuthTag(), body]);
  }

  open(sealed: Buffer, aad: string): Buffer {
    try {
      if (sealed[0] !== VERSION || sealed.length < 29) throw new Error('format');
      const d = createDecipheriv('aes-256-gcm', this.key, sealed.subarray(1, 13));
      d.setAAD(Buffer.from(aad));
      d.setAuthTag(sealed.subarray(13, 29));
      return Buffer.concat([d.update(sealed.subarray(29)), d.final()]);
    } catch (cause) {
      throw new TesseraError('TESSERA_KEK_INVALID', undefined, { cause });
    }
  }
}

function decodeKek(text: string): Buffer {
  const key = /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (key.length !== 32) {
    throw new TesseraError('TESSERA_CONFIG_INVALID', 'the key-encryption key must be 32 bytes (64 hex characters or base64)');
  }
  return key;
}
