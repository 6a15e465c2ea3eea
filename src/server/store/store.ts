/**
 * The one storage interface of the control plane. SQLite (embedded, default) implements it now;
 * PostgreSQL (several replicas) will implement the same contract. Methods are async so that a
 * networked engine fits without changing callers. Records are plain data: never live objects.
 */
import type { LeafHashSource } from '../../core/merkle.js';
import type { FederationStore } from './federation.sqlite.js';
import type { TelemetryWindow } from '../../core/risk/types.js';

export type CaState = 'prepared' | 'active' | 'retired';

export interface CaRecord {
  id: string;
  state: CaState;
  certDer: Buffer;
  /** PKCS#8 DER of the CA key, sealed with the key-encryption key (AES-256-GCM). */
  keySealed: Buffer;
  jwtKid: string;
  /** PKCS#8 DER of the JWT-SVID signing key, sealed with the KEK. */
  jwtKeySealed: Buffer;
  notBefore: number;
  notAfter: number;
  createdAt: number;
  /** When a prepared CA becomes active (ms since epoch). */
  activateAt: number | null;
  activatedAt: number | null;
  retiredAt: number | null;
}

export interface EntryAttributes {
  app?: string;
  site?: string;
  compliance?: string;
  location?: string;
  env?: string;
}

export interface EntryRecord {
  id: string;
  spiffeId: string;
  selectors: string[];
  attributes: EntryAttributes;
  x509TtlSeconds: number;
  jwtTtlSeconds: number;
  /** Longest lifetime of an API key this identity may derive (`entry create --apikey-max-ttl`). */
  apikeyMaxTtlSeconds: number;
  createdAt: number;
  /** When the entry was revoked (`tessera entry revoke`): its current and future SVIDs are refused. Absent or null: live. */
  revokedAt?: number | null;
  revokedReason?: string | null;
}

/** An X509-SVID the CA issued for an entry (join or renewal): kept so that revocation can list it. */
export interface IssuedSvidRecord {
  /** Uppercase hex, as `X509Certificate.serialNumber` writes it. */
  serial: string;
  entryId: string;
  spiffeId: string;
  notAfter: number;
  issuedAt: number;
}

/**
 * A revoked identity: an entry revoked (kept, refused) or deleted. Its SVIDs still unexpired are
 * listed with it; the list travels in the signed policy bundle.
 */
export interface RevocationRecord {
  entryId: string;
  spiffeId: string;
  revokedAt: number;
  reason: string;
  /** True when the entry was deleted (false: `entry revoke`, the entry is kept). */
  deleted: boolean;
  /** Unexpired SVIDs issued for the entry, newest first. */
  serials: { serial: string; notAfter: number }[];
}

export type RevokeResult = { ok: true; entry: EntryRecord } | { ok: false; reason: 'missing' | 'already'; entry?: EntryRecord };

export interface JoinTokenRecord {
  /** hex SHA-256 of the token: the token itself is never stored. */
  hash: string;
  entryId: string;
  createdAt: number;
  expiresAt: number;
}

export type TokenConsumeResult =
  | { ok: true; entryId: string }
  | { ok: false; reason: 'unknown' | 'used' | 'expired' };

export interface ApiKeyRecord {
  id: string;
  /** hex SHA-256 of the secret part. */
  hash: string;
  owner: string;
  scopes: string[];
  createdAt: number;
  expiresAt: number;
  /** When the key was revoked (`tessera apikey revoke`); revoked keys are kept for the audit trail. Absent or null: not revoked. */
  revokedAt?: number | null;
  revokedReason?: string | null;
}

export type AuditOutcome = 'denied' | 'success';

export interface AuditRecord {
  ts: number;
  actor: string;
  action: string;
  target: string;
  outcome: AuditOutcome;
  code: string;
  detail: Record<string, unknown>;
  /**
   * The principal a decision record is about (`detail.principal`), stored in its own indexed
   * column so that dry runs can sample decisions per enforcer and per principal.
   */
  principal?: string;
}

export interface StoredAuditRecord extends AuditRecord {
  id: number;
}

/** The audit log's Merkle tree as stored: its size (= the last record id) and root (RFC 9162 §2.1.1). */
export interface AuditTreeHead {
  size: number;
  /** 32 bytes; SHA-256 of the empty string when the log is empty. */
  rootHash: Buffer;
}

/** A signed checkpoint (C2SP tlog-checkpoint) of the audit log, as stored. */
export interface CheckpointRecord {
  size: number;
  rootHash: Buffer;
  /** The whole signed note. */
  note: string;
  createdAt: number;
}

