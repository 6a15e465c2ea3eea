/**
 * Wires a key server's `authorize` callback to a Cedar {@link PolicyEngine}: action `secret:unseal`,
 * principal the caller's SPIFFE ID, resource `spiffe://<td>/tessera/secret/<policy>`. Anything the
 * engine cannot decide denies (the engine never throws).
 */
import type { PolicyEngine } from '../core/policy/engine.js';
import type { PolicyContext } from '../core/policy/types.js';
import type { KeyCaller } from './service.js';

export function secretResource(trustDomain: string, policy: string): string {
  return `spiffe://${trustDomain}/tessera/secret/${policy}`;
}

/** The context every `secret:unseal` decision gets: the key server's site, the time, and a risk score. */
export function defaultUnsealContext(site: string, risk: (caller: KeyCaller) => number = () => 0, now: () => number = Date.now): (caller: KeyCaller) => PolicyContext {
  return (caller) => {
    const t = now();
    return { site, time: Math.floor(t / 1000), hour: new Date(t).getUTCHours(), risk: risk(caller) };
  };
}

export function policyAuthorizer(engine: () => PolicyEngine, trustDomain: string, context: (caller: KeyCaller) => PolicyContext): (caller: KeyCaller, policy: string) => boolean {
  return (caller, policy) => engine().decide({ principal: caller.spiffeId, action: 'secret:unseal', resource: secretResource(trustDomain, policy), context: context(caller) }).allow;
}
