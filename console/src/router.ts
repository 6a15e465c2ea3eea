/**
 * History-API routing under /console/: the control plane answers every extension-less path there
 * with index.html, and this module picks the page from location.pathname.
 */
import { useEffect, useState } from 'preact/hooks';

export const BASE = '/console/';

export interface Route {
  path: string;
  title: string;
}

/** The pages of the console, in the navigation's order. */
export const ROUTES: readonly Route[] = [
  { path: 'map', title: 'Map' },
  { path: 'identities', title: 'Identities' },
  { path: 'policies', title: 'Policies' },
  { path: 'risk', title: 'Risk' },
  { path: 'grants', title: 'Grants' },
  { path: 'audit', title: 'Audit' },
  { path: 'secrets', title: 'Secrets' },
];
export const SIGN_IN = 'sign-in';

/** The page named by a pathname: "" (the start page, the map) or the first segment below /console/. */
export function pageOf(pathname: string): string {
  if (!pathname.startsWith(BASE)) return 'map';
  const page = pathname.slice(BASE.length).split('/')[0] ?? '';
  return page === '' ? 'map' : page;
}

export function navigate(page: string): void {
  const url = `${BASE}${page}`;
  if (location.pathname !== url) history.pushState(null, '', url);
  dispatchEvent(new PopStateEvent('popstate'));
}

export function useRoute(): string {
  const [page, setPage] = useState(pageOf(location.pathname));
  useEffect(() => {
    const on = (): void => setPage(pageOf(location.pathname));
    addEventListener('popstate', on);
    return () => removeEventListener('popstate', on);
  }, []);
  return page;
}

/** A link that routes in the page (plain click) and still works as a link (new tab, copy). */
export function onLinkClick(page: string): (e: MouseEvent) => void {
  return (e) => {
    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(page);
  };
}
