/**
 * People for tests that need signed-in persons: enrolment (a real passkey from SoftPasskey and the
 * TOTP seed shown once) and sign-in with both factors, against a control plane whose sign-in clock
 * the test drives (PeopleOptions.now). Every sign-in of a person needs a TOTP step it has not used:
 * `clock.next()` moves to a fresh one.
 */
import { Secret, TOTP } from 'otpauth';
import { Browser } from './http-browser.js';
import { rawRequest, type RawResponse, type TestControlPlane } from './server.js';
import { SoftPasskey } from './webauthn.js';

const STEP = 30_000;

/**
 * A test-driven sign-in clock: real time plus an offset the test moves (so a CLI polling in real
 * time sees time pass), starting just after a TOTP step boundary.
 */
export class TestClock {
  #offset = Math.floor(Date.now() / STEP) * STEP + 1000 - Date.now();
  readonly now = (): number => Date.now() + this.#offset;
  get t(): number {
    return this.now();
  }

  set t(v: number) {
    this.#offset = v - Date.now();
  }

  /** A fresh TOTP step (three steps on: a code of the last step is never reused). */
  next(): void {
    this.t += 3 * STEP;
  }
}

export interface TestPerson { name: string; passkey: SoftPasskey; secret: string }

function fail(what: string, r: RawResponse): never {
  throw new Error(`${what}: HTTP ${r.status} ${r.text}`);
}

export class PeopleDriver {
  constructor(private readonly t: TestControlPlane, readonly clock: TestClock) {}

  browser(): Browser {
    return new Browser(this.t.cp.url, this.t.adminTls.ca);
  }

  /** A request with the bootstrap admin credential. */
  admin(path: string, body?: unknown): Promise<RawResponse> {
    const a = this.t.adminTls;
    return rawRequest(this.t.cp.url, {
      path, method: body === undefined ? 'GET' : 'POST', ca: a.ca, cert: a.cert, key: a.key,
      ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
    });
  }

  totp(p: TestPerson): string {
    return TOTP.generate({ secret: Secret.fromBase32(p.secret), timestamp: this.clock.now() });
  }

  /** Adds a local user in `groups` and enrols it in a fresh browser (which is then signed in, with MFA). */
  async enrol(name: string, groups: string[]): Promise<{ person: TestPerson; browser: Browser }> {
    this.clock.next();
    const add = await this.admin('/v1/users', { username: name, groups });
    if (add.status !== 201) fail('user add', add);
    const token = String((add.json as { enrolment_url: string }).enrolment_url).split('#token=')[1];
    const b = this.browser();
    const start = await b.post('/v1/auth/enrol/start', { token });
    if (start.status !== 200) fail('enrol start', start);
    const s = start.json as { passkey_options: Parameters<SoftPasskey['register']>[0]; totp_uri: string };
    const passkey = new SoftPasskey();
    const reg = await b.post('/v1/auth/enrol/passkey', { response: passkey.register(s.passkey_options, b.origin) });
    if (reg.status !== 200) fail('enrol passkey', reg);
    const person = { name, passkey, secret: new URL(s.totp_uri).searchParams.get('secret')! };
    const done = await b.post('/v1/auth/enrol/totp', { code: this.totp(person) });
    if (done.status !== 200) fail('enrol totp', done);
    return { person, browser: b };
  }

  /** Signs `p` in with passkey and TOTP (at a fresh step) in `b` (a new browser by default). */
  async signIn(p: TestPerson, b = this.browser()): Promise<Browser> {
    this.clock.next();
    const opts = await b.post('/v1/auth/passkey/options', { username: p.name });
    if (opts.status !== 200) fail('passkey options', opts);
    const v = await b.post('/v1/auth/passkey/verify', { response: p.passkey.assert((opts.json as { options: Parameters<SoftPasskey['assert']>[0] }).options, b.origin) });
    if (v.status !== 200) fail('passkey verify', v);
    const r = await b.post('/v1/auth/totp', { code: this.totp(p) });
    if (r.status !== 200) fail('totp', r);
    return b;
  }
}
