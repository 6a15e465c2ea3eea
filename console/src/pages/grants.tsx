/**
 * Grants: just-in-time grants (GET /v1/grants), a request form (POST /v1/grants), and approve / deny
 * / revoke. The two-person rule is the control plane's: approving one's own request is refused
 * with TESSERA_GRANT_SELF_APPROVAL, shown here like any refusal.
 */
import { useId, useState } from 'preact/hooks';
import { api, seg } from '../api.js';
import { useSession } from '../session.js';
import { Field, OutcomeLine, ReasonAction, Show, useAction, useLoad, when } from '../ui.js';

interface GrantRow {
  id: string; state: string; principal: string; action: string; resource: string; duration_seconds: number; reason: string;
  requested_by: string; requested_at: string | null; start: string | null; expiry: string | null; decided_by: string | null; deny_reason: string | null;
}

const ACTIONS = ['http:request', 'tcp:connect', 'secret:unseal', 'credential:derive'];

function RequestForm({ done }: { done: () => void }) {
  const [principal, setPrincipal] = useState('');
  const [action, setAction] = useState(ACTIONS[0]!);
  const [resource, setResource] = useState('');
  const [minutes, setMinutes] = useState('30');
  const [reason, setReason] = useState('');
  const [outcome, run, busy] = useAction();
  const actionId = useId();
  const submit = (e: Event): void => {
    e.preventDefault();
    void run('Requested: another admin must approve it.', () => api.post('/v1/grants', {
      principal: principal.trim(), action, resource: resource.trim(), duration_seconds: Math.round(Number(minutes) * 60), reason: reason.trim(),
    }), () => {
      setReason('');
      done();
    });
  };
  return (
    <form class="panel" onSubmit={submit} aria-labelledby="request-heading">
      <h2 id="request-heading">Request a grant</h2>
      <Field label="Principal (SPIFFE ID)" value={principal} set={setPrincipal} required size={48} />
      <div class="field">
        <label for={actionId}>Action</label>
        <select id={actionId} value={action} onChange={(e) => setAction((e.target as HTMLSelectElement).value)}>
          {ACTIONS.map((a) => <option key={a} value={a}>{a}</option>)}
        </select>
      </div>
      <Field label="Resource (SPIFFE ID)" value={resource} set={setResource} required size={48} />
      <Field label="For how many minutes" value={minutes} set={setMinutes} type="number" min="1" max="10080" required />
      <Field label="Reason for the grant" value={reason} set={setReason} required maxLength={256} />
      <button type="submit" disabled={busy}>Request</button>
      <OutcomeLine outcome={outcome} />
    </form>
  );
}


export function GrantsPage() {
  const load = useLoad<{ grants: GrantRow[] }>('/v1/grants');
  const me = useSession();
  // The outcome of an approval lives here: the approved row's button goes away with the reload.
  const [approval, run, busy] = useAction();
  return (
    <>
      <OutcomeLine outcome={approval} />
      <Show load={load}>{(d) => (
        <table>
          <caption>Just-in-time grants ({d.grants.length})</caption>
          <thead><tr><th scope="col">Id</th><th scope="col">State</th><th scope="col">Principal</th><th scope="col">Action</th><th scope="col">Resource</th><th scope="col">For</th><th scope="col">Requested by</th><th scope="col">Reason</th><th scope="col">Decided by</th><th scope="col">Window</th><th scope="col">Actions</th></tr></thead>
          <tbody>{d.grants.map((g) => (
            <tr key={g.id}>
              <td>{g.id}</td><td>{g.state}</td><td>{g.principal}</td><td>{g.action}</td><td>{g.resource}</td><td>{Math.round(g.duration_seconds / 60)} min</td>
              <td>{g.requested_by}{me && g.requested_by === me.spiffe_id ? ' (you)' : ''}</td><td>{g.reason}</td>
              <td>{g.decided_by ?? ''}{g.deny_reason ? `: ${g.deny_reason}` : ''}</td>
              <td>{g.start ? `${when(g.start)} to ${when(g.expiry)}` : ''}</td>
              <td class="actions">
                {g.state === 'pending' && (
                  <button type="button" disabled={busy} aria-label={`Approve grant ${g.id}`} onClick={() => void run(`Approved ${g.id}.`, () => api.post(`/v1/grants/${seg(g.id)}/approve`, {}), load.reload)}>Approve</button>
                )}
                {g.state === 'pending' && <ReasonAction label="Deny" what={`grant ${g.id}`} act={(reason) => api.post(`/v1/grants/${seg(g.id)}/deny`, { reason })} done={load.reload} run={run} />}
                {(g.state === 'active' || g.state === 'scheduled') && <ReasonAction label="Revoke" what={`grant ${g.id}`} act={(reason) => api.post(`/v1/grants/${seg(g.id)}/revoke`, { reason })} done={load.reload} run={run} />}
              </td>
            </tr>
          ))}</tbody>
        </table>
      )}</Show>
      <RequestForm done={load.reload} />
    </>
  );
}
