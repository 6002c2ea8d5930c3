// Chromium tests of the web console: backups and restores (#26), end to
// end: the stand-in cluster with its local-path volumes as real directories
// (--storage-root), a real minispod-agent on its node whose --volumes-dir
// is that node's directory, real restic, and a real S3-compatible server
// (moto, from the venv of MINISPOD_TEST_PYTHON). Shared set-up in
// ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/backups.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { after, before, it } from 'node:test';

import { ADMIN_EMAIL, ADMIN_PASSWORD, assertAccessible, launchBrowser, startAgent, startControlPlane, waitFor } from '../harness.mjs';
import { assertReachable, describe, describedError, fieldError, fixture, grpcurl, h1, horizontalOverflow, open, register, s3Request, signIn, startKubeStandin, startMoto, TEST_TIMEOUT, waitRowStatus } from './common.mjs';

const BUCKET = 'console-backups';
const SECRET = 'moto-secret-Zq9-never-shown';

/** The one directory under `root` whose name ends with `_<claim>`. */
/** Every file under `dir`, as paths relative to it. */
function filesUnder(dir) {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath ?? e.path, e.name)));
}

/** The HTTP status of a GET of `url` on the control plane (trusting its CA). */
function httpGetStatus(cp, url) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = https.get(
      { host: '127.0.0.1', servername: 'localhost', port: cp.port, path: u.pathname, ca: fs.readFileSync(cp.caPath), headers: { host: `localhost:${cp.port}` } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode));
      },
    );
    req.on('error', reject);
  });
}

function volumeDir(root, claim) {
  const found = fs.readdirSync(root).filter((n) => n.endsWith(`_${claim}`));
  assert.equal(found.length, 1, `one volume of ${claim} in ${root}: ${found}`);
  return path.join(root, found[0]);
}

