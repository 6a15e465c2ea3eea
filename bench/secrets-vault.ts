/**
 * The central-vault baseline of bench/secrets.ts, as its own process: one HTTPS endpoint with mutual
 * TLS (a key server's SVID, the trust bundle, client certificates required) holding an AES-256-GCM
 * key made at start and never written out.
 *
 *   node dist/bench/secrets-vault.js --cert SVID.pem --key SVID.key --ca BUNDLE.pem
 *
 *   POST /encrypt {plaintext}        → {iv, ct, tag}     (setup: the bench seals its test value once)
 *   POST /decrypt {iv, ct, tag}      → {plaintext}       (measured)
 *
 * Binary fields base64url. Listens on 127.0.0.1, an ephemeral port, and prints one JSON line
 * `{"msg":"vault listening","port":N}`. Exits on SIGTERM or SIGINT, and when its stdin closes (the
 * bench is gone).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';

function arg(name: string): string {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (!v) {
    process.stderr.write(`bench/secrets-vault: ${name} FILE is required\n`);
    process.exit(2);
  }
  return v;
}

const aesKey = randomBytes(32);
const b64 = (s: unknown): Buffer => Buffer.from(String(s), 'base64url');

function handle(path: string | undefined, body: Record<string, unknown>): Record<string, string> {
  if (path === '/encrypt') {
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', aesKey, iv);
    const ct = Buffer.concat([c.update(b64(body.plaintext)), c.final()]);
    return { iv: iv.toString('base64url'), ct: ct.toString('base64url'), tag: c.getAuthTag().toString('base64url') };
  }
  if (path === '/decrypt') {
    const d = createDecipheriv('aes-256-gcm', aesKey, b64(body.iv));
    d.setAuthTag(b64(body.tag));
    const out = Buffer.concat([d.update(b64(body.ct)), d.final()]);
    return { plaintext: out.toString('base64url') };
  }
  throw new Error('not found');
}

const server: Server = createServer({
  cert: readFileSync(arg('--cert'), 'utf8'), key: readFileSync(arg('--key'), 'utf8'), ca: readFileSync(arg('--ca'), 'utf8'),
  requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', keepAliveTimeout: 60_000,
}, (req, res) => {
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size <= 64 * 1024) chunks.push(c);
  });
  req.on('end', () => {
    try {
      if (req.method !== 'POST' || size > 64 * 1024) throw new Error('refused');
      const payload = Buffer.from(JSON.stringify(handle(req.url, JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>)));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': payload.length }).end(payload);
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":{"code":"TESSERA_SECRET_BLOB_INVALID"}}');
    }
  });
});

let stopping = false;
function stop(): void {
  if (stopping) return;
  stopping = true;
  server.closeAllConnections();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop).on('close', stop).on('error', stop).resume();

server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ msg: 'vault listening', port: (server.address() as { port: number }).port })}\n`);
});
