// Chromium tests of the web console: accessibility, layout, words, numbers and phones; the console behind nginx.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/layout.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { after, before, it } from 'node:test';

import {
  ADMIN_EMAIL,
  ADMIN_PASSWORD,
  assertAccessible,
  binPath,
  launchBrowser,
  screenshot,
  sleep,
  startAgent,
  startControlPlane,
  startNginx,
  waitFor,
} from '../harness.mjs';
import {
  assertReachable,
  assertSameDocument,
  createTokenInConsole,
  createUserInConsole,
  describe,
  fact,
  fixture,
  h1,
  horizontalOverflow,
  linkBadge,
  markDocument,
  note,
  open,
  reload,
  signIn,
  TEST_TIMEOUT,
  waitRowStatus,
} from './common.mjs';

// ---------------------------------------------------------------------------
// 11. Accessibility, screenshots, phone layout, keyboard.

describe('accessibility and layout', () => {
  const f = fixture();
  const workerName = 'a11y-worker';
  let workerPath = '';
  before(async () => {
    f.cp = await startControlPlane({ enrollmentToken: true });
    f.browser = await launchBrowser(f.cp.caPath);
    f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name: workerName }));
  });
  after(() => f.close());

  /**
   * The pages, each with how to get there and what shows it is ready.
   * @type {Array<{name: string, path: () => string, ready: (page: import('playwright-core').Page) => Promise<void>, signedOut?: boolean}>}
   */
  const pages = [
    { name: 'signin', path: () => '/signin', signedOut: true, ready: (p) => h1(p, 'Sign in').waitFor() },
    { name: 'register', path: () => '/register', signedOut: true, ready: (p) => h1(p, 'Create an account').waitFor() },
    {
      name: 'dashboard',
      path: () => '/',
      ready: async (p) => {
        await h1(p, 'Dashboard').waitFor();
        await p.getByRole('heading', { level: 2, name: 'Catalog' }).waitFor();
        await waitFor(async () => (await linkBadge(p).innerText()) === 'Live', 30_000, { message: 'Live' });
      },
    },
    {
      name: 'fleet',
      path: () => '/workers',
      ready: async (p) => {
        await h1(p, 'Fleet').waitFor();
        await waitRowStatus(p, workerName, 'ACTIVE');
      },
    },
    {
      name: 'worker',
      path: () => workerPath,
      ready: async (p) => {
        await h1(p, workerName).waitFor();
        await fact(p, 'Status').getByText('Active', { exact: true }).waitFor();
      },
    },
    {
      name: 'enrollment',
      path: () => '/enrollment',
      ready: async (p) => {
        await h1(p, 'Enrollment tokens').waitFor();
        await p.getByRole('cell', { name: 'No tokens.' }).or(p.getByRole('button', { name: /^Revoke/ }).first()).waitFor();
      },
    },
    {
      name: 'notifications',
      path: () => '/notifications',
      ready: async (p) => {
        await h1(p, 'Notifications').waitFor();
        await p.getByRole('cell', { name: 'Nothing was sent yet.' }).waitFor();
      },
    },
    {
      name: 'users',
      path: () => '/users',
      ready: async (p) => {
        await h1(p, 'Users').waitFor();
        await p.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      },
    },
    {
      name: 'catalog',
      path: () => '/catalog',
      ready: async (p) => {
        await h1(p, 'Catalog').waitFor();
        await p.getByRole('heading', { level: 2, name: 'WordPress' }).waitFor();
      },
    },
    { name: 'service', path: () => '/catalog/n8n', ready: (p) => h1(p, 'n8n').waitFor() },
    {
      name: 'service-edit',
      path: () => '/catalog/n8n/edit',
      ready: async (p) => {
        await h1(p, 'Edit n8n').waitFor();
        await waitFor(async () => (await p.getByLabel('Slug', { exact: true }).inputValue()) === 'n8n', 10_000, { message: 'form loaded' });
      },
    },
    { name: 'profile', path: () => '/profile', ready: (p) => h1(p, 'Profile').waitFor() },
    {
      name: 'my-services',
      path: () => '/my-services',
      ready: async (p) => {
        await h1(p, 'My services').waitFor();
        await p.getByRole('cell', { name: /You have no services yet/ }).waitFor();
      },
    },
    {
      name: 'subscriptions',
      path: () => '/subscriptions',
      ready: async (p) => {
        await h1(p, 'Subscriptions').waitFor();
        await p.getByRole('cell', { name: 'No subscription matches.' }).waitFor();
      },
    },
  ];

  /** Checks the page as it is: axe on desktop, sideways overflow on a phone; then a screenshot. */
  async function checkPage(page, spec, phone, problems) {
    await spec.ready(page);
    await sleep(150); // let the last frame paint
    if (!phone) {
      try {
        await assertAccessible(page, `${spec.name} (desktop)`);
      } catch (e) {
        problems.push(e.message);
      }
    } else {
      const o = await horizontalOverflow(page);
      if (o.overflow) {
        const what = `${spec.name} (phone): the document is ${Math.max(o.doc, o.body)} px wide in a ${o.vw} px viewport, because of ${o.offenders.join('; ')}`;
        problems.push(what);
      }
    }
    note(`screenshot ${await screenshot(page, `${spec.name}-${phone ? 'phone' : 'desktop'}`)}`);
  }

  async function run(phone) {
    const page = await f.page(phone ? { phone: true } : undefined);
    // The first pages are the signed-out ones.
    const problems = [];
    for (const spec of pages.filter((s) => s.signedOut)) {
      await open(page, `${f.cp.url}${spec.path()}`);
      await checkPage(page, spec, phone, problems);
    }
    await signIn(page, f.cp.url);
    if (phone) {
      // The main navigation folds behind a Menu button.
      const menu = page.getByRole('button', { name: 'Menu' });
      assert.equal(await page.getByRole('navigation', { name: 'Main' }).isVisible(), false);
      assert.equal(await menu.getAttribute('aria-expanded'), 'false');
      await menu.click();
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Fleet' }).waitFor();
      assert.equal(await menu.getAttribute('aria-expanded'), 'true');
    }
    if (!workerPath) {
      await open(page, `${f.cp.url}/workers`);
      const row = await waitRowStatus(page, workerName, 'ACTIVE');
      workerPath = new URL(await row.getByRole('link', { name: workerName }).evaluate((a) => a.href)).pathname;
    }
    for (const spec of pages.filter((s) => !s.signedOut)) {
      await open(page, `${f.cp.url}${spec.path()}`);
      await checkPage(page, spec, phone, problems);
    }
    await page.context().close();
    return problems;
  }
  it(
    'has no serious or critical axe violations on any page at 1280×800',
    TEST_TIMEOUT,
    f.t(async () => {
      const problems = await run(false);
      assert.deepEqual(problems, [], problems.join('\n\n'));
    }),
  );

  it(
    'fits a 390×844 phone without sideways scrolling of the page',
    TEST_TIMEOUT,
    f.t(async () => {
      const problems = await run(true);
      assert.deepEqual(problems, [], problems.join('\n\n'));
    }),
  );

  it(
    'signs in with the keyboard alone',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await open(page, `${f.cp.url}/signin`);
      await h1(page, 'Sign in').waitFor();
      const focused = () =>
        page.evaluate(() => {
          const el = /** @type {HTMLElement} */ (document.activeElement);
          if (!el || el === document.body) return 'body';
          const label = /** @type {any} */ (el).labels?.[0]?.textContent?.trim();
          return `${el.tagName.toLowerCase()}:${label ?? el.textContent?.trim()}`;
        });
      assert.equal(await focused(), 'body');
      await page.keyboard.press('Tab');
      assert.equal(await focused(), 'input:Email');
      await page.keyboard.type(ADMIN_EMAIL);
      await page.keyboard.press('Tab');
      assert.equal(await focused(), 'input:Password');
      await page.keyboard.type(ADMIN_PASSWORD);
      await page.keyboard.press('Tab');
      assert.equal(await focused(), 'button:Sign in');
      await page.keyboard.press('Shift+Tab');
      assert.equal(await focused(), 'input:Password');
      await page.keyboard.press('Enter');
      await h1(page, 'Dashboard').waitFor();
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 12. Through nginx.

describe('behind nginx', () => {
  const f = fixture();
  /** @type {import('../harness.mjs').Nginx | undefined} */
  let nginx;
  before(async () => {
    f.cp = await startControlPlane({ enrollmentToken: true });
    nginx = await startNginx(f.cp);
    f.extraLogs.push({ name: 'nginx', log: () => nginx?.log() ?? '' }, { name: 'nginx access', log: () => nginx?.accessLog() ?? '' });
    // A user of the proxied console trusts only its public certificate.
    f.browser = await launchBrowser(nginx.caPath);
  });
  after(async () => {
    await f.browser?.close().catch(() => {});
    await nginx?.stop();
    await f.close();
  });

  it(
    'signs in, shows the live fleet with a worker, and keeps the session over a reload',
    TEST_TIMEOUT,
    f.t(async () => {
      const name = 'nginx-worker';
      f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
      const page = await f.page();
      await signIn(page, nginx.url);
      await h1(page, 'Dashboard').waitFor();
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Fleet' }).click();
      await h1(page, 'Fleet').waitFor();
      await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'badge Live' });
      await waitRowStatus(page, name, 'ACTIVE');

      // The stream stays live through the proxy: a change arrives by itself.
      await markDocument(page);
      const t = Date.now();
      await f.agents.at(-1).kill9();
      await waitRowStatus(page, name, 'INACTIVE');
      note(`through nginx: kill -9 → INACTIVE in ${Date.now() - t} ms (polled)`);
      await assertSameDocument(page, 'nginx stream');

      await reload(page);
      await h1(page, 'Fleet').waitFor();
      assert.equal(new URL(page.url()).origin, nginx.url);
      await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'badge Live after reload' });
      await waitRowStatus(page, name, 'INACTIVE');
      // The calls really went through nginx.
      await waitFor(() => /POST \/minispod\.v1\.AuthService\/Refresh HTTP\/2\.0" 200/.test(nginx.accessLog()), 10_000, {
        message: 'Refresh in the nginx access log',
      });
      await waitFor(() => /POST \/minispod\.v1\.WorkerService\/WatchWorkers HTTP\/2\.0"/.test(nginx.accessLog()), 10_000, {
        message: 'WatchWorkers in the nginx access log',
      });
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// Words, numbers and phones: statuses in words, counts with separators and
// the right plural on every page, over a thousand workers from one swarm;
// every row action of users, fleet and enrollment tokens in full view on a
// phone, and working there (subscriptions: in their own describe).

