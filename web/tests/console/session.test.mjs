// Chromium tests of the web console: the session: the access token and the refresh cookie, revocation and expiry under an open page, cross-site requests.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/session.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, it } from 'node:test';

import {
  ADMIN_EMAIL,
  freePort,
  launchBrowser,
  sleep,
  startAgent,
  startControlPlane,
  waitFor,
} from '../harness.mjs';
import {
  assertSameDocument,
  createUserInConsole,
  describe,
  fixture,
  grpcWebOutcome,
  grpcWebPost,
  h1,
  linkBadge,
  markDocument,
  note,
  open,
  reload,
  signIn,
  TEST_TIMEOUT,
  waitRowStatus,
  workerRow,
} from './common.mjs';

// ---------------------------------------------------------------------------
// 8. The session: short-lived access tokens, the HttpOnly refresh cookie.

describe('session', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane({ args: ['--access-token-ttl', '3s'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'refreshes a 3 s access token by itself, survives reloads, and signs out for good',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      const context = page.context();
      let refreshes = 0;
      page.on('request', (r) => {
        if (r.url().endsWith('/minispod.v1.AuthService/Refresh')) refreshes++;
      });
      await signIn(page, f.cp.url);
      await h1(page, 'Dashboard').waitFor();
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Fleet' }).click();
      await h1(page, 'Fleet').waitFor();
      await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'badge Live' });
      await markDocument(page);
      await sleep(8_000);
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Users' }).click();
      await h1(page, 'Users').waitFor();
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0, 'an error banner on the users page');
      await assertSameDocument(page, 'navigation after 8 s');
      note(`refreshes during ~8 s with a 3 s access token: ${refreshes}`);
      assert.ok(refreshes >= 2, `only ${refreshes} refreshes`);

      await reload(page);
      await h1(page, 'Users').waitFor();
      assert.equal(new URL(page.url()).pathname, '/users');
      assert.equal(await page.getByLabel('Password').count(), 0, 'a sign-in form after reload');

      assert.equal(await page.evaluate(() => document.cookie), '');
      const cookies = await context.cookies(f.cp.url + '/minispod.v1.AuthService/Refresh');
      const session = cookies.find((c) => c.name === 'minispod_session');
      assert.ok(session, `no minispod_session cookie: ${JSON.stringify(cookies.map((c) => c.name))}`);
      assert.equal(session.httpOnly, true);
      assert.equal(session.secure, true);
      assert.equal(session.sameSite, 'Strict');
      assert.equal(session.path, '/minispod.v1.AuthService/');

      // Sign out; keep the cookie value that went with the Logout call.
      const logout = page.waitForRequest((r) => r.url().endsWith('/minispod.v1.AuthService/Logout'));
      await page.getByRole('button', { name: 'Sign out' }).click();
      const sent = (await (await logout).allHeaders()).cookie ?? '';
      const m = /(?:^|;\s*)minispod_session=([^;]+)/.exec(sent);
      assert.ok(m, `Logout carried no session cookie: ${JSON.stringify(sent)}`);
      const old = m[1];
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      await waitFor(async () => !(await context.cookies(f.cp.url + '/minispod.v1.AuthService/')).some((c) => c.name === 'minispod_session'), 10_000, {
        message: 'cookie cleared',
      });
      await reload(page);
      await h1(page, 'Sign in').waitFor();

      // The old refresh token is dead on the server too.
      await context.addCookies([{ ...session, value: old }]);
      const refreshed = page.waitForResponse((r) => r.url().endsWith('/minispod.v1.AuthService/Refresh'));
      await open(page, `${f.cp.url}/users`);
      const res = await refreshed;
      const outcome = grpcWebOutcome(await res.body().catch(() => Buffer.alloc(0)), await res.allHeaders());
      note(`Refresh with the signed-out cookie: HTTP ${res.status()}, grpc-status ${outcome.status}`);
      assert.notEqual(outcome.status, 0);
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      await sleep(500);
      assert.equal(await page.getByRole('navigation', { name: 'Main' }).count(), 0);
      await context.close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 9. CSRF: another site cannot use the refresh cookie.

describe('cross-site requests', () => {
  const f = fixture();
  /** @type {http.Server} */
  let evil;
  let evilPort = 0;
  before(async () => {
    evilPort = await freePort();
    f.cp = await startControlPlane({ args: ['--cors-origin', `http://127.0.0.1:${evilPort}`] });
    const target = `${f.cp.url}/minispod.v1.AuthService/Refresh`;
    const html = `<!doctype html><html lang="en"><head><title>evil</title></head><body><main><h1>Win a prize</h1>
<script>
(async () => {
  const out = {};
  try {
    const res = await fetch(${JSON.stringify(target)}, {
      method: 'POST',
      credentials: 'include',
      headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
      body: new Uint8Array([0, 0, 0, 0, 0]),
    });
    const body = new Uint8Array(await res.arrayBuffer());
    out.status = res.status;
    out.grpcStatus = res.headers.get('grpc-status');
    out.body = Array.from(body);
  } catch (e) {
    out.error = String(e);
  }
  window.__result = out;
})();
</script></main></body></html>`;
    evil = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
    });
    await new Promise((r) => evil.listen(evilPort, '127.0.0.1', r));
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(async () => {
    evil?.close();
    await f.close();
  });

  it(
    'gives a page of another origin no access token, and leaves the session intact',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await h1(page, 'Dashboard').waitFor();

      // CORS itself admits the evil origin: a cookie-less call gets through.
      const evilPage = await page.context().newPage();
      await evilPage.goto(`http://127.0.0.1:${evilPort}/`);
      const result = await evilPage.waitForFunction(() => /** @type {any} */ (window).__result, undefined, { timeout: 30_000 });
      const r = await result.jsonValue();
      let obtained = false;
      let grpcStatus = r.grpcStatus === null || r.grpcStatus === undefined ? undefined : Number(r.grpcStatus);
      if (r.body) {
        const o = grpcWebOutcome(Buffer.from(r.body), r.grpcStatus ? { 'grpc-status': r.grpcStatus } : {});
        grpcStatus = o.status;
        obtained = o.messages > 0 || o.status === 0;
      }
      note(`evil page's Refresh: ${JSON.stringify({ ...r, body: r.body ? `${r.body.length} bytes` : undefined, grpcStatus })}`);
      assert.equal(obtained, false, 'the evil page obtained an access token');
      if (!r.error) assert.notEqual(grpcStatus, 0);

      // Also with the evil page's origin allowed by CORS, an uncredentialed
      // call works (so CORS is not what stops the credentialed one alone).
      const plain = await evilPage.evaluate(async (url) => {
        try {
          const res = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
            body: new Uint8Array([0, 0, 0, 0, 0]),
          });
          return { status: res.status, grpcStatus: res.headers.get('grpc-status'), body: Array.from(new Uint8Array(await res.arrayBuffer())) };
        } catch (e) {
          return { error: String(e) };
        }
      }, `${f.cp.url}/minispod.v1.CatalogService/ListServices`);
      note(`evil page's uncredentialed ListServices: HTTP ${plain.status ?? plain.error}`);
      assert.equal(plain.status, 200, `CORS did not admit the configured origin: ${JSON.stringify(plain.error ?? plain)}`);
      await evilPage.close();

      // Were the cookie sent anyway (a browser without SameSite, a looser
      // CORS setup), the server refuses it for a cross-site request before
      // looking at the token: replay the real cookie with the headers a
      // browser would send from the evil page.
      const cookie = (await page.context().cookies(`${f.cp.url}/minispod.v1.AuthService/Refresh`)).find((c) => c.name === 'minispod_session');
      assert.ok(cookie, 'no session cookie');
      const forged = await grpcWebPost(f.cp, '/minispod.v1.AuthService/Refresh', {
        cookie: `minispod_session=${cookie.value}`,
        origin: `http://127.0.0.1:${evilPort}`,
        'sec-fetch-site': 'cross-site',
        'sec-fetch-mode': 'cors',
      });
      note(`forged cross-site Refresh with the real cookie: HTTP ${forged.http}, grpc-status ${forged.status} ${forged.message ?? ''}`);
      assert.equal(forged.status, 7, 'expected PERMISSION_DENIED');
      assert.equal(forged.messages, 0);

      // The console's session was neither spent nor revoked.
      await reload(page);
      await h1(page, 'Dashboard').waitFor();
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Users' }).click();
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0);
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 14. A session revoked or expired under an open page: sign in, then back.

describe('session revocation', () => {
  const f = fixture();
  const sam = { email: 'sam@example.test', password: 'sam-password-123' };
  before(async () => {
    f.cp = await startControlPlane({ enrollmentToken: true, args: ['--login-ip-burst', '200', '--login-ip-per-minute', '200'] });
    f.browser = await launchBrowser(f.cp.caPath);
    // Sam, a second administrator, and a plain user for the role=user list.
    const page = await f.page();
    await signIn(page, f.cp.url);
    await createUserInConsole(page, f.cp.url, { ...sam, name: 'Sam Second', role: 'administrator' });
    await createUserInConsole(page, f.cp.url, { email: 'uma@example.test', name: 'Uma User', password: 'uma-password-123', goto: false });
    await page.context().close();
  });
  after(() => f.close());

  /** Sam, signed in, on /users?role=user with its rows loaded. */
  async function samOnUsers() {
    const page = await f.page();
    await signIn(page, f.cp.url, sam);
    await open(page, `${f.cp.url}/users?role=user`);
    await h1(page, 'Users').waitFor();
    await page.locator('tr[data-email="uma@example.test"]').waitFor();
    return page;
  }

  /** The page is on /signin with next = `next`; signing in returns to exactly that URL. */
  async function signInReturnsTo(page, next, password = sam.password) {
    await h1(page, 'Sign in').waitFor();
    await waitFor(() => new URL(page.url()).pathname === '/signin', 10_000, { message: `on /signin, is ${page.url()}` });
    assert.equal(new URL(page.url()).searchParams.get('next'), next, `next of ${page.url()}`);
    await signIn(page, f.cp.url, { email: sam.email, password, goto: false });
    await h1(page, 'Users').waitFor();
    await waitFor(() => page.url() === `${f.cp.url}${next}`, 10_000, { message: `back on ${next}, is ${page.url()}` });
    await page.locator('tr[data-email="uma@example.test"]').waitFor();
    assert.equal(await page.getByLabel('Role', { exact: true }).inputValue(), 'user');
  }

  it(
    'after an administrator deactivates and re-activates the user, the next call in the app goes to sign-in and back to the page',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await samOnUsers();
      await markDocument(page);

      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/users`);
      await admin.getByRole('button', { name: `Deactivate ${sam.email}`, exact: true }).click();
      await admin.getByRole('status').filter({ hasText: `${sam.email} deactivated.` }).waitFor();
      await admin.getByRole('button', { name: `Activate ${sam.email}`, exact: true }).click();
      await admin.getByRole('status').filter({ hasText: `${sam.email} activated.` }).waitFor();

      // Sam changes a filter: the list call is refused, the refresh too.
      await page.getByLabel('State', { exact: true }).selectOption('active');
      const next = '/users?role=user&state=active';
      await signInReturnsTo(page, next);
      assert.equal(await page.getByLabel('State', { exact: true }).inputValue(), 'active');
      await assertSameDocument(page, 'sign-in after a revoked session');
      await page.context().close();
    }),
  );

  it(
    'after a password change in another browser, a reload goes to sign-in and, with the new password, back to the page',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await samOnUsers();
      const newPassword = 'sam-password-456';

      const second = await f.page();
      await signIn(second, f.cp.url, sam);
      await open(second, `${f.cp.url}/profile`);
      const form = second.getByRole('region', { name: 'Password', exact: true });
      await form.getByLabel('Current password').fill(sam.password);
      await form.getByLabel('New password').fill(newPassword);
      await form.getByRole('button', { name: 'Change password' }).click();
      await second.getByRole('status').filter({ hasText: 'Password changed.' }).waitFor();

      await reload(page);
      await signInReturnsTo(page, '/users?role=user', newPassword);
      sam.password = newPassword;
      await page.context().close();
    }),
  );

  it(
    'a deactivated administrator\'s open fleet page stops getting the live fleet and goes to sign-in',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url, sam);
      await open(page, `${f.cp.url}/workers`);
      await h1(page, 'Fleet').waitFor();
      await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'badge Live' });

      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/users`);
      await admin.getByRole('button', { name: `Deactivate ${sam.email}`, exact: true }).click();
      await admin.getByRole('status').filter({ hasText: `${sam.email} deactivated.` }).waitFor();
      try {
        // A worker joins after the deactivation: the admin's fleet shows it ...
        const name = 'after-deactivation';
        f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
        await open(admin, `${f.cp.url}/workers`);
        await waitRowStatus(admin, name, 'ACTIVE');
        const seen = await workerRow(page, name).count();
        const badge = await linkBadge(page).innerText().catch(() => '(none)');
        note(`deactivated user's fleet page: ${page.url()}, badge ${JSON.stringify(badge)}, sees the new worker: ${seen > 0}`);
        // ... the deactivated one's must not, and must be on the sign-in page.
        await h1(page, 'Sign in').waitFor({ timeout: 15_000 });
        assert.equal(await workerRow(page, name).count(), 0, 'the deactivated user saw a worker that joined after');
      } finally {
        await open(admin, `${f.cp.url}/users`);
        await admin.getByRole('button', { name: `Activate ${sam.email}`, exact: true }).click();
        await admin.getByRole('status').filter({ hasText: `${sam.email} activated.` }).waitFor();
      }
    }),
  );
});

