import { useCallback, useEffect, useState } from 'preact/hooks';
import { asApiError, setStepUpPrompt, type ApiError } from './api.js';
import { BASE, ROUTES, SIGN_IN, navigate, onLinkClick, useRoute } from './router.js';
import { linkSignIn, takeLinkToken, useSession } from './session.js';
import { MapPage } from './pages/map.js';
import { SignInPage, StepUpDialog } from './pages/sign-in.js';
import { IdentitiesPage } from './pages/identities.js';
import { PoliciesPage } from './pages/policies.js';
import { RiskPage } from './pages/risk.js';
import { GrantsPage } from './pages/grants.js';
import { AuditPage } from './pages/audit.js';
import { SecretsPage } from './pages/secrets.js';

const PAGES: Record<string, () => preact.JSX.Element> = {
  map: MapPage, identities: IdentitiesPage, policies: PoliciesPage, risk: RiskPage, grants: GrantsPage, audit: AuditPage, secrets: SecretsPage,
};

/**
 * A one-time console link (`/console/sign-in#token=...`): redeemed once, on load or when pasted into
 * an open console (only the fragment changes then: no page load, a hashchange).
 */
function useLinkToken(): ApiError | undefined {
  const [error, setError] = useState<ApiError>();
  useEffect(() => {
    const redeem = (): void => {
      const token = takeLinkToken();
      if (!token) return;
      setError(undefined);
      linkSignIn(token).then(() => navigate('map'), (e: unknown) => setError(asApiError(e)));
    };
    redeem();
    addEventListener('hashchange', redeem);
    return () => removeEventListener('hashchange', redeem);
  }, []);
  return error;
}

export function App() {
  const page = useRoute();
  const session = useSession();
  const linkError = useLinkToken();
  const route = ROUTES.find((r) => r.path === page);
  const title = page === SIGN_IN ? 'Sign in' : route?.title ?? 'Not found';
  const [stepUp, setStepUp] = useState<((ok: boolean) => void) | undefined>();
  useEffect(() => {
    document.title = `${title} · Tessera console`;
  }, [title]);
  useEffect(() => {
    setStepUpPrompt(() => new Promise<boolean>((resolve) => setStepUp(() => resolve)));
    return () => setStepUpPrompt(undefined);
  }, []);
  const closeStepUp = useCallback((ok: boolean) => {
    setStepUp((resolve: ((ok: boolean) => void) | undefined) => {
      resolve?.(ok);
      return undefined;
    });
  }, []);
  const Page = PAGES[page];
  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <a class="brand" href={`${BASE}map`} onClick={onLinkClick('map')}>Tessera</a>
        <nav aria-label="Console">
          <ul>
            {ROUTES.map((r) => (
              <li key={r.path}>
                <a href={`${BASE}${r.path}`} onClick={onLinkClick(r.path)} aria-current={r.path === page ? 'page' : undefined}>{r.title}</a>
              </li>
            ))}
          </ul>
        </nav>
        <a class="sign-in-link" href={`${BASE}${SIGN_IN}`} onClick={onLinkClick(SIGN_IN)} aria-current={page === SIGN_IN ? 'page' : undefined}>
          {session ? `Signed in as ${session.username}` : 'Sign in'}
        </a>
      </header>
      <main id="main" tabIndex={-1} aria-hidden={stepUp ? 'true' : undefined}>
        <h1>{title}</h1>
        {linkError && <p role="alert" class="notice error">The sign-in link was refused: {linkError.message} <code>{linkError.code}</code></p>}
        {page === SIGN_IN ? <SignInPage /> : Page ? <Page key={page} /> : <p>No such page. Pick one above.</p>}
      </main>
      {stepUp && <StepUpDialog close={closeStepUp} />}
    </>
  );
}
