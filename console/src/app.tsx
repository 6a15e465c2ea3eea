import { useEffect } from 'preact/hooks';
import { BASE, ROUTES, SIGN_IN, onLinkClick, useRoute } from './router.js';
import { MapPage } from './pages/map.js';
import { SignInPage } from './pages/sign-in.js';
import { TablePage, PAGES } from './pages/tables.js';

export function App() {
  const page = useRoute();
  const route = ROUTES.find((r) => r.path === page);
  const title = page === SIGN_IN ? 'Sign in' : route?.title ?? 'Not found';
  useEffect(() => {
    document.title = `${title} · Tessera console`;
  }, [title]);
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
        <a class="sign-in-link" href={`${BASE}${SIGN_IN}`} onClick={onLinkClick(SIGN_IN)} aria-current={page === SIGN_IN ? 'page' : undefined}>Sign in</a>
      </header>
      <main id="main" tabIndex={-1}>
        <h1>{title}</h1>
        {page === SIGN_IN ? <SignInPage /> : page === 'map' ? <MapPage /> : PAGES[page] ? <TablePage key={page} spec={PAGES[page]!} /> : <p>No such page. Pick one above.</p>}
      </main>
    </>
  );
}
