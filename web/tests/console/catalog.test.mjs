// Chromium tests of the web console: the catalog, and customer words with the template editor.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/catalog.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';

import {
  assertAccessible,
  launchBrowser,
  screenshot,
  sleep,
  startControlPlane,
  waitFor,
} from '../harness.mjs';
import {
  cardNames,
  describe,
  describedError,
  fieldError,
  fixture,
  grpcurl,
  grpcWebOutcome,
  h1,
  note,
  open,
  register,
  reload,
  signIn,
  specFact,
  TEST_TIMEOUT,
  waitCards,
} from './common.mjs';

// ---------------------------------------------------------------------------
// 6 and 7. The catalog, for administrators and for customers.

describe('catalog', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane();
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'creates (after a field error), edits, deactivates and deletes a service',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/catalog`);
      await h1(page, 'Catalog').waitFor();
      await page.getByRole('link', { name: 'New service' }).click();
      await h1(page, 'New service').waitFor();

      const values = {
        Slug: 'Not A Slug!',
        Name: 'Uptime Kuma',
        Category: 'monitoring',
        Version: '1.23.13',
        Image: '',
        Port: '3001',
        'Monthly price (USD)': '4.50',
        'CPU (millicores)': '200',
        'Memory (MB)': '256',
        'Storage (GB)': '2',
        Tags: 'monitoring, status',
        Description: 'A self-hosted monitoring tool.',
      };
      for (const [label, value] of Object.entries(values)) await page.getByLabel(label, { exact: true }).fill(value);
      await page.getByRole('button', { name: 'Save', exact: true }).click();

      const slug = page.getByLabel('Slug', { exact: true });
      const image = page.getByLabel('Image', { exact: true });
      await waitFor(async () => (await slug.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Slug aria-invalid' });
      assert.match(await describedError(slug), /lower-case letters, digits and inner dashes/);
      assert.equal(await fieldError(slug), await describedError(slug));
      assert.equal(await image.getAttribute('aria-invalid'), 'true');
      assert.match(await describedError(image), /not a container image reference/);
      assert.equal(await page.getByLabel('Name', { exact: true }).getAttribute('aria-invalid'), null);
      assert.equal(new URL(page.url()).pathname, '/catalog/new');

      await slug.fill('uptime-kuma');
      await image.fill('docker.io/louislam/uptime-kuma:1.23.13');
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await h1(page, 'Uptime Kuma').waitFor();
      assert.equal(new URL(page.url()).pathname, '/catalog/uptime-kuma');
      assert.ok(await page.getByText('$4.50').first().isVisible());
      assert.ok(await page.getByText('200 mCPU, 256 MB memory, 2 GB storage').isVisible());

      await page.getByRole('link', { name: 'Edit', exact: true }).click();
      await h1(page, 'Edit Uptime Kuma').waitFor();
      const nameField = page.getByLabel('Name', { exact: true });
      await waitFor(async () => (await nameField.inputValue()) === 'Uptime Kuma', 10_000, { message: 'edit form loaded' });
      await nameField.fill('Uptime Kuma Pro');
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await h1(page, 'Uptime Kuma Pro').waitFor();
      assert.equal(new URL(page.url()).pathname, '/catalog/uptime-kuma');

      // Deactivate and activate again, on the detail page.
      await page.getByRole('button', { name: 'Deactivate', exact: true }).click();
      await page.getByRole('button', { name: 'Activate', exact: true }).waitFor();
      await waitFor(async () => (await specFact(page, 'State').innerText()) === 'inactive', 10_000, { message: 'State inactive' });
      await page.getByRole('button', { name: 'Activate', exact: true }).click();
      await page.getByRole('button', { name: 'Deactivate', exact: true }).waitFor();
      await waitFor(async () => (await specFact(page, 'State').innerText()) === 'active', 10_000, { message: 'State active' });

      await page.getByRole('button', { name: 'Delete', exact: true }).click();
      const dialog = page.getByRole('dialog', { name: 'Delete Uptime Kuma Pro?' });
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
      await h1(page, 'Catalog').waitFor();
      assert.equal(new URL(page.url()).pathname, '/catalog');
      await page.getByRole('heading', { level: 2, name: 'n8n' }).waitFor();
      assert.equal(await page.getByRole('heading', { name: /Uptime Kuma/ }).count(), 0);
      await open(page, `${f.cp.url}/catalog?show=all`);
      await page.getByRole('heading', { level: 2, name: 'n8n' }).waitFor();
      assert.equal(await page.getByRole('heading', { name: /Uptime Kuma/ }).count(), 0, 'the deleted service is still listed');
      await page.context().close();
    }),
  );

  it(
    'opens an inactive service from the catalog for an administrator',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/catalog/new`);
      await h1(page, 'New service').waitFor();
      const values = { Slug: 'hidden-svc', Name: 'Hidden Service', Category: 'tools', Version: '1.0', Image: 'docker.io/library/nginx:1.27' };
      for (const [label, value] of Object.entries(values)) await page.getByLabel(label, { exact: true }).fill(value);
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await h1(page, 'Hidden Service').waitFor();
      await page.getByRole('button', { name: 'Deactivate', exact: true }).click();
      await page.getByRole('button', { name: 'Activate', exact: true }).waitFor();

      // Not in the customers' view; listed for administrators under "Inactive".
      await open(page, `${f.cp.url}/catalog`);
      await page.getByRole('heading', { level: 2, name: 'n8n' }).waitFor();
      assert.equal(await page.getByRole('heading', { name: 'Hidden Service' }).count(), 0);
      await page.getByLabel('Show', { exact: true }).selectOption('inactive');
      const card = page.getByRole('article', { name: 'Hidden Service' });
      await card.waitFor();
      assert.ok(await card.getByText('inactive', { exact: true }).isVisible());
      await card.getByRole('link', { name: 'Hidden Service' }).click();
      await page.waitForURL(`${f.cp.url}/catalog/hidden-svc`);
      // The administrator should see the service, with Activate.
      await h1(page, 'Hidden Service').or(page.getByRole('alert')).waitFor();
      const alert = page.getByRole('alert');
      if (await alert.count()) note(`inactive service detail shows: ${JSON.stringify(await alert.innerText())}`);
      await h1(page, 'Hidden Service').waitFor({ timeout: 5_000 });
      await page.getByRole('button', { name: 'Activate', exact: true }).click();
      await page.getByRole('button', { name: 'Deactivate', exact: true }).waitFor();
      await page.context().close();
    }),
  );

  it(
    'lets a customer register and browse, but not open administrators\' pages',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      /** Admin RPCs the page made, with their outcome. */
      const adminCalls = [];
      const adminRpc = /\/minispod\.v1\.(UserService|WorkerService)\/|\/minispod\.v1\.CatalogService\/(ListAllServices|GetCatalogStats|CreateService|UpdateService|DeleteService)$|\/minispod\.v1\.SubscriptionService\/(SuspendSubscription|ResumeSubscription|GetSubscriptionStats)$/;
      page.on('response', (res) => {
        const url = new URL(res.url());
        if (!adminRpc.test(url.pathname)) return;
        const p = (async () => {
          let body = Buffer.alloc(0);
          try {
            body = await res.body();
          } catch {
            /* a stream cut short */
          }
          adminCalls.push({ path: url.pathname, http: res.status(), ...grpcWebOutcome(body, await res.allHeaders()) });
        })();
        adminCalls.pending = [...(adminCalls.pending ?? []), p];
      });

      await open(page, `${f.cp.url}/signin`);
      await page.getByRole('link', { name: 'Create an account' }).click();
      await h1(page, 'Create an account').waitFor();
      assert.equal(new URL(page.url()).pathname, '/register');
      await page.getByLabel('Name').fill('Dora Customer');
      await page.getByLabel('Email').fill('dora@example.test');
      await page.getByLabel('Password').fill('dora-password-123');
      await page.getByRole('button', { name: 'Create account' }).click();
      await h1(page, 'Catalog').waitFor();
      await waitFor(() => new URL(page.url()).pathname === '/catalog', 10_000, { message: `on /catalog, is ${page.url()}` });

      for (const svc of ['n8n', 'Ghost', 'WordPress']) {
        await page.getByRole('heading', { level: 2, name: svc, exact: true }).waitFor();
      }
      const nav = page.getByRole('navigation', { name: 'Main' });
      const navLinks = await nav.getByRole('link').allInnerTexts();
      assert.deepEqual(navLinks.map((t) => t.trim()), ['Catalog', 'My services', 'Profile']);
      assert.equal(await page.getByRole('link', { name: 'New service' }).count(), 0);

      await page.getByRole('link', { name: 'Ghost', exact: true }).click();
      await h1(page, 'Ghost').waitFor();
      assert.equal(new URL(page.url()).pathname, '/catalog/ghost');
      for (const b of ['Edit', 'Deactivate', 'Delete']) {
        assert.equal(await page.getByRole('main').getByRole(b === 'Edit' ? 'link' : 'button', { name: b, exact: true }).count(), 0, `customer sees ${b}`);
      }

      await nav.getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      assert.equal(await page.getByLabel('Email', { exact: true }).inputValue(), 'dora@example.test');
      assert.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'Dora Customer');

      for (const path of ['/users', '/workers', '/enrollment', '/catalog/new', '/subscriptions']) {
        await open(page, `${f.cp.url}${path}`);
        await h1(page, 'Not available').waitFor();
        assert.equal(new URL(page.url()).pathname, path);
        assert.deepEqual((await nav.getByRole('link').allInnerTexts()).map((t) => t.trim()), ['Catalog', 'My services', 'Profile']);
      }
      await open(page, `${f.cp.url}/`);
      await h1(page, 'Catalog').waitFor();
      await waitFor(() => new URL(page.url()).pathname === '/catalog', 10_000, { message: `/ → /catalog, is ${page.url()}` });

      await sleep(500);
      await Promise.all(adminCalls.pending ?? []);
      note(`admin RPCs made by the customer's pages: ${JSON.stringify(adminCalls)}`);
      const succeeded = adminCalls.filter((c) => c.http === 200 && (c.status === 0 || (c.status === undefined && c.messages > 0)));
      assert.deepEqual(succeeded, [], 'a customer page made a successful administrator RPC');
      await page.context().close();
    }),
  );

  it(
    'narrows a customer\'s catalog by search and by category, both kept in the URL over a reload',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await register(page, f.cp.url, { name: 'Erin Browser', email: 'erin@example.test', password: 'erin-password-123' });
      await waitFor(() => new URL(page.url()).pathname === '/catalog', 10_000, { message: `on /catalog, is ${page.url()}` });
      const search = page.getByRole('searchbox', { name: 'Search' });
      const category = page.getByLabel('Category', { exact: true });
      const query = () => Object.fromEntries(new URL(page.url()).searchParams);
      await page.getByRole('heading', { level: 2, name: 'WordPress', exact: true }).waitFor();
      const all = await cardNames(page);
      for (const svc of ['Ghost', 'n8n', 'WordPress']) assert.ok(all.includes(svc), `${svc} not in ${JSON.stringify(all)}`);

      await search.fill('ghost');
      await waitCards(page, ['Ghost'], 'search "ghost"');
      assert.deepEqual(query(), { q: 'ghost' });
      // Any case; the description counts too ("Publishing platform for blogs, newsletters…").
      await search.fill('NEWSLETTER');
      await waitCards(page, ['Ghost'], 'search "NEWSLETTER"');
      await search.fill('blog');
      await waitCards(page, ['Ghost', 'WordPress'], 'search "blog"');

      // The category select: only cms entries (n8n is automation).
      await search.fill('');
      await waitCards(page, all, 'empty search');
      assert.deepEqual(query(), {});
      await waitFor(async () => (await category.locator('option').count()) > 1, 10_000, { message: 'categories loaded' });
      await category.selectOption('cms');
      await waitCards(page, ['Ghost', 'WordPress'], 'category cms');
      assert.deepEqual(query(), { category: 'cms' });
      await category.selectOption('automation');
      await waitCards(page, ['n8n'], 'category automation');

      // Both together, and a reload keeps them.
      await category.selectOption('cms');
      await search.fill('ghost');
      await waitCards(page, ['Ghost'], 'search "ghost" in cms');
      assert.deepEqual(query(), { category: 'cms', q: 'ghost' });
      const url = page.url();
      await reload(page);
      await h1(page, 'Catalog').waitFor();
      assert.equal(page.url(), url);
      await waitCards(page, ['Ghost'], 'after a reload');
      assert.equal(await search.inputValue(), 'ghost');
      await waitFor(async () => (await category.inputValue()) === 'cms', 10_000, { message: 'Category select shows cms after the reload' });

      // A search with no match in the category says so.
      await category.selectOption('automation');
      await waitCards(page, [], 'search "ghost" in automation');
      await page.getByText('No service matches.', { exact: true }).waitFor();
      assert.deepEqual(query(), { category: 'automation', q: 'ghost' });

      // Opened as a link.
      await open(page, `${f.cp.url}/catalog?category=cms`);
      await waitCards(page, ['Ghost', 'WordPress'], 'link with category=cms');
      assert.equal(await search.inputValue(), '');
      await waitFor(async () => (await category.inputValue()) === 'cms', 10_000, { message: 'Category select shows cms' });
      await category.selectOption('');
      await waitCards(page, all, 'All categories');
      assert.deepEqual(query(), {});
      await page.context().close();
    }),
  );
});