/** A witness's cosignature (C2SP tlog-cosignature v1) of a stored checkpoint. */
export interface CosignatureRecord {
  /** The tree size of the checkpoint it signs. */
  size: number;
  /** The witness's cosignature/v1 verifier key (`<name>+<key id>+<base64(0x04 ‖ key)>`). */
  witnessKey: string;
  name: string;
  keyId: string;
  /** The cosigner's POSIX time (seconds). */
  timestamp: number;
  /** The signature line ("— <name> <base64>\n"). */
  line: string;
  createdAt: number;
}

export interface AuditQuery {
  limit?: number;
  afterId?: number;
  /** Only records with id ≤ this. */
  untilId?: number;
  action?: string;
  outcome?: AuditOutcome;
  /**
   * The first `limit` records after afterId (paging forward, as the SIEM export does) instead of
   * the newest `limit`. Either way they are returned oldest first.
   */
  oldestFirst?: boolean;
}

/** Bounds of {@link Store.sampleDecisions}. */
export interface DecisionSampleQuery {
  /** At most this many records from one enforcer (the record's actor, the agent that shipped it). */
  perEnforcer: number;
  /** At most this many records in all. */
  maxTotal: number;
  /** Records whose stored detail is longer than this (characters) are counted in `oversized`, not returned. */
  maxDetailChars: number;
}

export interface DecisionSample {
  records: StoredAuditRecord[];
  /** Enforcers sampled. */
  enforcers: number;
  /** Records picked but not returned because their detail exceeded maxDetailChars. */
  oversized: number;
}

/** A signed secret-policy record (the envelope's JSON), one per (policy id, key epoch): its newest share generation. */
export interface SecretPolicyRow {
  id: string;
  epoch: number;
  /** Share generation of the signed record (1 when dealt, +1 per refresh). */
  generation: number;
  /** JSON of the SignedSecretPolicy envelope. */
  signed: string;
  createdAt: number;
  /** When the epoch was retired (its shares deleted from the key servers); null while in use. */
  retiredAt: number | null;
}

export interface PolicyVersionRecord {
  version: number;
  createdAt: number;
  author: string;
  reason: string;
  /** sha256 hex of the canonical policy content. */
  hash: string;
  /** File name → Cedar text. */
  policies: Record<string, string>;
  schema: Record<string, unknown>;
}

/** Who set a risk state: the risk engine, an admin (`tessera risk ...`), or the control plane at a TTL's end. */
export type RiskSetter = 'engine' | 'admin' | 'expiry';

/**
 * The current risk state of one identity (issue 11). A row exists once the engine scored the
 * identity or an admin set its state; `normal` rows keep the last score.
 */
export interface RiskStateRecord {
  spiffeId: string;
  state: 'normal' | 'step-up' | 'quarantined';
  /** Integer 0-100. */
  score: number;
  /** When the identity entered this state (ms). */
  since: number;
  /** When a step-up or quarantine ends (ms); null for normal. */
  until: number | null;
  /** The RiskReason[] of the change, as JSON-able data. */
  reasons: unknown[];
  setBy: RiskSetter;
  /** The actor: the admin's SPIFFE ID, `tessera/risk-engine` or the control plane's. */
  actor: string;
  /** The reason text an admin gave (or a summary of the engine's reasons). */
  note: string;
}

/** One change in an identity's risk history (newest first when listed). */
export interface RiskHistoryRecord extends Omit<RiskStateRecord, 'since'> {
  at: number;
  previous: RiskStateRecord['state'];
}

/** A leader lease as the store holds it (times on the store's clock, ms since the epoch). */
export interface LeaseGrant {
  /** Whether the caller holds it now (taken or renewed by this call). */
  held: boolean;
  holder: string;
  /** Goes up by one each time the lease changes hands (or is taken again after lapsing): the fencing token. */
  epoch: number;
  expiresAt: number;
}

/** A write that only the current lease holder may make (the epoch it took the lease with). */
export interface LeaseFence {
  name: string;
  holder: string;
  epoch: number;
}

/** One change other replicas must pick up (policy, CA bundle, admins, person certificates, federation). */
export interface ChangeRecord {
  seq: number;
  topic: string;
  at: number;
}

