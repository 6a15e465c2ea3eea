/**
 * Secrets: the secret policies and their key epochs (GET /v1/secret-policies), an epoch's key
 * servers and threshold (from its signed record, GET /v1/secret-policies/:id?epoch=), and each key
 * server's health as the control plane sees it: its newest telemetry report and its risk state.
 * Only public material: commitments and key server addresses, never a share.
 */
import { useState } from 'preact/hooks';
import type { SecretPolicyListResponse, SecretPolicyResponse, SecretPolicySummary, TelemetryListResponse } from '../wire.js';
import type { RiskShowResponse } from '../wire.js';
import { seg } from '../api.js';
import { Show, useLoad, when } from '../ui.js';

interface Server { url: string; spiffeId: string; index: number }

/** The signed record's payload (base64url or base64 JSON). */
function recordOf(payload: string): { t: number; n: number; servers: Server[] } | undefined {
  try {
    const b64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)), (c) => c.charCodeAt(0)))) as { t: number; n: number; servers: Server[] };
  } catch {
    return undefined;
  }
}

function Health({ server }: { server: Server }) {
  const tele = useLoad<TelemetryListResponse>(`/v1/telemetry?identity=${encodeURIComponent(server.spiffeId)}&limit=1`);
  const risk = useLoad<RiskShowResponse>(`/v1/risk/${seg(server.spiffeId)}`);
  const last = tele.data?.windows[0];
  const age = last ? Math.round((Date.now() - Date.parse(last.ts)) / 1000) : undefined;
  return (
    <tr>
      <td>{server.index}</td><td>{server.url}</td><td>{server.spiffeId}</td>
      <td>{tele.error ? tele.error.code : !tele.data ? '…' : last ? `${age} s ago: ${last.requests} requests, ${last.errors} errors` : 'no report'}</td>
      <td>{risk.error ? risk.error.code : risk.data ? `${risk.data.state.state} (${risk.data.state.score})` : '…'}</td>
    </tr>
  );
}

function Epoch({ p }: { p: SecretPolicySummary }) {
  const load = useLoad<SecretPolicyResponse>(`/v1/secret-policies/${seg(p.id)}?epoch=${p.epoch}`);
  return (
    <section class="panel" aria-labelledby="epoch-heading">
      <h2 id="epoch-heading">{p.id}, epoch {p.epoch}</h2>
      {load.error?.code === 'TESSERA_SECRET_EPOCH_RETIRED' ? <p>This epoch is retired.</p> : (
        <Show load={load}>{(r) => {
          const rec = recordOf(r.signed.payload);
          if (!rec) return <p>The signed record could not be read.</p>;
          return (
            <table>
              <caption>Key servers: any {rec.t} of {rec.n} unseal (generation {r.generation})</caption>
              <thead><tr><th scope="col">#</th><th scope="col">Address</th><th scope="col">Identity</th><th scope="col">Last report</th><th scope="col">Risk</th></tr></thead>
              <tbody>{rec.servers.map((s) => <Health key={s.index} server={s} />)}</tbody>
            </table>
          );
        }}</Show>
      )}
    </section>
  );
}

export function SecretsPage() {
  const load = useLoad<SecretPolicyListResponse>('/v1/secret-policies');
  const [open, setOpen] = useState<SecretPolicySummary>();
  return (
    <>
      <Show load={load}>{(d) => (
        <table>
          <caption>Secret policies and key epochs ({d.policies.length})</caption>
          <thead><tr><th scope="col">Policy</th><th scope="col">Epoch</th><th scope="col">Generation</th><th scope="col">Created</th><th scope="col">Retired</th><th scope="col">Key servers</th></tr></thead>
          <tbody>{d.policies.map((p) => (
            <tr key={`${p.id}:${p.epoch}`}>
              <td>{p.id}</td><td>{p.epoch}</td><td>{p.generation}</td><td>{when(p.created_at)}</td><td>{when(p.retired_at) || 'no'}</td>
              <td><button type="button" aria-label={`Key servers of ${p.id} epoch ${p.epoch}`} onClick={() => setOpen(p)}>Key servers</button></td>
            </tr>
          ))}</tbody>
        </table>
      )}</Show>
      {open && <Epoch key={`${open.id}:${open.epoch}`} p={open} />}
    </>
  );
}
