// Chromium tests of the web console: signing in, registering and the login rate limit.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/signin.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import {
  ADMIN_EMAIL,
  ADMIN_PASSWORD,
  launchBrowser,
  startControlPlane,
  waitFor,
} from '../harness.mjs';
import {
  describe,
  fixture,
  h1,
  note,
  open,
  signIn,
  signInRefused,
  TEST_TIMEOUT,
} from './common.mjs';

// ---------------------------------------------------------------------------
// 1. Sign in.

describe('sign in', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane();
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'shows the server\'s error for a wrong password, then signs in to the dashboard',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await open(page, `${f.cp.url}/`);
      // Signed out: the app sends us to sign in.
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      await page.getByLabel('Email').fill(ADMIN_EMAIL);
      await page.getByLabel('Password').fill('not-the-password-at-all');
      await page.getByRole('button', { name: 'Sign in' }).click();
      const alert = page.getByRole('alert');
      await alert.waitFor();
      assert.match(await alert.innerText(), /invalid email or password/);
      assert.equal(new URL(page.url()).pathname, '/signin');

      await page.getByLabel('Password').fill(ADMIN_PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await h1(page, 'Dashboard').waitFor();
      assert.equal(new URL(page.url()).pathname, '/');
      assert.equal(await page.getByRole('alert').count(), 0, 'the error stays after a successful sign-in');
      await page.context().close();
    }),
  );

  it(
    'leaves "Loading…" by itself when the first frame comes late (as in a background tab)',
    TEST_TIMEOUT,
    f.t(async () => {
      // Five fresh loads with no animation frames (background tabs get none);
      // Preact then runs effects after its 35 ms fallback timer.
      const results = [];
      for (let i = 0; i < 5; i++) {
        const page = await f.page();
        await page.addInitScript(() => {
          window.requestAnimationFrame = () => 0;
        });
        await page.goto(`${f.cp.url}/signin`);
        const ok = await h1(page, 'Sign in')
          .waitFor({ timeout: 5_000 })
          .then(() => true, () => false);
        results.push(ok ? 'sign-in form' : JSON.stringify(await page.locator('#app').innerText()));
        await page.context().close();
      }
      note(`loads without animation frames showed: ${results.join(', ')}`);
      assert.deepEqual(results, Array(5).fill('sign-in form'));
    }),
  );

  it(
    'returns to the deep link it was sent away from',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      const deep = `${f.cp.url}/users?role=administrator`;
      await open(page, deep);
      await h1(page, 'Sign in').waitFor();
      const u = new URL(page.url());
      assert.equal(u.pathname, '/signin');
      assert.equal(u.searchParams.get('next'), '/users?role=administrator');
      await signIn(page, f.cp.url, { goto: false });
      await h1(page, 'Users').waitFor();
      await waitFor(() => page.url() === deep, 10_000, { message: `URL ${deep}, is ${page.url()}` });
      assert.equal(await page.getByLabel('Role', { exact: true }).inputValue(), 'administrator');
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 15. Login rate limits: the sign-in page says when to try again.

describe('login rate limit', () => {
  const f = fixture();
  const BURST = 3;
  before(async () => {
    f.cp = await startControlPlane({ args: ['--login-ip-burst', String(BURST), '--login-ip-per-minute', '1'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'shows the server\'s RESOURCE_EXHAUSTED message with when to retry once the limit is hit, for the right password too',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await open(page, `${f.cp.url}/signin`);
      const attempts = [];
      for (let i = 0; i < BURST + 5; i++) {
        const r = await signInRefused(page, f.cp.url, { email: ADMIN_EMAIL, password: `wrong-password-${i}`, goto: false });
        attempts.push(r);
        if (r.status === 8) break;
      }
      note(`login attempts: ${JSON.stringify(attempts.map((a) => `${a.status}: ${a.alert}`))}`);
      const last = attempts.at(-1);
      assert.equal(last.status, 8, 'never RESOURCE_EXHAUSTED');
      assert.equal(attempts.length, BURST + 1, `refused after ${attempts.length - 1} attempts with a burst of ${BURST}`);
      for (const a of attempts.slice(0, -1)) assert.match(a.alert, /invalid email or password/);
      // The server's message, then the console's retry time from RetryInfo.
      assert.ok(last.alert.startsWith(last.message), `alert ${JSON.stringify(last.alert)} does not start with the server's ${JSON.stringify(last.message)}`);
      assert.match(last.alert, /too many attempts from this address/);
      const m = /retry in (\d+) ?s$/.exec(last.alert);
      assert.ok(m, `no "retry in N s" in ${JSON.stringify(last.alert)}`);
      const n = Number(m[1]);
      assert.ok(n >= 1 && n <= 60, `try again in ${n} s with one attempt a minute`);

      // The right password is refused too while the limit holds.
      const right = await signInRefused(page, f.cp.url, { email: ADMIN_EMAIL, password: ADMIN_PASSWORD, goto: false });
      assert.equal(right.status, 8);
      assert.match(right.alert, /too many attempts from this address.*retry in \d+ ?s$/);
      assert.equal(new URL(page.url()).pathname, '/signin');
      await page.context().close();
    }),
  );

  it(
    'names one retry time in the rate-limit alert',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await open(page, `${f.cp.url}/signin`);
      let r;
      for (let i = 0; i < BURST + 2; i++) {
        r = await signInRefused(page, f.cp.url, { email: ADMIN_EMAIL, password: `wrong-password-x${i}`, goto: false });
        if (r.status === 8) break;
      }
      assert.equal(r.status, 8, 'never RESOURCE_EXHAUSTED');
      const seconds = [...r.alert.matchAll(/(\d+) ?s\b/g)].map((m) => Number(m[1]));
      assert.ok(seconds.length >= 1, r.alert);
      assert.equal(new Set(seconds).size, 1, `different retry times in ${JSON.stringify(r.alert)}`);
      await page.context().close();
    }),
  );
});