export interface Store {
  /** Enrolled devices, their one-time enrolment tokens and posture reports (issue 12): src/server/devices/. */
  readonly devices: DeviceStore;
  /** Gateways for people and their one-time authorization codes (issue 12): src/server/gateways/. */
  readonly gateways: GatewayStore;
  /** Federation relationships and the federated bundles (issue 14): src/server/federation/. */
  readonly federation: FederationStore;

  getMeta(key: string): Promise<string | undefined>;
  setMeta(key: string, value: string): Promise<void>;
  /** Atomically adds one to an integer meta value (missing counts as 0) and returns the new value. */
  incrementMeta(key: string): Promise<number>;

  /**
   * The leader lease `name` (replicas on one store): taken for `holder` when free, lapsed or already
   * its own, for `ttlMs` from now on the store's clock. Never throws for a lease held by another.
   */
  tryLease(name: string, holder: string, ttlMs: number): Promise<LeaseGrant>;
  /** Gives the lease up at once (a clean stop), if `holder` holds it. */
  releaseLease(name: string, holder: string): Promise<void>;
  /**
   * The change log, written by the store itself (triggers) in the transaction of each change that
   * replicas cache: the newest sequence number (0: none yet).
   */
  lastChange(): Promise<number>;
  /** Changes after `seq`, oldest first, at most `limit`. */
  changesSince(seq: number, limit: number): Promise<ChangeRecord[]>;
  /** Deletes changes older than `before` (ms), always keeping the newest. Returns how many went. */
  pruneChanges(before: number): Promise<number>;

  listCas(): Promise<CaRecord[]>;
  /** Refused (throws) for a duplicate id, a second `prepared` CA or a second `active` one. */
  insertCa(ca: CaRecord): Promise<void>;
  /**
   * CA activation in one transaction: every active CA retired at `at`, the prepared CA `id` made
   * active, the bundle sequence bumped (returned). Undefined, with nothing changed, when `id` is not
   * prepared or when `fence` is given and its lease is not held with that epoch.
   */
  activateCa(id: string, at: number, fence?: LeaseFence): Promise<number | undefined>;
  updateCaState(id: string, patch: Pick<CaRecord, 'state' | 'activatedAt' | 'retiredAt'>): Promise<void>;
  deleteCa(id: string): Promise<void>;

  insertEntry(entry: EntryRecord): Promise<void>;
  getEntry(id: string): Promise<EntryRecord | undefined>;
  getEntryBySpiffeId(spiffeId: string): Promise<EntryRecord | undefined>;
  listEntries(): Promise<EntryRecord[]>;
  /**
   * Deletes the entry and its unused join tokens, and records its revocation (deleting revokes:
   * its issued SVIDs go on the revocation list). Returns false if it did not exist.
   */
  deleteEntry(id: string, at?: number): Promise<boolean>;
  /** Marks the entry revoked (kept, refused) and records the revocation; refuses a missing or already revoked entry. */
  revokeEntry(id: string, at: number, reason: string): Promise<RevokeResult>;
  /** Records an SVID issued for an entry. */
  recordIssuedSvid(rec: IssuedSvidRecord): Promise<void>;
  /** Whether this serial was issued for an entry that is now revoked or deleted. */
  isSerialRevoked(serial: string): Promise<boolean>;
  /**
   * The revocation list: revoked or deleted entries with their SVIDs unexpired at `now`, newest
   * revocation first. First forgets what can no longer matter: issued SVIDs expired before
   * `now - graceMs`, and revocations of deleted entries none of whose SVIDs is younger than that.
   */
  listRevocations(now: number, graceMs: number): Promise<RevocationRecord[]>;

  insertJoinToken(token: JoinTokenRecord): Promise<void>;
  /** Atomically marks the token used if it exists, is unused and unexpired. */
  consumeJoinToken(hash: string, now: number): Promise<TokenConsumeResult>;

  insertApiKey(key: ApiKeyRecord): Promise<void>;
  getApiKey(id: string): Promise<ApiKeyRecord | undefined>;
  /** Newest first; only `owner`'s keys when given. */
  listApiKeys(q: { owner?: string; limit: number }): Promise<ApiKeyRecord[]>;
  /**
   * Marks the key revoked at `at` unless it already is (the first revocation and its reason stay).
   * Returns the key as stored afterwards, or undefined if there is no such key.
   */
  revokeApiKey(id: string, at: number, reason: string): Promise<ApiKeyRecord | undefined>;

