/**
 * Policies: the versions (GET /v1/policies), a diff between any two (GET /v1/policies/:v, compared
 * in the page), a candidate edited here and dry-run against the recorded decisions (POST
 * /v1/policies with dry_run: which decisions would flip), applied with a reason, and a rollback to an
 * earlier version with a reason.
 */
import { useEffect, useId, useState } from 'preact/hooks';
import type { PolicyDryRun, PolicyHistoryResponse, PolicyVersionResponse } from '../wire.js';
import { api, asApiError, seg, type ApiError } from '../api.js';
import { diffPolicySets } from '../policy/diff.js';
import { Field, OutcomeLine, ReasonAction, Show, useAction, useLoad, when } from '../ui.js';
import { Failure } from './need-sign-in.js';

function Diff({ from, to }: { from: number; to: number }) {
  const [sets, setSets] = useState<[PolicyVersionResponse, PolicyVersionResponse]>();
  const [error, setError] = useState<ApiError>();
  useEffect(() => {
    let live = true;
    setSets(undefined);
    Promise.all([api.get<PolicyVersionResponse>(`/v1/policies/${seg(from)}`), api.get<PolicyVersionResponse>(`/v1/policies/${seg(to)}`)])
      .then((s) => live && setSets(s), (e: unknown) => live && setError(asApiError(e)));
    return () => {
      live = false;
    };
  }, [from, to]);
  if (error) return <Failure error={error} />;
  if (!sets) return <p role="status">Loading the versions…</p>;
  const files = diffPolicySets(sets[0].policies, sets[1].policies);
  const changed = files.filter((f) => f.status !== 'same');
  return (
    <section class="panel" aria-labelledby="diff-heading">
      <h3 id="diff-heading">Changes from version {from} to version {to}</h3>
      {changed.length === 0 ? <p>The two versions have the same policies.</p> : changed.map((f) => (
        <figure class="diff" key={f.name}>
          <figcaption>{f.name} ({f.status})</figcaption>
          <pre>{f.lines.map((l, i) => (
            <span key={i} class={`line ${l.kind}`}><span class="sr-only">{l.kind === 'add' ? 'added: ' : l.kind === 'del' ? 'removed: ' : ''}</span><span aria-hidden="true">{l.kind === 'add' ? '+ ' : l.kind === 'del' ? '- ' : '  '}</span>{l.text}{'\n'}</span>
          ))}</pre>
        </figure>
      ))}
    </section>
  );
}

function VersionSelect({ label, value, set, versions }: { label: string; value: number; set: (v: number) => void; versions: number[] }) {
  const id = useId();
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => set(Number((e.target as HTMLSelectElement).value))}>
        {versions.map((v) => <option key={v} value={v}>version {v}</option>)}
      </select>
    </div>
  );
}

function DryRunResult({ r }: { r: PolicyDryRun }) {
  return (
    <section class="panel" aria-labelledby="dry-run-heading">
      <h3 id="dry-run-heading">Replay of recorded decisions</h3>
      <p>{r.replayed} decisions replayed from {r.enforcers} enforcers{r.span ? ` (${when(r.span.from)} to ${when(r.span.to)})` : ''}; <strong>{r.flipped} would change</strong>{r.truncated ? ' (stopped at its time budget)' : ''}.</p>
      {r.flips.length > 0 && (
        <table>
          <caption>Decisions that would change</caption>
          <thead><tr><th scope="col">Principal</th><th scope="col">Action</th><th scope="col">Resource</th><th scope="col">Now</th><th scope="col">Then</th><th scope="col">Count</th></tr></thead>
          <tbody>{r.flips.map((f, i) => <tr key={i}><td>{f.principal}</td><td>{f.action}</td><td>{f.resource}</td><td>{f.before}</td><td class={f.after}>{f.after}</td><td>{f.count}</td></tr>)}</tbody>
        </table>
      )}
    </section>
  );
}

