/**
 * Risk: every scored identity (GET /v1/risk), one identity's score over time (its state history,
 * GET /v1/risk/:id) with the reasons, and quarantine / release with a reason.
 */
import { useId, useState } from 'preact/hooks';
import type { EntryListResponse } from '../wire.js';
import type { RiskHistoryView, RiskListResponse, RiskShowResponse } from '../wire.js';
import { api, seg } from '../api.js';
import { Field, OutcomeLine, ReasonAction, Show, useAction, useLoad, when } from '../ui.js';

/** Scores over time as a step line (one point per recorded change, and now). */
function ScoreChart({ history, now }: { history: RiskHistoryView[]; now: { score: number; at: number } }) {
  const pts = [...history].reverse().map((h) => ({ t: Date.parse(h.at), s: h.score })).concat([{ t: now.at, s: now.score }]);
  const W = 480;
  const H = 120;
  const t0 = pts[0]!.t;
  const span = Math.max(1, now.at - t0);
  const x = (t: number): number => 30 + ((t - t0) / span) * (W - 40);
  const y = (s: number): number => H - 16 - (s / 100) * (H - 26);
  let d = '';
  pts.forEach((p, i) => {
    d += i === 0 ? `M${x(p.t)},${y(p.s)}` : `H${x(p.t)}V${y(p.s)}`;
  });
  const summary = pts.map((p) => `${p.s} at ${new Date(p.t).toISOString().slice(11, 19)}`).join(', ');
  return (
    <svg class="chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`Score over time: ${summary}`}>
      <line x1="30" y1={y(0)} x2={W - 10} y2={y(0)} class="axis" />
      <text x="2" y={y(100) + 4}>100</text>
      <text x="14" y={y(0) + 4}>0</text>
      <path d={d} class="score-line" />
      {pts.map((p, i) => <circle key={i} cx={x(p.t)} cy={y(p.s)} r="3" class="score-dot" />)}
    </svg>
  );
}

function Identity({ id, changed }: { id: string; changed: () => void }) {
  const load = useLoad<RiskShowResponse>(`/v1/risk/${seg(id)}`);
  const [ttl, setTtl] = useState('3600');
  const [reason, setReason] = useState('');
  const [outcome, run, busy] = useAction();
  const ttlId = useId();
  const refresh = (): void => {
    load.reload();
    changed();
  };
  return (
    <section class="panel" aria-labelledby="identity-heading">
      <h2 id="identity-heading">{id}</h2>
      <Show load={load}>{(r) => (
        <>
          <p>State <strong>{r.state.state}</strong>, score <strong>{r.state.score}</strong> since {when(r.state.since)}{r.state.until ? `, until ${when(r.state.until)}` : ''}{r.state.reason ? ` (${r.state.set_by}: ${r.state.reason})` : ''}.</p>
          <ScoreChart history={r.history} now={{ score: r.state.score, at: Date.now() }} />
          {r.state.reasons.length > 0 && (
            <table>
              <caption>Why the score is what it is</caption>
              <thead><tr><th scope="col">Signal</th><th scope="col">Observed</th><th scope="col">Expected</th><th scope="col">How unusual</th><th scope="col">Edge</th></tr></thead>
              <tbody>{r.state.reasons.map((x, i) => <tr key={i}><td>{x.signal}</td><td>{x.observed}</td><td>{x.expected}</td><td>{x.unusual.toFixed(1)}</td><td>{x.edge ?? ''}</td></tr>)}</tbody>
            </table>
          )}
          <table>
            <caption>History ({r.history.length})</caption>
            <thead><tr><th scope="col">When</th><th scope="col">From</th><th scope="col">To</th><th scope="col">Score</th><th scope="col">By</th><th scope="col">Reason</th></tr></thead>
            <tbody>{r.history.map((h, i) => <tr key={i}><td>{when(h.at)}</td><td>{h.previous}</td><td>{h.state}</td><td>{h.score}</td><td>{h.set_by === 'admin' ? h.actor : h.set_by}</td><td>{h.reason}</td></tr>)}</tbody>
          </table>
          {r.state.state !== 'quarantined' ? (
            <form class="inline" onSubmit={(e) => {
              e.preventDefault();
              void run(`Quarantined ${id}.`, () => api.post(`/v1/risk/${seg(id)}/quarantine`, { ttl_seconds: Number(ttl), reason: reason.trim() }), () => {
                setReason('');
                refresh();
              });
            }}>
              <div class="field">
                <label for={ttlId}>Quarantine for</label>
                <select id={ttlId} value={ttl} onChange={(e) => setTtl((e.target as HTMLSelectElement).value)}>
                  <option value="600">10 minutes</option><option value="3600">1 hour</option><option value="86400">1 day</option>
                </select>
              </div>
              <Field label={`Reason to quarantine ${id}`} value={reason} set={setReason} required maxLength={256} />
              <button type="submit" disabled={busy}>Quarantine</button>
            </form>
          ) : null}
          {r.state.state !== 'normal' && <ReasonAction label="Release" what={id} act={(why) => api.post(`/v1/risk/${seg(id)}/release`, { reason: why })} done={refresh} run={run} />}
          <OutcomeLine outcome={outcome} />
        </>
      )}</Show>
    </section>
  );
}

export function RiskPage() {
  const load = useLoad<RiskListResponse>('/v1/risk');
  const entries = useLoad<EntryListResponse>('/v1/entries');
  const [open, setOpen] = useState<string>();
  const [pick, setPick] = useState('');
  return (
    <>
      <Show load={load}>{(d) => (
        <table>
          <caption>Identities with a risk score ({d.identities.length})</caption>
          <thead><tr><th scope="col">Identity</th><th scope="col">State</th><th scope="col">Score</th><th scope="col">Since</th><th scope="col">Until</th><th scope="col">Reason</th><th scope="col">Details</th></tr></thead>
          <tbody>{d.identities.map((r) => (
            <tr key={r.spiffe_id}>
              <td>{r.spiffe_id}</td><td class={`state-${r.state}`}>{r.state}</td><td>{r.score}</td><td>{when(r.since)}</td><td>{when(r.until)}</td><td>{r.reason}</td>
              <td><button type="button" aria-label={`Details of ${r.spiffe_id}`} onClick={() => setOpen(r.spiffe_id)}>Details</button></td>
            </tr>
          ))}</tbody>
        </table>
      )}</Show>
      <form class="toolbar" onSubmit={(e) => {
        e.preventDefault();
        if (pick.trim()) setOpen(pick.trim());
      }}>
        <Field label="Any identity (SPIFFE ID)" value={pick} set={setPick} list="risk-ids" size={48} />
        <datalist id="risk-ids">{entries.data?.entries.map((e) => <option key={e.id} value={e.spiffe_id} />)}</datalist>
        <button type="submit">Open</button>
      </form>
      {open && <Identity key={open} id={open} changed={load.reload} />}
    </>
  );
}
