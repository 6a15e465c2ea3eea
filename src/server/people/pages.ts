/**
 * Minimal server-rendered sign-in pages (`/auth/signin`, `/auth/enrol`, `/auth/link`) over the JSON
 * API, so the flows work in a browser before the web console exists. No inline script or style: one
 * static script (`/auth/static/people.js`) under a strict Content-Security-Policy.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';

const CSP = "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/** The security headers of every sign-in page and script (strict CSP, no framing, no caching). */
export function secureHeaders(reply: FastifyReply, type: string): FastifyReply {
  return reply.header('content-security-policy', CSP).header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer')
    .header('cache-control', 'no-store').header('x-frame-options', 'DENY').type(type);
}

/** A sign-in page: `script` is its one static script (no inline script or style). */
export function page(name: string, title: string, main: string, script = '/auth/static/people.js'): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Tessera</title><script src="${script}" defer></script></head>
<body data-page="${name}"><main><h1>${title}</h1>
${main}
<p id="status" role="status" aria-live="polite"></p></main></body></html>
`;
}

const TOTP_FORM = `<form id="totp-form" hidden><label for="code">Code from your authenticator app</label>
<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required>
<button type="submit">Continue</button></form>`;

const PAGES: Record<string, string> = {
  signin: page('signin', 'Sign in', `<form id="passkey-form"><label for="username">User name (optional with a passkey that knows you)</label>
<input id="username" name="username" autocomplete="username webauthn">
<button type="submit">Sign in with a passkey</button></form>
${TOTP_FORM}
<p><a id="oidc" href="/v1/auth/oidc/start" hidden>Sign in with your organisation's account</a></p>
<form id="logout-form" hidden><button type="submit">Sign out</button></form>`),
  enrol: page('enrol', 'Set up your sign-in', `<section id="enrol-steps" hidden>
