/**
 * Posture facts of this machine, read from what the system really exposes. A fact the agent cannot
 * establish is reported as unknown (`value: null`), never guessed: a container's overlay root has no
 * disk to be encrypted or not; a headless host has no screen lock setting; a firewall the agent may
 * not inspect (no privileges) is unknown rather than "off".
 *
 * The readers (files, commands) are injected so that each rule is tested on recorded outputs.
 */
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { release } from 'node:os';
import { PRODUCT_VERSION } from '../core/audit-export.js';
import type { PostureFacts } from '../core/devices/posture.js';

export interface SystemReader {
  platform: NodeJS.Platform;
  kernelRelease: string;
  /** Whether this process runs inside a graphical session (X11 or Wayland). */
  graphicalSession: boolean;
  /** File text, or undefined when it cannot be read. */
  readText(path: string): Promise<string | undefined>;
  /** mtime (ms) of a path, or undefined. */
  mtime(path: string): Promise<number | undefined>;
  /** stdout of a command that exited 0, or undefined (missing, failed, timed out). */
  run(file: string, args: string[]): Promise<string | undefined>;
}

const COMMAND_TIMEOUT_MS = 5000;

/** The real machine. Commands run without a shell, with a short timeout and a bounded output. */
export const LOCAL_SYSTEM: SystemReader = {
  platform: process.platform,
  kernelRelease: release(),
  graphicalSession: Boolean(process.env.WAYLAND_DISPLAY || process.env.DISPLAY),
  readText: (path) => readFile(path, 'utf8').then((t) => t, () => undefined),
  mtime: (path) => stat(path).then((s) => s.mtimeMs, () => undefined),
  run: (file, args) => new Promise((resolve) => {
    execFile(file, args, { timeout: COMMAND_TIMEOUT_MS, maxBuffer: 1024 * 1024, env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } }, (err, stdout) => resolve(err ? undefined : stdout));
  }),
};

/** KEY=value lines of os-release(5), quotes removed. */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    out[m[1]!] = m[2]!.replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1');
  }
  return out;
}

/** `ID/VERSION_ID` from os-release (e.g. `debian/12`), else `kernel/<release>`. */
export async function osVersion(sys: SystemReader): Promise<string | null> {
  const text = (await sys.readText('/etc/os-release')) ?? (await sys.readText('/usr/lib/os-release'));
  const rel = text === undefined ? {} : parseOsRelease(text);
  const v = rel.ID && rel.VERSION_ID ? `${rel.ID}/${rel.VERSION_ID}` : rel.ID ? `${rel.ID}/${rel.BUILD_ID ?? 'rolling'}` : sys.kernelRelease ? `kernel/${sys.kernelRelease}` : '';
  const clean = v.replace(/[^\x20-\x7e]/g, '').slice(0, 128);
  return clean === '' ? null : clean;
}

/**
 * Whether the root filesystem sits on dm-crypt (LUKS): the block devices under `/` (lsblk --inverse)
 * include one of TYPE `crypt`. Unknown when `/` is not on a block device (overlay, tmpfs, network)
 * or lsblk cannot tell.
 */
export async function diskEncrypted(sys: SystemReader): Promise<boolean | null> {
  const source = (await sys.run('findmnt', ['-n', '-o', 'SOURCE', '/']))?.trim().replace(/\[.*\]$/, '');
  if (!source || !source.startsWith('/dev/')) return null;
  const types = await sys.run('lsblk', ['-n', '-s', '-o', 'TYPE', source]);
  if (types === undefined) return null;
  const list = types.split('\n').map((t) => t.trim()).filter((t) => t !== '');
  if (list.length === 0) return null;
  return list.includes('crypt');
}

/**
 * Whether a host firewall is active: ufw enabled in its configuration, or a readable netfilter
 * ruleset (nft, else iptables) with at least one rule or a dropping policy. Reading a ruleset needs
 * privileges; when none can be read the answer is unknown.
 */
export async function firewallActive(sys: SystemReader): Promise<boolean | null> {
  const ufw = await sys.readText('/etc/ufw/ufw.conf');
  if (ufw !== undefined && /^\s*ENABLED\s*=\s*yes\s*$/m.test(ufw)) return true;
  const nft = await sys.run('nft', ['list', 'ruleset']);
  if (nft !== undefined) return /\bhook\s+input\b/.test(nft) && (/\bpolicy\s+drop\b/.test(nft) || /\b(drop|reject)\b/.test(nft));
  const ipt = await sys.run('iptables', ['-S', 'INPUT']);
  if (ipt !== undefined) return /^-P INPUT (DROP|REJECT)/m.test(ipt) || /^-A INPUT .*-j (DROP|REJECT)/m.test(ipt);
  return null;
}

/**
 * Whether the desktop locks the screen (GNOME's setting); unknown without a graphical session:
 * outside one, gsettings answers the schema's default, which says nothing about any screen.
 */
export async function screenLock(sys: SystemReader): Promise<boolean | null> {
  if (!sys.graphicalSession) return null;
  const out = (await sys.run('gsettings', ['get', 'org.gnome.desktop.screensaver', 'lock-enabled']))?.trim();
  return out === 'true' ? true : out === 'false' ? false : null;
}

/**
 * Days since the package database last changed (Debian's dpkg status, else the RPM database):
 * the time of the last install or upgrade, a lower bound of the patch age. Unknown elsewhere.
 */
export async function patchAgeDays(sys: SystemReader, now: number): Promise<number | null> {
  for (const path of ['/var/lib/dpkg/status', '/var/lib/rpm/rpmdb.sqlite', '/var/lib/rpm/Packages', '/lib/apk/db/installed']) {
    const t = await sys.mtime(path);
    if (t !== undefined) return Math.max(0, Math.min(10_000, Math.floor((now - t) / 86_400_000)));
  }
  return null;
}

/** Every fact this agent can observe on this machine now, each stamped with `now`. */
export async function collectPosture(sys: SystemReader = LOCAL_SYSTEM, now = Date.now()): Promise<PostureFacts> {
  const linux = sys.platform === 'linux';
  const [version, disk, firewall, lock, patch] = await Promise.all([
    osVersion(sys),
    linux ? diskEncrypted(sys) : null,
    linux ? firewallActive(sys) : null,
    linux ? screenLock(sys) : null,
    linux ? patchAgeDays(sys, now) : null,
  ]);
  const fact = <V>(value: V | null): { value: V | null; observedAt: number } => ({ value, observedAt: now });
  return {
    os: fact(sys.platform),
    os_version: fact(version),
    disk_encrypted: fact(disk),
    screen_lock: fact(lock),
    firewall: fact(firewall),
    patch_age_days: fact(patch),
    agent_version: fact(PRODUCT_VERSION),
  };
}
