/**
 * The one place where Tessera error codes become gRPC statuses for the Workload API, following
 * SPIFFE_Workload_Endpoint.md §6: InvalidArgument (client bug, do not retry), Unavailable (retry
 * with backoff), PermissionDenied (no identity for this caller, retry with backoff).
 */
import { status as Status, type StatusObject } from '@grpc/grpc-js';
import { ERROR_CODES, isTesseraError, type ErrorCode } from '../../core/errors.js';

export type GrpcError = Pick<StatusObject, 'code' | 'details'>;

/** Details sent to callers without an identity: the same for every reason (say as little as possible). */
export const NO_IDENTITY = 'no identity issued';
/** Details for a request without the `workload.spiffe.io: true` metadata. */
export const SECURITY_HEADER_MISSING = 'security header missing from request';

export function grpcError(code: Status, details: string): GrpcError {
  return { code, details };
}

const OVERRIDES: Partial<Record<ErrorCode, Status>> = {
  TESSERA_CREDENTIAL_MISSING: Status.UNAVAILABLE, // local material not there yet: retry
  TESSERA_CONFIG_INVALID: Status.INTERNAL,
  TESSERA_KEK_INVALID: Status.INTERNAL,
  // ValidateJWTSVID: a token that does not validate is a bad argument (§6.2.3, §4.5), not a denial.
  TESSERA_JWT_INVALID: Status.INVALID_ARGUMENT,
  TESSERA_JWT_EXPIRED: Status.INVALID_ARGUMENT,
  TESSERA_JWT_AUDIENCE: Status.INVALID_ARGUMENT,
};

function fromHttpStatus(http: number): Status {
  if (http === 400 || http === 413 || http === 415 || http === 431) return Status.INVALID_ARGUMENT;
  if (http === 401 || http === 403 || http === 404) return Status.PERMISSION_DENIED;
  if (http === 408 || http === 503) return Status.UNAVAILABLE;
  return Status.INTERNAL;
}

/** A gRPC status for any thrown value; unknown errors become INTERNAL without their message. */
export function grpcErrorOf(err: unknown): GrpcError {
  if (!isTesseraError(err)) return grpcError(Status.INTERNAL, 'internal error');
  const code = OVERRIDES[err.code] ?? fromHttpStatus(ERROR_CODES[err.code].status);
  if (code === Status.INTERNAL) return grpcError(code, 'internal error');
  // A caller with an identity that policy refuses a JWT audience is told so (it may ask for another).
  if (code === Status.PERMISSION_DENIED && err.code !== 'TESSERA_CREDENTIAL_DENIED') return grpcError(code, NO_IDENTITY);
  // TesseraError messages never hold secrets (errors.ts), and they tell a client what was wrong.
  return grpcError(code, `${err.code}: ${err.message}`);
}
