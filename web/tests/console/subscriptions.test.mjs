// Chromium tests of the web console: subscriptions on the stand-in cluster.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/subscriptions.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, it } from 'node:test';

import {
  ADMIN_EMAIL,
  ADMIN_PASSWORD,
  assertAccessible,
  launchBrowser,
  screenshot,
  sleep,
  startAgent,
  startControlPlane,
  waitFor,
} from '../harness.mjs';
import {
  assertReachable,
  assertSameDocument,
  describe,
  describedError,
  fixture,
  grpcurl,
  h1,
  horizontalOverflow,
  linkBadge,
  markDocument,
  note,
  open,
  register,
  reload,
  signIn,
  startKubeStandin,
  STATUS_WORDS,
  TEST_TEMPLATE,
  TEST_TIMEOUT,
  waitRowStatus,
} from './common.mjs';

// ---------------------------------------------------------------------------
// Subscriptions (#14): customers subscribe to a seeded catalog entry and
// follow it to RUNNING on the stand-in cluster; administrators see every
// one, suspend and resume it, and count it on the dashboard.


describe('subscriptions', () => {
  const f = fixture();
  /** Whether the seeded entry came without a template and the test gave it TEST_TEMPLATE. */
  let templateInstalled = false;
  /** @type {Awaited<ReturnType<typeof startKubeStandin>> | undefined} */
  let kube;
  const APPS_DOMAIN = 'apps.minispod.test';
  // The seeded entry subscribed to, and what its form asks for.
  const SERVICE = { slug: 'ghost', name: 'Ghost' };
  const customerA = { name: 'Ana Subscriber', email: 'ana.subs@example.test', password: 'ana-subs-password-1' };
  const customerB = { name: 'Ben Other', email: 'ben.subs@example.test', password: 'ben-subs-password-1' };
  /** The id of the subscription test 1 makes (later tests use it). */
  let blogId = '';

  before(async () => {
    kube = await startKubeStandin(fs.mkdtempSync('/tmp/minispod-kube-'));
    f.extraLogs.push(kube);
    f.cp = await startControlPlane({
      enrollmentToken: true,
      args: ['--kubeconfig', kube.kubeconfig, '--offline-taint-after-start', '0s', '--apps-domain', APPS_DOMAIN],
    });
    f.browser = await launchBrowser(f.cp.caPath);
    // One schedulable worker: an agent, and a Ready node carrying its id.
    const name = 'subs-worker';
    f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
    const page = await f.page();
    await signIn(page, f.cp.url);
    await open(page, `${f.cp.url}/workers`);
    const row = await waitRowStatus(page, name, 'NOT_READY');
    const id = new URL(await row.getByRole('link', { name, exact: true }).evaluate((a) => a.href)).pathname.split('/').pop();
    await kube.createNode('subs-worker-k3s', id);
    await waitRowStatus(page, name, 'ACTIVE');
    await page.context().close();
    // Seeded entries are meant to come with templates (#14); until one does,
    // an administrator gives it the test's.
    const { accessToken } = await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
    const { service } = await grpcurl(f.cp, 'minispod.v1.CatalogService/GetService', { slug: SERVICE.slug });
    if (!service.template?.components?.length) {
      await grpcurl(f.cp, 'minispod.v1.CatalogService/UpdateService', { id: service.id, template: TEST_TEMPLATE }, accessToken);
      const again = await grpcurl(f.cp, 'minispod.v1.CatalogService/GetService', { slug: SERVICE.slug });
      // (A catalog that neither seeds templates nor keeps one given leaves nothing to subscribe to.)
      assert.ok(again.service.template?.components?.length, `the catalog did not keep the template given to ${SERVICE.slug} (UpdateService.template)`);
      templateInstalled = true;
      note(`the seeded ${SERVICE.slug} has no template: the test gave it one`);
    }
  });
  after(async () => {
    await f.close();
    kube?.stop();
  });

  /** The subscribe form of the catalog entry's page. */
  const subscribeForm = (page) => page.getByRole('region', { name: 'Subscribe' });
  /** A row of My services or of the Subscriptions page. */
  const subRow = (page, name) => page.locator(`tr[data-subscription="${name}"]`);
  /** The value of one fact of the subscription page's overview. */
  const overview = (page, term) =>
    page
      .getByRole('region', { name: 'Overview' })
      .locator('dl.facts > div')
      .filter({ has: page.getByRole('term').getByText(term, { exact: true }) })
      .getByRole('definition');

  /**
   * Fills the subscribe form (name, the variables given by label, then any
   * other required field still empty with a value of its type) and submits it.
   */
  async function subscribe(page, name, variables = {}) {
    const form = subscribeForm(page);
    await form.getByLabel('Name', { exact: true }).fill(name);
    for (const [label, value] of Object.entries(variables)) {
      const input = form.getByLabel(label);
      const kind = await input.evaluate((el) => (el.tagName === 'SELECT' ? 'select' : /** @type {HTMLInputElement} */ (el).type));
      if (kind === 'select') await input.selectOption(value);
      else if (kind === 'checkbox') await input.setChecked(value === 'true');
      else await input.fill(value);
    }
    await form.locator('input[required], select[required]').evaluateAll((els) => {
      for (const el of els) {
        if (el.value !== '') continue;
        const input = /** @type {HTMLInputElement} */ (el);
        const value = el.tagName === 'SELECT' ? /** @type {HTMLSelectElement} */ (el).options[1]?.value : input.type === 'email' ? 'owner@example.test' : input.type === 'number' ? '1' : 'test';
        el.value = value ?? '';
        el.dispatchEvent(new Event(el.tagName === 'SELECT' ? 'change' : 'input', { bubbles: true }));
      }
    });
    await form.getByRole('button', { name: `Subscribe to ${SERVICE.name}` }).click();
  }

  /** Waits for the subscription page's status to be `status`. */
  /** Waits until the subscription page's Status says `status` (an API name) in words. */
  async function waitStatus(page, status, timeoutMs = 60_000) {
    await waitFor(async () => (await overview(page, 'Status').innerText()).trim() === STATUS_WORDS[status], timeoutMs, {
      message: `status ${status}, is ${await overview(page, 'Status').innerText().catch(() => '?')}`,
    });
  }

  it(
    'subscribes a customer through the form (checks in the browser, field errors from the server) and follows it to RUNNING with its URL and notes',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await register(page, f.cp.url, customerA);
      await page.getByRole('link', { name: SERVICE.name, exact: true }).click();
      await h1(page, SERVICE.name).waitFor();
      const form = subscribeForm(page);
      await form.waitFor();

      // A name the browser refuses: no call is made, the field says why.
      let calls = 0;
      page.on('request', (r) => {
        if (r.url().endsWith('/minispod.v1.SubscriptionService/CreateSubscription')) calls++;
      });
      await subscribe(page, 'My Blog', {});
      const nameField = form.getByLabel('Name', { exact: true });
      await waitFor(async () => (await nameField.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Name aria-invalid' });
      assert.match(await describedError(nameField), /lower-case letters/i);
      assert.equal(calls, 0, 'the form was sent with a name the browser refuses');

      // Values of the test template's variables that the browser refuses
      // as the server would: a dotless email domain, a title off its pattern.
      const values = templateInstalled
        ? { 'Administrator email': 'ana@example.test', 'Site title': 'Ana writes', 'Posts per page': '12', Theme: 'source', 'Enable members': 'true', 'SMTP password': 'smtp-secret-1' }
        : {};
      if (templateInstalled) {
        const email = form.getByLabel('Administrator email');
        const title = form.getByLabel('Site title');
        assert.equal(await title.inputValue(), 'My blog', 'the default is not prefilled');
        assert.equal(await form.getByLabel('Theme').inputValue(), 'casper');
        assert.equal(await email.getAttribute('required'), '');
        assert.equal(await form.getByLabel('SMTP password').getAttribute('type'), 'password');
        assert.equal(await form.getByLabel('Posts per page').getAttribute('type'), 'number');
        assert.equal(await form.getByLabel('Enable members').getAttribute('type'), 'checkbox');
        assert.match(await email.evaluate((el) => el.closest('.field').textContent), /Where Ghost sends the owner invitation\./);
        await subscribe(page, 'blog', { ...values, 'Administrator email': 'ana@localhost', 'Site title': 'Ana writes!' });
        await waitFor(async () => (await email.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'email aria-invalid' });
        assert.equal(await describedError(email), 'Not an email address.');
        assert.match(await describedError(title), /Must match the pattern/);
        assert.equal(await nameField.getAttribute('aria-invalid'), null, 'the name is still marked');
        assert.equal(calls, 0, 'the form was sent with values the browser refuses');
      }

      // Accepted: the page of the new subscription.
      await subscribe(page, 'blog', values);
      await h1(page, 'blog').waitFor();
      assert.match(new URL(page.url()).pathname, /^\/subscriptions\/[0-9a-f-]{36}$/);
      blogId = new URL(page.url()).pathname.split('/').pop();
      await waitStatus(page, 'RUNNING');
      const notes = (await page.getByRole('region', { name: 'Notes' }).innerText()).replace(/^Notes\s*/, '');
      assert.doesNotMatch(notes, /\$\{/, 'a placeholder left in the notes');
      if (templateInstalled) {
        assert.equal(notes.trim(), `Open https://blog.${APPS_DOMAIN}/ghost to finish the setup; the invitation goes to ana@example.test. Site: Ana writes.`);
      }
      // Its pods, ready, and the status changes that led there.
      const components = page.getByRole('region', { name: 'Components' });
      await waitFor(async () => (await components.locator('tr[data-pod]').count()) >= 1, 20_000, { message: 'a pod row' });
      const pod = components.locator('tr[data-pod]').first();
      assert.equal((await pod.getByRole('cell').nth(2).innerText()).trim(), 'Running');
      assert.equal((await pod.getByRole('cell').nth(3).innerText()).trim(), 'yes');
      // Where it runs is the operator's business (issue #23): no worker column, no name.
      assert.equal(await components.getByRole('columnheader', { name: 'Worker' }).count(), 0, 'a customer is shown the worker column');
      assert.ok(!(await components.innerText()).includes('subs-worker'), "a customer is shown the worker's name");
      assert.equal(await pod.getByRole('link').count(), 0, 'a customer sees a link to the worker page');
      const events = page.getByRole('region', { name: 'Events' }).getByRole('listitem');
      await waitFor(async () => (await events.count()) >= 2, 10_000, { message: 'two events' });
      assert.match(await events.first().innerText(), /^Running/, 'the newest event first');
      await assertAccessible(page, 'subscription page (desktop)');
      await screenshot(page, 'subscription-running');
      // Closed to all but its owner at first: no link to the address, the
      // owner's own link through the gate; then opened to everyone.
      const host = `blog.${APPS_DOMAIN}`.replaceAll('.', '\\.');
      assert.match((await overview(page, 'Address').innerText()).trim(), new RegExp(`^${host} \\(closed: only its owner\\)$`));
      assert.equal(await overview(page, 'Address').getByRole('link').count(), 0, 'a link to a closed address');
      const access = page.getByRole('region', { name: 'Who can open it' });
      const ownerLink = access.getByRole('link', { name: 'Open blog as its owner' });
      await ownerLink.waitFor();
      assert.match(await ownerLink.getAttribute('href'), new RegExp(`^https://${host}/\\.minispod/open\\?token=[A-Za-z0-9_-]{43}$`));
      assert.equal(await ownerLink.getAttribute('rel'), 'noopener noreferrer');
      await access.getByRole('button', { name: 'Open to everyone' }).click();
      const opening = page.getByRole('dialog', { name: 'Open blog to everyone?' });
      assert.match(await opening.innerText(), /Set up its administrator account first/);
      await opening.getByRole('button', { name: 'Open to everyone' }).click();
      await page.getByRole('status').filter({ hasText: 'blog is open to everyone.' }).waitFor();
      const address = overview(page, 'Address').getByRole('link');
      await address.waitFor();
      assert.equal(await address.getAttribute('href'), `https://blog.${APPS_DOMAIN}`);
      assert.equal(await address.getAttribute('target'), '_blank');
      assert.equal(await access.getByRole('link').count(), 0, "the owner's link once open to everyone");
      await waitStatus(page, 'RUNNING');

      // The variables editor: values as chosen, the secret blank; a change rolls out.
      if (templateInstalled) {
        const editor = page.getByRole('region', { name: 'Variables' });
        assert.equal(await editor.getByLabel('Site title').inputValue(), 'Ana writes');
        assert.equal(await editor.getByLabel('Theme').inputValue(), 'source');
        assert.equal(await editor.getByLabel('Enable members').isChecked(), true);
        const secret = editor.getByLabel('SMTP password');
        assert.equal(await secret.inputValue(), '', 'the secret came back');
        assert.match(await secret.evaluate((el) => el.closest('.field').textContent), /Leave blank to keep the current value\./);
        await editor.getByLabel('Site title').fill('Ana writes more');
        await editor.getByRole('button', { name: 'Save variables' }).click();
        await page.getByRole('status').filter({ hasText: 'Saved the variables; the change rolls out.' }).waitFor();
        await reload(page);
        await h1(page, 'blog').waitFor();
        await waitFor(async () => (await page.getByRole('region', { name: 'Variables' }).getByLabel('Site title').inputValue()) === 'Ana writes more', 10_000, { message: 'the new title kept' });
        await waitStatus(page, 'RUNNING');
      }

      // The same name again: the server's field error, next to Name.
      await open(page, `${f.cp.url}/catalog/${SERVICE.slug}`);
      await subscribe(page, 'blog', {});
      await waitFor(async () => (await nameField.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Name aria-invalid after the server answered' });
      assert.ok(calls >= 2, 'the second subscribe was not sent');
      assert.match(await describedError(nameField), /blog|exists|taken/i);
      assert.equal(new URL(page.url()).pathname, `/catalog/${SERVICE.slug}`);
      await page.context().close();
    }),
  );

  it(
    'lists the subscriptions in My services live, and a second customer sees none of them',
    TEST_TIMEOUT,
    f.t(async () => {
      assert.ok(blogId, 'needs the subscription of the first test');
      const list = await f.page();
      await signIn(list, f.cp.url, customerA);
      await open(list, `${f.cp.url}/my-services`);
      await h1(list, 'My services').waitFor();
      await waitFor(async () => (await linkBadge(list).innerText()) === 'Live', 20_000, { message: 'Live' });
      await subRow(list, 'blog').waitFor();
      assert.equal(await subRow(list, 'blog').getAttribute('data-status'), 'RUNNING');
      assert.equal(await subRow(list, 'blog').getByRole('link', { name: `blog.${APPS_DOMAIN}` }).getAttribute('href'), `https://blog.${APPS_DOMAIN}`);

      // Subscribed to in another tab: the list shows it without a reload.
      await markDocument(list);
      const other = await f.page();
      await signIn(other, f.cp.url, customerA);
      await open(other, `${f.cp.url}/catalog/${SERVICE.slug}`);
      await subscribe(other, 'notes', {});
      await h1(other, 'notes').waitFor();
      await subRow(list, 'notes').waitFor({ timeout: 20_000 });
      await waitFor(async () => (await subRow(list, 'notes').getAttribute('data-status')) === 'RUNNING', 60_000, { message: 'notes RUNNING in My services' });
      await assertSameDocument(list, 'My services');
      await assertAccessible(list, 'my services (desktop)');
      await other.context().close();
      await list.context().close();

      // Another customer: nothing of Ana's, not even by its address.
      const ben = await f.page();
      await register(ben, f.cp.url, customerB);
      await open(ben, `${f.cp.url}/my-services`);
      await ben.getByRole('cell', { name: /You have no services yet/ }).waitFor();
      assert.equal(await ben.locator('tr[data-subscription]').count(), 0);
      await open(ben, `${f.cp.url}/subscriptions/${blogId}`);
      await ben.getByRole('alert').waitFor();
      assert.equal(await ben.getByRole('heading', { level: 1, name: 'blog' }).count(), 0);
      await ben.context().close();
    }),
  );

  it(
    'shows the logs of the exposed component in the logs panel',
    TEST_TIMEOUT,
    f.t(async () => {
      assert.ok(blogId, 'needs the subscription of the first test');
      const page = await f.page();
      await signIn(page, f.cp.url, customerA);
      await open(page, `${f.cp.url}/subscriptions/${blogId}`);
      await h1(page, 'blog').waitFor();
      const logs = page.getByRole('region', { name: 'Logs' });
      const lines = logs.getByRole('log', { name: 'Log lines' }).locator('.log-line:not(.marker)');
      await waitFor(async () => (await lines.count()) > 0, 30_000, { message: 'log lines' });
      const first = await lines.allInnerTexts();
      note(`logs panel: ${first.length} lines, first ${JSON.stringify(first[0])}`);
      // Not following, with a short tail: at most that many lines.
      await logs.getByLabel('Follow').uncheck();
      await logs.getByLabel('Last lines').fill('1');
      await logs.getByRole('button', { name: 'Reload' }).click();
      await logs.getByText(/^(1 line|0 lines)\./).waitFor({ timeout: 20_000 });
      assert.ok((await lines.count()) <= 1, `more lines than the tail: ${await lines.count()}`);
      await page.context().close();
    }),
  );

  it(
    'lets an administrator find it on the Subscriptions page, suspend it with a reason and resume it, and counts it on the dashboard',
    TEST_TIMEOUT,
    f.t(async () => {
      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/`);
      const tile = admin.getByRole('region', { name: 'Subscriptions' });
      await tile.waitFor();
      const stat = (label) => tile.locator('.stat').filter({ has: admin.getByText(label, { exact: true }) }).locator('.stat-value');
      await waitFor(async () => (await stat('Subscriptions').innerText()) === '2', 10_000, { message: 'two subscriptions counted' });
      assert.equal(await stat('Running').innerText(), '2');
      assert.match(await stat('Monthly revenue').innerText(), /^\$\d+\.\d\d$/);
      await assertAccessible(admin, 'dashboard with subscriptions (desktop)');

      await admin.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Subscriptions' }).click();
      await h1(admin, 'Subscriptions').waitFor();
      const row = admin.locator(`tr[data-subscription="blog"][data-owner="${customerA.email}"]`);
      await row.waitFor();
      assert.match(await row.innerText(), /subs-worker/);
      assert.equal(await row.getByRole('link', { name: 'subs-worker' }).count(), 1, 'the worker links to its page');
      await admin.getByRole('searchbox', { name: 'Search' }).fill('notes');
      await admin.getByRole('search').getByRole('button', { name: 'Search', exact: true }).click();
      await waitFor(async () => (await admin.locator('tr[data-subscription]').count()) === 1, 10_000, { message: 'one match for "notes"' });
      await admin.locator('tr[data-subscription="notes"]').waitFor();
      await admin.getByRole('searchbox', { name: 'Search' }).fill('');
      await admin.getByRole('search').getByRole('button', { name: 'Search', exact: true }).click();
      await row.waitFor();
      await assertAccessible(admin, 'subscriptions (desktop)');

      // Suspend with a reason: the customer is told.
      await row.getByRole('button', { name: `Suspend blog of ${customerA.email}` }).click();
      const dialog = admin.getByRole('dialog', { name: 'Suspend blog?' });
      await dialog.getByLabel('Reason').fill('unpaid invoice 2026-11');
      await dialog.getByRole('button', { name: 'Suspend', exact: true }).click();
      await admin.getByRole('status').filter({ hasText: `Suspended blog of ${customerA.email}.` }).waitFor();
      await waitFor(async () => (await row.getAttribute('data-status')) === 'SUSPENDED', 10_000, { message: 'SUSPENDED' });
      const customer = await f.page();
      await signIn(customer, f.cp.url, customerA);
      await open(customer, `${f.cp.url}/subscriptions/${blogId}`);
      await waitStatus(customer, 'SUSPENDED', 10_000);
      await customer.getByRole('status').filter({ hasText: 'unpaid invoice 2026-11' }).waitFor();

      // The status filter; then resume: it runs again.
      await admin.getByLabel('Status', { exact: true }).selectOption('SUSPENDED');
      await waitFor(async () => (await admin.locator('tr[data-subscription]').count()) === 1, 10_000, { message: 'one SUSPENDED' });
      await row.getByRole('button', { name: `Resume blog of ${customerA.email}` }).click();
      await admin.getByRole('status').filter({ hasText: `Resumed blog of ${customerA.email}.` }).waitFor();
      await waitStatus(customer, 'RUNNING');
      await customer.context().close();
      await admin.context().close();
    }),
  );

  it(
    'reaches and uses the row actions of Subscriptions and My services on a 390×844 phone',
    TEST_TIMEOUT,
    f.t(async () => {
      const admin = await f.page({ phone: true });
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/subscriptions`);
      await h1(admin, 'Subscriptions').waitFor();
      const row = admin.locator(`tr[data-subscription="blog"][data-owner="${customerA.email}"]`);
      await row.waitFor();
      assert.equal(await row.getAttribute('data-status'), 'RUNNING');
      assert.ok((await row.innerText()).includes('Running'), await row.innerText());
      const suspend = row.getByRole('button', { name: `Suspend blog of ${customerA.email}` });
      await assertReachable(admin, suspend, 'Suspend');
      await assertReachable(admin, row.getByRole('link', { name: 'blog', exact: true }), 'the subscription link');
      await suspend.click();
      const dialog = admin.getByRole('dialog', { name: 'Suspend blog?' });
      await dialog.getByLabel('Reason').fill('phone check');
      await dialog.getByRole('button', { name: 'Suspend', exact: true }).click();
      await waitFor(async () => (await row.getAttribute('data-status')) === 'SUSPENDED', 10_000, { message: 'SUSPENDED' });
      const resume = row.getByRole('button', { name: `Resume blog of ${customerA.email}` });
      await assertReachable(admin, resume, 'Resume');
      await resume.click();
      await admin.getByRole('status').filter({ hasText: `Resumed blog of ${customerA.email}.` }).waitFor();
      const o = await horizontalOverflow(admin);
      assert.equal(o.overflow, false, `the page is wider than the phone: ${o.offenders.join('; ')}`);
      await screenshot(admin, 'subscriptions-phone-actions');
      await admin.context().close();

      const customer = await f.page({ phone: true });
      await signIn(customer, f.cp.url, customerA);
      await open(customer, `${f.cp.url}/my-services`);
      const link = subRow(customer, 'blog').getByRole('link', { name: 'blog', exact: true });
      await assertReachable(customer, link, 'blog in My services');
      await link.click();
      await h1(customer, 'blog').waitFor();
      await waitStatus(customer, 'RUNNING');
      await customer.context().close();
    }),
  );

  it(
    'deletes a subscription only once its name is typed, and it leaves My services',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url, customerA);
      await open(page, `${f.cp.url}/my-services`);
      await subRow(page, 'notes').getByRole('link', { name: 'notes', exact: true }).click();
      await h1(page, 'notes').waitFor();
      await page.getByRole('main').getByRole('button', { name: 'Delete', exact: true }).click();
      const dialog = page.getByRole('dialog', { name: 'Delete notes?' });
      const confirm = dialog.getByRole('button', { name: 'Delete', exact: true });
      assert.equal(await confirm.isDisabled(), true, 'Delete enabled before the name is typed');
      await dialog.getByLabel('Type notes to confirm').fill('note');
      assert.equal(await confirm.isDisabled(), true, 'Delete enabled with the wrong name');
      await dialog.getByLabel('Type notes to confirm').fill('notes');
      await confirm.click();
      await h1(page, 'My services').waitFor();
      await waitFor(async () => (await subRow(page, 'notes').count()) === 0, 60_000, { message: 'notes gone from My services' });
      await subRow(page, 'blog').waitFor();
      await page.context().close();
    }),
  );

  it(
    'fits a 390×844 phone on the subscription pages',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page({ phone: true });
      await signIn(page, f.cp.url, customerA);
      const problems = [];
      for (const path of [`/catalog/${SERVICE.slug}`, '/my-services', `/subscriptions/${blogId}`]) {
        await open(page, `${f.cp.url}${path}`);
        await page.getByRole('heading', { level: 1 }).waitFor();
        await sleep(300);
        const o = await horizontalOverflow(page);
        if (o.overflow) problems.push(`${path}: ${Math.max(o.doc, o.body)} px wide in ${o.vw} px, because of ${o.offenders.join('; ')}`);
        await screenshot(page, `subscriptions-${path.split('/')[1]}-phone`);
      }
      assert.deepEqual(problems, [], problems.join('\n'));
      await page.context().close();
    }),
  );
});
