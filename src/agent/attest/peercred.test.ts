import { expectTesseraError } from '../../../test/support/expect.js';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertPeerCredentialsAvailable, peerCredentialsOf, peerCredentialsOfFd, type PeerCredentials } from './peercred.js';

let dir: string;
let n = 0;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'tpc-'));
  chmodSync(dir, 0o755); // so that a client running as another user can reach the socket
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Listens on a fresh socket, runs `connect`, and returns the credentials read from the accepted socket. */
async function credentialsOfNextConnection(connect: (path: string) => Promise<void> | void): Promise<PeerCredentials> {
  const path = join(dir, `s${n++}.sock`);
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(path, r));
  chmodSync(path, 0o666);
  try {
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    await connect(path);
    const [socket] = await accepted;
    try {
      return peerCredentialsOf(socket);
    } finally {
      socket.destroy();
    }
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}

function expectUnavailable(fn: () => unknown): void {
  expectTesseraError(fn, 'TESSERA_PEER_CREDENTIALS_UNAVAILABLE');
}

/** A child Node process that connects to `path` and stays connected until killed. */
async function connectFromChild(path: string, ids?: { uid: number; gid: number }): Promise<{ pid: number; kill: () => void }> {
  const child = spawn(process.execPath, ['-e', `const c = require('net').connect(${JSON.stringify(path)}, () => console.log('connected')); setInterval(() => {}, 1000);`], {
    stdio: ['ignore', 'pipe', 'inherit'],
    ...(ids ?? {}),
  });
  await once(child.stdout!, 'data');
  return { pid: child.pid!, kill: () => child.kill('SIGKILL') };
}

describe('peer credentials (SO_PEERCRED)', () => {
  it('the native addon is built and loads', () => {
    expect(() => assertPeerCredentialsAvailable()).not.toThrow();
  });

  it('reports this process for a connection from this process', async () => {
    const creds = await credentialsOfNextConnection((path) => {
      const c = net.connect(path);
      c.on('error', () => {});
      c.on('connect', () => c.destroy());
    });
    expect(creds).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
  });

  it('reports the connecting process, not ours', async () => {
    let child: { pid: number; kill: () => void } | undefined;
    const creds = await credentialsOfNextConnection(async (path) => {
      child = await connectFromChild(path);
    });
    child!.kill();
    expect(creds.pid).toBe(child!.pid);
    expect(creds.pid).not.toBe(process.pid);
  });

  it.skipIf(process.getuid?.() !== 0)('reports the uid and gid of a process running as another user', async () => {
    let child: { pid: number; kill: () => void } | undefined;
    const creds = await credentialsOfNextConnection(async (path) => {
      child = await connectFromChild(path, { uid: 65534, gid: 65534 });
    });
    child!.kill();
    expect(creds).toEqual({ pid: child!.pid, uid: 65534, gid: 65534 });
  });

  it('fails closed on descriptors that are not connected Unix stream sockets', async () => {
    // A regular file.
    const fd = openSync(join(dir, 'file'), 'w');
    try {
      expectUnavailable(() => peerCredentialsOfFd(fd));
    } finally {
      closeSync(fd);
    }
    // Not a descriptor at all, or a negative / fractional number.
    expectUnavailable(() => peerCredentialsOfFd(1_000_000));
    expectUnavailable(() => peerCredentialsOfFd(-1));
    expectUnavailable(() => peerCredentialsOfFd(1.5));

    // A TCP connection has no peer credentials.
    const tcp = net.createServer();
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    try {
      const accepted = once(tcp, 'connection') as Promise<[net.Socket]>;
      const port = (tcp.address() as net.AddressInfo).port;
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      const [socket] = await accepted;
      expectUnavailable(() => peerCredentialsOf(socket));
      socket.destroy();
      c.destroy();
    } finally {
      await new Promise<void>((r) => tcp.close(() => r()));
    }
  });

  it('fails closed on a socket that is already closed', async () => {
    const path = join(dir, `s${n++}.sock`);
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const accepted = once(server, 'connection') as Promise<[net.Socket]>;
      const c = net.connect(path);
      c.on('error', () => {});
      const [socket] = await accepted;
      socket.destroy();
      c.destroy();
      expectUnavailable(() => peerCredentialsOf(socket));
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('costs a few microseconds per connection', async () => {
    const path = join(dir, `s${n++}.sock`);
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(path, r));
    try {
      const accepted = once(server, 'connection') as Promise<[net.Socket]>;
      const c = net.connect(path);
      c.on('error', () => {});
      const [socket] = await accepted;
      const rounds = 20_000;
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < rounds; i++) peerCredentialsOf(socket);
      const perCallUs = Number(process.hrtime.bigint() - t0) / rounds / 1000;
      // Measured ≈ 2 µs here (three getsockopt calls); the bound only catches a pathological regression.
      expect(perCallUs).toBeLessThan(100);
      socket.destroy();
      c.destroy();
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
