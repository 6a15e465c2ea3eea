import { useEffect, useRef, useState } from 'preact/hooks';
import { asApiError, type ApiError } from '../api.js';
import { BASE, navigate } from '../router.js';
import { passkeyStep, signOut, ssoUrl, totpStep, useOidcEnabled, useSession, type SessionView } from '../session.js';
import { Field, when } from '../ui.js';

/** A refusal of a sign-in step: the API's message and code. */
function Refusal({ error }: { error: ApiError | undefined }) {
  if (!error) return null;
  return <p role="alert" class="notice error">{error.message} <code>{error.code}</code></p>;
}

/**
 * Passkey then TOTP code: the local sign-in, or (stepUp) the step-up of the signed-in person.
 * Calls `done` with the (renewed) session.
 */
export function PasskeyAndCode({ stepUp, done }: { stepUp?: boolean; done: (s: SessionView) => void }) {
  const [username, setUsername] = useState('');
  const [code, setCode] = useState('');
  const [step, setStep] = useState<'passkey' | 'totp'>('passkey');
  const [error, setError] = useState<ApiError>();
  const [busy, setBusy] = useState(false);
  const codeInput = useRef<HTMLInputElement>(null);
  useEffect(() => {
    if (step === 'totp') codeInput.current?.focus();
  }, [step]);
  const passkey = async (e: Event): Promise<void> => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await passkeyStep(stepUp ? { stepUp: true } : { username: username.trim() });
      setStep('totp');
    } catch (err) {
      setError(asApiError(err));
    } finally {
      setBusy(false);
    }
  };
  const totp = async (e: Event): Promise<void> => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      done(await totpStep(code.trim()));
    } catch (err) {
      setError(asApiError(err));
      setCode('');
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      {step === 'passkey' ? (
        <form onSubmit={passkey}>
          {!stepUp && <Field label="Username" value={username} set={setUsername} autoComplete="username webauthn" pattern="[a-z0-9][a-z0-9._-]{0,62}" />}
          <button type="submit" id="passkey" disabled={busy}>{stepUp ? 'Verify with your passkey' : 'Sign in with a passkey'}</button>
        </form>
      ) : (
        <form onSubmit={totp}>
          <p>Passkey accepted. Now the code from your authenticator app.</p>
          <label for="totp-code">Code from your authenticator app</label>
          <input id="totp-code" ref={codeInput} value={code} onInput={(e) => setCode((e.target as HTMLInputElement).value)}
            inputMode="numeric" autoComplete="one-time-code" pattern="[0-9]{6}" maxLength={6} required />
          <button type="submit" disabled={busy}>Continue</button>
        </form>
      )}
      <Refusal error={error} />
    </>
  );
}

/** The sign-in page: who is signed in (and sign-out), or the ways to sign in. */
export function SignInPage() {
  const session = useSession();
  const oidc = useOidcEnabled();
  const [error, setError] = useState<ApiError>();
  if (session === undefined) return <p role="status">Loading…</p>;
  if (session) {
    return (
      <section class="sign-in" aria-labelledby="signed-in-heading">
        <h2 id="signed-in-heading">Signed in as {session.username}</h2>
        <dl class="facts">
          <dt>Identity</dt><dd>{session.spiffe_id}</dd>
          <dt>Groups</dt><dd>{session.groups.join(', ') || 'none'}</dd>
          <dt>Signed in with</dt><dd>{session.source === 'oidc' ? 'single sign-on' : 'passkey and code'}</dd>
          <dt>Last second factor</dt><dd>{session.mfa_at ? when(session.mfa_at) : 'none in this session (one-time link)'}</dd>
        </dl>
        <button type="button" onClick={() => signOut().catch((e: unknown) => setError(asApiError(e)))}>Sign out</button>
        <Refusal error={error} />
      </section>
    );
  }
  return (
    <section class="sign-in" aria-labelledby="sign-in-heading">
      <h2 id="sign-in-heading">Sign in to operate the fabric</h2>
      <PasskeyAndCode done={() => navigate('map')} />
      {oidc && (
        <>
          <p class="or">or</p>
          <a class="button" id="sso" href={ssoUrl(`${BASE}map`)}>Sign in with single sign-on</a>
        </>
      )}
    </section>
  );
}

/**
 * The step-up dialog: opened by withStepUp when the API answers TESSERA_MFA_REQUIRED. A local user
 * proves passkey and code again; a person of the OIDC provider goes through the provider again
 * (a navigation: the action is then done again by hand).
 */
export function StepUpDialog({ close }: { close: (ok: boolean) => void }) {
  const session = useSession();
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    heading.current?.focus();
    const onKey = (e: KeyboardEvent): void => {
      if (e.key === 'Escape') close(false);
    };
    addEventListener('keydown', onKey);
    return () => removeEventListener('keydown', onKey);
  }, [close]);
  return (
    <div class="backdrop">
      <section class="dialog" role="dialog" aria-modal="true" aria-labelledby="step-up-heading">
        <h2 id="step-up-heading" tabIndex={-1} ref={heading}>Confirm it is you</h2>
        <p>This action needs a recent second factor. Prove it again, and the action is retried.</p>
        {session?.source === 'oidc'
          ? <p><a class="button" href={ssoUrl(location.pathname, true)}>Sign in again with single sign-on</a></p>
          : <PasskeyAndCode stepUp done={() => close(true)} />}
        <button type="button" onClick={() => close(false)}>Cancel</button>
      </section>
    </div>
  );
}
