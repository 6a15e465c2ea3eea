import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { isTesseraError } from '../../core/errors.js';
import { loadNodeConfig, parseNodeConfig } from './config.js';

const ID = 'spiffe://td.test/shop/payments';
const TOKEN = 'tkn_SECRET-join-token-0123456789';

function good(): Record<string, unknown> {
  return {
    workload_api_socket: '/run/tessera/agent.sock',
    workloads: [
      { name: 'orders', join_token: TOKEN, inbound: { listen: '127.0.0.1:8443', app: '127.0.0.1:8080', mode: 'http', allow: 'semicolon' },
        outbounds: [`unix:/run/tessera/orders-pay.sock=127.0.0.1:9443@${ID}`, `127.0.0.1:7001=127.0.0.1:9443@${ID}`], unseal: ['/etc/orders/db.sealed=/run/orders/db-url'] },
      { name: 'payments', inbound: { listen: '127.0.0.1:9443', app: '127.0.0.1:9080', mode: 'tcp' } },
      { name: 'batch-1', outbounds: [`127.0.0.1:0=127.0.0.1:9443@${ID}`, `127.0.0.1:0=127.0.0.1:9443@${ID}`] },
    ],
  };
}

/** The config error for `c` (JSON text, or a value to stringify). */
function refusal(c: unknown): string {
  try {
    parseNodeConfig(typeof c === 'string' ? c : JSON.stringify(c));
  } catch (err) {
    if (!isTesseraError(err)) throw err;
    expect(err.code).toBe('TESSERA_CONFIG_INVALID');
    expect(err.message).not.toContain(TOKEN);
    return err.message;
  }
  throw new Error('accepted');
}

function edit(f: (c: { workload_api_socket?: unknown; workloads: Record<string, unknown>[] }) => void): unknown {
  const c = good() as { workloads: Record<string, unknown>[] };
  f(c);
  return c;
}

