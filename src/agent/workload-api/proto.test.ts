/**
 * proto/workload.proto is the interoperability contract of the SPIFFE Workload API: this pins every
 * name, number, type and streaming flag to the standard (spiffe/spiffe standards/workloadapi.proto),
 * so an accidental edit fails here rather than with a third-party client.
 */
import * as protoLoader from '@grpc/proto-loader';
import { describe, expect, it } from 'vitest';
import { WORKLOAD_API_SERVICE, workloadApiService, workloadProtoPath } from './proto.js';

type Field = [name: string, id: number, type: string, rule?: 'repeated' | 'map'];

const MESSAGES: Record<string, Field[]> = {
  X509SVIDRequest: [],
  X509SVIDResponse: [
    ['svids', 1, 'X509SVID', 'repeated'],
    ['crl', 2, 'bytes', 'repeated'],
    ['federated_bundles', 3, 'bytes', 'map'],
  ],
  X509SVID: [
    ['spiffe_id', 1, 'string'],
    ['x509_svid', 2, 'bytes'],
    ['x509_svid_key', 3, 'bytes'],
    ['bundle', 4, 'bytes'],
    ['hint', 5, 'string'],
  ],
  X509BundlesRequest: [],
  X509BundlesResponse: [
    ['crl', 1, 'bytes', 'repeated'],
    ['bundles', 2, 'bytes', 'map'],
  ],
  JWTSVIDRequest: [
    ['audience', 1, 'string', 'repeated'],
    ['spiffe_id', 2, 'string'],
  ],
  JWTSVIDResponse: [['svids', 1, 'JWTSVID', 'repeated']],
  JWTSVID: [
    ['spiffe_id', 1, 'string'],
    ['svid', 2, 'string'],
    ['hint', 3, 'string'],
  ],
  JWTBundlesRequest: [],
  JWTBundlesResponse: [['bundles', 1, 'bytes', 'map']],
  ValidateJWTSVIDRequest: [
    ['audience', 1, 'string'],
    ['svid', 2, 'string'],
  ],
  ValidateJWTSVIDResponse: [
    ['spiffe_id', 1, 'string'],
    ['claims', 2, 'google.protobuf.Struct'],
  ],
};

const METHODS: [name: string, request: string, response: string, serverStream: boolean][] = [
  ['FetchX509SVID', 'X509SVIDRequest', 'X509SVIDResponse', true],
  ['FetchX509Bundles', 'X509BundlesRequest', 'X509BundlesResponse', true],
  ['FetchJWTSVID', 'JWTSVIDRequest', 'JWTSVIDResponse', false],
  ['FetchJWTBundles', 'JWTBundlesRequest', 'JWTBundlesResponse', true],
  ['ValidateJWTSVID', 'ValidateJWTSVIDRequest', 'ValidateJWTSVIDResponse', false],
];

interface FieldDescriptor {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
}
interface MessageDescriptor {
  name: string;
  field: FieldDescriptor[];
  nestedType: (MessageDescriptor & { options: { mapEntry?: boolean } | null })[];
  oneofDecl: unknown[];
}

const scalar = (t: string): string => t.replace(/^TYPE_/, '').toLowerCase();

/** The fields of a message descriptor as [name, number, type, rule], maps folded to their value type. */
function fieldsOf(msg: MessageDescriptor): Field[] {
  return msg.field.map((f): Field => {
    const entry = msg.nestedType.find((n) => n.name === f.typeName && n.options?.mapEntry === true);
    if (entry !== undefined) {
      const [key, value] = entry.field;
      expect(scalar(key!.type)).toBe('string');
      return [f.name, f.number, value!.type === 'TYPE_MESSAGE' ? value!.typeName : scalar(value!.type), 'map'];
    }
    const type = f.type === 'TYPE_MESSAGE' ? f.typeName : scalar(f.type);
    return f.label === 'LABEL_REPEATED' ? [f.name, f.number, type, 'repeated'] : [f.name, f.number, type];
  });
}

describe('proto/workload.proto', () => {
  // Loaded as a client would load it; descriptors are the protobuf DescriptorProto of each type.
  const def = protoLoader.loadSync(workloadProtoPath(), { keepCase: true });

  it('declares no package, exactly the messages of the standard, and one service', () => {
    const ours = Object.keys(def).filter((k) => !k.startsWith('google.protobuf.')).sort();
    expect(ours).toEqual([...Object.keys(MESSAGES), WORKLOAD_API_SERVICE].sort());
  });

  it.each(Object.entries(MESSAGES))('message %s has the standard fields', (name, fields) => {
    const msg = (def[name] as { type: MessageDescriptor }).type;
    expect(msg.name).toBe(name);
    expect(fieldsOf(msg)).toEqual(fields);
    expect(msg.oneofDecl).toEqual([]);
  });

  it('service SpiffeWorkloadAPI has the standard RPCs and method paths', () => {
    const svc = def[WORKLOAD_API_SERVICE] as protoLoader.ServiceDefinition;
    const actual = Object.entries(svc).map(([name, m]) => {
      expect(m.path).toBe(`/SpiffeWorkloadAPI/${name}`);
      expect(m.requestStream).toBe(false);
      const req = (m.requestType as unknown as { type: MessageDescriptor }).type.name;
      const res = (m.responseType as unknown as { type: MessageDescriptor }).type.name;
      return [name, req, res, m.responseStream];
    });
    expect(actual).toEqual(METHODS);
  });

  it('is what the server registers', () => {
    const svc = workloadApiService();
    expect(Object.fromEntries(Object.entries(svc).map(([k, m]) => [k, [m.path, m.responseStream]]))).toEqual(
      Object.fromEntries(METHODS.map(([name, , , stream]) => [name, [`/SpiffeWorkloadAPI/${name}`, stream]])),
    );
  });
});
