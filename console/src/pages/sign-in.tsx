import { useState } from 'preact/hooks';

/**
 * The sign-in page. Sign-in itself (OIDC, passkey + TOTP) is served by the people/sessions part
 * of the control plane; this page holds the controls and is wired to it when that part lands.
 */
export function SignInPage() {
  const [message, setMessage] = useState('');
  const submit = (e: Event): void => {
    e.preventDefault();
    setMessage('Sign-in is not enabled on this control plane yet.');
  };
  return (
    <section class="sign-in" aria-labelledby="sign-in-heading">
      <h2 id="sign-in-heading">Sign in to operate the fabric</h2>
      <form onSubmit={submit}>
        <label for="username">Username</label>
        <input id="username" name="username" autoComplete="username webauthn" required pattern="[a-z0-9][a-z0-9._-]{0,62}" />
        <button type="submit" id="passkey">Sign in with a passkey</button>
      </form>
      <p class="or">or</p>
      <button type="button" id="sso" onClick={() => setMessage('Single sign-on is not enabled on this control plane yet.')}>Sign in with single sign-on</button>
      <p role="status" class="status">{message}</p>
    </section>
  );
}