describe('node config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tessera-node-config-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('parses every field the per-workload flags take', () => {
    const c = parseNodeConfig(JSON.stringify(good()));
    expect(c.workloadApiSocket).toBe('/run/tessera/agent.sock');
    expect(c.workloads.map((w) => w.name)).toEqual(['orders', 'payments', 'batch-1']);
    const [orders, payments, batch] = c.workloads;
    expect(orders).toMatchObject({
      joinToken: TOKEN,
      inbound: { listen: { host: '127.0.0.1', port: 8443 }, app: { host: '127.0.0.1', port: 8080 }, mode: 'http', allowPath: { semicolon: true } },
      outbounds: [{ listen: { path: '/run/tessera/orders-pay.sock' }, upstream: { host: '127.0.0.1', port: 9443, expectedId: ID } }, { listen: { host: '127.0.0.1', port: 7001 } }],
      unseal: [{ sealedFile: '/etc/orders/db.sealed', outputPath: '/run/orders/db-url' }],
    });
    expect(payments!.inbound!.mode).toBe('tcp');
    expect(payments!.joinToken).toBeUndefined();
    expect(batch!.inbound).toBeUndefined();
    expect(batch!.outbounds).toHaveLength(2); // port 0 twice: two free ports, no clash
  });

  it('refuses each malformed value, naming where it is', () => {
    const cases: [unknown, RegExp][] = [
      ['{"workloads": [', /not valid JSON/],
      [`{"workloads": [{"name": "a", "join_token": "${TOKEN}"`, /not valid JSON/],
      [[], /top level must be an object/],
      [{}, /workloads must be a list of 1 to 1000/],
      [{ workloads: [] }, /workloads must be a list/],
      [{ workloads: [{ name: 'a' }], extra: 1 }, /top level has an unknown key "extra"/],
      [edit((c) => { c.workloads[1]!.nmae = 'x'; }), /workloads\[1\] has an unknown key "nmae"/],
      [edit((c) => { c.workloads[1]!.name = 'Bad Name'; }), /workloads\[1\]\.name must be/],
      [edit((c) => { c.workloads[1]!.name = '../etc'; }), /workloads\[1\]\.name must be/],
      [edit((c) => { delete c.workloads[1]!.name; }), /workloads\[1\]\.name must be a non-empty string/],
      [edit((c) => { c.workloads[2]!.name = 'orders'; }), /workloads\[2\]\.name uses the same name as workloads\[0\]\.name/],
      [edit((c) => { c.workloads[0]!.join_token_file = '/etc/t'; }), /takes join_token or join_token_file, not both/],
      [edit((c) => { c.workloads[0]!.join_token = 'has space'; }), /join_token must be a join token/],
      [edit((c) => { c.workloads[0]!.join_token = 42; }), /join_token must be a join token/],
      [edit((c) => { c.workloads[1]!.join_token_file = 'relative/t'; }), /join_token_file must be an absolute path/],
      [edit((c) => { c.workloads[1]!.inbound = { listen: '127.0.0.1:9443' }; }), /workloads\[1\]\.inbound\.app is invalid: app HOST:PORT is required/],
      [edit((c) => { c.workloads[1]!.inbound = { listen: 'nowhere', app: '127.0.0.1:1' }; }), /inbound\.listen is invalid: listen must be HOST:PORT/],
      [edit((c) => { c.workloads[1]!.inbound = { listen: '127.0.0.1:70000', app: '127.0.0.1:1' }; }), /inbound\.listen is invalid/],
      [edit((c) => { c.workloads[1]!.inbound = { listen: '127.0.0.1:1', app: '127.0.0.1:2', mode: 'udp' }; }), /inbound\.mode must be "http" or "tcp"/],
      [edit((c) => { c.workloads[1]!.inbound = { listen: '127.0.0.1:1', app: '127.0.0.1:2', allow: 'everything' }; }), /inbound\.allow is invalid/],
      [edit((c) => { c.workloads[1]!.inbound = { listen: '127.0.0.1:1', app: '127.0.0.1:2', port: 3 }; }), /inbound has an unknown key "port"/],
      [edit((c) => { c.workloads[1]!.inbound = '127.0.0.1:1'; }), /inbound must be an object/],
      [edit((c) => { c.workloads[1]!.inbound = { listen: '127.0.0.1:8443', app: '127.0.0.1:2' }; }), /workloads\[1\]\.inbound\.listen uses the same port as workloads\[0\]\.inbound\.listen/],
      [edit((c) => { c.workloads[2]!.outbounds = [`127.0.0.1:8443=127.0.0.1:1@${ID}`]; }), /workloads\[2\]\.outbounds\[0\] uses the same port as workloads\[0\]\.inbound\.listen/],
      [edit((c) => { c.workloads[2]!.outbounds = [`unix:/run/tessera/agent.sock=127.0.0.1:1@${ID}`]; }), /outbounds\[0\] uses the same socket path as workload_api_socket/],
      [edit((c) => { c.workloads[2]!.outbounds = [`unix:run/x.sock=127.0.0.1:1@${ID}`]; }), /outbounds\[0\] is invalid: outbound unix:PATH needs an absolute path/],
      [edit((c) => { c.workloads[2]!.outbounds = ['127.0.0.1:1=127.0.0.1:2']; }), /outbounds\[0\] is invalid: outbound must be LISTEN=TARGET@SPIFFE_ID/],
      [edit((c) => { c.workloads[2]!.outbounds = ['127.0.0.1:1=127.0.0.1:2@spiffe://BAD ID/x']; }), /outbounds\[0\] is invalid/],
      [edit((c) => { c.workloads[2]!.outbounds = 'x'; }), /outbounds must be a list/],
      [edit((c) => { c.workloads[2]!.outbounds = Array(65).fill(`127.0.0.1:0=127.0.0.1:1@${ID}`); }), /outbounds must be a list of at most 64/],
      [edit((c) => { c.workloads[2]!.unseal = ['/a.sealed']; }), /unseal\[0\] must be SEALED_FILE=OUTPUT_PATH/],
      [edit((c) => { c.workloads[2]!.unseal = ['a.sealed=/out']; }), /unseal\[0\] \(sealed file\) must be an absolute path/],
      [edit((c) => { c.workloads[2]!.unseal = ['/b.sealed=/run/orders/db-url']; }), /workloads\[2\]\.unseal\[0\] uses the same output path as workloads\[0\]\.unseal\[0\]/],
      [edit((c) => { c.workload_api_socket = 'agent.sock'; }), /workload_api_socket must be an absolute path/],
      [{ workloads: Array.from({ length: 1001 }, (_, i) => ({ name: `w${i}` })) }, /workloads must be a list of 1 to 1000/],
    ];
    for (const [c, re] of cases) expect(refusal(c), JSON.stringify(c).slice(0, 200)).toMatch(re);
  });

  it('never echoes a join token, even in a broken file', () => {
    expect(refusal(`{"workloads": [{"name": "a", "join_token": "${TOKEN}" "x": 1}]}`)).toMatch(/not valid JSON \(at character \d+\)/);
    expect(refusal(edit((c) => { c.workloads[0]!.join_token = `${TOKEN} ${TOKEN}`; }))).toMatch(/join_token must be/);
  });

  it('any JSON value or text: parsed, or refused with TESSERA_CONFIG_INVALID (never another error)', () => {
    const json = fc.jsonValue({ maxDepth: 5 });
    const workloadish = fc.record({
      name: fc.oneof(fc.constantFrom('a', 'orders', 'b-2'), fc.string()),
      join_token: fc.oneof(fc.constant(TOKEN), json),
      inbound: fc.oneof(fc.record({ listen: fc.oneof(fc.constantFrom('127.0.0.1:0', '[::1]:80', ':1', '1.2.3.4:99999'), fc.string()), app: fc.oneof(fc.constant('127.0.0.1:1'), json), mode: fc.oneof(fc.constantFrom('http', 'tcp'), json) }, { requiredKeys: [] }), json),
      outbounds: fc.oneof(fc.array(fc.oneof(fc.constantFrom(`127.0.0.1:0=127.0.0.1:1@${ID}`, `unix:/x=a:1@${ID}`, 'a=b@spiffe://'), fc.string(), json), { maxLength: 3 }), json),
      unseal: fc.oneof(fc.array(fc.oneof(fc.constantFrom('/a=/b', '=/b', '/a='), fc.string()), { maxLength: 3 }), json),
    }, { requiredKeys: [] });
    const configs = fc.oneof(json, fc.record({ workloads: fc.oneof(fc.array(workloadish, { maxLength: 4 }), json), workload_api_socket: fc.oneof(fc.constantFrom('/s', 'rel'), json) }, { requiredKeys: [] }));
    fc.assert(fc.property(fc.oneof(configs.map((c) => JSON.stringify(c) ?? 'null'), fc.string()), (text) => {
      try {
        const c = parseNodeConfig(text);
        // Accepted: the invariants the node relies on hold.
        expect(c.workloads.length).toBeGreaterThan(0);
        expect(new Set(c.workloads.map((w) => w.name)).size).toBe(c.workloads.length);
      } catch (err) {
        if (!isTesseraError(err) || err.code !== 'TESSERA_CONFIG_INVALID') throw err;
        expect(err.message).not.toContain(TOKEN);
      }
    }), { numRuns: 2000 });
  });

  it('loads a file, reading each join_token_file; a missing or bad token file is refused', () => {
    const tokenFile = join(dir, 'orders.token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const file = join(dir, 'node.json');
    const cfg = good() as { workloads: Record<string, unknown>[] };
    delete cfg.workloads[0]!.join_token;
    cfg.workloads[0]!.join_token_file = tokenFile;
    writeFileSync(file, JSON.stringify(cfg));
    expect(loadNodeConfig(file).workloads[0]!.joinToken).toBe(TOKEN);

    cfg.workloads[0]!.join_token_file = join(dir, 'missing.token');
    writeFileSync(file, JSON.stringify(cfg));
    expect(() => loadNodeConfig(file)).toThrow(/workloads\[0\]\.join_token_file cannot be read \(ENOENT\)/);
    writeFileSync(tokenFile, '');
    cfg.workloads[0]!.join_token_file = tokenFile;
    writeFileSync(file, JSON.stringify(cfg));
    expect(() => loadNodeConfig(file)).toThrow(/join_token_file \(its content\) must be a join token/);
    expect(() => loadNodeConfig(join(dir, 'nope.json'))).toThrow(/cannot read the node config .*nope\.json: ENOENT/);
    writeFileSync(file, ' '.repeat(1024 * 1024 + 1));
    expect(() => loadNodeConfig(file)).toThrow(/larger than 1 MiB/);
  });

  it('a file holding a join token must be private (0600): the config with an inline token, and each token file', () => {
    const file = join(dir, 'inline.json');
    writeFileSync(file, JSON.stringify(good()), { mode: 0o644 });
    chmodSync(file, 0o644);
    expect(() => loadNodeConfig(file)).toThrow(/node config .*inline\.json holds a join token and is readable by other users \(mode 0644\): chmod 600 it/);
    chmodSync(file, 0o600);
    expect(loadNodeConfig(file).workloads[0]!.joinToken).toBe(TOKEN);
    const tokenFile = join(dir, 'open.token');
    writeFileSync(tokenFile, TOKEN);
    chmodSync(tokenFile, 0o640);
    const cfg = good() as { workloads: Record<string, unknown>[] };
    delete cfg.workloads[0]!.join_token;
    cfg.workloads[0]!.join_token_file = tokenFile;
    const file2 = join(dir, 'by-file.json');
    writeFileSync(file2, JSON.stringify(cfg), { mode: 0o644 });
    expect(() => loadNodeConfig(file2)).toThrow(/workloads\[0\]\.join_token_file holds a join token and is readable by other users \(mode 0640\)/);
  });
});
