/**
 * The soak's cut-off site: a network namespace joined to this one by a veth pair, with
 * loopback-range addresses of its own (127.77.B.1 on this side, 127.77.B.2 inside; B from the pid).
 *
 * Linux routes all of 127/8 to `lo` (table local) and drops 127/8 packets on other interfaces as
 * martians, so each end gets `route_localnet=1` and a /32 route to the other end through the veth in
 * its table local (more specific than 127.0.0.0/8). The host side needs no address of its own:
 * 127.77.B.1 is already local here (on lo), so servers listening on it stay reachable from this
 * namespace while the link is down. Needs root (CAP_NET_ADMIN) and iproute2.
 *
 * `cut()` sets the host end down (the kernel then drops the routes through it); `restore()` sets it
 * up and puts the route back. `close()` deletes the namespace (and with it the veth pair).
 */
import { execFileSync } from 'node:child_process';

export interface Site {
  ns: string;
  /** The address servers listen on so the site can reach them (local on this side). */
  hostAddr: string;
  nsAddr: string;
  /** The command prefix that runs a program inside the namespace. */
  execPrefix: string[];
  cut(): void;
  restore(): void;
  close(): void;
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
}

function inNs(ns: string, args: string[]): void {
  execFileSync('ip', ['netns', 'exec', ns, ...args], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
}

/** Makes the namespace and the link; throws (after undoing what it made) when this machine cannot. */
export function createSite(tag = process.pid): Site {
  const b = (tag % 250) + 1;
  const ns = `tsoak-${tag}`;
  const hostIf = `tsh${tag % 10_000_000}`;
  const nsIf = `tsn${tag % 10_000_000}`;
  const hostAddr = `127.77.${b}.1`;
  const nsAddr = `127.77.${b}.2`;
  const hostRoute = ['route', 'replace', `${nsAddr}/32`, 'dev', hostIf, 'table', 'local', 'src', hostAddr];
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    try {
      ip(['netns', 'del', ns]);
    } catch {
      // already gone
    }
    try {
      ip(['link', 'del', hostIf]);
    } catch {
      // went with the namespace
    }
  };
  try {
    ip(['netns', 'add', ns]);
    ip(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    ip(['link', 'set', nsIf, 'netns', ns]);
    execFileSync('sysctl', ['-q', '-w', `net.ipv4.conf.${hostIf}.route_localnet=1`], { stdio: 'ignore' });
    ip(['link', 'set', hostIf, 'up']);
    ip(hostRoute);
    inNs(ns, ['sysctl', '-q', '-w', `net.ipv4.conf.${nsIf}.route_localnet=1`]);
    inNs(ns, ['ip', 'link', 'set', 'lo', 'up']);
    inNs(ns, ['ip', 'addr', 'add', `${nsAddr}/32`, 'dev', nsIf]);
    inNs(ns, ['ip', 'link', 'set', nsIf, 'up']);
    inNs(ns, ['ip', 'route', 'replace', `${hostAddr}/32`, 'dev', nsIf, 'table', 'local', 'src', nsAddr]);
  } catch (err) {
    close();
    const e = err as Error & { stderr?: Buffer };
    throw new Error(`cannot make the site's network namespace (root with CAP_NET_ADMIN and iproute2 needed): ${e.stderr?.toString().trim() || e.message}`);
  }
  return {
    ns, hostAddr, nsAddr,
    execPrefix: ['ip', 'netns', 'exec', ns],
    cut: () => ip(['link', 'set', hostIf, 'down']),
    restore: () => {
      ip(['link', 'set', hostIf, 'up']);
      ip(hostRoute);
    },
    close,
  };
}