describe('words, numbers and phones', () => {
  const f = fixture();
  const AGENTS = 1000;
  /** @type {import('node:child_process').ChildProcess | undefined} */
  let swarm;
  let swarmLog = '';
  before(async () => {
    f.cp = await startControlPlane({
      enrollmentToken: true,
      // The swarm's agents all share 127.0.0.1.
      // Heartbeats every 5 s (not the harness's 1 s): a thousand agents on a
      // debug build stay online on a busy machine.
      args: ['--heartbeat-interval', '5s', '--max-connections-per-address', '0', '--max-handshakes-per-address', '1000000', '--enroll-burst', '100000', '--enroll-per-second', '100000'],
    });
    f.browser = await launchBrowser(f.cp.caPath);
    f.extraLogs.push({ name: 'swarm', log: () => swarmLog });
    const child = spawn(binPath('minispod-swarm'), ['run', '--server', f.cp.url, '--token', f.cp.enrollmentToken, '--ca-hash', f.cp.caHash, '--agents', String(AGENTS), '--state-dir', path.join(f.cp.dataDir, 'swarm')], { stdio: ['ignore', 'pipe', 'pipe'] });
    swarm = child;
    const keep = (d) => {
      swarmLog = (swarmLog + String(d)).slice(-20_000);
    };
    child.stderr.on('data', keep);
    await new Promise((resolve, reject) => {
      child.stdout.on('data', (d) => {
        keep(d);
        if (/agents enrolled/.test(String(d))) resolve(undefined);
      });
      child.on('exit', (code) => reject(new Error(`swarm exited with ${code}: ${swarmLog.slice(-2000)}`)));
    });
  });
  after(async () => {
    swarm?.kill('SIGKILL');
    await f.close();
  });

  const THOUSAND = (1000).toLocaleString('en-US');
  /** The API's status names, which the console shows only as words. */
  const SHOUTED = /\b(ACTIVE|INACTIVE|NOT_READY|MAINTENANCE|PENDING|RUNNING|SUSPENDED|PROVISIONING|DEGRADED|FAILED|DELETING|UNKNOWN)\b/;
  async function assertWords(page, what) {
    const text = await page.getByRole('main').innerText();
    assert.doesNotMatch(text, SHOUTED, `${what} shows a status name: ${text.match(SHOUTED)?.[0]}`);
  }
  /** A figure of the dashboard's Fleet section. */
  const stat = (page, label) =>
    page.getByRole('region', { name: 'Fleet' }).locator('.stat').filter({ has: page.locator('.stat-label').getByText(label, { exact: true }) }).locator('.stat-value');

  it(
    'says statuses in words and counts with thousands separators and the right plural',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page({ locale: 'en-US' });
      await signIn(page, f.cp.url);
      // The dashboard: a thousand workers, live, under words.
      await waitFor(async () => (await stat(page, 'Active').innerText()) === THOUSAND, 120_000, { message: `${THOUSAND} Active` });
      assert.equal(await stat(page, 'Workers').innerText(), THOUSAND);
      assert.equal(await stat(page, 'Not ready').innerText(), '0');
      await assertWords(page, 'the dashboard');

      // The fleet: "1,000 of 1,000 workers", a filter by words, a pill in words.
      await open(page, `${f.cp.url}/workers`);
      await page.getByText(`${THOUSAND} of ${THOUSAND} workers`, { exact: true }).waitFor();
      const statusFilter = page.getByLabel('Status', { exact: true });
      assert.deepEqual((await statusFilter.locator('option').allInnerTexts()).map((t) => t.trim()), ['Any', 'Pending', 'Active', 'Inactive', 'Maintenance', 'Not ready']);
      await statusFilter.selectOption({ label: 'Not ready' });
      await waitFor(() => new URL(page.url()).searchParams.get('status') === 'NOT_READY', 5_000, { message: 'status=NOT_READY in the URL' });
      await page.getByText(`0 of ${THOUSAND} workers`, { exact: true }).waitFor();
      await statusFilter.selectOption({ label: 'Active' });
      await page.getByText(`${THOUSAND} of ${THOUSAND} workers`, { exact: true }).waitFor();
      await page.getByLabel('Search', { exact: true }).fill('swarm-00007');
      await page.getByText(`1 of ${THOUSAND} workers`, { exact: true }).waitFor();
      const row = await waitRowStatus(page, 'swarm-00007', 'ACTIVE');
      await assertWords(page, 'the fleet');

      // The worker: its status and its cores in words.
      await row.getByRole('link', { name: 'swarm-00007' }).click();
      await h1(page, 'swarm-00007').waitFor();
      await fact(page, 'Status').getByText('Active', { exact: true }).waitFor();
      assert.match(await fact(page, 'CPU').innerText(), /\((1 core|([02-9]|\d\d+) cores)\)/);
      await assertWords(page, 'the worker page');

      // Users: "1 user" for one match, "2 users" for both.
      await createUserInConsole(page, f.cp.url, { email: 'words@example.test', name: 'Words', password: 'words-Passw0rd-2024' });
      await open(page, `${f.cp.url}/users`);
      const pager = page.getByRole('navigation', { name: 'Pages' });
      await pager.getByText('2 users', { exact: true }).waitFor();
      await open(page, `${f.cp.url}/users?q=words%40`);
      await pager.getByText('1 user', { exact: true }).waitFor();
      await page.getByRole('checkbox', { name: 'Select words@example.test' }).check();
      await page.getByRole('group', { name: 'Bulk actions' }).getByText('1 selected', { exact: true }).waitFor();
      await page.getByRole('button', { name: 'Deactivate selected' }).click();
      await page.getByRole('dialog', { name: 'Deactivate 1 user?' }).getByRole('button', { name: 'Cancel' }).click();
      await assertWords(page, 'the users page');

      // Enrollment tokens: the state in words.
      await createTokenInConsole(page, f.cp.url, { description: 'words token', maxUses: '1200' });
      const tokenRow = page.getByRole('row').filter({ hasText: 'words token' });
      await tokenRow.getByRole('cell', { name: `0 of ${(1200).toLocaleString('en-US')}`, exact: true }).waitFor();
      await tokenRow.getByRole('cell', { name: 'Active', exact: true }).waitFor();
      await assertWords(page, 'the enrollment page');

      // Subscriptions: none yet, in the plural.
      await open(page, `${f.cp.url}/subscriptions`);
      await page.getByRole('navigation', { name: 'Pages' }).getByText('0 subscriptions', { exact: true }).waitFor();
      const subsFilter = page.getByLabel('Status', { exact: true });
      assert.deepEqual((await subsFilter.locator('option').allInnerTexts()).map((t) => t.trim()), ['Any', 'Pending', 'Provisioning', 'Running', 'Degraded', 'Suspended', 'Deleting', 'Failed', 'Upgrading']);
      await assertWords(page, 'the subscriptions page');
      await page.context().close();
    }),
  );

  it(
    'reaches and uses every row action of users, fleet and enrollment tokens on a 390×844 phone',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page({ phone: true, locale: 'en-US' });
      await signIn(page, f.cp.url);
      const email = 'phone@example.test';
      await createUserInConsole(page, f.cp.url, { email, name: 'Phone', password: 'phone-Passw0rd-2024' });

      // Users: select, role, edit, limits, deactivate and activate, delete.
      await open(page, `${f.cp.url}/users`);
      const row = page.locator(`tr[data-email="${email}"]`);
      await row.waitFor();
      const select = row.getByRole('checkbox', { name: `Select ${email}` });
      await assertReachable(page, select, 'Select');
      await select.check();
      await page.getByRole('group', { name: 'Bulk actions' }).getByText('1 selected', { exact: true }).waitFor();
      await select.uncheck();

      const role = row.getByRole('combobox', { name: `Role of ${email}` });
      await assertReachable(page, role, 'Role');
      await role.selectOption('administrator');
      const ask = page.getByRole('dialog', { name: `Make ${email} an administrator?` });
      await ask.getByRole('button', { name: 'Make administrator' }).click();
      await waitFor(async () => (await role.inputValue()) === 'administrator', 10_000, { message: 'made administrator' });

      const edit = row.getByRole('button', { name: `Edit ${email}` });
      await assertReachable(page, edit, 'Edit');
      await edit.click();
      const editing = page.getByRole('dialog', { name: `Edit ${email}` });
      await editing.getByLabel('Name').fill('Phone Edited');
      await editing.getByRole('button', { name: 'Save changes' }).click();
      await waitFor(async () => (await row.innerText()).includes('Phone Edited'), 10_000, { message: 'the name saved' });

      const limits = row.getByRole('button', { name: `Limits of ${email}` });
      await assertReachable(page, limits, 'Limits');
      await limits.click();
      const limiting = page.getByRole('dialog', { name: `Limits of ${email}` });
      await limiting.waitFor();
      await limiting.getByRole('button', { name: 'Cancel' }).click();
      await waitFor(async () => (await page.getByRole('dialog').count()) === 0, 5_000, { message: 'the limits dialog closed' });

      const deactivate = row.getByRole('button', { name: `Deactivate ${email}` });
      await assertReachable(page, deactivate, 'Deactivate');
      await deactivate.click();
      await waitFor(async () => (await row.innerText()).includes('Inactive'), 10_000, { message: 'Inactive' });
      const activate = row.getByRole('button', { name: `Activate ${email}` });
      await assertReachable(page, activate, 'Activate');
      await activate.click();
      await waitFor(async () => /\bActive\b/.test(await row.innerText()), 10_000, { message: 'Active again' });

      const del = row.getByRole('button', { name: `Delete ${email}` });
      await assertReachable(page, del, 'Delete');
      await del.click();
      await page.getByRole('dialog', { name: `Delete ${email}?` }).getByRole('button', { name: 'Delete', exact: true }).click();
      await waitFor(async () => (await row.count()) === 0, 10_000, { message: 'the user deleted' });
      let o = await horizontalOverflow(page);
      assert.equal(o.overflow, false, `users: wider than the phone: ${o.offenders.join('; ')}`);
      await screenshot(page, 'users-phone-actions');

      // Enrollment tokens: revoke.
      await createTokenInConsole(page, f.cp.url, { description: 'phone token' });
      const tokenRow = page.getByRole('row').filter({ hasText: 'phone token' });
      const revoke = tokenRow.getByRole('button', { name: 'Revoke phone token' });
      await assertReachable(page, revoke, 'Revoke');
      await screenshot(page, 'enrollment-phone-actions');
      await revoke.click();
      await page.getByRole('dialog', { name: 'Revoke phone token?' }).getByRole('button', { name: 'Revoke', exact: true }).click();
      await waitFor(async () => (await tokenRow.getByRole('button', { name: 'Revoke phone token' }).count()) === 0, 10_000, { message: 'revoked' });
      o = await horizontalOverflow(page);
      assert.equal(o.overflow, false, `enrollment: wider than the phone: ${o.offenders.join('; ')}`);

      // The fleet: a worker's row opens its page.
      await open(page, `${f.cp.url}/workers?q=swarm-00042`);
      const wrow = await waitRowStatus(page, 'swarm-00042', 'ACTIVE');
      const link = wrow.getByRole('link', { name: 'swarm-00042' });
      await assertReachable(page, link, 'the worker link');
      await link.click();
      await h1(page, 'swarm-00042').waitFor();
      await page.context().close();
    }),
  );
});