<p>1. Add this account to your authenticator app (shown once):</p><p><code id="totp-uri"></code></p>
<p>2. Create a passkey for this site:</p><button id="passkey-create" type="button">Create a passkey</button>
</section>
${TOTP_FORM}`),
  link: page('link', 'Signing in', '<form id="logout-form" hidden><button type="submit">Sign out</button></form>'),
};

/** The page script: base64url ↔ ArrayBuffer for WebAuthn, then the JSON API. */
const SCRIPT = `'use strict';
(function () {
  var $ = function (id) { return document.getElementById(id); };
  function enc(buf) { var s = ''; new Uint8Array(buf).forEach(function (b) { s += String.fromCharCode(b); }); return btoa(s).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, ''); }
  function dec(s) { s = s.replace(/-/g, '+').replace(/_/g, '/'); while (s.length % 4) s += '='; var b = atob(s); var a = new Uint8Array(b.length); for (var i = 0; i < b.length; i++) a[i] = b.charCodeAt(i); return a.buffer; }
  function say(m) { $('status').textContent = m; }
  function csrf() { var m = document.cookie.match(/(?:^|; )__Host-tessera_csrf=([A-Za-z0-9_-]+)/); return m ? m[1] : ''; }
  async function api(path, body) {
    var r = await fetch(path, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json', 'x-tessera-csrf': csrf() }, body: JSON.stringify(body || {}) });
    var j = await r.json().catch(function () { return {}; });
    if (!r.ok) throw new Error(j.error ? j.error.code + ': ' + j.error.message : 'HTTP ' + r.status);
    return j;
  }
  function creds(list) { return (list || []).map(function (c) { return { type: 'public-key', id: dec(c.id), transports: c.transports }; }); }
  async function create(o) {
    var c = await navigator.credentials.create({ publicKey: Object.assign({}, o, { challenge: dec(o.challenge), user: Object.assign({}, o.user, { id: dec(o.user.id) }), excludeCredentials: creds(o.excludeCredentials) }) });
    return { id: c.id, rawId: enc(c.rawId), type: c.type, clientExtensionResults: c.getClientExtensionResults(), response: { clientDataJSON: enc(c.response.clientDataJSON), attestationObject: enc(c.response.attestationObject), transports: c.response.getTransports ? c.response.getTransports() : [] } };
  }
  async function get(o) {
    var c = await navigator.credentials.get({ publicKey: Object.assign({}, o, { challenge: dec(o.challenge), allowCredentials: creds(o.allowCredentials) }) });
    var r = { clientDataJSON: enc(c.response.clientDataJSON), authenticatorData: enc(c.response.authenticatorData), signature: enc(c.response.signature) };
    if (c.response.userHandle) r.userHandle = enc(c.response.userHandle);
    return { id: c.id, rawId: enc(c.rawId), type: c.type, clientExtensionResults: c.getClientExtensionResults(), response: r };
  }
  function fragmentToken() { var m = location.hash.match(/token=([A-Za-z0-9_-]{43})/); history.replaceState(null, '', location.pathname + location.search); return m ? m[1] : ''; }
  function done(j) {
    say('Signed in as ' + j.session.username + '.');
    var out = $('logout-form');
    if (out) { out.hidden = false; out.addEventListener('submit', function (e) { e.preventDefault(); api('/v1/auth/logout').then(function () { out.hidden = true; say('Signed out.'); }, function (err) { say(err.message); }); }); }
    var back = new URLSearchParams(location.search).get('return_to'); if (back && back.charAt(0) === '/' && back.charAt(1) !== '/' && back.indexOf('\\\\') < 0) location.assign(back); }
  function totp(path) {
    var f = $('totp-form'); f.hidden = false; $('code').focus();
    f.addEventListener('submit', function (e) { e.preventDefault(); api(path, { code: $('code').value }).then(function (j) { f.hidden = true; done(j); }, function (err) { say(err.message); }); });
  }
  var page = document.body.dataset.page;
  if (page === 'signin') {
    var stepUp = new URLSearchParams(location.search).get('step_up') === '1';
    fetch('/v1/auth/config').then(function (r) { return r.json(); }).then(function (c) { if (c.oidc) { var a = $('oidc'); a.hidden = false; a.href = '/v1/auth/oidc/start' + location.search; } });
    $('passkey-form').addEventListener('submit', function (e) {
      e.preventDefault();
      var u = $('username').value.trim();
      api('/v1/auth/passkey/options', stepUp ? { step_up: true } : (u ? { username: u } : {}))
        .then(function (j) { return get(j.options); })
        .then(function (resp) { return api('/v1/auth/passkey/verify', { response: resp }); })
        .then(function () { $('passkey-form').hidden = true; say('Now the code from your authenticator app.'); totp('/v1/auth/totp'); }, function (err) { say(err.message); });
    });
  } else if (page === 'enrol') {
    api('/v1/auth/enrol/start', { token: fragmentToken() }).then(function (j) {
      $('enrol-steps').hidden = false; $('totp-uri').textContent = j.totp_uri;
      var opts = j.passkey_options;
      $('passkey-create').addEventListener('click', function () {
        // A refused attempt uses its challenge up: the next one asks for fresh options.
        (opts ? Promise.resolve(opts) : api('/v1/auth/enrol/passkey/options').then(function (r) { return r.options; }))
          .then(function (o) { opts = null; return create(o); })
          .then(function (resp) { return api('/v1/auth/enrol/passkey', { response: resp }); })
          .then(function () { $('passkey-create').disabled = true; say('Passkey created. Now the code from your authenticator app.'); totp('/v1/auth/enrol/totp'); }, function (err) { say(err.message); });
      });
    }, function (err) { say(err.message); });
  } else if (page === 'link') {
    api('/v1/auth/link', { token: fragmentToken() }).then(done, function (err) { say(err.message); });
  }
})();
`;

export function peoplePages(app: FastifyInstance): void {
  for (const name of Object.keys(PAGES)) {
    app.get(`/auth/${name}`, (_req, reply) => secureHeaders(reply, 'text/html; charset=utf-8').send(PAGES[name]));
  }
  app.get('/auth/static/people.js', (_req, reply) => secureHeaders(reply, 'text/javascript; charset=utf-8').send(SCRIPT));
}
