import { BASE, SIGN_IN, onLinkClick } from '../router.js';
import type { ApiError } from '../api.js';

/** What a page shows instead of its data when the API says 401 (no session), or another error. */
export function Failure({ error }: { error: ApiError }) {
  if (error.signIn) {
    return (
      <div class="notice" role="status">
        <p>You are not signed in.</p>
        <p><a href={`${BASE}${SIGN_IN}`} onClick={onLinkClick(SIGN_IN)}>Sign in</a> to see this page.</p>
      </div>
    );
  }
  return (
    <div class="notice error" role="alert">
      <p>The control plane refused: {error.message} <code>{error.code}</code></p>
    </div>
  );
}