  /** Stores a new policy version; its number is the previous highest plus one. */
  insertPolicyVersion(rec: Omit<PolicyVersionRecord, 'version'>): Promise<PolicyVersionRecord>;
  getPolicyVersion(version: number): Promise<PolicyVersionRecord | undefined>;
  latestPolicyVersion(): Promise<PolicyVersionRecord | undefined>;
  /** Newest first, without the policy text. */
  listPolicyVersions(limit: number): Promise<Omit<PolicyVersionRecord, 'policies' | 'schema'>[]>;

  /** Stores a secret-policy record; false if (id, epoch) already exists. */
  insertSecretPolicy(row: SecretPolicyRow): Promise<boolean>;
  /** The given epoch (retired or not), or the newest epoch not retired when `epoch` is undefined. */
  getSecretPolicy(id: string, epoch?: number): Promise<SecretPolicyRow | undefined>;
  /**
   * Replaces the record of (id, epoch) by its next share generation, only if the stored one is
   * `fromGeneration` and the epoch is not retired (compare and set); false otherwise.
   */
  replaceSecretPolicyGeneration(id: string, epoch: number, fromGeneration: number, generation: number, signed: string): Promise<boolean>;
  /** Marks (id, epoch) retired; false if there is no such epoch or it already was. */
  retireSecretPolicy(id: string, epoch: number, at: number): Promise<boolean>;
  /** Every record, by id then epoch. */
  listSecretPolicies(): Promise<SecretPolicyRow[]>;

  /**
   * Appends records in one transaction. Each record's leaf hash (SHA-256(0x00 ‖ auditLeafData of the
   * record as stored, id included)) and the tree's frontier are written in that same transaction, so
   * the Merkle tree never lags or leads the table.
   */
  appendAudit(records: readonly AuditRecord[]): Promise<void>;
  /** The current size and root of the audit log's Merkle tree. */
  auditTreeHead(): Promise<AuditTreeHead>;
  /**
   * The stored leaf hashes, by position (leaf index = record id − 1), for proofs. A networked store
   * returns a promise (it first brings its copy of the hashes up to date): callers await it.
   */
  auditLeafSource(): LeafHashSource | Promise<LeafHashSource>;
  /** Stores a signed checkpoint; false when one of that size is already stored. */
  insertCheckpoint(rec: CheckpointRecord): Promise<boolean>;
  /** The checkpoint of that size, else the latest (largest) one when size is undefined. */
  getCheckpoint(size?: number): Promise<CheckpointRecord | undefined>;
  /**
   * Stores a cosignature of the checkpoint of `rec.size`; one per witness key and checkpoint, a newer
   * timestamp replacing an older one. False when that witness key is new and the checkpoint already has
   * `maxPerCheckpoint` cosignatures.
   */
  putCosignature(rec: CosignatureRecord, maxPerCheckpoint: number): Promise<boolean>;
  /** The cosignatures of the checkpoint of that size, oldest witness first. */
  listCosignatures(size: number): Promise<CosignatureRecord[]>;
  /** Up to `limit` stored checkpoints of size > afterSize (all sizes when undefined), by increasing size. */
  listCheckpoints(afterSize: number | undefined, limit: number): Promise<CheckpointRecord[]>;
  /** Sets a meta value unless one is set; returns the value that holds afterwards (first writer wins). */
  setMetaIfAbsent(key: string, value: string): Promise<string>;
  /** Meta rows whose key starts with `prefix` (named admins, grants: src/server/grants/), by key. */
  listMeta(prefix: string): Promise<{ key: string; value: string }[]>;
  /** Sets `key` to `value` only if it now holds `expected` (compare and set); false if it did not. */
  replaceMeta(key: string, expected: string, value: string): Promise<boolean>;
  /** Deletes `key` only if it now holds `expected` (compare and delete); false if it did not. */
  deleteMetaIf(key: string, expected: string): Promise<boolean>;
  listAudit(query: AuditQuery): Promise<StoredAuditRecord[]>;
  /**
   * Recorded decisions (action `decision`) for a dry run, chosen so that no identity can flood the
   * others out: the enforcers share `maxTotal` equally (at most `perEnforcer` each; what one leaves
   * unused goes to the next), and within an enforcer the principals share its part equally, newest
   * first. Oldest first, like listAudit. Work and memory are bounded by the query, not by the table.
   */
  sampleDecisions(query: DecisionSampleQuery): Promise<DecisionSample>;

