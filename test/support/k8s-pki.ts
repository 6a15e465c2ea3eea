/**
 * A cluster-like PKI made with the openssl CLI for the webhook's caller checks: a "cluster CA" that
 * signs the API server's webhook client certificate, a kubelet's client certificate (same CA, other
 * CN), a certificate with the API server's CN but only serverAuth usage, and one with the right CN
 * from an unrelated CA.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const APISERVER_CN = 'tessera-webhook-apiserver';

export interface ClientCert { cert: string; key: string }

export interface ClusterPki {
  /** File of the cluster CA (what --client-ca names). */
  caFile: string;
  caPem: string;
  apiserver: ClientCert;
  kubelet: ClientCert;
  serverOnly: ClientCert;
  foreign: ClientCert;
}

export function makeClusterPki(dir: string): ClusterPki {
  mkdirSync(dir, { recursive: true });
  const ssl = (args: string[]): void => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.stderr}`);
  };
  writeFileSync(join(dir, 'client.cnf'), 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n');
  writeFileSync(join(dir, 'server.cnf'), 'extendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n');
  for (const ca of ['cluster', 'foreign']) {
    ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${ca}-ca.key`, '-out', `${ca}-ca.pem`, '-days', '2', '-subj', `/CN=${ca}-kubernetes-ca`]);
  }
  const leaf = (name: string, ca: string, cn: string, ext: string): ClientCert => {
    ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/O=system:masters/CN=${cn}`]);
    ssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}-ca.pem`, '-CAkey', `${ca}-ca.key`, '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', ext]);
    return { cert: readFileSync(join(dir, `${name}.pem`), 'utf8'), key: readFileSync(join(dir, `${name}.key`), 'utf8') };
  };
  return {
    caFile: join(dir, 'cluster-ca.pem'),
    caPem: readFileSync(join(dir, 'cluster-ca.pem'), 'utf8'),
    apiserver: leaf('apiserver', 'cluster', APISERVER_CN, 'client.cnf'),
    kubelet: leaf('kubelet', 'cluster', 'system:node:node-1', 'client.cnf'),
    serverOnly: leaf('server-only', 'cluster', APISERVER_CN, 'server.cnf'),
    foreign: leaf('foreign', 'foreign', APISERVER_CN, 'client.cnf'),
  };
}
