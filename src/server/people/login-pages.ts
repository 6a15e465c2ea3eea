/**
 * The pages a person approves a `tessera login` on (login.ts): `/auth/cli` for the browser flow
 * (opened by the CLI itself) and `/auth/device` for the device flow (any browser, the user code
 * typed or in the link). Each shows who is signed in and which command line asked (time, address,
 * lifetime), and approves or denies with the session (CSRF header, Origin). Not signed in: a link to
 * the sign-in page that comes back here. No inline script: `/auth/static/login.js`.
 */
import type { FastifyInstance } from 'fastify';
import { page, secureHeaders } from './pages.js';

const SCRIPT_PATH = '/auth/static/login.js';

const SIGNIN = '<p id="signin" hidden><a id="signin-link" href="/auth/signin">Sign in first</a>, then come back to this page.</p>';
const DECIDE = `<section id="decide" hidden><p id="ask"></p>
<p><button id="approve" type="button">Approve</button> <button id="deny" type="button">Deny</button></p></section>`;

const PAGES: Record<string, string> = {
  cli: page('cli', 'Command-line sign-in', `${SIGNIN}${DECIDE}`, SCRIPT_PATH),
  device: page('device', 'Sign in a device', `${SIGNIN}<form id="code-form" hidden><label for="user-code">Code shown by the command line</label>
<input id="user-code" name="user_code" autocomplete="off" autocapitalize="characters" spellcheck="false" maxlength="16" required>
<button type="submit">Continue</button></form>${DECIDE}`, SCRIPT_PATH),
};

const SCRIPT = `'use strict';
(function () {
  var $ = function (id) { return document.getElementById(id); };
  function say(m) { $('status').textContent = m; }
  function csrf() { var m = document.cookie.match(/(?:^|; )__Host-tessera_csrf=([A-Za-z0-9_-]+)/); return m ? m[1] : ''; }
  async function api(path, body) {
    var r = await fetch(path, { method: body === undefined ? 'GET' : 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json', 'x-tessera-csrf': csrf() }, body: body === undefined ? undefined : JSON.stringify(body) });
    var j = await r.json().catch(function () { return {}; });
    if (!r.ok) { var e = new Error(j.error ? j.error.message + ' [' + j.error.code + ']' : 'HTTP ' + r.status); e.code = j.error && j.error.code; throw e; }
    return j;
  }
  var q = new URLSearchParams(location.search);
  var stepUp = q.get('step_up') === '1';
  function signInLink(step) {
    var back = location.pathname + location.search;
    $('signin-link').href = '/auth/signin?' + (step ? 'step_up=1&' : '') + 'return_to=' + encodeURIComponent(back);
    $('signin').hidden = false;
  }
  function failed(err) {
    say(err.message);
    if (err.code === 'TESSERA_MFA_REQUIRED') { $('signin-link').textContent = 'Sign in again with both factors'; signInLink(true); }
  }
  function minutes(s) { return Math.round(s / 60) + ' minutes'; }
  function decide(text, onDecide) {
    $('ask').textContent = text; $('decide').hidden = false;
    $('approve').addEventListener('click', function () { onDecide(true); });
    $('deny').addEventListener('click', function () { onDecide(false); });
  }
  api('/v1/auth/session').then(function (j) {
    var who = j.session.username;
    if (document.body.dataset.page === 'cli') {
      var ttl = Number(q.get('ttl_seconds') || 3600);
      decide('A command line on this computer asks for a certificate for ' + who + ', valid ' + minutes(ttl) + (stepUp ? ' (step-up)' : '') + '. Approve only if you just ran tessera login.', function (ok) {
        api('/v1/login/authorize', { redirect_uri: q.get('redirect_uri'), state: q.get('state'), code_challenge: q.get('code_challenge'), code_challenge_method: q.get('code_challenge_method'),
          key_thumbprint: q.get('key_thumbprint'), ttl_seconds: ttl, step_up: stepUp, approve: ok })
          .then(function (r) { $('decide').hidden = true; say(ok ? 'Approved: back to the command line.' : 'Denied.'); location.assign(r.redirect); }, failed);
      });
    } else {
      var f = $('code-form'); f.hidden = false;
      if (q.get('user_code')) $('user-code').value = q.get('user_code');
      f.addEventListener('submit', function (e) {
        e.preventDefault();
        var code = $('user-code').value.trim();
        api('/v1/login/device/lookup', { user_code: code }).then(function (r) {
          f.hidden = true;
          decide('Signed in as ' + who + '. A command line at ' + r.client_ip + ' asked at ' + new Date(r.requested_at).toLocaleTimeString() + ' for a certificate valid ' + minutes(r.ttl_seconds) + (r.step_up ? ' (step-up)' : '') + '. Approve only if that was you.', function (ok) {
            api('/v1/login/device/decide', { user_code: code, approve: ok }).then(function () { $('decide').hidden = true; say(ok ? 'Approved: the command line continues on its own.' : 'Denied.'); }, failed);
          });
        }, failed);
      });
    }
  }, function (err) { say('Not signed in.'); signInLink(stepUp); });
})();
`;

export function loginPages(app: FastifyInstance): void {
  for (const name of Object.keys(PAGES)) {
    app.get(`/auth/${name}`, (_req, reply) => secureHeaders(reply, 'text/html; charset=utf-8').send(PAGES[name]));
  }
  app.get(SCRIPT_PATH, (_req, reply) => secureHeaders(reply, 'text/javascript; charset=utf-8').send(SCRIPT));
}
