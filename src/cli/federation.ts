/**
 * `tessera federation add|list|show|remove` (admin, audited): trust another trust domain's SPIFFE
 * bundle, fetched from its bundle endpoint (profile https_web or https_spiffe) and refreshed on its
 * hint, without a restart. Only `import type` and the CLI context here: registering costs nothing.
 */
import type { Command } from 'commander';
import { TesseraError } from '../core/errors.js';
import type { AddFederationRequest, FederationListResponse, FederationResponse, FederationView } from '../core/wire/federation.js';
import { output, table, withAdmin, type Run } from './context.js';

type Json = Record<string, unknown>;

async function readSmall(file: string, flag: string, max: number): Promise<string> {
  const { readFileSync, statSync } = await import('node:fs');
  try {
    if (statSync(file).size > max) throw new TesseraError('TESSERA_FEDERATION_INVALID', `${flag} ${file} is larger than ${max} bytes`);
    return readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof TesseraError) throw err;
    throw new TesseraError('TESSERA_CONFIG_INVALID', `${flag}: cannot read ${file}`);
  }
}

function describe(f: FederationView): string {
  const lines = [
    `trust domain:  ${f.trust_domain}`,
    `endpoint:      ${f.endpoint} (${f.profile}${f.endpoint_id ? `, ${f.endpoint_id}` : ''}${f.custom_ca ? ', own CA file' : ''})`,
    `bundle:        ${f.sequence === undefined ? 'none yet' : `sequence ${f.sequence}, ${f.x509_authorities ?? 0} X.509 and ${f.jwt_authorities ?? 0} JWT authorities, refresh hint ${f.refresh_hint_seconds ?? '-'} s`}`,
    `refreshed:     ${f.refreshed_at ?? '-'} (next ${f.next_refresh_at ?? '-'})`,
  ];
  if (f.last_error) lines.push(`last error:    ${f.last_error_at ?? ''} ${f.last_error}`);
  lines.push(`created:       ${f.created_at} by ${f.created_by}`);
  return lines.join('\n');
}

export function federationCommands(program: Command, run: Run): void {
  const fed = program.command('federation').description('federation with other trust domains: trust their SPIFFE bundles (admin)');
  fed.command('add').description('federate with a trust domain: fetch its bundle from its bundle endpoint now and on its refresh hint')
    .argument('<trust-domain>', 'the other trust domain, e.g. partner.example')
    .requiredOption('--endpoint <url>', 'its bundle endpoint, https://HOST:PORT/PATH (a Tessera control plane: https://HOST:PORT/v1/bundle)')
    .requiredOption('--profile <profile>', 'https_web (Web PKI server certificate) or https_spiffe (the endpoint\'s X509-SVID)')
    .option('--endpoint-id <spiffe-id>', 'https_spiffe: the SPIFFE ID the endpoint must present (Tessera: spiffe://TD/tessera/server)')
    .option('--bundle <file>', 'https_spiffe: the other domain\'s bundle (JWK Set, its GET /v1/bundle) to trust the endpoint with the first time')
    .option('--ca <file>', 'https_web: PEM CA certificate(s) the endpoint\'s certificate must chain to (default: the system roots)')
    .action(run(async (g, td: string, o: Json) => {
      const req: AddFederationRequest = { trust_domain: td, endpoint: String(o.endpoint), profile: String(o.profile) };
      if (o.endpointId !== undefined) req.endpoint_id = String(o.endpointId);
      if (o.bundle !== undefined) req.bundle = await readSmall(String(o.bundle), '--bundle', 1024 * 1024);
      if (o.ca !== undefined) req.ca_pem = await readSmall(String(o.ca), '--ca', 256 * 1024);
      const res = await withAdmin(g, (c) => c.call<FederationResponse>('POST', '/v1/federation', req));
      output(g, res, () => `federated with ${res.federation.trust_domain}\n${describe(res.federation)}`);
    }));
  fed.command('list').description('list federated trust domains')
    .action(run(async (g) => {
      const res = await withAdmin(g, (c) => c.call<FederationListResponse>('GET', '/v1/federation'));
      output(g, res, () => (res.federations.length === 0 ? 'no federated trust domains' : table(['TRUST DOMAIN', 'PROFILE', 'ENDPOINT', 'SEQUENCE', 'REFRESHED', 'LAST ERROR'],
        res.federations.map((f) => [f.trust_domain, f.profile, f.endpoint, f.sequence === undefined ? '-' : String(f.sequence), f.refreshed_at ?? '-', f.last_error ? f.last_error.slice(0, 60) : '-']))));
    }));
  fed.command('show').description('show a federation and the bundle held for it')
    .argument('<trust-domain>', 'the federated trust domain')
    .action(run(async (g, td: string) => {
      const res = await withAdmin(g, (c) => c.call<FederationResponse>('GET', `/v1/federation/${encodeURIComponent(td)}`));
      output(g, res, () => describe(res.federation));
    }));
  fed.command('remove').description('stop trusting a trust domain: its bundle leaves the agents, its workloads are refused')
    .argument('<trust-domain>', 'the federated trust domain')
    .action(run(async (g, td: string) => {
      const res = await withAdmin(g, (c) => c.call<{ federation: FederationView }>('POST', `/v1/federation/${encodeURIComponent(td)}/remove`, {}));
      output(g, res, () => `removed federation with ${res.federation.trust_domain}`);
    }));
}