  /**
   * Stores accepted telemetry windows (issue 11), then applies the retention: the table keeps at
   * most `keep.maxRows` rows and none received before `keep.now - keep.maxAgeMs`.
   */
  insertTelemetry(rows: readonly TelemetryRow[], keep: TelemetryRetention): Promise<void>;
  /**
   * Stored windows, oldest first: with `after`, the `limit` rows after that id; without it, the most
   * recent `limit` rows. `identity` matches the caller or the callee; `since` (ms) the window start.
   */
  listTelemetry(query: TelemetryQuery): Promise<StoredTelemetryRow[]>;
  /** The risk state of `spiffeId`, if it ever had one. */
  getRiskState(spiffeId: string): Promise<RiskStateRecord | undefined>;
  /** Every risk state row (non-normal first, then by score), at most `limit`. */
  listRiskStates(limit: number): Promise<RiskStateRecord[]>;
  /**
   * Writes `rec` as the identity's state and appends the change to its history, in one
   * transaction. With `expect`, only if the stored state is still that one (compare-and-set:
   * false when another writer got there first).
   */
  putRiskState(rec: RiskStateRecord, previous: RiskStateRecord['state'], expect?: { state: RiskStateRecord['state']; since: number }): Promise<boolean>;
  /** The identity's risk history, newest first, at most `limit` changes. */
  listRiskHistory(spiffeId: string, limit: number): Promise<RiskHistoryRecord[]>;

  /**
   * The map's traffic (the console's Map, GET /v1/map): telemetry windows with `since` ≤ ts < `until`,
   * summed per (caller, callee, reporter) by the store (GROUP BY), so the answer grows with the
   * edges, not with the windows. Each side of an edge reports its own view: one row per reporter.
   */
  aggregateTelemetryEdges(since: number, until: number): Promise<TelemetryEdgeAggregate[]>;
  /**
   * The map's decisions: recorded `decision` records with `since` ≤ ts < `until` about a call to
   * the enforcer itself (http:request, tcp:connect: resource = enforcer), counted per
   * (principal, resource) and outcome.
   */
  aggregateDecisionEdges(since: number, until: number): Promise<DecisionEdgeAggregate[]>;
  /** The newest `limit` decision records of one edge (caller = principal, callee = the enforcer), newest first. */
  listEdgeDecisions(caller: string, callee: string, limit: number): Promise<StoredAuditRecord[]>;
  /** Users, their credentials, sessions and one-time tickets (issue 12, src/server/people/). */
  readonly people: PeopleStore;
  /** `tessera login`: login requests and person certificates (issue 12). */
  readonly login: LoginStore;

  close(): Promise<void>;
}

/** Telemetry of one edge as one side reported it, summed over a time range. */
export interface TelemetryEdgeAggregate {
  caller: string;
  callee: string;
  reporter: 'caller' | 'callee';
  /** The sites the windows named (the greatest, should they disagree). */
  callerSite: string;
  calleeSite: string;
  windows: number;
  requests: number;
  denials: number;
  errors: number;
  /** bytes_in + bytes_out. */
  bytes: number;
}

/** Decisions recorded about one edge over a time range. */
export interface DecisionEdgeAggregate {
  caller: string;
  callee: string;
  allowed: number;
  denied: number;
}

export interface TelemetryRow {
  /** The live identity that shipped it (the reporter). */
  reportedBy: string;
  receivedAt: number;
  window: TelemetryWindow;
}
export interface StoredTelemetryRow extends TelemetryRow { id: number }
export interface TelemetryRetention { maxRows: number; maxAgeMs: number; now: number }
export interface TelemetryQuery { identity?: string; since?: number; after?: number; limit: number }

/** A person (issue 12): local (enrolled by an admin) or from the OIDC provider. */
export interface UserRecord {
  username: string;
  /** `spiffe://<td>/user/<username>`. */
  spiffeId: string;
  source: 'local' | 'oidc';
  /** The OIDC identity (issuer, `sub`) an OIDC user is bound to; null for a local user. */
  oidcIssuer: string | null;
  oidcSubject: string | null;
  email: string | null;
  displayName: string | null;
  groups: string[];
  state: 'active' | 'disabled';
  /** The WebAuthn user handle (random, base64url): never the name, so the authenticator holds no PII of ours. */
  webauthnId: string;
  createdAt: number;
  createdBy: string;
  updatedAt: number;
  disabledReason: string | null;
}

