import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const DEMO = fileURLToPath(new URL('../dist/demo/main.js', import.meta.url));

describe('npm run demo', () => {
  it('starts a control plane and three agents, shows joins, rotations, a JWT-SVID, allowed and denied calls through sidecars and a live policy change, and stops cleanly', async () => {
    const child = spawn(process.execPath, [DEMO], { env: { ...process.env, DEMO_SECONDS: '16', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
    for (const name of ['frontend', 'orders', 'inventory']) {
      expect(out).toMatch(new RegExp(`${name}\\s+joined → spiffe://tessera.test/shop/${name}`));
      expect(out).toMatch(new RegExp(`${name}\\s+rotated SVID`));
    }
    expect(out).toContain('JWT-SVID for audience "orders-api" verified');
    // The data plane: allowed and denied calls through the sidecars, data residency, a live policy change.
    expect(out).toMatch(/frontend\s+→ orders GET \/orders\/42: 200 allowed \(orders served GET \/orders\/42 for spiffe:\/\/tessera.test\/shop\/frontend\)/);
    expect(out).toMatch(/frontend\s+→ orders POST \/orders: 403 denied \(TESSERA_PROXY_DENIED\)/);
    expect(out).toMatch(/orders\s+sidecar denied spiffe:\/\/tessera.test\/shop\/inventory GET \/orders\/42 by pci-stays-in-site/);
    expect(out).toMatch(/policy diff \(replayed \d+ recorded decisions\): POST \/orders deny→allow/);
    expect(out).toMatch(/POST \/orders allowed \d+ ms after the policy change/);
    expect(out).toContain('stopped cleanly');
    expect(out).not.toMatch(/tjt_[A-Za-z0-9_-]{10}/);
  }, 40_000);
});
