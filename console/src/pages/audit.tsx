/**
 * Audit: the records (GET /v1/audit, filtered by action and outcome, paged by id), the newest
 * signed checkpoint of the log (GET /v1/audit/checkpoint) with how many records it covers, its
 * witnesses' cosignatures, and the witnesses' alarms (records `audit.witness_alarm`).
 */
import { useId, useState } from 'preact/hooks';
import type { AuditCheckpointResponse, AuditListResponse } from '../wire.js';
import { Field, Show, useLoad, when } from '../ui.js';

function Checkpoint({ newest }: { newest: number | undefined }) {
  const load = useLoad<AuditCheckpointResponse>('/v1/audit/checkpoint');
  const alarms = useLoad<AuditListResponse>('/v1/audit?action=audit.witness_alarm&limit=20');
  return (
    <section class="panel" aria-labelledby="checkpoint-heading">
      <h2 id="checkpoint-heading">Checkpoint and witnesses</h2>
      {load.error?.status === 404 ? <p>No checkpoint has been signed yet.</p> : (
        <Show load={load}>{(c) => (
          <>
            <dl class="facts">
              <dt>Log</dt><dd>{c.checkpoint.origin}</dd>
              <dt>Records covered</dt><dd>{c.checkpoint.size}{newest !== undefined ? ` (the newest record shown is ${newest}; ${Math.max(0, newest - c.checkpoint.size)} not yet in a checkpoint)` : ''}</dd>
              <dt>Root hash</dt><dd><code>{c.checkpoint.root_hash}</code></dd>
              <dt>Signed</dt><dd>{when(c.checkpoint.created_at)}</dd>
              <dt>Log key</dt><dd><code>{c.log_key}</code></dd>
              <dt>Verification</dt><dd>{(c.cosignatures ?? []).length > 0 ? `cosigned by ${(c.cosignatures ?? []).length} witness(es)` : 'signed by the log; no witness has cosigned it yet'}. Check it with <code>tessera audit verify</code>.</dd>
            </dl>
            <table>
              <caption>Witness cosignatures ({(c.cosignatures ?? []).length})</caption>
              <thead><tr><th scope="col">Witness</th><th scope="col">Key id</th><th scope="col">Cosigned</th></tr></thead>
              <tbody>{(c.cosignatures ?? []).map((w) => <tr key={w.key_id}><td>{w.name}</td><td>{w.key_id}</td><td>{when(new Date(w.timestamp * 1000).toISOString())}</td></tr>)}</tbody>
            </table>
          </>
        )}</Show>
      )}
      <Show load={alarms}>{(a) => (
        <p role="status" class={a.records.length > 0 ? 'notice error' : ''}>{a.records.length === 0 ? 'No witness has raised an alarm.' : `${a.records.length} witness alarm(s): the newest at ${when(a.records[0]!.ts)} by ${a.records[0]!.actor}.`}</p>
      )}</Show>
    </section>
  );
}

export function AuditPage() {
  const [action, setAction] = useState('');
  const [outcome, setOutcome] = useState('');
  const [query, setQuery] = useState('/v1/audit?limit=50');
  const load = useLoad<AuditListResponse>(query);
  const outcomeId = useId();
  const search = (e: Event): void => {
    e.preventDefault();
    const q = new URLSearchParams({ limit: '50' });
    if (action.trim()) q.set('action', action.trim());
    if (outcome) q.set('outcome', outcome);
    setQuery(`/v1/audit?${q.toString()}`);
  };
  return (
    <>
      <form class="toolbar" onSubmit={search} role="search" aria-label="Audit records">
        <Field label="Action" value={action} set={setAction} placeholder="e.g. risk.quarantine" pattern="[a-z0-9._-]{1,64}" />
        <div class="field">
          <label for={outcomeId}>Outcome</label>
          <select id={outcomeId} value={outcome} onChange={(e) => setOutcome((e.target as HTMLSelectElement).value)}>
            <option value="">any</option><option value="success">success</option><option value="denied">denied</option>
          </select>
        </div>
        <button type="submit">Search</button>
      </form>
      <Show load={load}>{(d) => (
        <>
          <table>
            <caption>Audit records, newest first ({d.records.length})</caption>
            <thead><tr><th scope="col">Id</th><th scope="col">When</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Outcome</th><th scope="col">Code</th></tr></thead>
            <tbody>{d.records.map((r) => (
              <tr key={r.id}><td>{r.id}</td><td>{when(r.ts)}</td><td>{r.actor}</td><td>{r.action}</td><td>{r.target}</td><td class={r.outcome === 'denied' ? 'deny' : ''}>{r.outcome}</td><td>{r.code}</td></tr>
            ))}</tbody>
          </table>
          <Checkpoint newest={d.records[0]?.id} />
        </>
      )}</Show>
    </>
  );
}