/** A sign-in credential of a local user: a passkey (WebAuthn public key) or a TOTP seed (sealed). */
export interface UserCredentialRecord {
  /** The credential id (base64url) for a passkey; `totp:<username>` for the TOTP seed. */
  id: string;
  username: string;
  kind: 'passkey' | 'totp';
  createdAt: number;
  /** COSE public key of a passkey. */
  publicKey: Buffer | null;
  /** The authenticator's signature counter last seen (WebAuthn L2 §7.2 step 21). */
  counter: number;
  transports: string[];
  /** The TOTP seed sealed with the KEK (associated data `totp:<username>`). */
  secretSealed: Buffer | null;
  /** The last TOTP time step accepted (-1: none): a code is never accepted twice. */
  lastStep: number;
  lastUsedAt: number | null;
}

/** A server-side session; the browser holds the id, the store only its SHA-256. */
export interface SessionRecord {
  hash: string;
  username: string;
  source: 'local' | 'oidc';
  createdAt: number;
  lastSeenAt: number;
  /** The absolute timeout. */
  expiresAt: number;
  mfaAt: number | null;
  csrfHash: string;
}

/** A one-time ticket (enrolment link, console link, WebAuthn challenge, OIDC state, half-done sign-in). */
export interface AuthTicketRecord {
  /** SHA-256 (hex) of the bearer value. */
  hash: string;
  kind: string;
  username: string | null;
  /** Kind-specific JSON. */
  data: string;
  createdAt: number;
  expiresAt: number;
  usedAt: number | null;
}

export interface PeopleStore {
  /** False when the username, SPIFFE ID or OIDC identity is taken. Also records the user's groups. */
  insertUser(user: UserRecord): Promise<boolean>;
  /** Updates email, display name, groups and state; false when there is no such user. */
  updateUser(user: UserRecord): Promise<boolean>;
  getUser(username: string): Promise<UserRecord | undefined>;
  getUserBySubject(issuer: string, subject: string): Promise<UserRecord | undefined>;
  listUsers(limit: number): Promise<UserRecord[]>;
  /** Deletes the user with its credentials, sessions and tickets; false when there was none. */
  deleteUser(username: string): Promise<boolean>;
  /** Every group a user was ever given (local or from OIDC claims), by name. */
  listGroups(): Promise<{ name: string; source: string; createdAt: number }[]>;
  /** Replaces all the user's credentials by `creds`, atomically (enrolment). */
  replaceCredentials(username: string, creds: readonly UserCredentialRecord[]): Promise<void>;
  getCredential(id: string): Promise<UserCredentialRecord | undefined>;
  listCredentials(username: string): Promise<UserCredentialRecord[]>;
  /** Sets a passkey's counter to `to` only if it is still `from` (compare and set). */
  setPasskeyCounter(id: string, from: number, to: number, at: number): Promise<boolean>;
  /** Records TOTP step `step` as used only if it is above the last one used (so no code is accepted twice). */
  advanceTotpStep(id: string, step: number, at: number): Promise<boolean>;
  /** Stores a session (first deleting those past their absolute timeout at `now`). */
  insertSession(rec: SessionRecord, now: number): Promise<void>;
  getSession(hash: string): Promise<SessionRecord | undefined>;
  touchSession(hash: string, at: number): Promise<void>;
  deleteSession(hash: string): Promise<boolean>;
  /** Ends every session of the user; returns how many. */
  deleteSessionsOf(username: string): Promise<number>;
  insertTicket(ticket: Omit<AuthTicketRecord, 'usedAt'>, now: number): Promise<void>;
  /** Atomically marks the ticket used if it exists with that kind, is unused and unexpired at `now`; returns it, else undefined. */
  consumeTicket(hash: string, kind: string, now: number): Promise<AuthTicketRecord | undefined>;
  getTicket(hash: string, kind: string): Promise<AuthTicketRecord | undefined>;
  /** Sets an unused ticket's data to `to` only if it is still `from` (compare and set). */
  replaceTicketData(hash: string, from: string, to: string): Promise<boolean>;
  /** Unused, unexpired tickets of these kinds (the cap on sign-ins under way). */
  countLiveTickets(kinds: readonly string[], now: number): Promise<number>;
}

/** A one-time device enrolment token (`tessera device token create`): only its hash is stored. */
export interface DeviceTokenRecord {
  /** hex SHA-256 of the token. */
  hash: string;
  /** The device id the enrolment will get (`spiffe://<td>/device/<id>`). */
  deviceId: string;
  /** The username of the device's owner, if named. */
  owner: string | null;
  /** Free-form labels (`--attr k=v`), shown and carried as the Device entity's `attrs`. */
  attributes: Record<string, string>;
  /** Lifetime of the device's X.509 identities. */
  certTtlSeconds: number;
  createdAt: number;
  expiresAt: number;
}

