/**
 * The SPIFFE Workload API service definition, loaded at run time from `proto/workload.proto`
 * (the standard's contract, kept verbatim) with @grpc/proto-loader.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { TesseraError } from '../../core/errors.js';
import { projectRoot } from '../project-root.js';

/** The standard declares no protobuf package: method paths are `/SpiffeWorkloadAPI/<Method>`. */
export const WORKLOAD_API_SERVICE = 'SpiffeWorkloadAPI';

/** The gRPC metadata every request must carry (SPIFFE_Workload_Endpoint.md §3), value case-sensitive. */
export const SECURITY_HEADER = 'workload.spiffe.io';
export const SECURITY_HEADER_VALUE = 'true';

export function workloadProtoPath(): string {
  return join(projectRoot(), 'proto', 'workload.proto');
}

// Field names exactly as in the .proto (keepCase); absent request fields read as their defaults.
const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

let cached: grpc.ServiceDefinition | undefined;

export function workloadApiService(): grpc.ServiceDefinition {
  if (cached !== undefined) return cached;
  const def = protoLoader.loadSync(workloadProtoPath(), LOADER_OPTIONS);
  const ctor = (grpc.loadPackageDefinition(def) as Record<string, unknown>)[WORKLOAD_API_SERVICE] as { service?: grpc.ServiceDefinition } | undefined;
  if (ctor?.service === undefined) throw new TesseraError('TESSERA_INTERNAL', `${WORKLOAD_API_SERVICE} is missing from proto/workload.proto`);
  cached = ctor.service;
  return cached;
}

// Message shapes as proto-loader hands them over with LOADER_OPTIONS (snake_case, bytes as Buffer).
// google.protobuf.Struct comes from protobufjs's built-in definition, whose fields are camelCase.

export interface X509SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint?: string;
}

export interface X509SvidResponse {
  svids: X509SvidMessage[];
  crl: Buffer[];
  federated_bundles: Record<string, Buffer>;
}

export interface X509BundlesResponse {
  crl: Buffer[];
  bundles: Record<string, Buffer>;
}

export interface JwtSvidRequest {
  audience?: string[];
  spiffe_id?: string;
}

export interface JwtSvidResponse {
  svids: { spiffe_id: string; svid: string; hint?: string }[];
}

export interface JwtBundlesResponse {
  bundles: Record<string, Buffer>;
}

export interface ValidateJwtSvidRequest {
  audience?: string;
  svid?: string;
}

export type StructValue =
  | { nullValue: 'NULL_VALUE' }
  | { numberValue: number }
  | { stringValue: string }
  | { boolValue: boolean }
  | { structValue: StructMessage }
  | { listValue: { values: StructValue[] } };

export interface StructMessage {
  fields: Record<string, StructValue>;
}

export interface ValidateJwtSvidResponse {
  spiffe_id: string;
  claims: StructMessage;
}
