import { BASE, SIGN_IN, onLinkClick } from '../router.js';
import { askStepUp, type ApiError } from '../api.js';

/**
 * What a page shows instead of its data when the API says 401 (no session), TESSERA_MFA_REQUIRED
 * (a button for the step-up, then the page loads again), or another refusal (its code and message).
 */
export function Failure({ error, retry }: { error: ApiError; retry?: () => void }) {
  if (error.signIn) {
    return (
      <div class="notice" role="status">
        <p>You are not signed in.</p>
        <p><a href={`${BASE}${SIGN_IN}`} onClick={onLinkClick(SIGN_IN)}>Sign in</a> to see this page.</p>
      </div>
    );
  }
  if (error.stepUp && retry) {
    return (
      <div class="notice" role="status">
        <p>This page needs a recent second factor: {error.message}</p>
        <button type="button" onClick={() => void askStepUp().then((ok) => ok && retry())}>Verify it is you</button>
      </div>
    );
  }
  return (
    <div class="notice error" role="alert">
      <p>The control plane refused: {error.message} <code>{error.code}</code></p>
    </div>
  );
}