export type DeviceTokenConsumeResult = { ok: true; token: DeviceTokenRecord } | { ok: false; reason: 'unknown' | 'used' | 'expired' };

/** An enrolled device. Kept after revocation (its id cannot be enrolled again by mistake). */
export interface DeviceRecord {
  id: string;
  spiffeId: string;
  owner: string | null;
  attributes: Record<string, string>;
  certTtlSeconds: number;
  createdAt: number;
  /** Non-secret reference of the enrolment token (its hash's first bytes). */
  tokenRef: string;
  /** The device's current certificate: serial (uppercase hex), expiry and public key (SPKI DER). */
  certSerial: string;
  certNotAfter: number;
  certSpki: Buffer;
  /** When the current certificate was issued (enrolment or renewal). */
  certIssuedAt: number;
  revokedAt?: number | null;
  revokedReason?: string | null;
}

/** A posture report as received: the wire JSON of the signed report (src/core/devices/posture.ts). */
export interface PostureReportRecord {
  deviceId: string;
  receivedAt: number;
  reportedAt: number;
  /** PostureReportJson, as JSON text. */
  report: string;
}

export type DeviceRevokeResult = { ok: true; device: DeviceRecord } | { ok: false; reason: 'missing' | 'already'; device?: DeviceRecord };

/** The id a device's certificates and revocation are kept under (never a UUID, so never an entry's). */
export function deviceRevocationId(deviceId: string): string {
  return `device:${deviceId}`;
}

/**
 * Storage of devices. A device's certificates are recorded like SVIDs (`recordIssuedSvid`, entry
 * id `device:<id>`) and revoking a device adds a revocation row under that same id, so the
 * revocation list of the policy bundle (`listRevocations`) and `isSerialRevoked` cover devices.
 */
export interface DeviceStore {
  insertDeviceToken(t: DeviceTokenRecord): Promise<void>;
  /** Atomically marks the token used if it exists, is unused and unexpired. */
  consumeDeviceToken(hash: string, now: number): Promise<DeviceTokenConsumeResult>;
  /** Whether an unused, unexpired token names this device id. */
  hasPendingDeviceToken(deviceId: string, now: number): Promise<boolean>;
  /** Stores a new device; false when its id is taken (by a live or a revoked device). */
  insertDevice(d: DeviceRecord): Promise<boolean>;
  getDevice(id: string): Promise<DeviceRecord | undefined>;
  /** By id, at most `limit`. */
  listDevices(limit: number): Promise<DeviceRecord[]>;
  /** Whether `serial` is a certificate issued to this device (enrolment or renewal). */
  isDeviceSerial(deviceId: string, serial: string): Promise<boolean>;
  /** Replaces the current certificate of a device not revoked; false otherwise. */
  updateDeviceCert(id: string, cert: Pick<DeviceRecord, 'certSerial' | 'certNotAfter' | 'certSpki' | 'certIssuedAt'>): Promise<boolean>;
  /** Marks the device revoked and adds it to the revocation list, in one transaction. */
  revokeDevice(id: string, at: number, reason: string): Promise<DeviceRevokeResult>;
  /** Stores a report and keeps only the device's newest `keep` reports. */
  insertPostureReport(rec: PostureReportRecord, keep: number): Promise<void>;
  /** The device's reports, newest first, at most `limit`. */
  listPostureReports(deviceId: string, limit: number): Promise<PostureReportRecord[]>;
}

/** A gateway for people registered on the control plane (issue 12, src/server/gateways/). */
export interface GatewayRecord {
  name: string;
  /** The SPIFFE ID of the gateway's registration entry: the identity it calls the control plane with. */
  spiffeId: string;
  /** Its public origins (one per host it serves); each redirect URI is one of these + `/_tessera/callback`. */
  urls: string[];
  createdAt: number;
  createdBy: string;
}

/** A one-time authorization code issued to a gateway (only its SHA-256 is stored). */
export interface GatewayCodeRecord {
  hash: string;
  gateway: string;
  /** The stored hash of the control-plane session the code was issued for. */
  sessionHash: string;
  redirectUri: string;
  /** The PKCE S256 challenge (RFC 7636 §4.2). */
  challenge: string;
  expiresAt: number;
}

