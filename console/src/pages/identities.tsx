/**
 * Identities: registration entries (with their SVID issuances and rotations, read from the audit
 * log's `svid.join` / `svid.renew` records), devices (`/v1/devices`) and people (`/v1/users`).
 * An entry or a device can be revoked with a reason.
 */
import { useState } from 'preact/hooks';
import type { AuditListResponse, EntryListResponse, EntryView } from '../wire.js';
import type { DeviceListResponse } from '../wire.js';
import { api, seg } from '../api.js';
import { ReasonAction, Show, useLoad, when } from '../ui.js';

interface UserRow { username: string; spiffe_id: string; source: string; state: string; groups: string[]; email: string | null; created_at: string | null }

function Issuances({ entry }: { entry: EntryView }) {
  const joins = useLoad<AuditListResponse>('/v1/audit?action=svid.join&limit=200');
  const renews = useLoad<AuditListResponse>('/v1/audit?action=svid.renew&limit=500');
  return (
    <section class="panel" aria-labelledby="issuance-heading">
      <h3 id="issuance-heading">SVIDs issued to {entry.spiffe_id}</h3>
      <Show load={joins}>{(j) => (
        <Show load={renews}>{(r) => {
          const rows = [...j.records, ...r.records].filter((x) => x.target === entry.spiffe_id).sort((a, b) => b.id - a.id);
          return (
            <table>
              <caption>Joins and rotations ({rows.length})</caption>
              <thead><tr><th scope="col">When</th><th scope="col">Kind</th><th scope="col">Outcome</th><th scope="col">Code</th></tr></thead>
              <tbody>{rows.map((x) => (
                <tr key={x.id}><td>{when(x.ts)}</td><td>{x.action === 'svid.join' ? 'join' : 'rotation'}</td><td>{x.outcome}</td><td>{x.code}</td></tr>
              ))}</tbody>
            </table>
          );
        }}</Show>
      )}</Show>
    </section>
  );
}

function Entries() {
  const load = useLoad<EntryListResponse>('/v1/entries');
  const [open, setOpen] = useState<EntryView>();
  return (
    <section aria-labelledby="entries-heading">
      <h2 id="entries-heading">Workload entries</h2>
      <Show load={load}>{(d) => (
        <table>
          <caption>Registration entries ({d.entries.length})</caption>
          <thead><tr><th scope="col">SPIFFE ID</th><th scope="col">Site</th><th scope="col">Created</th><th scope="col">State</th><th scope="col">Actions</th></tr></thead>
          <tbody>{d.entries.map((e) => (
            <tr key={e.id}>
              <td>{e.spiffe_id}</td><td>{e.attributes.site ?? ''}</td><td>{when(e.created_at)}</td>
              <td>{e.revoked_at ? `revoked ${when(e.revoked_at)}: ${e.revoked_reason ?? ''}` : 'live'}</td>
              <td class="actions">
                <button type="button" aria-label={`SVIDs of ${e.spiffe_id}`} onClick={() => setOpen(e)}>SVIDs</button>
                {!e.revoked_at && <ReasonAction label="Revoke" what={e.spiffe_id} act={(reason) => api.post(`/v1/entries/${seg(e.id)}/revoke`, { reason })} done={load.reload} />}
              </td>
            </tr>
          ))}</tbody>
        </table>
      )}</Show>
      {open && <Issuances key={open.id} entry={open} />}
    </section>
  );
}

function Devices() {
  const load = useLoad<DeviceListResponse>('/v1/devices');
  return (
    <section aria-labelledby="devices-heading">
      <h2 id="devices-heading">Devices</h2>
      <Show load={load}>{(d) => (
        <table>
          <caption>Enrolled devices ({d.devices.length})</caption>
          <thead><tr><th scope="col">Device</th><th scope="col">Owner</th><th scope="col">Posture</th><th scope="col">Certificate until</th><th scope="col">State</th><th scope="col">Actions</th></tr></thead>
          <tbody>{d.devices.map((v) => (
            <tr key={v.device_id}>
              <td>{v.device_id}</td><td>{v.owner ?? ''}</td>
              <td>{v.last_report_at ? `reported ${when(v.last_report_at)}` : 'no report'}</td>
              <td>{when(v.cert_not_after)}</td>
              <td>{v.state === 'revoked' ? `revoked: ${v.revoked_reason ?? ''}` : 'live'}</td>
              <td class="actions">{v.state === 'live' && <ReasonAction label="Revoke" what={`device ${v.device_id}`} act={(reason) => api.post(`/v1/devices/${seg(v.device_id)}/revoke`, { reason })} done={load.reload} />}</td>
            </tr>
          ))}</tbody>
        </table>
      )}</Show>
    </section>
  );
}

function People() {
  const load = useLoad<{ users: UserRow[] }>('/v1/users');
  return (
    <section aria-labelledby="people-heading">
      <h2 id="people-heading">People</h2>
      <Show load={load}>{(d) => (
        <table>
          <caption>Users ({d.users.length})</caption>
          <thead><tr><th scope="col">User</th><th scope="col">Signs in with</th><th scope="col">Groups</th><th scope="col">State</th><th scope="col">Created</th></tr></thead>
          <tbody>{d.users.map((u) => (
            <tr key={u.username}><td>{u.username}{u.email ? ` (${u.email})` : ''}</td><td>{u.source === 'oidc' ? 'single sign-on' : 'passkey and code'}</td><td>{u.groups.join(', ')}</td><td>{u.state}</td><td>{when(u.created_at)}</td></tr>
          ))}</tbody>
        </table>
      )}</Show>
    </section>
  );
}

export function IdentitiesPage() {
  return (
    <>
      <Entries />
      <Devices />
      <People />
    </>
  );
}
