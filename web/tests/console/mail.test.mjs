// Chromium tests of the web console: mail through a real SMTP server, and notifications.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/mail.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import { after, before, it } from 'node:test';

import {
  ADMIN_EMAIL,
  assertAccessible,
  launchBrowser,
  startControlPlane,
  startSmtpSink,
  waitFor,
} from '../harness.mjs';
import {
  describe,
  fixture,
  h1,
  open,
  reload,
  signIn,
  TEST_TIMEOUT,
} from './common.mjs';

// ---------------------------------------------------------------------------
// Mail: a forgotten password and a new account's address, through a real
// SMTP server, with sign-in gated on a confirmed address.

describe('mail', () => {
  const f = fixture();
  /** @type {import('../harness.mjs').SmtpSink} */
  let sink;
  before(async () => {
    sink = await startSmtpSink();
    f.extraLogs.push({ name: 'smtp', log: () => JSON.stringify(sink.mails().map((m) => [m.to, m.subject])) });
    f.cp = await startControlPlane({
      args: ['--smtp-url', sink.url, '--mail-from', 'noreply@minispod.test', '--require-email-verification', '--outbox-retry-initial', '200ms'],
    });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(async () => {
    await f.close();
    await sink?.stop();
  });

  /** The link in a mail's text that starts with `prefix`. */
  const linkIn = (mail, prefix) => {
    const link = mail.text.split(/\s+/).find((w) => w.startsWith(prefix));
    assert.ok(link, `no ${prefix} link in ${JSON.stringify(mail.text)}`);
    return link;
  };

  it(
    'resets a forgotten password from the sign-in page with the mailed link, once',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await open(page, `${f.cp.url}/signin`);
      await page.getByRole('link', { name: 'Forgot your password?' }).click();
      await h1(page, 'Forgot your password?').waitFor();
      await page.getByLabel('Email').fill(ADMIN_EMAIL);
      await page.getByRole('button', { name: 'Send the link' }).click();
      await h1(page, 'Check your inbox').waitFor();
      const [mail] = await sink.waitForMail(ADMIN_EMAIL, 1);
      assert.equal(mail.subject, 'Reset your MiniSpod password');
      const link = linkIn(mail, `${f.cp.url}/reset-password#token=`);

      await open(page, link);
      await h1(page, 'Choose a new password').waitFor();
      // The token leaves the address bar.
      assert.equal(new URL(page.url()).hash, '');
      await page.getByLabel('New password', { exact: true }).fill('a-new-Passw0rd-by-mail');
      await page.getByLabel('New password again').fill('a-new-Passw0rd-by-mail');
      await page.getByRole('button', { name: 'Set the new password' }).click();
      await h1(page, 'Password changed').waitFor();
      await page.getByRole('link', { name: 'Sign in' }).click();
      await signIn(page, f.cp.url, { password: 'a-new-Passw0rd-by-mail', goto: false });
      await h1(page, 'Dashboard').waitFor();
      await assertAccessible(page, 'dashboard after reset');

      // The same link again: refused, with a way to a new one.
      const again = await f.page();
      await open(again, link);
      await again.getByLabel('New password', { exact: true }).fill('yet-another-Passw0rd');
      await again.getByLabel('New password again').fill('yet-another-Passw0rd');
      await again.getByRole('button', { name: 'Set the new password' }).click();
      const alert = again.getByRole('alert');
      await alert.waitFor();
      assert.match(await alert.innerText(), /not valid/);
      await again.getByRole('link', { name: 'Ask for a new link' }).waitFor();
      await again.context().close();
      await page.context().close();
    }),
  );

  it(
    'has a new account confirm its address before the first sign-in',
    TEST_TIMEOUT,
    f.t(async () => {
      const email = 'newcomer@example.org';
      const page = await f.page();
      await open(page, `${f.cp.url}/register`);
      await page.getByLabel('Name').fill('Newcomer');
      await page.getByLabel('Email').fill(email);
      await page.getByLabel('Password').fill('newcomer-Passw0rd');
      await page.getByRole('button', { name: 'Create account' }).click();
      await h1(page, 'Confirm your address').waitFor();
      await assertAccessible(page, 'confirm your address');

      // Signing in first says what to do, and offers a new link.
      await open(page, `${f.cp.url}/signin`);
      await page.getByLabel('Email').fill(email);
      await page.getByLabel('Password').fill('newcomer-Passw0rd');
      await page.getByRole('button', { name: 'Sign in' }).click();
      const alert = page.getByRole('alert');
      await alert.waitFor();
      assert.match(await alert.innerText(), /confirm your email address first/);
      await page.getByRole('button', { name: 'Send a new link' }).click();
      await page.getByText('a new link is on its way').waitFor();
      const mails = await sink.waitForMail(email, 2);
      const link = linkIn(mails[1], `${f.cp.url}/verify-email#token=`);

      await open(page, link);
      await h1(page, 'Address confirmed').waitFor();
      await page.getByRole('link', { name: 'Sign in' }).click();
      await signIn(page, f.cp.url, { email, password: 'newcomer-Passw0rd', goto: false });
      await h1(page, 'Catalog').waitFor();
      await page.context().close();
    }),
  );
});