/** Storage of gateways and their one-time codes. */
export interface GatewayStore {
  /** false when the name or the SPIFFE ID is taken. */
  insertGateway(g: GatewayRecord): Promise<boolean>;
  getGateway(name: string): Promise<GatewayRecord | undefined>;
  gatewayBySpiffeId(spiffeId: string): Promise<GatewayRecord | undefined>;
  listGateways(): Promise<GatewayRecord[]>;
  /** Removes the gateway and its pending codes; false when there was none. */
  deleteGateway(name: string): Promise<boolean>;
  /** Stores a code (and drops expired ones). */
  insertGatewayCode(c: GatewayCodeRecord, now: number): Promise<void>;
  /** Atomically deletes and returns the code: a code is redeemed at most once, even when it is then refused. */
  takeGatewayCode(hash: string): Promise<GatewayCodeRecord | undefined>;
}

/**
 * A `tessera login` under way (issue 12): the browser flow's one-time code, or a device
 * authorization (RFC 8628). Bearer values (the code, the device code, the user code) are stored as
 * their SHA-256 only.
 */
export interface LoginRequestRecord {
  /** SHA-256 (hex) of the authorization code (browser flow) or the device code. */
  hash: string;
  kind: 'code' | 'device';
  /** SHA-256 (hex) of the normalised user code (device flow only). */
  userCodeHash: string | null;
  /** pending (device, waiting for the person), approved (ready to redeem), denied, used. */
  state: 'pending' | 'approved' | 'denied' | 'used';
  /** The person who approved it (set on approval). */
  username: string | null;
  /** The approving session's MFA time (ms), null when it had none. */
  mfaAt: number | null;
  /** The address the CLI's first request came from (shown to the person who approves). */
  clientIp: string;
  /** base64url SHA-256 of the DER SubjectPublicKeyInfo the CLI will certify: the CSR must match it. */
  keyThumbprint: string;
  ttlMs: number;
  stepUp: boolean;
  /** Browser flow: the S256 code challenge and the loopback redirect URI. */
  codeChallenge: string | null;
  redirectUri: string | null;
  /** Device flow: the polling interval in seconds (raised by 5 at each slow_down, RFC 8628 §3.5). */
  intervalS: number;
  lastPollAt: number | null;
  /** The serial of the certificate issued for it (a replayed code revokes it). */
  serial: string | null;
  createdAt: number;
  expiresAt: number;
}

/** A person certificate issued by `tessera login`: its serial is what the control plane accepts. */
export interface UserCertRecord {
  /** Uppercase hex, as node prints it. */
  serial: string;
  username: string;
  spiffeId: string;
  /** The groups of the user when it was issued (the live check uses the user's current groups). */
  groups: string[];
  /** The MFA time of the sign-in that approved it; null: none. */
  mfaAt: number | null;
  issuedAt: number;
  notAfter: number;
  flow: 'browser' | 'device';
  clientIp: string;
  revokedAt: number | null;
  revokedReason: string | null;
}

/** Storage of `tessera login` (login requests, person certificates). Same database as the people tables. */
export interface LoginStore {
  /**
   * Stores a request after deleting expired ones, unless `clientIp` already has `perIp` unexpired
   * requests or there are `total` in all: then nothing is stored and the reason is returned.
   */
  insertLoginRequest(rec: LoginRequestRecord, now: number, caps: { perIp: number; total: number }): Promise<'ok' | 'ip_cap' | 'total_cap'>;
  getLoginRequest(hash: string): Promise<LoginRequestRecord | undefined>;
  getLoginRequestByUserCode(userCodeHash: string): Promise<LoginRequestRecord | undefined>;
  /** Applies `patch` only if the request is still in state `from` (compare and set); false otherwise. */
  updateLoginRequest(hash: string, from: LoginRequestRecord['state'], patch: Partial<Pick<LoginRequestRecord, 'state' | 'username' | 'mfaAt' | 'intervalS' | 'lastPollAt' | 'serial'>>): Promise<boolean>;
  /** Records a poll only if the last one is still `lastPollAt` (two concurrent polls: one wins). */
  recordPoll(hash: string, lastPollAt: number | null, now: number, intervalS: number): Promise<boolean>;
  insertUserCert(rec: UserCertRecord): Promise<void>;
  getUserCert(serial: string): Promise<UserCertRecord | undefined>;
  /** Unrevoked, unexpired certificates of active users, with the users' current groups. */
  liveUserCerts(now: number): Promise<UserCertRecord[]>;
  /** Revokes one certificate; false when unknown or already revoked. */
  revokeUserCert(serial: string, at: number, reason: string): Promise<boolean>;
  /** Revokes every unrevoked certificate of the user; returns how many. */
  revokeUserCerts(username: string, at: number, reason: string): Promise<number>;
}
