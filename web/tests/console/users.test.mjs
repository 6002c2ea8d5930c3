// Chromium tests of the web console: users and the own profile.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/users.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import {
  ADMIN_EMAIL,
  launchBrowser,
  startControlPlane,
  waitFor,
} from '../harness.mjs';
import {
  assertSameDocument,
  createUserInConsole,
  describe,
  describedError,
  fieldError,
  fixture,
  h1,
  markDocument,
  note,
  open,
  register,
  reload,
  signIn,
  signInRefused,
  TEST_TIMEOUT,
  userEmails,
  usersTotal,
} from './common.mjs';

// ---------------------------------------------------------------------------
// 5. Users.


describe('users', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane();
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  const userRow = (page, email) => page.locator(`tr[data-email="${email}"]`);
  // Columns: select, Email, Name, Role, State, Last sign-in, actions.
  const cell = (page, email, i) => userRow(page, email).getByRole('cell').nth(i);

  async function createUser(page, { email, name, password, role = 'user' }) {
    const form = page.getByRole('region', { name: 'New user' });
    if (!(await form.isVisible())) await page.getByRole('button', { name: 'New user' }).click();
    await form.getByLabel('Email').fill(email);
    await form.getByLabel('Name').fill(name);
    await form.getByLabel('Password').fill(password);
    await form.getByLabel('Role').selectOption(role);
    await form.getByRole('button', { name: 'Create user' }).click();
    return form;
  }

  it(
    'creates, edits, changes the role of, bulk-deactivates and filters users',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/users`);
      await h1(page, 'Users').waitFor();
      await userRow(page, ADMIN_EMAIL).waitFor();

      // A field error from the server, next to its field.
      const form = await createUser(page, { email: 'ana@example.test', name: 'Ana Lima', password: 'short' });
      const pw = form.getByLabel('Password');
      await waitFor(async () => (await pw.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Password aria-invalid' });
      const described = await describedError(pw);
      assert.match(described, /at least 8 characters/);
      assert.equal(await fieldError(pw), described);
      assert.equal(await form.getByLabel('Email').getAttribute('aria-invalid'), null, 'Email marked invalid');
      assert.equal(await userRow(page, 'ana@example.test').count(), 0);

      await pw.fill('ana-password-123');
      await form.getByRole('button', { name: 'Create user' }).click();
      await userRow(page, 'ana@example.test').waitFor();
      await page.getByRole('status').filter({ hasText: 'Created ana@example.test.' }).waitFor();
      assert.equal(await form.count(), 0, 'the form stays open after creating');
      assert.equal(await cell(page, 'ana@example.test', 2).innerText(), 'Ana Lima');
      assert.equal(await cell(page, 'ana@example.test', 4).innerText(), 'Active');

      await createUser(page, { email: 'bruno@example.test', name: 'Bruno Costa', password: 'bruno-password-123' });
      await userRow(page, 'bruno@example.test').waitFor();
      await createUser(page, { email: 'carla@example.test', name: 'Carla Dias', password: 'carla-password-123' });
      await userRow(page, 'carla@example.test').waitFor();

      // Edit in a dialog.
      await page.getByRole('button', { name: 'Edit ana@example.test', exact: true }).click();
      const dialog = page.getByRole('dialog', { name: 'Edit ana@example.test' });
      await dialog.waitFor();
      await dialog.getByLabel('Name').fill('Ana Maria Lima');
      await dialog.getByRole('button', { name: 'Save changes' }).click();
      await page.getByRole('status').filter({ hasText: 'Saved ana@example.test.' }).waitFor();
      await waitFor(async () => (await cell(page, 'ana@example.test', 2).innerText()) === 'Ana Maria Lima', 10_000, { message: 'name edited' });
      assert.equal(await dialog.count(), 0, 'the dialog stays open');

      // Role: asked first; cancelled, nothing changes.
      await page.getByLabel('Role of carla@example.test').selectOption('administrator');
      const promote = page.getByRole('dialog', { name: 'Make carla@example.test an administrator?' });
      await promote.waitFor();
      await promote.getByRole('button', { name: 'Cancel' }).click();
      await waitFor(async () => (await promote.count()) === 0 || !(await promote.isVisible()), 10_000, { message: 'the dialog closed' });
      assert.equal(await page.getByLabel('Role of carla@example.test').inputValue(), 'user', 'the role changed without a yes');
      await page.getByLabel('Role of carla@example.test').selectOption('administrator');
      await promote.getByRole('button', { name: 'Make administrator' }).click();
      await page.getByRole('status').filter({ hasText: 'carla@example.test is now Administrator.' }).waitFor();

      // Bulk: each selected row shows its own result.
      await page.getByLabel('Select ana@example.test').check();
      await page.getByLabel('Select bruno@example.test').check();
      await page.getByRole('group', { name: 'Bulk actions' }).getByText('2 selected').waitFor();
      await page.getByRole('button', { name: 'Deactivate selected' }).click();
      const deactivating = page.getByRole('dialog', { name: 'Deactivate 2 users?' });
      assert.match(await deactivating.innerText(), /signed out at once/);
      await deactivating.getByRole('button', { name: 'Deactivate' }).click();
      for (const email of ['ana@example.test', 'bruno@example.test']) {
        await userRow(page, email).getByText('Deactivate: done', { exact: true }).waitFor();
        await waitFor(async () => (await cell(page, email, 4).innerText()) === 'Inactive', 10_000, { message: `${email} Inactive` });
        assert.equal(await page.getByLabel(`Select ${email}`).isChecked(), false);
      }
      await page.getByRole('status').filter({ hasText: 'Deactivate: 2 succeeded, 0 failed.' }).waitFor();
      for (const email of ['carla@example.test', ADMIN_EMAIL]) {
        assert.equal(await userRow(page, email).getByText(/Deactivate:/).count(), 0, `${email} shows a result`);
        assert.equal(await cell(page, email, 4).innerText(), 'Active');
      }

      // Everything persisted; the role filter in the URL.
      await open(page, `${f.cp.url}/users?role=administrator`);
      await h1(page, 'Users').waitFor();
      await userRow(page, 'carla@example.test').waitFor();
      const emails = await page.locator('tr[data-email]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-email')).sort());
      assert.deepEqual(emails, [ADMIN_EMAIL, 'carla@example.test']);
      for (const email of emails) assert.equal(await page.getByLabel(`Role of ${email}`).inputValue(), 'administrator');
      assert.equal(await page.getByLabel('Role', { exact: true }).inputValue(), 'administrator');

      await open(page, `${f.cp.url}/users?state=inactive`);
      await userRow(page, 'ana@example.test').waitFor();
      const inactive = await page.locator('tr[data-email]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-email')).sort());
      assert.deepEqual(inactive, ['ana@example.test', 'bruno@example.test']);
      assert.equal(await cell(page, 'ana@example.test', 2).innerText(), 'Ana Maria Lima');
      await page.context().close();
    }),
  );

  it(
    'pages through the users 25 at a time with Next and Previous page, with the right total',
    TEST_TIMEOUT,
    f.t(async () => {
      const PAGE = 25; // web/src/pages/users.tsx
      const N = PAGE + 1;
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/users`);
      await h1(page, 'Users').waitFor();
      await userRow(page, ADMIN_EMAIL).waitFor();
      const before = await usersTotal(page);
      const t0 = Date.now();
      const made = [];
      for (let i = 1; i <= N; i++) {
        const email = `pager-${String(i).padStart(2, '0')}@example.test`;
        await createUserInConsole(page, f.cp.url, { email, name: `Pager ${i}`, password: `pager-password-${i}`, goto: false });
        made.push(email);
      }
      note(`created ${N} users with the New user form in ${Date.now() - t0} ms`);
      await waitFor(async () => (await usersTotal(page)) === before + N, 10_000, { message: `${before + N} users` });

      const pager = page.getByRole('navigation', { name: 'Pages' });
      const next = pager.getByRole('button', { name: 'Next page' });
      const prev = pager.getByRole('button', { name: 'Previous page' });
      /** Waits for the table to show `n` rows other than `not`, and returns them. */
      const rowsChange = async (not, n, what) => {
        let last = [];
        await waitFor(
          async () => {
            last = await userEmails(page);
            return last.length === n && JSON.stringify(last) !== JSON.stringify(not);
          },
          10_000,
          { message: `${what}: ${n} rows other than before` },
        ).catch((e) => {
          e.message += `; showing ${last.length} rows: ${JSON.stringify(last)}`;
          throw e;
        });
        return last;
      };

      // Every user: 25, then the rest.
      const total = before + N;
      const first = await userEmails(page);
      assert.equal(first.length, PAGE);
      assert.equal(await prev.isDisabled(), true, 'Previous page enabled on the first page');
      assert.equal(await next.isEnabled(), true, 'Next page disabled with more users than a page');
      await next.click();
      const second = await rowsChange(first, total - PAGE, 'page 2');
      assert.ok(new URL(page.url()).searchParams.get('page'), `no page in the URL: ${page.url()}`);
      assert.deepEqual(second.filter((e) => first.includes(e)), [], 'a user on both pages');
      for (const e of [ADMIN_EMAIL, ...made]) assert.ok([...first, ...second].includes(e), `${e} on neither page`);
      assert.equal(await usersTotal(page), total);
      assert.equal(await next.isDisabled(), true, 'Next page enabled on the last page');
      assert.equal(await prev.isEnabled(), true, 'Previous page disabled on page 2');
      await prev.click();
      await rowsChange(second, PAGE, 'back to page 1');
      assert.deepEqual(await userEmails(page), first);
      assert.equal(new URL(page.url()).searchParams.get('page'), null);
      assert.equal(await prev.isDisabled(), true);

      // With a search: only the new users, newest first; page 2 survives a reload.
      await page.getByRole('searchbox', { name: 'Search' }).fill('pager-');
      await page.getByRole('search').getByRole('button', { name: 'Search', exact: true }).click();
      const newestFirst = [...made].reverse();
      await waitFor(async () => (await usersTotal(page)) === N, 10_000, { message: `${N} users matching "pager-"` });
      await waitFor(async () => JSON.stringify(await userEmails(page)) === JSON.stringify(newestFirst.slice(0, PAGE)), 10_000, { message: 'search page 1' });
      await next.click();
      await waitFor(async () => JSON.stringify(await userEmails(page)) === JSON.stringify(newestFirst.slice(PAGE)), 10_000, { message: 'search page 2' });
      const searchPage2 = page.url();
      assert.equal(new URL(searchPage2).searchParams.get('q'), 'pager-');
      await reload(page);
      await h1(page, 'Users').waitFor();
      await waitFor(async () => JSON.stringify(await userEmails(page)) === JSON.stringify(newestFirst.slice(PAGE)), 10_000, { message: 'search page 2 after a reload' });
      assert.equal(page.url(), searchPage2);
      assert.equal(await usersTotal(page), N);
      assert.equal(await page.getByRole('searchbox', { name: 'Search' }).inputValue(), 'pager-');
      await prev.click();
      await waitFor(async () => JSON.stringify(await userEmails(page)) === JSON.stringify(newestFirst.slice(0, PAGE)), 10_000, { message: 'search page 1 again' });
      assert.equal(new URL(page.url()).searchParams.get('q'), 'pager-');
      assert.equal(new URL(page.url()).searchParams.get('page'), null);
      await page.context().close();
    }),
  );
  it(
    "sets a customer's own limits, with the server's field errors",
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/users`);
      await h1(page, 'Users').waitFor();
      await createUser(page, { email: 'dana@example.test', name: 'Dana Reis', password: 'dana-password-123' });
      await userRow(page, 'dana@example.test').waitFor();

      await page.getByRole('button', { name: 'Limits of dana@example.test', exact: true }).click();
      const dialog = page.getByRole('dialog', { name: 'Limits of dana@example.test' });
      await dialog.waitFor();
      const row = (name) => dialog.getByRole('row', { name: new RegExp(`^${name}`) });
      // The defaults in force, and nothing used yet.
      await waitFor(async () => /^Subscriptions\s+0\s+5/.test((await row('Subscriptions').innerText()).trim()), 10_000, { message: 'the share loaded' });
      const field = dialog.getByLabel('Subscriptions limit');
      assert.equal(await field.inputValue(), '', 'no override yet');

      await field.fill('-1');
      await dialog.getByRole('button', { name: 'Save limits' }).click();
      await waitFor(async () => (await field.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Subscriptions limit aria-invalid' });
      assert.match(await describedError(field), /must be 0 to 1000/);

      await field.fill('2');
      await dialog.getByLabel('Storage limit').fill('20');
      await dialog.getByRole('button', { name: 'Save limits' }).click();
      await page.getByRole('status').filter({ hasText: 'Saved the limits of dana@example.test.' }).waitFor();
      assert.equal(await dialog.count(), 0, 'the dialog stays open');

      // Kept by the server: the dialog shows them again.
      await page.getByRole('button', { name: 'Limits of dana@example.test', exact: true }).click();
      await dialog.waitFor();
      await waitFor(async () => (await dialog.getByLabel('Subscriptions limit').inputValue()) === '2', 10_000, { message: 'the override shown' });
      assert.equal(await dialog.getByLabel('Storage limit').inputValue(), '20');
      assert.equal(await dialog.getByLabel('CPU limit').inputValue(), '', 'the others follow the defaults');
      assert.match((await row('Storage').innerText()).trim(), /^Storage\s+0\s+20 GiB/);
      await dialog.getByRole('button', { name: 'Cancel' }).click();
    }),
  );
});

// ---------------------------------------------------------------------------
// 13. The own profile: name, password, deactivation.

describe('profile', () => {
  const f = fixture();
  before(async () => {
    // Many sign-ins in one block: room above the default login rate limit.
    f.cp = await startControlPlane({ args: ['--login-ip-burst', '200', '--login-ip-per-minute', '200'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'saves a new name ("Profile saved.") that the header shows, also after a reload',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      const header = page.getByRole('banner');
      const newName = 'Ada Renamed';
      assert.equal(await header.getByText(newName, { exact: true }).count(), 0);
      const nameField = page.getByLabel('Name', { exact: true });
      await nameField.fill(newName);
      // Only the email needs the password.
      assert.equal(await page.getByLabel('Password (to change the email)').count(), 0);
      await page.getByRole('button', { name: 'Save profile' }).click();
      await page.getByRole('status').filter({ hasText: 'Profile saved.' }).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0);
      await header.getByText(newName, { exact: true }).waitFor();

      await reload(page);
      await h1(page, 'Profile').waitFor();
      await header.getByText(newName, { exact: true }).waitFor();
      assert.equal(await nameField.inputValue(), newName);
      // Also where administrators see it.
      await open(page, `${f.cp.url}/users`);
      await waitFor(async () => (await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).getByRole('cell').nth(2).innerText()) === newName, 10_000, {
        message: 'the new name in the users table',
      });
      await page.context().close();
    }),
  );

  it(
    'changes the password: a wrong current one shows the server\'s error; then the page keeps working, the old password fails and the new one signs in',
    TEST_TIMEOUT,
    f.t(async () => {
      const email = 'pat@example.test';
      const oldPassword = 'pat-old-password-1';
      const newPassword = 'pat-new-password-2';
      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await createUserInConsole(admin, f.cp.url, { email, name: 'Pat Admin', password: oldPassword, role: 'administrator' });
      await admin.context().close();

      const page = await f.page();
      await signIn(page, f.cp.url, { email, password: oldPassword });
      const nav = page.getByRole('navigation', { name: 'Main' });
      await nav.getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      await markDocument(page);
      const form = page.getByRole('region', { name: 'Password', exact: true });
      const current = form.getByLabel('Current password');
      const next = form.getByLabel('New password');

      await current.fill('not-my-password-9');
      await next.fill(newPassword);
      await form.getByRole('button', { name: 'Change password' }).click();
      // The server's answer: "is wrong", as a field error of current_password
      // (INVALID_ARGUMENT) with the banner, or in the banner alone.
      const alert = form.getByRole('alert');
      await alert.waitFor();
      const said = `${await alert.innerText()} | ${await describedError(current)}`;
      note(`wrong current password shows: ${JSON.stringify(said)}`);
      assert.match(said, /wrong/);
      assert.equal(new URL(page.url()).pathname, '/profile', 'a wrong current password left the page');
      assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 1, 'a wrong current password signed out');

      await current.fill(oldPassword);
      await form.getByRole('button', { name: 'Change password' }).click();
      await page.getByRole('status').filter({ hasText: 'Password changed. Your other sessions were signed out.' }).waitFor();
      assert.equal(await alert.count(), 0, 'the error stays after the change');
      assert.equal(await current.inputValue(), '');
      assert.equal(await next.inputValue(), '');

      // The page goes on with the new session: other pages load, and a reload
      // resumes from the session cookie ChangePassword set.
      await nav.getByRole('link', { name: 'Users' }).click();
      await h1(page, 'Users').waitFor();
      await page.locator(`tr[data-email="${email}"]`).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0, 'an error on the users page after the change');
      await nav.getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      await assertSameDocument(page, 'navigation after the password change');
      await reload(page);
      await h1(page, 'Profile').waitFor();
      assert.equal(new URL(page.url()).pathname, '/profile');
      await page.getByRole('button', { name: 'Sign out' }).waitFor();
      await nav.getByRole('link', { name: 'Users' }).click();
      await page.locator(`tr[data-email="${email}"]`).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0, 'an error on the users page after the reload');

      // Signing in afresh: the old password is refused, the new one works.
      const other = await f.page();
      const refused = await signInRefused(other, f.cp.url, { email, password: oldPassword });
      assert.match(refused.alert, /invalid email or password/);
      await signIn(other, f.cp.url, { email, password: newPassword });
      await h1(other, 'Dashboard').waitFor();
      await other.context().close();
      await page.context().close();
    }),
  );

  it(
    'deactivates the own account after a confirmation; signing in again is refused with the server\'s reason',
    TEST_TIMEOUT,
    f.t(async () => {
      const email = 'dee@example.test';
      const password = 'dee-password-123';
      const page = await f.page();
      await register(page, f.cp.url, { name: 'Dee Parting', email, password });
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      const zone = page.getByRole('region', { name: 'Deactivate account', exact: true });
      const field = zone.getByLabel('Password (to deactivate)');
      const dialog = page.getByRole('dialog', { name: 'Deactivate your account?' });

      // A wrong password: the server's error, still signed in.
      await field.fill('not-my-password-9');
      await zone.getByRole('button', { name: 'Deactivate my account' }).click();
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Deactivate', exact: true }).click();
      const alert = zone.getByRole('alert');
      await alert.waitFor();
      const said = `${await alert.innerText()} | ${await describedError(field)}`;
      note(`wrong password to deactivate shows: ${JSON.stringify(said)}`);
      assert.match(said, /wrong/);
      assert.equal(new URL(page.url()).pathname, '/profile');
      assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 1);

      // Cancel leaves the account alone.
      await field.fill(password);
      await zone.getByRole('button', { name: 'Deactivate my account' }).click();
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Cancel' }).click();
      await waitFor(async () => !(await dialog.isVisible()), 5_000, { message: 'dialog closed' });
      assert.equal(new URL(page.url()).pathname, '/profile');

      await zone.getByRole('button', { name: 'Deactivate my account' }).click();
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Deactivate', exact: true }).click();
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      assert.equal(await page.getByRole('navigation', { name: 'Main' }).count(), 0);
      // The session is over on the server too: a reload stays signed out.
      await reload(page);
      await h1(page, 'Sign in').waitFor();

      const refused = await signInRefused(page, f.cp.url, { email, password, goto: false });
      note(`sign-in to a deactivated account: grpc-status ${refused.status}, alert ${JSON.stringify(refused.alert)}`);
      assert.match(refused.alert, /the account is deactivated/);
      assert.equal(new URL(page.url()).pathname, '/signin');
      await page.context().close();
    }),
  );
});
