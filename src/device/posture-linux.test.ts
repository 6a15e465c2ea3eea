import { describe, expect, it } from 'vitest';
import { collectPosture, diskEncrypted, firewallActive, osVersion, parseOsRelease, patchAgeDays, screenLock, type SystemReader } from './posture-linux.js';

const NOW = Date.parse('2026-12-01T00:00:00Z');

/** A machine described by its files and command outputs (anything else: unreadable, or exit ≠ 0). */
function machine(files: Record<string, string> = {}, commands: Record<string, string> = {}, mtimes: Record<string, number> = {}): SystemReader {
  return {
    platform: 'linux',
    kernelRelease: '6.1.0-18-amd64',
    graphicalSession: true,
    readText: async (p) => files[p],
    mtime: async (p) => mtimes[p],
    run: async (file, args) => commands[[file, ...args].join(' ')],
  };
}

describe('Linux posture facts', () => {
  it('reads the OS version from os-release, else the kernel release', async () => {
    expect(parseOsRelease('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n# comment\n')).toEqual({ NAME: 'Debian GNU/Linux', ID: 'debian', VERSION_ID: '12' });
    expect(await osVersion(machine({ '/etc/os-release': 'ID=debian\nVERSION_ID="12"\n' }))).toBe('debian/12');
    expect(await osVersion(machine({ '/usr/lib/os-release': 'ID=arch\nBUILD_ID=rolling\n' }))).toBe('arch/rolling');
    expect(await osVersion(machine())).toBe('kernel/6.1.0-18-amd64');
  });

  it('disk encryption: crypt under / is true, a plain partition false, an overlay root unknown', async () => {
    const luks = machine({}, { 'findmnt -n -o SOURCE /': '/dev/mapper/root\n', 'lsblk -n -s -o TYPE /dev/mapper/root': 'lvm\ncrypt\npart\ndisk\n' });
    expect(await diskEncrypted(luks)).toBe(true);
    const plain = machine({}, { 'findmnt -n -o SOURCE /': '/dev/sda2\n', 'lsblk -n -s -o TYPE /dev/sda2': 'part\ndisk\n' });
    expect(await diskEncrypted(plain)).toBe(false);
    expect(await diskEncrypted(machine({}, { 'findmnt -n -o SOURCE /': 'overlay\n' }))).toBeNull();
    expect(await diskEncrypted(machine({}, { 'findmnt -n -o SOURCE /': '/dev/sda2\n' }))).toBeNull();
    expect(await diskEncrypted(machine())).toBeNull();
  });

  it('firewall: ufw enabled, an nft input hook that drops, iptables DROP policy; unknown when nothing is readable', async () => {
    expect(await firewallActive(machine({ '/etc/ufw/ufw.conf': 'ENABLED=yes\n' }))).toBe(true);
    expect(await firewallActive(machine({}, { 'nft list ruleset': 'table inet filter {\n chain input {\n type filter hook input priority 0; policy drop;\n }\n}\n' }))).toBe(true);
    expect(await firewallActive(machine({}, { 'nft list ruleset': '' }))).toBe(false);
    expect(await firewallActive(machine({}, { 'iptables -S INPUT': '-P INPUT ACCEPT\n' }))).toBe(false);
    expect(await firewallActive(machine({}, { 'iptables -S INPUT': '-P INPUT DROP\n' }))).toBe(true);
    expect(await firewallActive(machine({ '/etc/ufw/ufw.conf': 'ENABLED=no\n' }))).toBeNull();
  });

  it('screen lock from the desktop setting, unknown without one or without a graphical session', async () => {
    expect(await screenLock(machine({}, { 'gsettings get org.gnome.desktop.screensaver lock-enabled': 'true\n' }))).toBe(true);
    expect(await screenLock(machine({}, { 'gsettings get org.gnome.desktop.screensaver lock-enabled': 'false\n' }))).toBe(false);
    expect(await screenLock(machine())).toBeNull();
    // Outside a graphical session gsettings prints the schema default: not an observation.
    expect(await screenLock({ ...machine({}, { 'gsettings get org.gnome.desktop.screensaver lock-enabled': 'true\n' }), graphicalSession: false })).toBeNull();
  });

  it('patch age from the package database, unknown without one', async () => {
    expect(await patchAgeDays(machine({}, {}, { '/var/lib/dpkg/status': NOW - 3.5 * 86_400_000 }), NOW)).toBe(3);
    expect(await patchAgeDays(machine(), NOW)).toBeNull();
  });

  it('collects every fact stamped with the time, unknown ones as null; not Linux: only OS facts', async () => {
    const facts = await collectPosture(machine({ '/etc/os-release': 'ID=debian\nVERSION_ID=12\n' }), NOW);
    expect(facts.os).toEqual({ value: 'linux', observedAt: NOW });
    expect(facts.os_version).toEqual({ value: 'debian/12', observedAt: NOW });
    expect(facts.disk_encrypted).toEqual({ value: null, observedAt: NOW });
    expect(facts.agent_version?.value).toMatch(/^\d+\.\d+\.\d+/);
    const mac = await collectPosture({ ...machine({}, { 'findmnt -n -o SOURCE /': '/dev/disk1' }), platform: 'darwin' }, NOW);
    expect(mac.os?.value).toBe('darwin');
    expect(mac.disk_encrypted?.value).toBeNull();
  });
});