describe('backups', () => {
  const f = fixture();
  /** @type {Awaited<ReturnType<typeof startKubeStandin>> | undefined} */
  let kube;
  /** @type {Awaited<ReturnType<typeof startMoto>> | undefined} */
  let moto;
  const customer = { name: 'Bea Backups', email: 'bea.backups@example.test', password: 'bea-backups-password-1' };
  const NODE = 'backups-worker-k3s';
  let root = '';
  let subId = '';
  /** The noise written into kept's volume before its first backup. */
  let big = Buffer.alloc(0);

  before(async () => {
    moto = await startMoto();
    f.extraLogs.push(moto);
    assert.equal(await s3Request(moto.port, 'PUT', `/${BUCKET}`), 200, 'create the bucket');
    const dir = fs.mkdtempSync('/tmp/minispod-kube-');
    kube = await startKubeStandin(dir, { storageRoot: path.join(dir, 'nodes') });
    f.extraLogs.push(kube);
    root = path.join(dir, 'nodes', NODE);
    fs.mkdirSync(root, { recursive: true });
    f.cp = await startControlPlane({
      enrollmentToken: true,
      // 1 MiB/s: a few MiB take seconds, long enough to watch the progress.
      // Every test here signs in (the browser and grpcurl) from 127.0.0.1:
      // more than the default 20 logins per address in a burst; the limit
      // itself is signin.test.mjs's.
      args: ['--kubeconfig', kube.kubeconfig, '--offline-taint-after-start', '0s', '--apps-domain', 'apps.minispod.test', '--backup-limit-upload', '1024', '--login-ip-burst', '200', '--login-ip-per-minute', '200'],
    });
    f.browser = await launchBrowser(f.cp.caPath);
    const name = 'backups-worker';
    f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name, args: ['--volumes-dir', root] }));
    const page = await f.page();
    await signIn(page, f.cp.url);
    await open(page, `${f.cp.url}/workers`);
    const row = await waitRowStatus(page, name, 'NOT_READY');
    const id = new URL(await row.getByRole('link', { name, exact: true }).evaluate((a) => a.href)).pathname.split('/').pop();
    await kube.createNode(NODE, id);
    await waitRowStatus(page, name, 'ACTIVE');
    await page.context().close();
  });
  after(async () => {
    await f.close();
    kube?.stop();
    moto?.stop();
  });

  const card = (page) => page.locator('section[data-backups]');

  it(
    'lets an administrator add a destination through the form, lists it as the default, and never shows its secret again',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Backups', exact: true }).click();
      await h1(page, 'Backups').waitFor();
      const section = page.locator('section[data-destinations]');
      await section.getByText('No destination yet').waitFor();
      await section.getByRole('textbox', { name: 'Name', exact: true }).fill('moto');
      await section.getByRole('textbox', { name: 'Endpoint', exact: true }).fill(moto.endpoint);
      await section.getByRole('textbox', { name: 'Region', exact: true }).fill('us-east-1');
      await section.getByRole('textbox', { name: 'Bucket', exact: true }).fill(BUCKET);
      await section.getByRole('textbox', { name: 'Prefix', exact: true }).fill('console');
      await section.getByRole('textbox', { name: 'Access key id', exact: true }).fill('minispod-test');
      const secret = section.getByLabel('Secret access key', { exact: true });
      assert.equal(await secret.getAttribute('type'), 'password');
      await secret.fill(SECRET);
      await section.getByRole('button', { name: 'Add destination' }).click();
      const row = section.locator('tr[data-destination="moto"]');
      await row.waitFor({ timeout: 10_000 });
      const text = await row.innerText();
      assert.match(text, new RegExp(moto.endpoint.replace(/[.]/g, '\\.')));
      assert.match(text, new RegExp(BUCKET));
      assert.equal((await row.locator('[data-default]').innerText()).trim(), 'Default', 'the first destination is the default');
      await section.getByText('Added moto: new backups go there.').waitFor();
      // The secret is gone from the form and from the whole document, also
      // after the page is loaded again from the server's answers.
      assert.equal(await secret.inputValue(), '');
      assert.ok(!(await page.content()).includes(SECRET), 'the secret is nowhere in the page');
      await page.reload();
      await section.locator('tr[data-destination="moto"]').waitFor();
      assert.ok(!(await page.content()).includes(SECRET), 'the secret is nowhere in the page after a reload');
      const listed = await grpcurl(f.cp, 'minispod.v1.BackupService/ListBackupDestinations', {}, (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD })).accessToken);
      assert.equal(listed.destinations.length, 1, 'one destination stored');
      assert.equal(listed.destinations[0].prefix, 'console');
    }),
  );

  it(
    "lets an administrator add a directory on the control plane's host as a destination, and refuses a relative one",
    TEST_TIMEOUT,
    f.t(async () => {
      // A directory the control plane makes: it does not exist yet.
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'minispod-backup-dir-'));
      const dir = `${tmp}/backups`;
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/backups`);
      await h1(page, 'Backups').waitFor();
      const section = page.locator('section[data-destinations]');
      await section.getByRole('radio', { name: "Directory on the control plane's host", exact: true }).check();
      // Only the directory kind's fields are shown.
      assert.equal(await section.getByRole('textbox', { name: 'Bucket', exact: true }).count(), 0);
      assert.equal(await section.getByLabel('Secret access key', { exact: true }).count(), 0);
      await section.getByRole('textbox', { name: 'Name', exact: true }).fill('local');
      const directory = section.getByRole('textbox', { name: 'Directory', exact: true });
      assert.equal(await directory.getAttribute('placeholder'), '/var/lib/minispod/backups');
      const adminToken = async () => (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD })).accessToken;
      const stored = async () => ((await grpcurl(f.cp, 'minispod.v1.BackupService/ListBackupDestinations', {}, await adminToken())).destinations ?? []).filter((d) => d.name === 'local');

      // No directory: said under the field, nothing sent.
      await section.getByRole('button', { name: 'Add destination' }).click();
      await waitFor(async () => (await directory.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Directory aria-invalid when empty' });
      assert.match(await fieldError(directory), /required/);
      assert.deepEqual(await stored(), [], 'nothing stored without a directory');

      // A relative path: the server's error under the field, and nothing added.
      await directory.fill('backups');
      await section.getByRole('button', { name: 'Add destination' }).click();
      await waitFor(async () => (await directory.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Directory aria-invalid' });
      await waitFor(async () => /must be an absolute path/.test(await fieldError(directory)), 10_000, { message: "the server's answer under Directory" });
      const described = await describedError(directory);
      assert.match(described, /must be an absolute path/);
      assert.equal(await fieldError(directory), described);
      assert.equal(await section.locator('tr[data-destination="local"]').count(), 0);
      assert.deepEqual(await stored(), [], 'nothing stored for a relative path');

      // The absolute path: added, listed with its directory, made on disk.
      await directory.fill(dir);
      await section.getByRole('button', { name: 'Add destination' }).click();
      const row = section.locator('tr[data-destination="local"]');
      await row.waitFor({ timeout: 10_000 });
      assert.equal((await row.locator('code').innerText()).trim(), dir);
      await section.getByText(/^Added local\b/).waitFor();
      const [d] = await stored();
      assert.ok(d, 'the directory destination is stored');
      assert.equal(d.directory, dir);
      assert.equal(d.bucket ?? '', '', 'no bucket');
      assert.equal(d.endpoint ?? '', '', 'no endpoint');
      assert.ok(fs.statSync(dir).isDirectory(), 'the control plane made the directory');
      await assertAccessible(page, 'backups page with a directory destination');
      await page.context().close();
      fs.rmSync(tmp, { recursive: true, force: true });
    }),
  );

  it(
    "backs a customer's running subscription up with Back up now, shows its progress and COMPLETE, then restores it behind a Confirm",
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await register(page, f.cp.url, customer);
      const token = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
      subId = (await grpcurl(f.cp, 'minispod.v1.SubscriptionService/CreateSubscription', { serviceId: 'n8n', name: 'kept' }, token)).subscription.id;
      await open(page, `${f.cp.url}/subscriptions/${subId}`);
      await h1(page, 'kept').waitFor();
      const status = page.getByRole('region', { name: 'Overview' }).locator('dl.facts > div').filter({ has: page.getByRole('term').getByText('Status', { exact: true }) }).getByRole('definition');
      await waitFor(async () => (await status.innerText()).trim() === 'Running', 60_000, { message: 'RUNNING' });
      const c = card(page);
      await c.getByText('No backup yet.').waitFor();

      // Known files in the volume: 3 MiB of noise and a small file.
      const volume = volumeDir(root, 'kept-n8n-data');
      big = crypto.randomBytes(3 * 1024 * 1024);
      fs.writeFileSync(path.join(volume, 'database.sqlite'), big);
      fs.mkdirSync(path.join(volume, 'nodes'), { recursive: true });
      fs.writeFileSync(path.join(volume, 'nodes', 'flow.json'), '{"kept": true}\n');

      await c.getByRole('button', { name: 'Back up now' }).click();
      await c.getByText(/^Backup started/).waitFor();
      const row = c.locator('tr[data-backup]');
      await row.waitFor();
      assert.equal(await row.count(), 1);
      assert.equal((await row.locator('[data-trigger]').innerText()).trim(), 'On demand');
      // While it runs, the page shows its progress as it is polled: bytes
      // done of the total, then COMPLETE with its size.
      let sawProgress = '';
      await waitFor(
        async () => {
          const p = row.locator('[data-progress-text]');
          if (await p.count()) {
            const t = await p.innerText();
            if (/ of \d/.test(t)) sawProgress = t;
          }
          return (await row.locator('[data-status]').getAttribute('data-status')) === 'COMPLETE';
        },
        90_000,
        { intervalMs: 200, message: 'the backup to show COMPLETE' },
      );
      assert.match(sawProgress, /^[\d.]+ (B|KiB|MiB) of 3\.0 MiB/, `the progress was shown while it ran: ${sawProgress}`);
      assert.equal((await row.locator('[data-size]').innerText()).trim(), '3.0 MiB');
      assert.match(await row.locator('[data-added]').innerText(), /^\d/);
      const backups = (await grpcurl(f.cp, 'minispod.v1.BackupService/ListBackups', { subscriptionId: subId }, token)).backups;
      assert.equal(backups.length, 1);
      assert.equal(backups[0].status, 'BACKUP_STATUS_COMPLETE', 'the page shows what the server says');

      // The data is lost, then restored from the page.
      fs.writeFileSync(path.join(volume, 'database.sqlite'), 'broken');
      fs.rmSync(path.join(volume, 'nodes'), { recursive: true });
      await row.getByRole('button', { name: 'Restore', exact: true }).click();
      const dialog = page.getByRole('dialog', { name: /^Restore kept from the backup of / });
      await dialog.waitFor();
      assert.match(await dialog.innerText(), /Its pods stop, its volumes' files are replaced by this backup's, then it starts again\./);
      // Nothing happens until it is confirmed.
      assert.equal(fs.readFileSync(path.join(volume, 'database.sqlite'), 'utf8'), 'broken');
      await dialog.getByRole('button', { name: 'Restore' }).click();
      const panel = c.locator('[data-restore]');
      await panel.waitFor({ timeout: 10_000 });
      await waitFor(async () => (await panel.getAttribute('data-restore')) === 'COMPLETE', 90_000, { intervalMs: 200, message: `the restore to show COMPLETE: ${await panel.innerText().catch(() => '')}` });
      assert.match(await panel.innerText(), /Restore into this subscription: Complete\./);
      const now = volumeDir(root, 'kept-n8n-data');
      assert.ok(fs.readFileSync(path.join(now, 'database.sqlite')).equals(big), 'the big file is back byte for byte');
      assert.equal(fs.readFileSync(path.join(now, 'nodes', 'flow.json'), 'utf8'), '{"kept": true}\n');
      await waitFor(async () => (await status.innerText()).trim() === 'Running', 60_000, { message: 'RUNNING again after the restore' });
      await assertAccessible(page, 'subscription page with its backups');
    }),
  );

  it(
    'shows administrators every backup with its size, and keeps the Backups page from customers',
    TEST_TIMEOUT,
    f.t(async () => {
      assert.ok(subId, 'the previous test made a backup');
      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/backups`);
      const all = admin.locator('section[data-all-backups]');
      const row = all.locator('tr[data-backup]');
      await row.first().waitFor({ timeout: 10_000 });
      assert.equal(await row.count(), 1);
      assert.match(await row.innerText(), /kept/);
      assert.equal((await row.locator('[data-status]').getAttribute('data-status')), 'COMPLETE');
      assert.equal((await row.locator('[data-size]').innerText()).trim(), '3.0 MiB');
      await assertAccessible(admin, 'administrators\' backups page');
      await admin.context().close();

      const page = await f.page();
      await signIn(page, f.cp.url, { email: customer.email, password: customer.password });
      const nav = page.getByRole('navigation', { name: 'Main' });
      await nav.getByRole('link', { name: 'My services', exact: true }).waitFor();
      assert.equal(await nav.getByRole('link', { name: 'Backups' }).count(), 0, 'no Backups entry for a customer');
      await open(page, `${f.cp.url}/backups`);
      await h1(page, 'Not available').waitFor();
      assert.match(await page.locator('main').innerText(), /This page is for administrators/);
      assert.equal(await page.locator('section[data-destinations]').count(), 0);
      // And the server refuses the administrators' call to a customer.
      const token = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
      await assert.rejects(grpcurl(f.cp, 'minispod.v1.BackupService/ListBackupDestinations', {}, token), /PermissionDenied/);
      await page.context().close();

      // On a phone the backups' rows stack: the restore is in full view.
      const phone = await f.page({ phone: true });
      await signIn(phone, f.cp.url, { email: customer.email, password: customer.password });
      await open(phone, `${f.cp.url}/subscriptions/${subId}`);
      const restore = card(phone).locator('tr[data-backup]').getByRole('button', { name: 'Restore', exact: true });
      await assertReachable(phone, restore, 'Restore on a phone');
      const o = await horizontalOverflow(phone);
      assert.ok(!o.overflow, `the page fits the phone: ${o.offenders.join('; ')}`);
    }),
  );

  it(
    'shows a backup that failed with its reason, and offers no restore of it',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url, { email: customer.email, password: customer.password });
      const token = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
      const id = (await grpcurl(f.cp, 'minispod.v1.SubscriptionService/CreateSubscription', { serviceId: 'n8n', name: 'lost' }, token)).subscription.id;
      await open(page, `${f.cp.url}/subscriptions/${id}`);
      await h1(page, 'lost').waitFor();
      const c = card(page);
      await c.getByText('No backup yet.').waitFor({ timeout: 60_000 });
      const status = page.getByRole('region', { name: 'Overview' }).locator('dl.facts > div').filter({ has: page.getByRole('term').getByText('Status', { exact: true }) }).getByRole('definition');
      await waitFor(async () => (await status.innerText()).trim() === 'Running', 60_000, { message: 'RUNNING' });
      // The node's disk loses the volume's directory: the copy cannot be made.
      fs.rmSync(volumeDir(root, 'lost-n8n-data'), { recursive: true });
      await c.getByRole('button', { name: 'Back up now' }).click();
      const row = c.locator('tr[data-backup]');
      await row.waitFor();
      await waitFor(async () => (await row.locator('[data-status]').getAttribute('data-status')) === 'FAILED', 90_000, { intervalMs: 200, message: 'the backup to show FAILED' });
      const backup = (await grpcurl(f.cp, 'minispod.v1.BackupService/GetBackup', { id: await row.getAttribute('data-backup') }, token)).backup;
      assert.equal(backup.status, 'BACKUP_STATUS_FAILED');
      assert.ok(backup.reason, 'the server gives a reason');
      assert.equal((await row.locator('[data-reason]').innerText()).trim(), backup.reason, 'the page shows the reason');
      assert.equal(await row.getByRole('button').count(), 0, 'no restore of a failed backup');
      assert.equal((await row.locator('[data-added]').innerText()).trim(), '—');
      // The pods start again after a failed backup too.
      await waitFor(async () => (await status.innerText()).trim() === 'Running', 60_000, { message: 'RUNNING again after the failed backup' });
    }),
  );

  /** The customer's subscription page of kept, signed in. */
  async function openKept() {
    const page = await f.page();
    await signIn(page, f.cp.url, { email: customer.email, password: customer.password });
    await open(page, `${f.cp.url}/subscriptions/${subId}`);
    await h1(page, 'kept').waitFor();
    const row = card(page).locator('tr[data-backup]').filter({ has: page.locator('[data-status="COMPLETE"]') }).first();
    await row.waitFor({ timeout: 10_000 });
    return { page, row };
  }

  /** The customer's subscriptions' names, from the server. */
  async function customerSubscriptions() {
    const token = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
    return ((await grpcurl(f.cp, 'minispod.v1.SubscriptionService/ListSubscriptions', {}, token)).subscriptions ?? []).map((s) => s.name);
  }

  it(
    "downloads a volume of a complete backup as a tar holding the volume's files byte for byte, through a link that works once",
    TEST_TIMEOUT,
    f.t(async () => {
      assert.ok(subId && big.length, 'the backup test made a backup of known files');
      const { page, row } = await openKept();
      // One download per volume of the backup; kept (n8n) has one.
      assert.deepEqual(await row.locator('[data-download]').evaluateAll((bs) => bs.map((b) => b.textContent)), ['Download kept-n8n-data']);
      const [download] = await Promise.all([page.waitForEvent('download', { timeout: 60_000 }), row.getByRole('button', { name: 'Download kept-n8n-data', exact: true }).click()]);
      assert.match(download.suggestedFilename(), /^kept-kept-n8n-data-.+\.tar$/, download.suggestedFilename());
      const dir = fs.mkdtempSync('/tmp/minispod-download-');
      const tar = path.join(dir, 'volume.tar');
      await download.saveAs(tar);
      assert.equal(await download.failure(), null, 'the download completed');
      const out = path.join(dir, 'out');
      fs.mkdirSync(out);
      execFileSync('tar', ['-xf', tar, '-C', out]);
      const files = filesUnder(out);
      const db = files.filter((p) => path.basename(p) === 'database.sqlite');
      assert.equal(db.length, 1, `one database.sqlite in the archive: ${files.join(', ')}`);
      assert.ok(fs.readFileSync(path.join(out, db[0])).equals(big), 'the 3 MiB file is in the archive byte for byte');
      const flow = files.filter((p) => p.endsWith(path.join('nodes', 'flow.json')));
      assert.equal(flow.length, 1, `nodes/flow.json in the archive: ${files.join(', ')}`);
      assert.equal(fs.readFileSync(path.join(out, flow[0]), 'utf8'), '{"kept": true}\n');
      await card(page).getByText(/^Downloading kept-n8n-data of the backup of /).waitFor();
      // The link was the credential, and it is spent.
      assert.match(new URL(download.url()).pathname, /^\/downloads\/[0-9a-f]{64}$/);
      assert.equal(await httpGetStatus(f.cp, download.url()), 404, 'a used link does not download again');
      fs.rmSync(dir, { recursive: true, force: true });
      await page.context().close();
    }),
  );

  it(
    'tries a restore drill of a complete backup from the page and shows it COMPLETE, leaving the subscription as it is',
    TEST_TIMEOUT,
    f.t(async () => {
      const { page, row } = await openKept();
      const volume = volumeDir(root, 'kept-n8n-data');
      fs.writeFileSync(path.join(volume, 'written-after.txt'), 'after the backup\n');
      await row.getByRole('button', { name: 'Try a restore drill', exact: true }).click();
      const panel = card(page).locator('[data-drill]');
      await panel.waitFor({ timeout: 10_000 });
      await waitFor(async () => ['COMPLETE', 'FAILED'].includes(await panel.getAttribute('data-restore')), 150_000, {
        intervalMs: 250,
        message: `the drill to end: ${await panel.innerText().catch(() => '')}`,
      });
      const text = await panel.innerText();
      assert.equal(await panel.getAttribute('data-restore'), 'COMPLETE', text);
      assert.match(text, /^Restore drill of the backup of .+: Complete\./);
      // The drill's scratch copy is deleted; kept keeps what it holds now.
      await waitFor(async () => !(await customerSubscriptions()).some((n) => n.startsWith('drill-')), 60_000, { message: 'the drill\'s scratch subscription gone' });
      assert.equal(volumeDir(root, 'kept-n8n-data'), volume, 'kept keeps its volume');
      assert.equal(fs.readFileSync(path.join(volume, 'written-after.txt'), 'utf8'), 'after the backup\n', 'the drill did not restore into kept');
      assert.ok(fs.readFileSync(path.join(volume, 'database.sqlite')).equals(big));
      await page.context().close();
    }),
  );

  it(
    'keeps the weekly restore drill turned on in the schedule after a reload, and shows when the first one started',
    TEST_TIMEOUT,
    f.t(async () => {
      const { page } = await openKept();
      const form = page.locator('form[data-schedule]');
      const drillBox = form.getByRole('checkbox', { name: 'Try a restore of the newest backup weekly' });
      assert.equal(await drillBox.count(), 0, 'no weekly drill without the daily backup');
      await form.getByRole('checkbox', { name: 'Back up every day' }).check();
      await drillBox.check();
      await form.getByRole('button', { name: 'Save schedule' }).click();
      await form.getByText('Schedule saved.').waitFor();
      await page.reload();
      await h1(page, 'kept').waitFor();
      await waitFor(async () => (await drillBox.count()) === 1 && (await drillBox.isChecked()), 10_000, { message: 'the weekly drill checked after a reload' });
      assert.equal(await form.getByRole('checkbox', { name: 'Back up every day' }).isChecked(), true);
      const token = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
      const schedule = (await grpcurl(f.cp, 'minispod.v1.BackupService/GetBackupSchedule', { subscriptionId: subId }, token)).schedule;
      assert.equal(schedule.enabled, true);
      assert.equal(schedule.weeklyDrill, true, 'the server stored the weekly drill');
      // Never tried before, the first weekly drill is due at once; the page
      // shows when it started.
      const last = form.locator('[data-last-drill]');
      await waitFor(
        async () => {
          await page.reload();
          await last.waitFor();
          return !/not yet/.test(await last.innerText());
        },
        30_000,
        { intervalMs: 1000, message: 'the first weekly drill shown' },
      );
      assert.match(await last.innerText(), /^Last weekly drill: \d/);
      // Its scratch copy comes and goes; the next test starts without it.
      await waitFor(async () => !(await customerSubscriptions()).some((n) => n.startsWith('drill-')), 150_000, { intervalMs: 1000, message: 'the weekly drill\'s scratch subscription gone' });
      await page.context().close();
    }),
  );

  it(
    'deletes a subscription with "Back it up first" only once a BEFORE_DELETE backup of it completes',
    TEST_TIMEOUT,
    f.t(async () => {
      const { page } = await openKept();
      await page.getByRole('main').getByRole('button', { name: 'Delete', exact: true }).click();
      const dialog = page.getByRole('dialog', { name: 'Delete kept?' });
      await dialog.getByRole('checkbox', { name: 'Back it up first' }).check();
      await dialog.getByLabel('Type kept to confirm').fill('kept');
      await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
      await page.getByText('Backing up; the subscription is deleted once the backup completes.', { exact: false }).waitFor();
      const token = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
      const before = ((await grpcurl(f.cp, 'minispod.v1.BackupService/ListBackups', { subscriptionId: subId }, token)).backups ?? []).filter((b) => b.trigger === 'BACKUP_TRIGGER_BEFORE_DELETE');
      assert.equal(before.length, 1, 'one backup before deleting');
      // The card shows it, labelled, while the subscription is still there.
      const row = card(page).locator(`tr[data-backup="${before[0].id}"]`);
      await row.waitFor({ timeout: 10_000 });
      assert.equal((await row.locator('[data-trigger]').innerText()).trim(), 'Before deleting');
      // It completes, then the subscription goes.
      await waitFor(async () => (await grpcurl(f.cp, 'minispod.v1.BackupService/GetBackup', { id: before[0].id }, token)).backup.status === 'BACKUP_STATUS_COMPLETE', 90_000, { intervalMs: 500, message: 'the backup before deleting COMPLETE' });
      await page.getByText('This subscription has been deleted.').waitFor({ timeout: 60_000 });
      await waitFor(async () => !(await customerSubscriptions()).includes('kept'), 60_000, { message: 'kept gone' });
      await open(page, `${f.cp.url}/my-services`);
      await h1(page, 'My services').waitFor();
      await page.locator('tr[data-subscription="lost"]').waitFor();
      assert.equal(await page.locator('tr[data-subscription="kept"]').count(), 0, 'kept is gone from My services');
      // Its backups outlive it: the administrators' page lists this one, labelled.
      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/backups`);
      const adminRow = admin.locator(`section[data-all-backups] tr[data-backup="${before[0].id}"]`);
      await adminRow.waitFor({ timeout: 10_000 });
      assert.match(await adminRow.innerText(), /Before deleting/);
      assert.equal(await adminRow.locator('[data-status]').getAttribute('data-status'), 'COMPLETE');
    }),
  );

  it(
    'says a one-way upgrade backs up first, stays on its version when that backup fails, and upgrades once it completes',
    TEST_TIMEOUT,
    f.t(async () => {
      const adminToken = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD })).accessToken;
      const newest = (await grpcurl(f.cp, 'minispod.v1.CatalogService/ListServiceVersions', { serviceId: 'n8n' }, adminToken)).versions[0];
      await grpcurl(f.cp, 'minispod.v1.CatalogService/PublishServiceVersion', { serviceId: 'n8n', version: '2.0.0', notes: 'Migrates the database.', template: newest.template, oneWay: true }, adminToken);
      const token = (await grpcurl(f.cp, 'minispod.v1.AuthService/Login', { email: customer.email, password: customer.password })).accessToken;
      const id = (await grpcurl(f.cp, 'minispod.v1.SubscriptionService/CreateSubscription', { serviceId: 'n8n', name: 'moving', version: newest.version }, token)).subscription.id;
      const page = await f.page();
      await signIn(page, f.cp.url, { email: customer.email, password: customer.password });
      await open(page, `${f.cp.url}/subscriptions/${id}`);
      await h1(page, 'moving').waitFor();
      const fact = (term) => page.getByRole('region', { name: 'Overview' }).locator('dl.facts > div').filter({ has: page.getByRole('term').getByText(term, { exact: true }) }).getByRole('definition');
      await waitFor(async () => (await fact('Status').innerText()).trim() === 'Running', 60_000, { message: 'RUNNING' });
      const versionCard = page.locator('section[data-upgrade]');
      const upgrade = async () => {
        await versionCard.getByText('Update available: 2.0.0').waitFor();
        await versionCard.getByRole('button', { name: 'Upgrade to 2.0.0' }).click();
        const dialog = page.getByRole('dialog', { name: 'Upgrade moving to 2.0.0?' });
        await dialog.waitFor();
        assert.equal((await dialog.locator('[data-backup-first]').innerText()).trim(), `A backup of version ${newest.version} is taken first; the upgrade starts once it completes.`);
        await dialog.getByRole('button', { name: 'Upgrade', exact: true }).click();
      };

      // First the node's disk has lost the volume's directory: the backup
      // fails, the card says so, and the subscription stays on its version.
      const volume = volumeDir(root, 'moving-n8n-data');
      fs.rmSync(volume, { recursive: true });
      await upgrade();
      const failed = versionCard.locator('[data-backup-failed]');
      await failed.waitFor({ timeout: 90_000 });
      assert.match(await failed.innerText(), /^The backup before the upgrade to 2\.0\.0 failed, so the upgrade was not done: \S/);
      const first = (await grpcurl(f.cp, 'minispod.v1.BackupService/ListBackups', { subscriptionId: id }, token)).backups;
      assert.equal(first.length, 1);
      assert.equal(first[0].status, 'BACKUP_STATUS_FAILED');
      await waitFor(async () => (await fact('Status').innerText()).trim() === 'Running', 60_000, { message: 'RUNNING again after the failed backup' });
      assert.equal((await fact('Version').innerText()).trim(), newest.version, 'still on its version');

      // The directory is back with the app's data: the next try backs up and upgrades.
      fs.mkdirSync(volume);
      fs.writeFileSync(path.join(volume, 'database.sqlite'), crypto.randomBytes(64 * 1024));
      await upgrade();
      // The card says the upgrade waits; the Backups card shows the backup, labelled.
      const waiting = versionCard.locator('[data-backing-up]');
      await waiting.waitFor({ timeout: 10_000 });
      assert.match(await waiting.innerText(), new RegExp(`^Backing up version ${newest.version.replace(/[.]/g, '\\.')} first\\. The upgrade to 2\\.0\\.0 starts once the backup completes`));
      assert.equal(await failed.count(), 0, 'the failure of the first try is no longer shown');
      const backup = ((await grpcurl(f.cp, 'minispod.v1.BackupService/ListBackups', { subscriptionId: id }, token)).backups ?? []).find((b) => b.trigger === 'BACKUP_TRIGGER_BEFORE_UPGRADE' && b.id !== first[0].id);
      assert.ok(backup, 'a backup before the upgrade');
      assert.equal(backup.upgradeTo, '2.0.0');
      const row = card(page).locator(`tr[data-backup="${backup.id}"]`);
      await row.waitFor({ timeout: 10_000 });
      assert.equal((await row.locator('[data-trigger]').innerText()).trim(), 'Before the upgrade to 2.0.0');
      // It completes, then the upgrade runs to the new version.
      await waitFor(async () => (await row.locator('[data-status]').getAttribute('data-status')) === 'COMPLETE', 90_000, { intervalMs: 250, message: 'the backup before the upgrade COMPLETE' });
      await waitFor(async () => (await fact('Version').innerText()).trim() === '2.0.0', 60_000, { message: 'version 2.0.0 once the backup completed' });
      await waitFor(async () => (await fact('Status').innerText()).trim() === 'Running', 60_000, { message: 'RUNNING on 2.0.0' });
      assert.equal(await waiting.count(), 0, 'the waiting notice is gone once the upgrade started');
      await page.context().close();
    }),
  );
});