describe('expired session', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane({ args: ['--refresh-token-ttl', '3s'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'an expired session sends a reload to sign-in and, after it, back to the page',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      const deep = '/users?role=administrator';
      await open(page, `${f.cp.url}${deep}`);
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      // The refresh token lives 3 s (the access token 15 min, so nothing
      // refreshes meanwhile): let it lapse.
      await sleep(4_000);
      const refreshed = page.waitForResponse((r) => r.url().endsWith('/minispod.v1.AuthService/Refresh'));
      await reload(page);
      const res = await refreshed;
      const outcome = grpcWebOutcome(await res.body().catch(() => Buffer.alloc(0)), await res.allHeaders());
      // The cookie expires with the token (no cookie: INVALID_ARGUMENT); were
      // it sent, the server refuses it (UNAUTHENTICATED).
      note(`Refresh after the refresh token's 3 s: HTTP ${res.status()}, grpc-status ${outcome.status}`);
      assert.notEqual(outcome.status, 0, 'an expired session was refreshed');
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      assert.equal(new URL(page.url()).searchParams.get('next'), deep);
      await signIn(page, f.cp.url, { goto: false });
      await waitFor(() => page.url() === `${f.cp.url}${deep}`, 10_000, { message: `back on ${deep}, is ${page.url()}` });
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      await page.context().close();
    }),
  );
});
