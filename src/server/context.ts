import type { CertificateAuthority } from './ca/ca.js';
import type { AuditLog } from './audit/audit.js';
import type { TransparencyLog } from './audit/tlog.js';
import type { Logger } from '../core/log.js';
import type { PolicyService } from './policy/service.js';
import type { RegistryService } from './registry/service.js';
import type { SvidService } from './svid/service.js';
import type { CredentialService } from './credentials/service.js';
import type { SecretPolicyService } from './secrets/service.js';
import type { ControlPlaneMetrics } from './metrics.js';
import type { AdminService } from './grants/admins.js';
import type { GrantService } from './grants/grants.js';
import type { TelemetryService } from './telemetry/service.js';
import type { RiskService } from './risk/service.js';
import type { RiskConfigService } from './risk/config-service.js';
import type { RiskEngineLink } from './risk/engine-link.js';
import type { AdminAuthorizer } from './authz/authorizer.js';
import type { AdminPolicyService } from './authz/policy-service.js';
import type { MapService } from './map/service.js';
import type { UserService } from './people/users.js';
import type { SessionService } from './people/sessions.js';
import type { PeopleService } from './people/service.js';
import type { LoginService } from './people/login.js';
import type { PersonCerts } from './people/person-certs.js';
import type { SignInLimits } from './people/signin-limits.js';
import type { DeviceService } from './devices/service.js';
import type { GatewayService } from './gateways/service.js';
import type { FederationService } from './federation/service.js';

/**
 * What route handlers share. Built once by the control plane. Routes parse, call a service, audit
 * and shape the response; only services hold the Store (it is deliberately not in here).
 */
export interface ServerContext {
  ca: CertificateAuthority;
  policy: PolicyService;
  registry: RegistryService;
  svids: SvidService;
  credentials: CredentialService;
  secrets: SecretPolicyService;
  /** Risk states of identities (issue 11): quarantine, step-up. */
  risk: RiskService;
  /** The risk engine fed by stored telemetry: the leader's only (one engine, one writer of its changes). */
  riskEngine?: RiskEngineLink;
  /** The risk engine's settings, versioned and admin-set (`/v1/risk/config`). */
  riskConfig: RiskConfigService;
  audit: AuditLog;
  /** Checkpoints and proofs of the audit log's Merkle tree. */
  tlog: TransparencyLog;
  log: Logger;
  trustDomain: string;
  adminId: string;
  serverId: string;
  /** The issuer (`iss`) of JWT-SVIDs and the OIDC discovery document. */
  issuer: string;
  /** Prometheus metrics (served when `--metrics-listen` is given). */
  metrics: ControlPlaneMetrics;
  /** Named admin identities (the bootstrap credential, `adminId`, is always an admin). */
  admins: AdminService;
  /** Admin authorization: every admin action asks the admin policy (Cedar), default deny. */
  adminAuthz: AdminAuthorizer;
  /** The admin policy's versions (`/v1/admin/policy`). */
  adminPolicy: AdminPolicyService;
  /** Just-in-time grants (two-person rule). */
  grants: GrantService;
  /** Sidecar telemetry: ingestion, the stored windows, and the sink of accepted windows (`onWindows`) for the risk engine. */
  telemetry: TelemetryService;
  /** The web console's map: sites, services and edges aggregated from telemetry, decisions and risk states. */
  map: MapService;
  /** People (issue 12): users and groups. */
  users: UserService;
  /** People's sessions: `fromRequest`, `requireSession` for any route a signed-in person may call. */
  sessions: SessionService;
  /** People's sign-in flows (enrolment, passkey + TOTP, OIDC, console links). */
  people: PeopleService;
  /** `tessera login`: the browser and device flows that issue person certificates. */
  login: LoginService;
  /** Person certificates: `principalOf(caller)` (admin decisions), `revoke`, `revokeAll` (logout, disable, remove). */
  personCerts: PersonCerts;
  /** Per-address limits on the unauthenticated sign-in routes, and on wrong user codes. */
  signInLimits: SignInLimits;
  /** Enrolled devices: enrolment tokens, device certificates, posture reports, `postureContext` (issue 12). */
  devices: DeviceService;
  /** Gateways for people: registrations and the sign-in code flow (issue 12, src/server/gateways/). */
  gateways: GatewayService;
  /** Federation with other trust domains: relationships and the federated bundles (issue 14). */
  federation: FederationService;
}
