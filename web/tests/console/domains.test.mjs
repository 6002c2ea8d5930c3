// Chromium tests of the web console: a customer's own domains on a
// subscription (#25), on the stand-in cluster. Shared set-up in
// ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/domains.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).
//
// The control plane's ownership check reaches every host at a small HTTP
// server of the test's (--domain-check-resolve '*=127.0.0.1:<port>'),
// which answers nothing useful until the test makes it answer the token
// the page shows: the customer's name now points at the installation.
// (The Rust suite, control-plane/tests/api/domains.rs, proves the check
// against the Ingress and responder the control plane makes.)

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { after, before, it } from 'node:test';

import { launchBrowser, startAgent, startControlPlane, waitFor } from '../harness.mjs';
import { describe, fixture, grpcurl, h1, open, register, signIn, startKubeStandin, TEST_TIMEOUT, waitRowStatus } from './common.mjs';

describe('domains', () => {
  const f = fixture();
  /** @type {Awaited<ReturnType<typeof startKubeStandin>> | undefined} */
  let kube;
  /** @type {http.Server | undefined} */
  let dns;
  /** The token the test's server answers, once the name "points here". */
  let answering = '';
  const APPS_DOMAIN = 'apps.minispod.test';
  const customer = { name: 'Dana Domains', email: 'dana.domains@example.test', password: 'dana-domains-password-1' };
  let subId = '';

  before(async () => {
    dns = http.createServer((req, res) => {
      const token = (req.url ?? '').split('/').pop();
      if (answering && token === answering) {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`${answering}\n`);
      } else {
        res.writeHead(404);
        res.end('not here');
      }
    });
    await new Promise((resolve) => dns.listen(0, '127.0.0.1', resolve));
    const port = /** @type {import('node:net').AddressInfo} */ (dns.address()).port;
    kube = await startKubeStandin(fs.mkdtempSync('/tmp/minispod-kube-'));
    f.extraLogs.push(kube);
    f.cp = await startControlPlane({
      enrollmentToken: true,
      args: [
        '--kubeconfig', kube.kubeconfig,
        '--offline-taint-after-start', '0s',
        '--apps-domain', APPS_DOMAIN,
        '--domain-check-every', '200ms',
        '--domain-check-max', '1s',
        '--domain-check-resolve', `*=127.0.0.1:${port}`,
      ],
    });
    f.browser = await launchBrowser(f.cp.caPath);
    const name = 'domains-worker';
    f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
    const page = await f.page();
    await signIn(page, f.cp.url);
    await open(page, `${f.cp.url}/workers`);
    const row = await waitRowStatus(page, name, 'NOT_READY');
    const id = new URL(await row.getByRole('link', { name, exact: true }).evaluate((a) => a.href)).pathname.split('/').pop();
    await kube.createNode('domains-worker-k3s', id);
    await waitRowStatus(page, name, 'ACTIVE');
    await page.context().close();
  });
  after(async () => {
    await f.close();
    kube?.stop();
    dns?.close();
  });

  /** The domains card of the subscription page. */
  const card = (page) => page.getByRole('region', { name: 'Your own domains' });
  const domainRow = (page, host) => card(page).locator(`tr[data-domain="${host}"]`);

  it(
    'adds a domain with the record to set, shows it waiting, then verified once it answers, and removes it after a confirmation',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await register(page, f.cp.url, customer);
      const { accessToken } = await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password });
      const { subscription } = await grpcurl(f.cp, 'minispod.v1.SubscriptionService/CreateSubscription', { serviceId: 'n8n', name: 'shopfront' }, accessToken);
      subId = subscription.id;
      await open(page, `${f.cp.url}/subscriptions/${subId}`);
      await h1(page, 'shopfront').waitFor();
      await card(page).getByText('No domain yet').waitFor();

      // A name under the apps domain: the server refuses it by field.
      const field = card(page).getByLabel('Add a domain');
      await field.fill(`blog.${APPS_DOMAIN}`);
      await card(page).getByRole('button', { name: 'Add domain' }).click();
      await waitFor(async () => (await field.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'host aria-invalid' });
      assert.match(await card(page).locator('.field .error').innerText(), /installation's own/);

      // Accepted: the row says what to set and that it waits for DNS.
      await field.fill('Shop.Example.test');
      await card(page).getByRole('button', { name: 'Add domain' }).click();
      const row = domainRow(page, 'shop.example.test');
      await row.waitFor();
      assert.equal(await row.locator('[data-state]').getAttribute('data-state'), 'PENDING');
      assert.equal(await row.locator('[data-record]').innerText(), `shop.example.test. CNAME shopfront.${APPS_DOMAIN}.`);
      const checkUrl = await row.locator('[data-check-url]').innerText();
      assert.match(checkUrl, /^http:\/\/shop\.example\.test\/\.well-known\/minispod\/[0-9a-f]{32}$/);
      // The check ran and says what it saw.
      await waitFor(async () => /answered 404/.test(await row.innerText()), 20_000, { message: `the failed check's reason: ${await row.innerText()}` });

      // The name now leads to the installation: verified, no issuer.
      answering = checkUrl.split('/').pop() ?? '';
      await waitFor(async () => (await row.locator('[data-state]').getAttribute('data-state')) === 'VERIFIED', 30_000, { message: `verified: ${await row.innerText()}` });
      assert.match(await row.innerText(), /Verified/);
      assert.match(await row.innerText(), /no certificate issuer configured/);
      assert.equal(await row.getByRole('link', { name: 'shop.example.test' }).getAttribute('href'), 'https://shop.example.test');

      // Remove asks first; cancelling keeps it, confirming removes it.
      await row.getByRole('button', { name: 'Remove' }).click();
      const dialog = page.getByRole('dialog', { name: 'Remove shop.example.test?' });
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Cancel' }).click();
      await row.waitFor();
      await row.getByRole('button', { name: 'Remove' }).click();
      await dialog.getByRole('button', { name: 'Remove' }).click();
      await card(page).getByText('Removed shop.example.test.').waitFor();
      await row.waitFor({ state: 'detached' });
      const { domains } = await grpcurl(f.cp, 'minispod.v1.SubscriptionService/ListSubscriptionDomains', { subscriptionId: subId }, accessToken);
      assert.equal(domains?.length ?? 0, 0);
    }),
  );
});
