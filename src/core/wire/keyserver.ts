/**
 * A key server's HTTP API on the wire (src/keyserver/server.ts), declared once: the server checks
 * what it returns against these (`satisfies`), the agent's unseal, the admin's dealer and the
 * benchmarks type their calls with them. Binary fields are base64url (32-byte points and scalars).
 */

/** GET /v1/healthz. */
export interface KeyServerHealthResponse { status: 'ok'; shares: number }

/** POST /v1/evaluate (any SVID of the trust domain the policy allows to unseal). */
export interface EvaluateRequest { policy: string; epoch: number; generation?: number; b: string }
export interface EvaluateResponse { index: number; generation: number; z: string; proof: string }

/** PUT /v1/shares/:policy/:epoch (a provisioner) → 201. */
export interface InstallShareRequest { t: number; n: number; index: number; value: string; commitments: string[] }
export interface InstallShareResponse { policy: string; epoch: number; index: number; created: boolean }

/** POST /v1/shares/:policy/:epoch/refresh (a provisioner): prepare the next share generation. */
export interface RefreshShareRequest { from: number; delta: string; d: string[] }
export interface RefreshShareResponse { policy: string; epoch: number; index: number; generation: number; commitments: string[] }

/** POST /v1/shares/:policy/:epoch/commit (a provisioner). */
export interface CommitShareRequest { generation: number; commitments: string[] }
export interface CommitShareResponse { policy: string; epoch: number; generation: number; committed: boolean }

/** DELETE /v1/shares/:policy/:epoch/pending (a provisioner). */
export interface AbortShareResponse { policy: string; epoch: number; aborted: boolean }

/** DELETE /v1/shares/:policy/:epoch (a provisioner). */
export interface DeleteShareResponse { policy: string; epoch: number; deleted: boolean }

/** One share a key server holds (public facts only). */
export interface ShareSummary { policy: string; epoch: number; generation: number; index: number; t: number; n: number; pending?: number }

/** GET /v1/shares (a provisioner). */
export interface ShareListResponse { shares: ShareSummary[] }