/** A candidate: the newest version's files, one of them edited here. */
function Candidate({ latest, applied }: { latest: number; applied: () => void }) {
  const base = useLoad<PolicyVersionResponse>(`/v1/policies/${seg(latest)}`);
  const [files, setFiles] = useState<Record<string, string>>();
  const [file, setFile] = useState('');
  const [reason, setReason] = useState('');
  const [dry, setDry] = useState<PolicyDryRun>();
  const [outcome, run, busy] = useAction();
  const fileId = useId();
  const textId = useId();
  useEffect(() => {
    if (!base.data) return;
    setFiles({ ...base.data.policies });
    setFile(Object.keys(base.data.policies).sort()[0] ?? 'policy.cedar');
  }, [base.data]);
  if (!files) return <Show load={base}>{() => null}</Show>;
  const schema = base.data && Object.keys(base.data.schema).length > 0 ? { schema: base.data.schema } : {};
  const body = (dryRun: boolean): Record<string, unknown> => ({ files, ...schema, reason: reason.trim() || 'dry run from the console', dry_run: dryRun });
  return (
    <section class="panel" aria-labelledby="candidate-heading">
      <h2 id="candidate-heading">Candidate policy</h2>
      <p>Starts from version {latest}. Edit a file, replay the recorded decisions against it, then apply it with a reason.</p>
      <div class="field">
        <label for={fileId}>File</label>
        <select id={fileId} value={file} onChange={(e) => setFile((e.target as HTMLSelectElement).value)}>
          {Object.keys(files).sort().map((n) => <option key={n} value={n}>{n}</option>)}
        </select>
      </div>
      <div class="field">
        <label for={textId}>Cedar text of {file}</label>
        <textarea id={textId} rows={14} cols={100} spellcheck={false} value={files[file] ?? ''}
          onInput={(e) => setFiles({ ...files, [file]: (e.target as HTMLTextAreaElement).value })} />
      </div>
      <Field label="Reason for the change" value={reason} set={setReason} maxLength={1024} />
      <div class="toolbar">
        <button type="button" disabled={busy} onClick={() => void run('Dry run done: nothing applied.', async () => {
          const r = await api.post<PolicyDryRun>('/v1/policies', body(true));
          setDry(r);
        })}>Dry run</button>
        <button type="button" disabled={busy || reason.trim() === ''} onClick={() => void run('Applied.', async () => {
          const r = await api.post<PolicyDryRun>('/v1/policies', body(false));
          setDry(r);
        }, applied)}>Apply with this reason</button>
      </div>
      <OutcomeLine outcome={outcome} />
      {dry && <DryRunResult r={dry} />}
    </section>
  );
}

export function PoliciesPage() {
  const load = useLoad<PolicyHistoryResponse>('/v1/policies?limit=100');
  const [from, setFrom] = useState<number>();
  const [to, setTo] = useState<number>();
  const [showDiff, setShowDiff] = useState<[number, number]>();
  return (
    <Show load={load}>{(d) => {
      const versions = d.versions.map((v) => v.version).sort((a, b) => b - a);
      const latest = versions[0];
      const f = from ?? versions[1] ?? latest ?? 0;
      const t = to ?? latest ?? 0;
      return (
        <>
          <table>
            <caption>Policy versions ({d.versions.length}; the bundle is at version {d.bundle_version})</caption>
            <thead><tr><th scope="col">Version</th><th scope="col">Created</th><th scope="col">Author</th><th scope="col">Reason</th><th scope="col">Actions</th></tr></thead>
            <tbody>{d.versions.map((v) => (
              <tr key={v.version}>
                <td>{v.version}{v.version === latest ? ' (current)' : ''}</td><td>{when(v.createdAt)}</td><td>{v.author}</td><td>{v.reason}</td>
                <td class="actions">{v.version !== latest && <ReasonAction label="Roll back" what={`to version ${v.version}`} act={(reason) => api.post('/v1/policies/rollback', { version: v.version, reason })} done={load.reload} />}</td>
              </tr>
            ))}</tbody>
          </table>
          {versions.length > 0 && (
            <section aria-labelledby="compare-heading">
              <h2 id="compare-heading">Compare versions</h2>
              <div class="toolbar">
                <VersionSelect label="From" value={f} set={setFrom} versions={versions} />
                <VersionSelect label="To" value={t} set={setTo} versions={versions} />
                <button type="button" onClick={() => setShowDiff([f, t])}>Show the diff</button>
              </div>
              {showDiff && <Diff key={showDiff.join('-')} from={showDiff[0]} to={showDiff[1]} />}
            </section>
          )}
          {latest !== undefined && <Candidate key={latest} latest={latest} applied={load.reload} />}
        </>
      );
    }}</Show>
  );
}
