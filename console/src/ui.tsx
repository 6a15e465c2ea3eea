/**
 * Pieces every page uses: loading an admin API read (with the step-up prompt when the policy wants
 * a fresher MFA), showing a refusal with its code, and an action that asks for a reason first.
 */
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useId, useState } from 'preact/hooks';
import { ApiError, api, asApiError, withStepUp } from './api.js';
import { Failure } from './pages/need-sign-in.js';

export interface Loaded<T> {
  data: T | undefined;
  error: ApiError | undefined;
  reload: () => void;
}

/** GET `path` (undefined: nothing yet); again on reload() and whenever `path` changes. */
export function useLoad<T>(path: string | undefined): Loaded<T> {
  const [data, setData] = useState<T | undefined>();
  const [error, setError] = useState<ApiError | undefined>();
  const [tick, setTick] = useState(0);
  useEffect(() => {
    if (path === undefined) return undefined;
    let live = true;
    setError(undefined);
    api.get<T>(path).then((d) => live && setData(d), (e: unknown) => live && setError(asApiError(e)));
    return () => {
      live = false;
    };
  }, [path, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return { data, error, reload };
}

/** The loaded data through `children`, or the loading status, or the refusal (with a step-up offer). */
export function Show<T>({ load, children }: { load: Loaded<T>; children: (data: T) => ComponentChildren }) {
  if (load.error) return <Failure error={load.error} retry={load.reload} />;
  if (load.data === undefined) return <p role="status">Loading…</p>;
  return <>{children(load.data)}</>;
}

/** The outcome of an action: what it did, or the API's code and message. */
export type Outcome = { ok: string } | { error: ApiError } | undefined;

export function OutcomeLine({ outcome }: { outcome: Outcome }) {
  if (!outcome) return null;
  if ('ok' in outcome) return <p role="status" class="ok">{outcome.ok}</p>;
  return <p role="alert" class="notice error">Refused: {outcome.error.message} <code>{outcome.error.code}</code></p>;
}

/** Runs an action (with step-up on TESSERA_MFA_REQUIRED) and keeps its outcome for OutcomeLine. */
/** Runs an action and records its outcome (see useAction). */
export type Run = (label: string, fn: () => Promise<unknown>, then?: () => void) => Promise<void>;

export function useAction(): [Outcome, Run, boolean] {
  const [outcome, setOutcome] = useState<Outcome>();
  const [busy, setBusy] = useState(false);
  const run = useCallback(async (label: string, fn: () => Promise<unknown>, then?: () => void) => {
    setBusy(true);
    setOutcome(undefined);
    try {
      await withStepUp(fn);
      setOutcome({ ok: label });
      then?.();
    } catch (e) {
      setOutcome({ error: asApiError(e) });
    } finally {
      setBusy(false);
    }
  }, []);
  return [outcome, run, busy];
}

/**
 * A button that opens a small form asking for a reason, then calls `act(reason)`. `label` is the
 * verb ("Revoke"), `what` names the object for screen readers ("entry web-1"). `run`: the parent's
 * (see useAction), when the outcome must outlive this control (an action after which it is gone).
 */
export function ReasonAction({ label, what, act, done, run: parentRun }: { label: string; what: string; act: (reason: string) => Promise<unknown>; done?: () => void; run?: Run }) {
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState('');
  const [ownOutcome, ownRun, busy] = useAction();
  const run = parentRun ?? ownRun;
  const outcome = parentRun ? undefined : ownOutcome;
  const id = useId();
  if (!open) {
    return (
      <span>
        <button type="button" aria-label={`${label} ${what}`} onClick={() => setOpen(true)}>{label}</button>
        <OutcomeLine outcome={outcome} />
      </span>
    );
  }
  const submit = (e: Event): void => {
    e.preventDefault();
    void run(`${label}: done (${what})`, () => act(reason.trim()), () => {
      setOpen(false);
      setReason('');
      done?.();
    });
  };
  return (
    <form class="inline" onSubmit={submit}>
      <label for={id}>Reason to {label.toLowerCase()} {what}</label>
      <input id={id} value={reason} onInput={(e) => setReason((e.target as HTMLInputElement).value)} required maxLength={256} autoFocus />
      <button type="submit" disabled={busy}>Confirm {label.toLowerCase()}</button>
      <button type="button" onClick={() => setOpen(false)}>Cancel</button>
      <OutcomeLine outcome={outcome} />
    </form>
  );
}

/** A labelled text input bound to state. */
export function Field({ label, value, set, ...rest }: { label: string; value: string; set: (v: string) => void } & Record<string, unknown>) {
  const id = useId();
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <input id={id} value={value} onInput={(e) => set((e.target as HTMLInputElement).value)} {...rest} />
    </div>
  );
}

export const when = (iso: unknown): string => (typeof iso === 'string' && iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '');
