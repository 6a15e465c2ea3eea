/**
 * DKG session parameters between their wire form (src/core/wire/dkg.ts DkgParamsWire: base64url
 * bytes and points, servers with their URLs) and the protocol's form (dkg-session.ts DkgParams).
 * Pure. The relay builds the wire form; the control plane reads it back to run verifyTranscript.
 */
import { fail } from '../errors.js';
import type { DkgParamsWire, DkgServerWire } from '../wire/dkg.js';
import type { DkgParams, DkgServer } from './dkg-session.js';
import type { SecretPolicyServer } from './policy-record.js';

const bad = (message: string) => fail('TESSERA_DKG_PARAMS_INVALID', message);
const B64URL = /^[A-Za-z0-9_-]*$/;

function bytes(v: unknown, what: string, max: number): Uint8Array {
  if (typeof v !== 'string' || v.length > max || !B64URL.test(v)) throw bad(`${what} must be base64url`);
  const b = Buffer.from(v, 'base64url');
  if (b.toString('base64url') !== v) throw bad(`${what} is not canonical base64url`);
  return new Uint8Array(b);
}

function points(v: unknown, what: string): Uint8Array[] {
  if (!Array.isArray(v) || v.length < 1 || v.length > 255) throw bad(`${what} must list 1..255 points`);
  return v.map((c: unknown, i) => bytes(c, `${what}[${i}]`, 64));
}

function serverList(v: unknown, what: string): DkgServerWire[] {
  if (!Array.isArray(v) || v.length < 1 || v.length > 255) throw bad(`${what} must list 1..255 key servers`);
  return v.map((s: unknown) => {
    if (typeof s !== 'object' || s === null || Array.isArray(s)) throw bad(`${what}: each entry must be {url, spiffeId, index}`);
    const { url, spiffeId, index } = s as Record<string, unknown>;
    const keys = Object.keys(s);
    if (keys.length !== 3 || typeof url !== 'string' || typeof spiffeId !== 'string' || typeof index !== 'number') throw bad(`${what}: each entry must be exactly {url, spiffeId, index}`);
    return { url, spiffeId, index };
  });
}

const strip = (s: DkgServerWire[]): DkgServer[] => s.map(({ index, spiffeId }) => ({ index, spiffeId }));

/** The protocol parameters of a wire form. Throws TESSERA_DKG_PARAMS_INVALID (openSession checks the rest). */
export function dkgParamsFromWire(w: unknown): DkgParams {
  if (typeof w !== 'object' || w === null || Array.isArray(w)) throw bad('the parameters must be an object');
  const p = w as Record<string, unknown>;
  const session = bytes(p.session, 'session', 128);
  if (typeof p.policy !== 'string') throw bad('policy must be a string');
  if (typeof p.epoch !== 'number') throw bad('epoch must be a number');
  const common = { session, policyId: p.policy, epoch: p.epoch };
  const only = (allowed: string[]) => {
    for (const k of Object.keys(p)) if (!allowed.includes(k)) throw bad(`unknown parameter "${k.slice(0, 40)}"`);
  };
  switch (p.kind) {
    case 'dkg':
      only(['kind', 'session', 'policy', 'epoch', 't', 'servers']);
      return { kind: 'dkg', ...common, t: p.t as number, servers: strip(serverList(p.servers, 'servers')) };
    case 'refresh':
      only(['kind', 'session', 'policy', 'epoch', 'servers', 'commitments']);
      return { kind: 'refresh', ...common, servers: strip(serverList(p.servers, 'servers')), commitments: points(p.commitments, 'commitments') };
    case 'reshare': {
      only(['kind', 'session', 'policy', 'epoch', 't', 'servers', 'old']);
      const old = p.old;
      if (typeof old !== 'object' || old === null || Array.isArray(old) || Object.keys(old).some((k) => k !== 'commitments' && k !== 'servers')) throw bad('old must be {commitments, servers}');
      const o = old as Record<string, unknown>;
      return { kind: 'reshare', ...common, t: p.t as number, servers: strip(serverList(p.servers, 'servers')), old: { commitments: points(o.commitments, 'old.commitments'), servers: strip(serverList(o.servers, 'old.servers')) } };
    }
    default:
      throw bad('kind must be dkg, refresh or reshare');
  }
}

/** The key servers a wire form names, with their URLs: `servers`, and for a reshare `old`. */
export function dkgWireServers(w: DkgParamsWire): { servers: SecretPolicyServer[]; old: SecretPolicyServer[] } {
  return { servers: w.servers, old: w.kind === 'reshare' ? w.old.servers : [] };
}
