/**
 * One base error with a stable code, in the style of jose/fastify: callers `switch (err.code)`,
 * never match on messages. Every code lives in {@link ERROR_CODES} with its HTTP status and a
 * one-line description; `errors.test.ts` fails if a code is missing from the README table.
 *
 * Messages must never contain a token, key, CSR, secret or ciphertext.
 */
export const ERROR_CODES = {
  // Generic request problems (the API edge).
  TESSERA_BAD_REQUEST: { status: 400, description: 'The request is malformed (bad JSON, missing or invalid fields).' },
  TESSERA_UNSUPPORTED_MEDIA_TYPE: { status: 415, description: 'The request body is not application/json.' },
  TESSERA_K8S_REVIEW_INVALID: { status: 400, description: 'The body is not an AdmissionReview v1 the webhook can answer (bad JSON, wrong apiVersion or kind, a request without uid, kind, operation or namespace).' },
  TESSERA_PAYLOAD_TOO_LARGE: { status: 413, description: 'The request body exceeds the size limit.' },
  TESSERA_HEADERS_TOO_LARGE: { status: 431, description: 'The request head (headers) exceeds the size limit.' },
  TESSERA_REQUEST_TIMEOUT: { status: 408, description: 'The request was not received in time.' },
  TESSERA_NOT_FOUND: { status: 404, description: 'No such resource or route.' },
  TESSERA_CONFLICT: { status: 409, description: 'The resource already exists.' },
  TESSERA_INTERNAL: { status: 500, description: 'An unexpected internal error (a bug: please report it).' },
  TESSERA_UNAVAILABLE: { status: 503, description: 'The service is starting, stopping or cannot reach its store.' },
  TESSERA_CONSOLE_NOT_BUILT: { status: 503, description: 'The web console\'s assets are not built (run `npm run build:console`): the control plane serves no /console/ pages.' },

  // Authentication / authorization of callers.
  TESSERA_AUTH_REQUIRED: { status: 401, description: 'A client certificate (SVID or admin credential) is required.' },
  TESSERA_AUTH_INVALID: { status: 401, description: 'The client certificate is not trusted or is not an X509-SVID leaf (unknown CA, expired, not yet valid, other trust domain, a CA or signing key usage, no path).' },
  TESSERA_FORBIDDEN: { status: 403, description: 'The authenticated caller may not perform this operation.' },
  TESSERA_IDENTITY_REVOKED: { status: 403, description: 'The caller\'s identity has no live registration entry: it was deleted or revoked, or the certificate presented was revoked.' },
  TESSERA_MFA_REQUIRED: { status: 401, description: 'The action needs fresh MFA: a session or person certificate whose multi-factor sign-in is no older than `--admin-mfa-max-age` (or what the admin policy or route asks). Step up (sign in again with both factors, or through the OIDC provider with MFA) and retry.' },
  TESSERA_ADMIN_REVOKED: { status: 403, description: 'This admin credential was removed (`tessera admin remove`) or is not the one issued to that admin: it is refused.' },
  TESSERA_IDENTITY_QUARANTINED: { status: 403, description: 'The identity is quarantined (`tessera risk quarantine` or the risk engine): its calls, unseals, renewals and derived credentials are refused until an admin releases it or the quarantine expires.' },
  TESSERA_RATE_LIMITED: { status: 429, description: 'The caller has made too many requests; retry later.' },
  TESSERA_POLL_LIMIT: { status: 429, description: 'The caller already holds as many policy bundle long polls as one identity may (`--bundle-max-polls`); retry when one ends.' },

  // SPIFFE IDs.
  TESSERA_SPIFFE_ID_INVALID: { status: 400, description: 'The SPIFFE ID does not conform to the SPIFFE-ID standard.' },
  TESSERA_SPIFFE_ID_RESERVED: { status: 400, description: 'The SPIFFE ID path is reserved for Tessera itself (/tessera/...) or for devices (/device/...).' },

  // Certificate signing requests and issuance.
  TESSERA_CSR_INVALID: { status: 400, description: 'The CSR is not a well-formed PKCS#10 request.' },
  TESSERA_CSR_SIGNATURE_INVALID: { status: 400, description: 'The CSR signature does not verify with its own public key.' },
  TESSERA_CSR_KEY_UNSUPPORTED: { status: 400, description: 'The CSR key is not P-256 ECDSA or Ed25519.' },
  TESSERA_CSR_IDENTITY_MISMATCH: { status: 403, description: 'The CSR asks for an identity other than the one the caller may obtain.' },
  TESSERA_ENTRY_NOT_FOUND: { status: 404, description: 'No registration entry with this id or SPIFFE ID.' },

  // Join tokens. Refusals are deliberately indistinguishable to the caller except for the code.
  TESSERA_TOKEN_INVALID: { status: 401, description: 'The join token is unknown, malformed, already used, expired, or bound to another entry.' },

  // JWT-SVIDs.
  TESSERA_JWT_INVALID: { status: 401, description: 'The JWT-SVID is malformed, unsigned, signed with an unknown key or algorithm, or by another trust domain.' },
  TESSERA_JWT_EXPIRED: { status: 401, description: 'The JWT-SVID has expired (or is not yet valid).' },
  TESSERA_JWT_AUDIENCE: { status: 401, description: 'The JWT-SVID is not intended for this audience.' },

  // API keys.
  TESSERA_APIKEY_INVALID: { status: 401, description: 'The API key is unknown, malformed, revoked or expired, or its owner is deleted or revoked.' },
  TESSERA_APIKEY_NOT_FOUND: { status: 404, description: 'No API key with this id (among those the caller may see).' },
  TESSERA_CREDENTIAL_DENIED: { status: 403, description: 'Policy (Cedar `credential:derive`) or the entry\'s TTL bound does not permit this API key scope, JWT audience or lifetime.' },

  // CA.
  TESSERA_CA_ROTATION_IN_PROGRESS: { status: 409, description: 'A prepared CA is already waiting for activation.' },
  TESSERA_KEK_INVALID: { status: 500, description: 'The key-encryption key cannot decrypt the stored CA keys (wrong TESSERA_KEK?).' },

  // The sidecar proxies (agent inbound/outbound).
  TESSERA_PROXY_DENIED: { status: 403, description: 'The sidecar\'s policy does not allow this caller to make this request or connection.' },
  TESSERA_PROXY_PEER_IDENTITY: { status: 403, description: 'The peer\'s certificate is not an X509-SVID leaf with exactly one SPIFFE ID of the expected trust domain, or not the expected one.' },
  TESSERA_PROXY_UPSTREAM_TIMEOUT: { status: 504, description: 'The application did not answer the request in time (the sidecar\'s response timeout).' },
  TESSERA_PROXY_PATH_REFUSED: { status: 400, description: 'The sidecar refuses a request target the application could read differently from the policy: dot or empty segments, `;` parameters, escaped unreserved characters, control bytes, or invalid UTF-8 after percent-decoding.' },
  TESSERA_PROXY_LOCAL_CALLER: { status: 403, description: 'The local process connecting to an outbound proxy\'s Unix socket does not match the entry\'s unix selectors, or its peer credentials cannot be read.' },
  TESSERA_PROXY_UPSTREAM: { status: 502, description: 'The sidecar could not reach the application, or the application answered with a malformed response.' },

  // Policy (Cedar policies, signed policy bundles, policy test cases).
  TESSERA_POLICY_INVALID: { status: 400, description: 'A policy does not parse or does not validate against the schema (file, line and column in the message).' },
  TESSERA_CANONICAL_JSON_INVALID: { status: 400, description: 'A value to sign or hash is not plain JSON (undefined, non-finite number, cycle, class instance, nesting deeper than 64).' },
  TESSERA_POLICY_BUNDLE_INVALID: { status: 400, description: 'The signed policy bundle is malformed, not signed by a trusted CA, altered, or older than the version held (rollback).' },
  TESSERA_POLICY_CASES_INVALID: { status: 400, description: 'The policy test-case file is malformed (the message names the case).' },

  // Blind threshold secrets (sealed blobs, key shares, blinded evaluations).
  TESSERA_SECRET_BLOB_INVALID: { status: 400, description: 'The sealed secret is malformed, altered, for another policy or key epoch, or does not open with the recovered key.' },
  TESSERA_SECRET_POINT_INVALID: { status: 400, description: 'A group element or scalar is not a canonical ristretto255 encoding, or is the identity or zero.' },
  TESSERA_PROVISION_AUTHORIZATION_INVALID: { status: 403, description: 'A key server refused the provisioning authorization (`tessera login` certificates): not signed by a trusted CA, expired, or issued to another caller, certificate, key server, secret policy, epoch or operation. Run the command again (it asks the control plane for a new one).' },
  TESSERA_SECRET_SHARE_INVALID: { status: 400, description: 'A key share is malformed, duplicated, or does not match the policy\'s published commitments.' },
  TESSERA_SECRET_PROOF_INVALID: { status: 502, description: 'A key server answered without a valid proof that it used its committed key share.' },
  TESSERA_SECRET_THRESHOLD: { status: 503, description: 'Fewer key servers than the policy\'s threshold answered with a valid evaluation.' },
  TESSERA_SECRET_EPOCH_RETIRED: { status: 410, description: 'The secret policy\'s key epoch was retired: its shares are deleted; seal again under a newer epoch.' },
  TESSERA_SECRET_STALE: { status: 409, description: 'The key server holds another share generation than the caller asked for (a refresh is under way): fetch the policy record again.' },
  TESSERA_SECRET_POLICY_INVALID: { status: 400, description: 'The secret policy record is malformed (threshold, commitments, key servers), not signed by a trusted CA, or altered.' },
  TESSERA_DKG_PARAMS_INVALID: { status: 400, description: 'The key-generation session parameters are invalid: a session id shorter than 16 bytes, a threshold outside 1..n, repeated or out-of-range indices or SPIFFE IDs, old commitments or a share that do not match, or a participant that is not listed.' },
  TESSERA_DKG_MESSAGE_INVALID: { status: 400, description: 'A key-generation message is malformed, too large, for another session or round, from an unknown sender, or not validly signed by it: it is ignored.' },
  TESSERA_DKG_ABORTED: { status: 409, description: 'The distributed key generation, refresh or reshare stopped without a result: fewer than t key servers remain, the relay showed different message sets to different servers, or the session is already over. Nothing is installed; start a new session.' },

  // The verifiable audit log (C2SP signed-note, tlog-checkpoint, tlog-cosignature).
  TESSERA_AUDIT_CHECKPOINT_INVALID: { status: 400, description: 'A checkpoint, signed note, cosignature or verifier key is malformed (C2SP signed-note / tlog-checkpoint / tlog-cosignature), too large, not signed by the expected log key, for another origin, or a signature on it does not verify.' },
  // The audit log's Merkle tree (RFC 9162 §2.1).
  TESSERA_AUDIT_PROOF_INVALID: { status: 400, description: 'An audit proof did not verify on the client: the record does not hash to its leaf, the inclusion or consistency proof does not lead to the signed root, or the answer names another log key than the pinned one.' },
  TESSERA_AUDIT_RANGE: { status: 400, description: 'A Merkle proof or subtree was asked for an impossible range: a leaf index not below the tree size, a first tree size above the second, a size that is negative or not an integer, or leaves the log does not hold.' },
  TESSERA_AUDIT_STATE_INVALID: { status: 500, description: 'Stored Merkle tree state is malformed or inconsistent: a frontier that is not { size, hashes } with one 64-digit hex hash per set bit of the size, a leaf or subtree hash that is not 32 bytes, or (at start) a stored tree that does not extend the last signed checkpoint.' },
  TESSERA_AUDIT_TAMPERED: { status: 409, description: 'tessera audit verify found the audit log altered: a record edited, deleted, inserted or reordered, the tail truncated or rolled back below a signed or saved checkpoint, a checkpoint root or signature that does not match, or another log key than the pinned one (the message names the first record id or tree size).' },
  TESSERA_AUDIT_WITNESS_ALARM: { status: 409, description: 'A witness saw a checkpoint that contradicts the one it holds: not consistent with it (a fork), smaller (a rewind), not signed by the log key, or signed by another log key. The witness keeps its checkpoint and reports the alarm.' },
  TESSERA_AUDIT_WITNESS_STATE_INVALID: { status: 400, description: 'A witness state file is malformed, or the checkpoint it holds does not verify with the log key it pins.' },

  // Local (CLI / agent) problems.
  TESSERA_CONFIG_INVALID: { status: 400, description: 'A command-line option or configuration value is invalid.' },
  TESSERA_CREDENTIAL_MISSING: { status: 400, description: 'A needed credential file (admin credential, SVID, bundle) is missing or unreadable.' },
  TESSERA_SERVER_UNREACHABLE: { status: 503, description: 'The control plane could not be reached.' },
  TESSERA_ADDRESS_IN_USE: { status: 409, description: 'The address (host and port, or Unix socket path) to listen on is already in use by another process.' },

  // Risk (issue 11): the telemetry interchange format.
  TESSERA_TELEMETRY_INVALID: { status: 400, description: 'A telemetry record or replay-file line is malformed (the message names the line and field): not JSON, an unknown field, a bad SPIFFE ID, site, time, count or latency, a line over 64 KiB, or a window that does not fit the risk engine.' },
  // The agent's SPIFFE Workload API endpoint.
  TESSERA_WORKLOAD_API_SOCKET_IN_USE: { status: 409, description: 'Another process is already serving the Workload API on this socket path.' },
  TESSERA_PEER_CREDENTIALS_UNAVAILABLE: { status: 500, description: 'The Unix peer credentials of a Workload API caller cannot be read (native addon not built, or not Linux).' },

  // Just-in-time grants (tessera grant).
  TESSERA_GRANT_INVALID: { status: 400, description: 'The grant request is invalid: principal or resource not a SPIFFE ID, unknown action, duration out of bounds, start in the past or too far ahead, or a missing reason.' },
  TESSERA_GRANT_SELF_APPROVAL: { status: 403, description: 'A grant must be approved or denied by an admin other than the one who requested it (two-person rule).' },
  TESSERA_GRANT_STATE: { status: 409, description: 'The grant is not in a state that allows this step (only a pending grant can be approved or denied; an expired, denied or revoked grant cannot be revoked).' },

  // People and sign-in (issue 12): sessions, passkeys, TOTP, OIDC.
  TESSERA_SESSION_REQUIRED: { status: 401, description: 'This request needs a signed-in session (cookie `__Host-tessera_session`): none was presented, or it is unknown or was ended (logout, logout-all, user disabled or removed).' },
  TESSERA_SESSION_EXPIRED: { status: 401, description: 'The session passed its idle or absolute timeout: sign in again.' },
  TESSERA_CSRF_INVALID: { status: 403, description: 'A state-changing browser request without the CSRF token (header `x-tessera-csrf` equal to the `__Host-tessera_csrf` cookie and bound to the session), or from another Origin.' },
  TESSERA_REDIRECT_INVALID: { status: 400, description: 'The return-to address is not a same-origin relative path (`/...`, no scheme, host, `//` or backslash).' },
  TESSERA_LINK_INVALID: { status: 401, description: 'The one-time link (enrolment link, console sign-in link, enrolment in progress) is unknown, malformed, already used or expired.' },
  TESSERA_WEBAUTHN_INVALID: { status: 401, description: 'The passkey ceremony failed: unknown, used or expired challenge, a response that does not verify (origin, RP ID, signature, flags, counter), or a credential of another user.' },
  TESSERA_TOTP_INVALID: { status: 401, description: 'The TOTP code is wrong, outside the accepted time window, already used, or too many wrong codes were tried for this sign-in.' },
  TESSERA_USER_DISABLED: { status: 403, description: 'The user is disabled (`tessera user disable`): sign-in and sessions are refused.' },
  TESSERA_USER_CONFLICT: { status: 409, description: 'The user name exists, or the name derived from an OIDC identity is taken by another user.' },
  TESSERA_OIDC_NOT_CONFIGURED: { status: 404, description: 'No OIDC provider is configured (`tessera server --oidc-issuer ...`).' },
  TESSERA_OIDC_STATE_INVALID: { status: 400, description: 'The OIDC callback\'s `state` is missing, unknown, used, expired, or not the one this browser started.' },
  TESSERA_OIDC_FAILED: { status: 401, description: 'The OIDC provider refused the sign-in or its answer did not verify (error response, code refused or replayed, ID token signature, issuer, audience, nonce or age).' },
  // Devices (issue 12): enrolment, posture reports.
  TESSERA_DEVICE_NOT_FOUND: { status: 404, description: 'No enrolled device with this id or SPIFFE ID.' },
  TESSERA_POSTURE_INVALID: { status: 400, description: 'The posture report is malformed, is not the caller device\'s own, is not signed by that device\'s current key, or is not newer than its last report and close to the server clock.' },
  // The gateway for people (issue 12, src/gateway/).
  TESSERA_GATEWAY_NOT_FOUND: { status: 404, description: 'No registered gateway with this name (`tessera gateway add`), or the caller\'s identity is not a registered gateway\'s.' },
  TESSERA_GATEWAY_CODE_INVALID: { status: 400, description: 'The gateway authorization code is unknown, already used, expired, issued to another gateway or redirect URI, or its PKCE verifier does not match the challenge (RFC 7636 S256).' },
  TESSERA_GATEWAY_STATE_INVALID: { status: 400, description: 'The gateway\'s sign-in callback has no flow cookie, or its `state` does not match the one the gateway sent (a forged or replayed callback).' },
  TESSERA_ASSERTION_INVALID: { status: 401, description: 'The gateway\'s user assertion (`x-tessera-user-assertion`) is missing, malformed, not signed by a key of the gateway\'s JWKS, expired, or for another issuer or audience.' },
  TESSERA_ROUTE_NOT_FOUND: { status: 404, description: 'The gateway has no route for this host and path.' },
  // Federation between trust domains (issue 14): SPIFFE bundle endpoints.
  TESSERA_FEDERATION_INVALID: { status: 400, description: 'The federation request or a federated bundle is invalid: a bad trust domain (or our own), endpoint URL (https only), profile (https_web or https_spiffe), endpoint SPIFFE ID, or a bundle that is not a SPIFFE bundle of that trust domain (wrong trust domain in an authority, no authority, sequence going backwards, too large, not JSON).' },
  TESSERA_FEDERATION_NOT_FOUND: { status: 404, description: 'No federation with this trust domain (`tessera federation add`).' },
  TESSERA_FEDERATION_FETCH_FAILED: { status: 502, description: 'The bundle endpoint of the federated trust domain could not be reached, did not authenticate as the profile asks (Web PKI certificate for https_web, the endpoint SPIFFE ID chained to that domain\'s bundle for https_spiffe), or answered with something other than a SPIFFE bundle.' },
  // tessera login (issue 12): person certificates for the CLI.
  TESSERA_LOGIN_CODE_INVALID: { status: 400, description: 'The login code or device code is unknown, malformed, expired, already used (a replayed code also revokes the certificate it gave), or redeemed with the wrong code_verifier or redirect_uri (RFC 6749 invalid_grant).' },
  TESSERA_LOGIN_PENDING: { status: 400, description: 'Device login: the person has not approved or denied the request yet; poll again after the interval (RFC 8628 authorization_pending).' },
  TESSERA_LOGIN_SLOW_DOWN: { status: 400, description: 'Device login: polled before the interval passed; the interval grows by 5 seconds for this and every later poll (RFC 8628 slow_down).' },
  TESSERA_LOGIN_EXPIRED: { status: 400, description: 'Device login: the device code expired before it was approved; start `tessera login` again (RFC 8628 expired_token).' },
  TESSERA_LOGIN_DENIED: { status: 403, description: 'The person denied this login request (RFC 8628 access_denied).' },
  TESSERA_LOGIN_KEY_MISMATCH: { status: 400, description: 'The login CSR is not for the key the login was started with (key_thumbprint).' },
  TESSERA_LOGIN_REVOKED: { status: 401, description: 'This person certificate is no longer accepted: `tessera logout`, logout everywhere, the user was disabled or removed, or it expired; run `tessera login`.' },
  TESSERA_USER_CODE_INVALID: { status: 400, description: 'No pending device login has this user code (mistyped, expired, or already decided).' },
  TESSERA_CREDENTIAL_EXPIRED: { status: 401, description: 'The CLI\'s `tessera login` certificate has expired: run `tessera login` again (or pass --admin-dir for another admin credential).' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class TesseraError extends Error {
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERROR_CODES[code].description, options);
    this.name = 'TesseraError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
  }

  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isTesseraError(err: unknown): err is TesseraError {
  return err instanceof TesseraError;
}

/** Shorthand used throughout: `throw fail('TESSERA_CSR_INVALID', 'bad length')`. */
export function fail(code: ErrorCode, message?: string): TesseraError {
  return new TesseraError(code, message);
}

/**
 * The error for a listener that could not start: TESSERA_ADDRESS_IN_USE when another process holds
 * the address (EADDRINUSE), TESSERA_CONFIG_INVALID otherwise (a bad host, no permission for the port).
 * Both are configuration errors (CLI exit status 2), never TESSERA_INTERNAL.
 *
 * @example
 * await app.listen({ host, port }).catch((err) => { throw listenFailure(err, 'the control plane', `${host}:${port}`); });
 */
export function listenFailure(err: unknown, what: string, address: string): TesseraError {
  const sys = err as { code?: unknown; message?: unknown } | null;
  const reason = typeof sys?.message === 'string' ? sys.message : String(err);
  if (sys?.code === 'EADDRINUSE') return new TesseraError('TESSERA_ADDRESS_IN_USE', `${what} cannot listen on ${address}: the address is already in use by another process`);
  return new TesseraError('TESSERA_CONFIG_INVALID', `${what} cannot listen on ${address}: ${reason}`);
}
