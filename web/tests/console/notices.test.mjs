// Chromium tests of the web console: a customer's notices about their
// subscriptions in their profile, and the workers' thresholds on the
// administrator's notifications page. Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/notices.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { after, before, it } from 'node:test';

import { assertAccessible, launchBrowser, startControlPlane, waitFor } from '../harness.mjs';
import { describe, fixture, h1, open, register, reload, signIn, TEST_TIMEOUT } from './common.mjs';

describe('notices', () => {
  const f = fixture();
  /** What the webhook receiver got. */
  const hooks = { received: /** @type {Array<{headers: http.IncomingHttpHeaders, body: string}>} */ ([]) };
  /** @type {http.Server | undefined} */
  let receiver;
  let hookUrl = '';

  before(async () => {
    receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        hooks.received.push({ headers: req.headers, body });
        res.writeHead(204);
        res.end();
      });
    });
    await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    hookUrl = `http://127.0.0.1:${/** @type {import('node:net').AddressInfo} */ (receiver.address()).port}/hook`;
    f.cp = await startControlPlane({ args: ['--outbox-retry-initial', '200ms', '--webhook-allow-range', '127.0.0.0/8'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(async () => {
    await f.close();
    receiver?.close();
  });

  it(
    'lets a customer choose among their subscriptions\u2019 notices in the profile, all by mail until they change it, with a webhook of their own',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await register(page, f.cp.url, { name: 'Nora Notice', email: 'nora@example.org', password: 'nora-Passw0rd-1' });
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      const prefs = page.getByRole('region', { name: 'Your notices' });
      await prefs.waitFor();
      // Every subscription event, on by default; no fleet event offered.
      const resumed = prefs.getByLabel(/^Subscription resumed/);
      await waitFor(async () => await resumed.isChecked(), 10_000, { message: 'the defaults loaded' });
      for (const label of [/^Subscription failed/, /^Subscription not fully working/, /^Subscription works again/, /^Subscription keeps restarting/, /^Subscription suspended/, /^Upgrade rolled back/]) {
        assert.equal(await prefs.getByLabel(label).isChecked(), true, String(label));
      }
      assert.equal(await prefs.getByLabel('Send notices to my email address').isChecked(), true);
      assert.equal(await prefs.getByLabel(/^Worker offline/).count(), 0, 'fleet events are the operator\u2019s');
      assert.equal(await prefs.getByLabel(/^Customers cannot subscribe/).count(), 0);

      await resumed.uncheck();
      await prefs.getByLabel('Webhook URL').fill(hookUrl);
      await prefs.getByRole('button', { name: 'Save', exact: true }).click();
      await page.getByRole('status').filter({ hasText: 'Preferences saved.' }).waitFor();
      const secret = await page.getByLabel('Secret', { exact: true }).inputValue();
      assert.match(secret, /^[0-9a-f]{64}$/);
      await assertAccessible(page, 'profile with notices (desktop)');

      await reload(page);
      await h1(page, 'Profile').waitFor();
      await waitFor(async () => (await page.getByLabel('Webhook URL').inputValue()) === hookUrl, 10_000, { message: 'the stored URL' });
      assert.equal(await page.getByLabel(/^Subscription resumed/).isChecked(), false);
      assert.equal(await page.getByLabel(/^Subscription suspended/).isChecked(), true);

      await page.getByRole('button', { name: 'Send a test notice' }).click();
      await page.getByRole('status').filter({ hasText: `Test notice queued: a webhook to ${hookUrl}` }).waitFor();
      await waitFor(async () => hooks.received.length === 1, 15_000, { message: 'the test notice posted' });
      const [t, v1] = String(hooks.received[0].headers['x-minispod-signature']).split(',').map((p) => p.split('=')[1]);
      assert.equal(v1, crypto.createHmac('sha256', secret).update(`${t}.${hooks.received[0].body}`).digest('hex'));
      await page.context().close();
    }),
  );

  it(
    'lets an administrator set fleet-wide thresholds on the workers\u2019 figures, with field errors for levels without hysteresis',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/notifications`);
      await h1(page, 'Notifications').waitFor();
      const card = page.getByRole('region', { name: 'Worker thresholds' });
      await card.getByText('None.').waitFor();
      await card.getByLabel('Watch cpu on every worker').check();
      await card.getByLabel('CPU: told at or above (%)').fill('80');
      await card.getByLabel('CPU: cleared below (%)').fill('85');
      await card.getByRole('button', { name: 'Save thresholds' }).click();
      const clear = card.getByLabel('CPU: cleared below (%)');
      await waitFor(async () => (await clear.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'the clear level marked invalid' });

      await clear.fill('60');
      await card.getByLabel('CPU: for (seconds)').fill('120');
      await card.getByRole('button', { name: 'Save thresholds' }).click();
      await card.getByRole('status').filter({ hasText: 'Thresholds saved.' }).waitFor();
      await assertAccessible(page, 'notifications with thresholds (desktop)');

      await reload(page);
      await h1(page, 'Notifications').waitFor();
      const again = page.getByRole('region', { name: 'Worker thresholds' });
      await waitFor(async () => (await again.getByLabel('CPU: cleared below (%)').count()) === 1, 10_000, { message: 'the stored threshold' });
      assert.equal(await again.getByLabel('CPU: told at or above (%)').inputValue(), '80');
      assert.equal(await again.getByLabel('CPU: cleared below (%)').inputValue(), '60');
      assert.equal(await again.getByLabel('CPU: for (seconds)').inputValue(), '120');
      assert.equal(await again.getByLabel('Watch memory on every worker').isChecked(), false);
      await page.context().close();
    }),
  );
});