describe('customer words and the template editor', () => {
  const f = fixture();
  before(async () => {
    // No cluster linked: nothing can be subscribed to.
    f.cp = await startControlPlane();
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  const customer = { name: 'Cleo Customer', email: 'cleo.words@example.test', password: 'cleo-words-password-1' };

  it(
    'shows an unlinked cluster on the dashboard with what to do, and a customer Subscribe disabled with the reason in their words',
    TEST_TIMEOUT,
    f.t(async () => {
      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/`);
      await h1(admin, 'Dashboard').waitFor();
      const card = admin.getByRole('region', { name: 'Kubernetes cluster' });
      await card.getByText(/^Not linked: customers cannot subscribe/).waitFor();
      assert.equal(await card.getAttribute('data-cluster-state'), 'UNLINKED');
      assert.ok(await card.locator('code').getByText('minispod-control-plane serve --kubeconfig /etc/rancher/k3s/k3s.yaml …', { exact: true }).isVisible());
      assert.ok(await card.locator('code').getByText('MINISPOD_KUBECONFIG', { exact: true }).isVisible());
      await screenshot(admin, 'dashboard-cluster-unlinked');

      // The administrator's own Subscribe says how to fix it.
      await open(admin, `${f.cp.url}/catalog/n8n`);
      const adminBlocked = admin.getByRole('region', { name: 'Subscribe' }).getByRole('status');
      await adminBlocked.getByText(/--kubeconfig/).waitFor();
      await admin.context().close();

      const page = await f.page();
      await register(page, f.cp.url, customer);
      await page.getByRole('link', { name: 'n8n', exact: true }).click();
      await h1(page, 'n8n').waitFor();
      const form = page.getByRole('region', { name: 'Subscribe' });
      const reason = form.getByRole('status');
      await reason.waitFor();
      // No administrator asked for these notices: nobody was told, and the
      // words do not say so.
      assert.equal(await reason.innerText(), 'n8n cannot be started right now; please try again later');
      const button = form.getByRole('button', { name: 'Subscribe to n8n' });
      assert.ok(await button.isDisabled(), 'Subscribe is disabled');
      assert.equal(await button.evaluate((b) => document.getElementById(b.getAttribute('aria-describedby') ?? '')?.textContent), 'n8n cannot be started right now; please try again later');
      const text = await page.locator('main').innerText();
      for (const w of ['--kubeconfig', 'Kubernetes', 'schedulable', 'worker']) assert.ok(!text.includes(w), `${w} shown to a customer`);
      await assertAccessible(page, 'subscribe disabled');
      await screenshot(page, 'subscribe-disabled');
      await page.context().close();
    }),
  );

  it(
    'edits a template: derived fields read-only, a field error next to its line, then the fixed template saves',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/catalog/n8n/edit`);
      await h1(page, 'Edit n8n').waitFor();
      const image = page.getByLabel('Image', { exact: true });
      assert.ok(await image.evaluate((el) => /** @type {HTMLInputElement} */ (el).readOnly), 'the image comes from the template');
      assert.match(await image.evaluate((el) => document.getElementById(el.getAttribute('aria-describedby') ?? '')?.textContent ?? ''), /From the template/);
      assert.ok(await page.getByLabel('Environment template').evaluate((el) => /** @type {HTMLTextAreaElement} */ (el).readOnly));
      const before = await image.inputValue();

      const editor = page.getByLabel('Template (JSON)');
      const text = await editor.inputValue();
      assert.ok(text.includes(`"image": "${before}"`), 'the template shows the image');
      const broken = text.replace(`"image": "${before}"`, '"image": "docker.io/n8nio/n8n:latest"');
      await editor.fill(broken);
      await page.getByRole('button', { name: 'Save template' }).click();
      const errors = page.getByRole('list', { name: 'Template errors' });
      const item = errors.getByRole('listitem').filter({ hasText: 'components[0].image' });
      await item.waitFor();
      const line = broken.split('\n').findIndex((l) => l.includes('"image": "docker.io/n8nio/n8n:latest"')) + 1;
      assert.equal(await item.getAttribute('data-line'), String(line));
      assert.match(await item.innerText(), new RegExp(`^Line ${line}: "image": "docker\\.io/n8nio/n8n:latest",?\\s+components\\[0\\]\\.image: must be pinned`));
      assert.equal(await editor.getAttribute('aria-invalid'), 'true');
      await screenshot(page, 'template-field-error');

      // Fixed: saved, and the entry's image follows the template.
      await editor.fill(text.replace(`"image": "${before}"`, '"image": "docker.io/n8nio/n8n:1.65.0"'));
      await page.getByRole('button', { name: 'Save template' }).click();
      await page.getByRole('status').filter({ hasText: 'Template saved.' }).waitFor();
      assert.equal(await errors.count(), 0);
      await waitFor(async () => (await image.inputValue()) === 'docker.io/n8nio/n8n:1.65.0', 5_000, { message: 'the derived image follows' });
      const { service } = await grpcurl(f.cp, 'minispod.v1.CatalogService/GetService', { slug: 'n8n' });
      assert.equal(service.image, 'docker.io/n8nio/n8n:1.65.0');
      assert.equal(service.template.components[0].image, 'docker.io/n8nio/n8n:1.65.0');
      await page.context().close();
    }),
  );
});
