/**
 * Who asks for an admin action, whatever the channel: a client certificate (the bootstrap
 * credential, a named admin's, or a person's from `tessera login`) or a console session.
 * `AdminAuthorizer.principalOfCert` builds it from a certificate; `principalOfSession` from a
 * people session (src/server/people/).
 */
export interface AdminPrincipal {
  /** `bootstrap`: the server's own credential (never asks the policy); `admin`: a named admin's certificate; `user`: a person. */
  kind: 'bootstrap' | 'admin' | 'user';
  spiffeId: string;
  /** Username, admin name, or `bootstrap`. */
  name: string;
  /** Group names (`Tessera::Group::"<name>"` parents). Named admins are in `admins`. */
  groups: string[];
  /** When the principal last completed MFA, milliseconds since the epoch; undefined: never (a named admin's certificate). */
  mfaAt?: number;
  via: 'cert' | 'session';
}

/** The fields of a people session (src/server/people/ `SessionInfo`) an admin decision uses. */
export interface SessionLike {
  username: string;
  spiffeId: string;
  groups: readonly string[];
  mfaAt?: number | null;
}

/** The admin principal of a signed-in person's console session. */
export function principalOfSession(s: SessionLike): AdminPrincipal {
  return {
    kind: 'user', spiffeId: s.spiffeId, name: s.username, groups: [...s.groups], via: 'session',
    ...(typeof s.mfaAt === 'number' ? { mfaAt: s.mfaAt } : {}),
  };
}
