import type { CertificateAuthority } from './ca/ca.js';
import type { AuditLog } from './audit/audit.js';
import type { Store } from './store/store.js';
import type { Logger } from '../core/log.js';
import type { PolicyService } from './policy/service.js';

/** What route handlers share. Built once by the control plane. */
export interface ServerContext {
  store: Store;
  ca: CertificateAuthority;
  policy: PolicyService;
  audit: AuditLog;
  log: Logger;
  trustDomain: string;
  adminId: string;
  serverId: string;
  /** The issuer (`iss`) of JWT-SVIDs and the OIDC discovery document. */
  issuer: string;
  defaults: { x509TtlSeconds: number; jwtTtlSeconds: number };
}
