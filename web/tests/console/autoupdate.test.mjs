// Chromium tests of the web console: a subscription's automatic patch
// updates in a maintenance window (#25), on the stand-in cluster.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/autoupdate.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, it } from 'node:test';

import { ADMIN_EMAIL, ADMIN_PASSWORD, assertAccessible, launchBrowser, startAgent, startControlPlane, waitFor } from '../harness.mjs';
import { describe, describedError, fixture, grpcurl, h1, open, register, signIn, startKubeStandin, TEST_TIMEOUT, waitRowStatus } from './common.mjs';

describe('automatic updates', () => {
  const f = fixture();
  /** @type {Awaited<ReturnType<typeof startKubeStandin>> | undefined} */
  let kube;
  const customer = { name: 'Ada Auto', email: 'ada.autoupdate@example.test', password: 'ada-autoupdate-password-1' };
  let adminToken = '';

  before(async () => {
    kube = await startKubeStandin(fs.mkdtempSync('/tmp/minispod-kube-'));
    f.extraLogs.push(kube);
    f.cp = await startControlPlane({
      enrollmentToken: true,
      args: ['--kubeconfig', kube.kubeconfig, '--offline-taint-after-start', '0s', '--apps-domain', 'apps.minispod.test', '--auto-update-every', '500ms'],
    });
    f.browser = await launchBrowser(f.cp.caPath);
    const name = 'autoupdate-worker';
    f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
    const page = await f.page();
    await signIn(page, f.cp.url);
    await open(page, `${f.cp.url}/workers`);
    const row = await waitRowStatus(page, name, 'NOT_READY');
    const id = new URL(await row.getByRole('link', { name, exact: true }).evaluate((a) => a.href)).pathname.split('/').pop();
    await kube.createNode('autoupdate-worker-k3s', id);
    await waitRowStatus(page, name, 'ACTIVE');
    await page.context().close();
    adminToken = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD })).accessToken;
    // A patch version of 1.64.0.
    const versions = (await grpcurl(f.cp, 'minispod.v1.CatalogService/ListServiceVersions', { serviceId: 'n8n' }, adminToken)).versions;
    const template = versions.find((v) => v.version === '1.64.0').template;
    template.components[0].image = 'docker.io/n8nio/n8n:1.64.1';
    await grpcurl(f.cp, 'minispod.v1.CatalogService/PublishServiceVersion', { serviceId: 'n8n', version: '1.64.1', notes: 'Fixes.', template }, adminToken);
  });
  after(async () => {
    await f.close();
    kube?.stop();
  });

  const fact = (page, term) =>
    page
      .getByRole('region', { name: 'Overview' })
      .locator('dl.facts > div')
      .filter({ has: page.getByRole('term').getByText(term, { exact: true }) })
      .getByRole('definition');

  it(
    'sets a window that is open now: the field errors are the server’s, then the patch version arrives by itself',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await register(page, f.cp.url, customer);
      const token = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
      const created = await grpcurl(f.cp, 'minispod.v1.SubscriptionService/CreateSubscription', { serviceId: 'n8n', name: 'flows', version: '1.64.0' }, token);
      await open(page, `${f.cp.url}/subscriptions/${created.subscription.id}`);
      await h1(page, 'flows').waitFor();
      await waitFor(async () => (await fact(page, 'Status').innerText()).trim() === 'Running', 60_000, { message: 'RUNNING' });
      const card = page.getByRole('region', { name: 'Automatic updates' });
      await card.waitFor();
      const toggle = card.getByRole('checkbox', { name: 'Apply patch versions automatically' });
      assert.equal(await toggle.isChecked(), false, 'off until set');
      await toggle.check();
      for (const d of ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun']) await card.getByRole('checkbox', { name: d, exact: true }).check();
      // Open since ten minutes ago (UTC), for an hour.
      const start = new Date(Date.now() - 10 * 60_000);
      const hhmm = `${String(start.getUTCHours()).padStart(2, '0')}:${String(start.getUTCMinutes()).padStart(2, '0')}`;
      await card.getByLabel('Start (UTC)').fill(hhmm);
      const length = card.getByRole('spinbutton', { name: 'Length (minutes)' });
      // A length the server refuses: its words under the input.
      await length.fill('0');
      await card.getByRole('button', { name: 'Save' }).click();
      await waitFor(async () => /must be 1 to 10080 minutes/.test(await describedError(length)), 10_000, { message: 'the length refused' });
      assert.equal((await fact(page, 'Version').innerText()).trim(), '1.64.0', 'nothing applied');
      await assertAccessible(page, 'the auto-update card with a field error');
      await length.fill('60');
      await card.getByRole('button', { name: 'Save' }).click();
      await card.getByText('Automatic patch updates are on.').waitFor({ timeout: 10_000 });
      await card.locator('[data-next-window]').waitFor();
      // The policy is the server's, as a reload shows.
      await page.reload();
      await card.waitFor();
      assert.equal(await card.getByRole('checkbox', { name: 'Apply patch versions automatically' }).isChecked(), true);
      assert.equal(await card.getByLabel('Start (UTC)').inputValue(), hhmm);
      // 1.64.1 arrives by itself; 1.70.3 (a minor version) is still offered by hand.
      await waitFor(async () => (await fact(page, 'Version').innerText()).trim() === '1.64.1', 60_000, { message: 'version 1.64.1 applied by itself' });
      await waitFor(async () => (await fact(page, 'Status').innerText()).trim() === 'Running', 60_000, { message: 'RUNNING on 1.64.1' });
      await card.locator('[data-tried]').getByText(/Tried automatically: 1\.64\.1\./).waitFor({ timeout: 10_000 });
      await page.locator('section[data-upgrade]').getByText('Update available: 1.70.3').waitFor();
    }),
  );
});