describe('notifications', () => {
  const f = fixture();
  /** What the webhook receiver got, and the status it answers with. */
  const hooks = { received: /** @type {Array<{headers: http.IncomingHttpHeaders, body: string}>} */ ([]), answer: 400 };
  /** @type {http.Server | undefined} */
  let receiver;
  let hookUrl = '';

  before(async () => {
    // A receiver on loopback over plain HTTP: internal addresses and plain
    // http:// are refused unless the operator allows their range.
    receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        hooks.received.push({ headers: req.headers, body });
        res.writeHead(hooks.answer, { 'content-type': 'text/plain' });
        res.end(hooks.answer < 300 ? '' : 'not today');
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
    'sets a webhook (field error for http:// elsewhere, the secret shown once), sends a signed test notice, and retries it from the outbox once it failed',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Notifications' }).click();
      await h1(page, 'Notifications').waitFor();
      // No --smtp-url here: the page says mail cannot go out.
      await page.getByText('This control plane sends no mail').waitFor();

      const url = page.getByLabel('Webhook URL');
      await url.fill('http://hooks.example.org/x');
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await waitFor(async () => (await url.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'the URL field marked invalid' });
      await page.getByText('must lead to the public internet over https://').first().waitFor();

      await url.fill(hookUrl);
      await page.getByLabel(/^Worker offline/).check();
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await page.getByRole('status').filter({ hasText: 'Preferences saved.' }).waitFor();
      const secretBox = page.getByLabel('Secret', { exact: true });
      const secret = await secretBox.inputValue();
      assert.match(secret, /^[0-9a-f]{64}$/);
      await assertAccessible(page, 'notifications (desktop)');

      // Shown once: a reload keeps the settings, not the secret.
      await reload(page);
      await h1(page, 'Notifications').waitFor();
      await waitFor(async () => (await url.inputValue()) === hookUrl, 10_000, { message: 'the stored URL' });
      assert.equal(await page.getByLabel(/^Worker offline/).isChecked(), true);
      assert.equal(await secretBox.count(), 0);
      await page.getByRole('button', { name: 'Make a new signing secret' }).waitFor();

      // The receiver refuses the test notice: it is listed as failed.
      await page.getByRole('button', { name: 'Send a test notice' }).click();
      await page.getByRole('status').filter({ hasText: `Test notice queued: a webhook to ${hookUrl}` }).waitFor();
      await waitFor(async () => hooks.received.length === 1, 15_000, { message: 'the test notice posted' });
      const [t, v1] = String(hooks.received[0].headers['x-minispod-signature']).split(',').map((p) => p.split('=')[1]);
      const want = crypto.createHmac('sha256', secret).update(`${t}.${hooks.received[0].body}`).digest('hex');
      assert.equal(v1, want, 'signed with the secret the page showed');
      assert.equal(JSON.parse(hooks.received[0].body).event, 'test');

      await page.getByLabel('Only failed').check();
      await waitFor(async () => new URL(page.url()).searchParams.get('status') === 'failed', 5_000, { message: 'the filter in the URL' });
      const failedRow = page.locator('tr[data-status="failed"]');
      await waitFor(
        async () => {
          if ((await failedRow.count()) === 1) return true;
          await page.getByRole('button', { name: 'Refresh' }).click();
          return false;
        },
        15_000,
        { message: 'the failed message listed' },
      );
      await failedRow.getByText('400').first().waitFor();
      await page.getByText('0 waiting to be sent, 1 failed.').waitFor();

      // Fixed receiver, retry: delivered, and the failed list empties.
      hooks.answer = 204;
      await failedRow.getByRole('button', { name: /^Retry/ }).click();
      await waitFor(async () => hooks.received.length === 2, 15_000, { message: 'the retry posted' });
      await page.getByLabel('Only failed').uncheck();
      const sentRow = page.locator('tr[data-status="sent"]');
      await waitFor(
        async () => {
          if ((await sentRow.count()) === 1) return true;
          await page.getByRole('button', { name: 'Refresh' }).click();
          return false;
        },
        15_000,
        { message: 'the retried message shown as sent' },
      );
      assert.equal(await page.locator('tr[data-status="failed"]').count(), 0);
      await page.context().close();
    }),
  );
});
