// Chromium tests of the web console: versions of a catalog entry and
// upgrades that roll back (#25), on the stand-in cluster.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/upgrades.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, it } from 'node:test';

import { ADMIN_EMAIL, ADMIN_PASSWORD, launchBrowser, startAgent, startControlPlane, waitFor } from '../harness.mjs';
import { describe, fixture, grpcurl, h1, open, register, signIn, startKubeStandin, TEST_TIMEOUT, waitRowStatus } from './common.mjs';

describe('upgrades', () => {
  const f = fixture();
  /** @type {Awaited<ReturnType<typeof startKubeStandin>> | undefined} */
  let kube;
  const customer = { name: 'Uma Upgrader', email: 'uma.upgrades@example.test', password: 'uma-upgrades-password-1' };
  let customerToken = '';
  let adminToken = '';
  let subId = '';

  before(async () => {
    kube = await startKubeStandin(fs.mkdtempSync('/tmp/minispod-kube-'));
    f.extraLogs.push(kube);
    f.cp = await startControlPlane({
      enrollmentToken: true,
      args: ['--kubeconfig', kube.kubeconfig, '--offline-taint-after-start', '0s', '--apps-domain', 'apps.minispod.test', '--upgrade-deadline', '4s'],
    });
    f.browser = await launchBrowser(f.cp.caPath);
    const name = 'upgrades-worker';
    f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
    const page = await f.page();
    await signIn(page, f.cp.url);
    await open(page, `${f.cp.url}/workers`);
    const row = await waitRowStatus(page, name, 'NOT_READY');
    const id = new URL(await row.getByRole('link', { name, exact: true }).evaluate((a) => a.href)).pathname.split('/').pop();
    await kube.createNode('upgrades-worker-k3s', id);
    await waitRowStatus(page, name, 'ACTIVE');
    await page.context().close();
    adminToken = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD })).accessToken;
  });
  after(async () => {
    await f.close();
    kube?.stop();
  });

  const overview = (page, term) =>
    page
      .getByRole('region', { name: 'Overview' })
      .locator('dl.facts > div')
      .filter({ has: page.getByRole('term').getByText(term, { exact: true }) })
      .getByRole('definition');
  const versionCard = (page) => page.locator('section[data-upgrade]');

  it(
    'shows the update with its notes, asks with the dry-run diff, then follows the upgrade to RUNNING on the new version',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await register(page, f.cp.url, customer);
      customerToken = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
      const created = await grpcurl(f.cp, 'minispod.v1.SubscriptionService/CreateSubscription', { serviceId: 'n8n', name: 'flows', version: '1.64.0' }, customerToken);
      subId = created.subscription.id;
      await open(page, `${f.cp.url}/subscriptions/${subId}`);
      await h1(page, 'flows').waitFor();
      await waitFor(async () => (await overview(page, 'Status').innerText()).trim() === 'Running', 60_000, { message: 'RUNNING' });
      assert.equal((await overview(page, 'Version').innerText()).trim(), '1.64.0');
      const card = versionCard(page);
      await card.getByText('Update available: 1.70.3').waitFor();
      assert.match(await card.innerText(), /n8n 1\.70/, 'the notes of the new version');
      await card.getByRole('button', { name: 'Upgrade to 1.70.3' }).click();
      const dialog = page.getByRole('dialog', { name: 'Upgrade flows to 1.70.3?' });
      await dialog.waitFor();
      const plan = await dialog.innerText();
      assert.match(plan, /docker\.io\/n8nio\/n8n:1\.64\.0\s*→\s*docker\.io\/n8nio\/n8n:1\.70\.3/);
      // Nothing changed until it is confirmed.
      assert.equal((await overview(page, 'Version').innerText()).trim(), '1.64.0');
      await dialog.getByRole('button', { name: 'Upgrade' }).click();
      await waitFor(async () => (await overview(page, 'Version').innerText()).trim() === '1.70.3', 30_000, { message: 'version 1.70.3' });
      await waitFor(async () => (await overview(page, 'Status').innerText()).trim() === 'Running', 60_000, { message: 'RUNNING after the upgrade' });
      await waitFor(async () => !(await card.isVisible()), 10_000, { message: 'nothing left to offer' });
    }),
  );

  it(
    'shows UPGRADING, then the rollback and its reason when the new version never becomes ready',
    TEST_TIMEOUT,
    f.t(async () => {
      assert.ok(subId, 'the first test made the subscription');
      // A version no worker can hold: it never becomes ready.
      const versions = (await grpcurl(f.cp, 'minispod.v1.CatalogService/ListServiceVersions', { serviceId: 'n8n' }, adminToken)).versions;
      const template = versions[0].template;
      template.components[0].resources.cpuRequestMillicores = 64000;
      template.components[0].resources.cpuLimitMillicores = 64000;
      await grpcurl(f.cp, 'minispod.v1.CatalogService/PublishServiceVersion', { serviceId: 'n8n', version: '1.71.0', notes: 'Needs more room.', template }, adminToken);
      // Within the customer's limits (the operator raised them: an upgrade
      // past them is refused), beyond any worker's room.
      const owner = (await grpcurl(f.cp, 'minispod.v1.SubscriptionService/GetSubscription', { id: subId }, adminToken)).subscription.userId;
      await grpcurl(f.cp, 'minispod.v1.UserService/SetUserLimits', { id: owner, limits: { cpuMillicores: 100000 } }, adminToken);
      const page = await f.page();
      await signIn(page, f.cp.url, { email: customer.email, password: customer.password });
      await open(page, `${f.cp.url}/subscriptions/${subId}`);
      const card = versionCard(page);
      await card.getByText('Update available: 1.71.0').waitFor();
      await card.getByRole('button', { name: 'Upgrade to 1.71.0' }).click();
      await page.getByRole('dialog', { name: 'Upgrade flows to 1.71.0?' }).getByRole('button', { name: 'Upgrade' }).click();
      await card.locator('[data-upgrading]').waitFor({ timeout: 10_000 });
      assert.match(await card.locator('[data-upgrading]').innerText(), /Upgrading from 1\.70\.3 to 1\.71\.0/);
      const rolled = card.locator('[data-rolled-back]');
      await rolled.waitFor({ timeout: 30_000 });
      assert.match(await rolled.innerText(), /rolled back: version 1\.71\.0 did not become ready in 4 seconds: component n8n/);
      await waitFor(async () => (await overview(page, 'Version').innerText()).trim() === '1.70.3', 10_000, { message: 'back on 1.70.3' });
    }),
  );

  it(
    'lists the versions with their counts to administrators, withdraws one and publishes another',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/catalog/n8n`);
      const card = page.locator('section[data-versions]');
      await card.waitFor();
      const row = (v) => card.locator(`tr[data-version="${v}"]`);
      await row('1.71.0').waitFor();
      assert.equal((await row('1.70.3').locator('[data-count]').innerText()).trim(), '1 subscription');
      assert.equal((await row('1.64.0').locator('[data-count]').innerText()).trim(), '0 subscriptions');
      await row('1.71.0').getByRole('button', { name: 'Withdraw' }).click();
      await page.getByRole('dialog', { name: 'Withdraw version 1.71.0?' }).getByRole('button', { name: 'Withdraw' }).click();
      await waitFor(async () => /Withdrawn/.test(await row('1.71.0').innerText()), 10_000, { message: '1.71.0 withdrawn' });
      await card.getByRole('textbox', { name: 'Version', exact: true }).fill('1.72.0');
      await card.getByRole('textbox', { name: 'Release notes', exact: true }).fill('Fixes.');
      await card.getByRole('button', { name: 'Publish' }).click();
      await row('1.72.0').waitFor({ timeout: 10_000 });
      assert.match(await row('1.72.0').innerText(), /Fixes\./);
    }),
  );
});
