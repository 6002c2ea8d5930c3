// Chromium tests of the web console: the fleet: the live table, history charts, enrollment, a worker's page, the cluster link, a control-plane restart under an open fleet page.
// Shared set-up in ./common.mjs; run with
//   cd web && node --test --test-concurrency=1 tests/console/fleet.test.mjs
// (CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches).

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, it } from 'node:test';

import {
  assertAccessible,
  launchBrowser,
  screenshot,
  sleep,
  startAgent,
  startAgentFromCommand,
  startControlPlane,
  waitFor,
} from '../harness.mjs';
import {
  assertSameDocument,
  createTokenInConsole,
  describe,
  describedError,
  fact,
  fixture,
  h1,
  linkBadge,
  markDocument,
  note,
  open,
  reload,
  signIn,
  startKubeStandin,
  TEST_TIMEOUT,
  waitRowStatus,
  workerRow,
} from './common.mjs';

// ---------------------------------------------------------------------------
// 2. The live fleet: an agent joins, then dies.

describe('live fleet', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane({ enrollmentToken: true });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'shows a joining agent ACTIVE and, after kill -9, INACTIVE without a reload',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/workers`);
      await h1(page, 'Fleet').waitFor();
      await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'badge Live' });
      await markDocument(page);

      const name = 'fleet-kill9';
      const agent = startAgent(f.cp, { token: f.cp.enrollmentToken, name });
      f.agents.push(agent);
      const tStart = Date.now();
      await waitRowStatus(page, name, 'ACTIVE');
      note(`agent ${name} appeared ACTIVE on the fleet page ${Date.now() - tStart} ms after its start`);
      const row = workerRow(page, name);
      assert.equal(await row.getByRole('link', { name }).count(), 1);
      // One worker, in the singular.
      await page.getByText('1 of 1 worker', { exact: true }).waitFor();

      // Record, in the page, when the row's status changes.
      await page.evaluate((n) => {
        const w = /** @type {any} */ (window);
        w.__statusLog = [];
        const check = () => {
          const s = document.querySelector(`[role="row"][data-worker="${n}"]`)?.getAttribute('data-status') ?? null;
          if (w.__statusLog.at(-1)?.s !== s) w.__statusLog.push({ s, t: Date.now() });
        };
        check();
        new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true });
      }, name);

      const tKill = Date.now();
      const r = await agent.kill9();
      assert.equal(r.signal, 'SIGKILL');
      await page.waitForFunction(
        () => /** @type {any} */ (window).__statusLog.some((e) => e.s === 'INACTIVE'),
        undefined,
        { timeout: 30_000 },
      );
      const log = await page.evaluate(() => /** @type {any} */ (window).__statusLog);
      const inactiveAt = log.find((e) => e.s === 'INACTIVE').t;
      const ms = inactiveAt - tKill;
      note(`kill -9 → row INACTIVE on the fleet page: ${ms} ms (status log ${JSON.stringify(log.map((e) => e.s))})`);
      await waitRowStatus(page, name, 'INACTIVE', 5_000);
      assert.equal(await row.getByText('offline', { exact: true }).count(), 1, 'the row does not say offline');
      await assertSameDocument(page, 'kill -9');
      assert.ok(ms < 10_000, `INACTIVE took ${ms} ms`);
      if (ms > 2_000) note(`WARNING: kill -9 → INACTIVE took ${ms} ms (expected < 2 s)`);
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// History charts (issue #23): a real agent reports; its page charts it.

describe('history charts', () => {
  const f = fixture();
  const name = 'history-worker';
  before(async () => {
    // 1 s history steps, so a 6 h chart (15 s points) fills in seconds.
    f.cp = await startControlPlane({
      enrollmentToken: true,
      args: ['--history-fine-step', '1s', '--history-coarse-step', '60s', '--metrics-flush-interval', '500ms'],
    });
    f.browser = await launchBrowser(f.cp.caPath);
    f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
  });
  after(() => f.close());

  it(
    "draws a reporting worker's CPU, memory and disk on its page, with the figures as a table, and the fleet's on the dashboard",
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/workers`);
      const row = await waitRowStatus(page, name, 'ACTIVE');
      await row.getByRole('link', { name }).click();
      await h1(page, name).waitFor();
      const history = page.getByRole('region', { name: 'Use over time' });
      await history.waitFor();
      assert.equal(await history.getByRole('button', { name: '6 h' }).getAttribute('aria-pressed'), 'true');
      const cpu = history.getByRole('img', { name: 'This worker: CPU in use' });
      // The chart asks again every step (15 s here) without a reload.
      const tStart = Date.now();
      await waitFor(async () => Number(await cpu.getAttribute('data-points')) > 0, 90_000, { message: 'the CPU chart shows points' });
      note(`first history point on the worker page ${Date.now() - tStart} ms after the worker was ACTIVE`);
      const line = cpu.locator('path.line');
      assert.match((await line.getAttribute('d')) ?? '', /^M[\d.]+,[\d.]+/, 'the line is drawn');
      const summary = await history.locator('.chart-summary').first().innerText();
      assert.match(summary, /^CPU in use: mean [\d.]+ %, peak [\d.]+ % at .+, latest [\d.]+ % at .+\.$/, summary);
      for (const chart of ['This worker: memory in use', 'This worker: disk in use']) {
        assert.ok(Number(await history.getByRole('img', { name: chart }).getAttribute('data-points')) > 0, chart);
      }
      // The text alternative: the figures as a table, drawn when opened.
      await history.getByText('Show the figures').first().click();
      const table = history.getByRole('table', { name: 'This worker: CPU in use' });
      await table.waitFor();
      assert.ok((await table.getByRole('row').count()) >= 2, 'a header and a row');
      await assertAccessible(page, 'worker page with history charts');

      // Another range asks the server again (30 d: from the coarse points).
      await history.getByRole('button', { name: '30 d' }).click();
      await waitFor(async () => (await history.getByRole('button', { name: '30 d' }).getAttribute('aria-pressed')) === 'true', 5_000);
      await history.getByRole('img', { name: 'This worker: CPU in use' }).waitFor();

      await open(page, `${f.cp.url}/`);
      await h1(page, 'Dashboard').waitFor();
      const fleet = page.getByRole('region', { name: 'Fleet use over time' });
      await waitFor(async () => Number(await fleet.getByRole('img', { name: 'The fleet: CPU in use' }).getAttribute('data-points')) > 0, 30_000, { message: "the fleet's CPU chart shows points" });
      await fleet.getByText(/^1 worker reporting in the latest step/).waitFor();
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 3 and 4. Enrollment through the console; the worker's own page.

describe('enrollment and worker detail', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane();
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'creates a token, copies the join command, and the agent it starts joins',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: f.cp.url });
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/enrollment`);
      await h1(page, 'Enrollment tokens').waitFor();
      const description = 'rack 7, joined by paste';
      await page.getByLabel('Description').fill(description);
      await page.getByLabel('Valid for (hours)').fill('2');
      await page.getByLabel('Max uses').fill('1');
      await page.getByRole('button', { name: 'Create token' }).click();
      const area = page.getByLabel('Join command');
      await area.waitFor();
      const command = await area.inputValue();
      note(`join command: ${command.replace(/--token '[^']*'/, "--token '…'").replace(/\s*\\\n\s*/g, ' ')}`);
      assert.match(command, /^minispod-agent run --server /);
      assert.ok(command.includes(`--server '${f.cp.url}'`), command);
      assert.ok(command.includes(`--ca-hash '${f.cp.caHash}'`), command);
      const token = await page.getByLabel('Token', { exact: true }).inputValue();
      assert.ok(token.length >= 16 && command.includes(token), 'the command holds the token shown');

      await page.getByRole('button', { name: 'Copy join command' }).click();
      await page.getByRole('status').filter({ hasText: 'Join command copied to the clipboard.' }).waitFor();
      const clip = await page.evaluate(() => navigator.clipboard.readText());
      assert.equal(clip, command);

      // The new token is listed, unused.
      const tokenRow = page.getByRole('row').filter({ hasText: description });
      await tokenRow.waitFor();
      assert.ok(await tokenRow.getByRole('cell', { name: '0 of 1', exact: true }).isVisible());

      const name = 'pasted-join';
      const agent = startAgentFromCommand(clip, { name });
      f.agents.push(agent);
      await open(page, `${f.cp.url}/workers`);
      await h1(page, 'Fleet').waitFor();
      await waitRowStatus(page, name, 'ACTIVE');

      // The token has been used: it leaves the default list (used up) and
      // shows "1 of 1" among the inactive ones.
      await open(page, `${f.cp.url}/enrollment`);
      await h1(page, 'Enrollment tokens').waitFor();
      await page.getByRole('row').filter({ hasText: /No tokens\.|rack/ }).first().waitFor();
      assert.equal(await tokenRow.count(), 0, 'a used-up token is still in the default list');
      await page.getByLabel('Show revoked, expired and used up').check();
      await tokenRow.waitFor();
      assert.ok(await tokenRow.getByRole('cell', { name: '1 of 1', exact: true }).isVisible(), await tokenRow.innerText());
      assert.ok(await tokenRow.getByRole('cell', { name: 'Used up', exact: true }).isVisible(), await tokenRow.innerText());
      await page.context().close();
    }),
  );

  it(
    'cordons, puts in maintenance, edits and deletes a worker on its page',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      const { command } = await createTokenInConsole(page, f.cp.url, { description: 'detail test', maxUses: '1' });
      const name = 'detail-worker';
      const agent = startAgentFromCommand(command, { name });
      f.agents.push(agent);

      await open(page, `${f.cp.url}/workers`);
      const row = await waitRowStatus(page, name, 'ACTIVE');
      await row.getByRole('link', { name, exact: true }).click();
      await h1(page, name).waitFor();
      assert.match(new URL(page.url()).pathname, /^\/workers\/[^/]+$/);
      assert.equal(await fact(page, 'Status').innerText(), 'Active');
      assert.equal(await fact(page, 'Cordoned').innerText(), 'no');

      await page.getByRole('button', { name: 'Cordon', exact: true }).click();
      await page.getByRole('button', { name: 'Uncordon', exact: true }).waitFor();
      await waitFor(async () => (await fact(page, 'Cordoned').innerText()) === 'yes', 10_000, { message: 'Cordoned yes' });
      assert.equal(await fact(page, 'Schedulable').innerText(), 'no');

      await page.getByRole('button', { name: 'Start maintenance' }).click();
      await page.getByRole('button', { name: 'End maintenance' }).waitFor();
      await waitFor(async () => (await fact(page, 'Status').innerText()) === 'Maintenance', 10_000, { message: 'Status MAINTENANCE' });

      const notes = 'Rack 4, slot 2.\nDisk swapped on Monday.';
      await page.getByLabel('Notes', { exact: true }).fill(notes);
      await page.getByLabel('Labels', { exact: true }).fill('zone=eu-west\ntier=gold');
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await page.getByRole('status').filter({ hasText: 'Saved labels, taints and notes.' }).waitFor();

      await reload(page);
      await h1(page, name).waitFor();
      await waitFor(async () => (await page.getByLabel('Notes', { exact: true }).inputValue()) === notes, 10_000, { message: 'notes persisted' });
      const labels = (await page.getByLabel('Labels', { exact: true }).inputValue()).split('\n').sort();
      assert.deepEqual(labels, ['tier=gold', 'zone=eu-west']);
      assert.equal(await fact(page, 'Cordoned').innerText(), 'yes');
      assert.equal(await fact(page, 'Status').innerText(), 'Maintenance');
      await page.getByRole('button', { name: 'Uncordon', exact: true }).waitFor();

      // The fleet table shows the labels and the maintenance status too.
      await page.getByRole('link', { name: 'Fleet', exact: true }).first().click();
      const fleetRow = await waitRowStatus(page, name, 'MAINTENANCE');
      assert.ok(await fleetRow.getByText('zone=eu-west', { exact: true }).isVisible());
      assert.ok(await fleetRow.getByText('cordoned', { exact: true }).isVisible());
      await fleetRow.getByRole('link', { name, exact: true }).click();
      await h1(page, name).waitFor();

      await page.getByRole('button', { name: 'Delete worker' }).click();
      const dialog = page.getByRole('dialog', { name: `Delete ${name}?` });
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Delete', exact: true }).click();
      await h1(page, 'Fleet').waitFor();
      assert.equal(new URL(page.url()).pathname, '/workers');
      await waitFor(async () => (await workerRow(page, name).count()) === 0, 10_000, { message: 'row gone' });
      // The agent is cut off and its one-use token is spent: it does not come back.
      await sleep(3_000);
      assert.equal(await workerRow(page, name).count(), 0, 'the deleted worker came back');
      await page.context().close();
    }),
  );

  it(
    "shows a reinstalled machine on its worker's page and approves its takeover: the same worker, the new machine",
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      const name = 'reinstalled-host';
      const before = await createTokenInConsole(page, f.cp.url, { description: 'before the reinstall', maxUses: '1' });
      const old = startAgentFromCommand(before.command, { name, machineId: 'machine-before' });
      f.agents.push(old);
      await open(page, `${f.cp.url}/workers`);
      const row = await waitRowStatus(page, name, 'ACTIVE');
      await row.getByRole('link', { name, exact: true }).click();
      await h1(page, name).waitFor();
      const workerUrl = page.url();
      const factIs = (term, value, timeoutMs = 20_000) =>
        waitFor(async () => (await fact(page, term).innerText()) === value, timeoutMs, { message: `${term} ${value}` });
      await page.getByLabel('Labels', { exact: true }).fill('rack=r7');
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await page.getByRole('status').filter({ hasText: 'Saved labels, taints and notes.' }).waitFor();
      await old.stop();
      await factIs('Status', 'Inactive');

      // Reinstalled: a new machine id, the same host name, a new token.
      const after = await createTokenInConsole(page, f.cp.url, { description: 'after the reinstall', maxUses: '1' });
      const fresh = startAgentFromCommand(`${after.command} --max-backoff 1s`, { name, machineId: 'machine-after' });
      f.agents.push(fresh);
      await open(page, workerUrl);
      await h1(page, name).waitFor();
      const banner = page.getByRole('status').filter({ hasText: 'Another machine asks to be this worker' });
      await banner.waitFor({ timeout: 30_000 });
      assert.ok((await banner.innerText()).includes('machine-after'), await banner.innerText());
      await waitFor(async () => fresh.log().includes('WORKER_NAME_TAKEN'), 20_000, { message: 'the agent logs the refusal' });
      assert.match(fresh.log(), /ApproveWorkerTakeover/);

      await banner.getByRole('button', { name: 'Approve takeover' }).click();
      const dialog = page.getByRole('dialog', { name: `Give ${name} to machine machine-after?` });
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Approve takeover', exact: true }).click();
      await page.getByRole('status').filter({ hasText: 'Takeover approved: machine machine-after' }).waitFor();
      // The agent asks again by itself and becomes this worker.
      await factIs('Machine id', 'machine-after', 30_000);
      await factIs('Status', 'Active', 30_000);
      assert.equal(new URL(page.url()).pathname, new URL(workerUrl).pathname, 'the same worker');
      assert.equal(await page.getByLabel('Labels', { exact: true }).inputValue(), 'rack=r7');
      assert.equal(await banner.count(), 0, 'no takeover pending any more');
      await open(page, `${f.cp.url}/workers`);
      await waitRowStatus(page, name, 'ACTIVE');
      assert.equal(await workerRow(page, name).count(), 1, 'one worker of that name');
      await page.context().close();
    }),
  );

  it(
    'revokes a token: it leaves the active list, shows "revoked", and an agent with it does not join',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await createTokenInConsole(page, f.cp.url, { description: 'kept token', maxUses: '3' });
      const revoked = await createTokenInConsole(page, f.cp.url, { description: 'revoked token', maxUses: '3' });
      const tokenRow = (d) => page.getByRole('row').filter({ has: page.getByRole('cell', { name: d, exact: true }) });
      const stateCell = (d) => tokenRow(d).getByRole('cell').nth(4);
      await tokenRow('kept token').waitFor();
      await tokenRow('revoked token').waitFor();
      assert.equal(await stateCell('revoked token').innerText(), 'Active');

      await page.getByRole('button', { name: 'Revoke revoked token', exact: true }).click();
      const revoking = page.getByRole('dialog', { name: 'Revoke revoked token?' });
      assert.match(await revoking.innerText(), /already enrolled with it keep working/);
      await revoking.getByRole('button', { name: 'Revoke', exact: true }).click();
      await page.getByRole('status').filter({ hasText: 'Revoked revoked token: it enrolls no more agents.' }).waitFor();
      await waitFor(async () => (await tokenRow('revoked token').count()) === 0, 10_000, { message: 'the revoked token left the active list' });
      assert.equal(await tokenRow('kept token').count(), 1, 'the other token left the list too');
      assert.equal(await stateCell('kept token').innerText(), 'Active');
      assert.ok(await page.getByRole('button', { name: 'Revoke kept token', exact: true }).isEnabled());
      assert.equal(await page.getByRole('alert').count(), 0, 'an error banner after revoking');

      await page.getByLabel('Show revoked, expired and used up').check();
      await tokenRow('revoked token').waitFor();
      assert.equal(await stateCell('revoked token').innerText(), 'Revoked');
      assert.equal(await tokenRow('revoked token').getByRole('button').count(), 0, 'a revoked token still has a Revoke button');
      assert.equal(await stateCell('kept token').innerText(), 'Active');
      // Persisted: after a reload the default list still leaves it out.
      await reload(page);
      await tokenRow('kept token').waitFor();
      assert.equal(await tokenRow('revoked token').count(), 0, 'the revoked token is back in the active list after a reload');

      // An agent run with the revoked token's join command is refused.
      await open(page, `${f.cp.url}/workers`);
      await h1(page, 'Fleet').waitFor();
      await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'badge Live' });
      const name = 'revoked-join';
      const tStart = Date.now();
      const agent = startAgentFromCommand(revoked.command, { name });
      f.agents.push(agent);
      await waitFor(() => /enrollment token was revoked/.test(agent.log()), 30_000, { message: 'the agent logs "enrollment token was revoked"' });
      // `run` does not exit: it waits, slowly, for a new token (a file an
      // operator can drop in), and never sends the refused one again.
      const exit = await Promise.race([agent.exited, sleep(5_000).then(() => undefined)]);
      note(`agent with a revoked token: ${exit ? `exited with code ${exit.code}` : 'still waiting 5 s after the refusal'}; log: ${JSON.stringify(agent.log().split('\n').filter((l) => !l.startsWith('[harness]') && /revoked|refused/.test(l)).slice(0, 2))}`);
      if (exit) assert.notEqual(exit.code, 0);
      assert.match(agent.log(), /enrollment refused/);
      const refusedEnrolls = f.cp.log().split('\n').filter((l) => /AgentService\/Enroll .*code=UNAUTHENTICATED/.test(l)).length;
      assert.equal(refusedEnrolls, 1, 'the refused token was sent again');
      // Give a row ~5 s from the start to appear, which it must not.
      await sleep(Math.max(0, 5_000 - (Date.now() - tStart)));
      assert.equal(await workerRow(page, name).count(), 0, 'a worker joined with a revoked token');
      await page.context().close();
    }),
  );

  it(
    'saves taints, uncordons, and ends maintenance (ACTIVE again) while the agent is connected',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      const { command } = await createTokenInConsole(page, f.cp.url, { description: 'taints test', maxUses: '1' });
      const name = 'taint-worker';
      f.agents.push(startAgentFromCommand(command, { name }));
      await open(page, `${f.cp.url}/workers`);
      const row = await waitRowStatus(page, name, 'ACTIVE');
      await row.getByRole('link', { name, exact: true }).click();
      await h1(page, name).waitFor();
      const factIs = (term, value, timeoutMs = 10_000) =>
        waitFor(async () => (await fact(page, term).innerText()) === value, timeoutMs, { message: `${term} ${value}` });
      await factIs('Status', 'Active');
      assert.equal(await fact(page, 'Schedulable').innerText(), 'yes');

      await page.getByRole('button', { name: 'Cordon', exact: true }).click();
      await page.getByRole('button', { name: 'Uncordon', exact: true }).waitFor();
      await factIs('Schedulable', 'no');
      await page.getByRole('button', { name: 'Start maintenance' }).click();
      await page.getByRole('button', { name: 'End maintenance' }).waitFor();
      await factIs('Status', 'Maintenance');

      // A bad effect: the server's error under the field.
      const taints = page.getByLabel('Taints', { exact: true });
      await taints.fill('dedicated=gpu:Sometimes');
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await waitFor(async () => (await taints.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Taints aria-invalid' });
      assert.match(await describedError(taints), /must be NoSchedule, PreferNoSchedule or NoExecute/);

      const wanted = ['dedicated=gpu:NoSchedule', 'experimental:PreferNoSchedule', 'maintenance=disk:NoExecute'];
      await taints.fill(wanted.join('\n'));
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await page.getByRole('status').filter({ hasText: 'Saved labels, taints and notes.' }).waitFor();
      assert.equal(await taints.getAttribute('aria-invalid'), null, 'Taints still marked invalid');

      const taintLines = async () => (await taints.inputValue()).split('\n').filter(Boolean).sort();
      const taintsAre = async (what) => {
        let last = [];
        await waitFor(
          async () => {
            last = await taintLines();
            return JSON.stringify(last) === JSON.stringify([...wanted].sort());
          },
          10_000,
          { message: `${what}: taints ${JSON.stringify(wanted)}` },
        ).catch((e) => {
          e.message += `; the field holds ${JSON.stringify(last)}`;
          throw e;
        });
      };
      await reload(page);
      await h1(page, name).waitFor();
      await taintsAre('after a reload');
      assert.equal(await fact(page, 'Status').innerText(), 'Maintenance');

      // End maintenance: the connected worker is ACTIVE again (still cordoned).
      await page.getByRole('button', { name: 'End maintenance' }).click();
      await page.getByRole('button', { name: 'Start maintenance' }).waitFor();
      await factIs('Status', 'Active');
      assert.equal(await fact(page, 'Online').innerText(), 'yes');
      assert.equal(await fact(page, 'Schedulable').innerText(), 'no', 'schedulable while cordoned');

      // Uncordon: schedulable again.
      await page.getByRole('button', { name: 'Uncordon', exact: true }).click();
      await page.getByRole('button', { name: 'Cordon', exact: true }).waitFor();
      await factIs('Cordoned', 'no');
      await factIs('Schedulable', 'yes');

      await reload(page);
      await h1(page, name).waitFor();
      await factIs('Status', 'Active');
      assert.equal(await fact(page, 'Cordoned').innerText(), 'no');
      assert.equal(await fact(page, 'Schedulable').innerText(), 'yes');
      await taintsAre('after uncordon and end of maintenance');

      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Fleet' }).click();
      const fleetRow = await waitRowStatus(page, name, 'ACTIVE');
      assert.equal(await fleetRow.getByText('cordoned', { exact: true }).count(), 0, 'the fleet row still says cordoned');
      await page.context().close();
    }),
  );
});

describe('cluster link', () => {
  const f = fixture();
  /** @type {Awaited<ReturnType<typeof startKubeStandin>> | undefined} */
  let kube;
  before(async () => {
    kube = await startKubeStandin(fs.mkdtempSync('/tmp/minispod-kube-'));
    f.extraLogs.push(kube);
    f.cp = await startControlPlane({ enrollmentToken: true, args: ['--kubeconfig', kube.kubeconfig, '--offline-taint-after-start', '0s'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(async () => {
    await f.close();
    kube?.stop();
  });

  it(
    "shows the worker's node, its conditions and figures, and NOT_READY with the kubelet's words",
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      const name = 'node-worker';
      f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
      await open(page, `${f.cp.url}/workers`);
      // Its stream is up but no node carries its id yet.
      const row = await waitRowStatus(page, name, 'NOT_READY');
      await row.getByRole('link', { name, exact: true }).click();
      await h1(page, name).waitFor();
      await page.getByRole('status').filter({ hasText: 'Not ready: node not joined' }).waitFor();
      const id = new URL(page.url()).pathname.split('/').pop();

      // The node registers: the page follows it live.
      await kube.createNode('node-worker-k3s', id);
      await page.getByRole('heading', { name: 'Kubernetes node' }).waitFor({ timeout: 20_000 });
      await waitFor(async () => (await fact(page, 'Status').innerText()) === 'Active', 20_000, { message: 'ACTIVE with its node' });
      assert.equal(await fact(page, 'Node').innerText(), 'node-worker-k3s');
      assert.equal(await fact(page, 'Node ready').innerText(), 'yes');
      assert.match(await fact(page, 'Allocatable').innerText(), /^4 CPU, 8(\.0)? GiB memory/);
      assert.equal(await fact(page, 'Kubelet').innerText(), 'v1.33.5+k3s1');
      const conditions = page.getByRole('table', { name: 'Conditions' });
      assert.ok(await conditions.getByRole('row').filter({ hasText: 'kubelet is posting ready status' }).isVisible());

      // The kubelet reports trouble: NOT_READY, in its words.
      await kube.setReady('node-worker-k3s', 'False', 'KubeletNotReady', 'container runtime network not ready');
      await page.getByRole('status').filter({ hasText: 'Not ready: node not ready: container runtime network not ready' }).waitFor({ timeout: 20_000 });
      assert.equal(await fact(page, 'Status').innerText(), 'Not ready');

      // Cordon from the console reaches the node.
      await kube.setReady('node-worker-k3s', 'True', 'KubeletReady', 'kubelet is posting ready status');
      await waitFor(async () => (await fact(page, 'Status').innerText()) === 'Active', 20_000, { message: 'ACTIVE again' });
      await page.getByRole('button', { name: 'Cordon', exact: true }).click();
      await waitFor(async () => (await kube.getNode('node-worker-k3s')).spec?.unschedulable === true, 20_000, { message: 'spec.unschedulable on the node' });
      await waitFor(async () => (await fact(page, 'Unschedulable').innerText()) === 'yes (cordoned)', 20_000, { message: 'the page shows the cordoned node' });
      await screenshot(page, 'worker-with-node');

      // The dashboard says the cluster is linked and what pods requested.
      await open(page, `${f.cp.url}/`);
      await h1(page, 'Dashboard').waitFor();
      await page.getByText('connected', { exact: true }).waitFor();
      await page.context().close();
    }),
  );

  it(
    'says how to join a NOT_READY worker on its page and its fleet row, and the dashboard card what the cluster is',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      const name = 'hint-worker';
      f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
      await open(page, `${f.cp.url}/workers`);
      const row = await waitRowStatus(page, name, 'NOT_READY');
      const id = new URL(await row.getByRole('link', { name, exact: true }).evaluate((a) => a.href)).pathname.split('/').pop();
      const command = `kubectl label node ${name} minispod.dev/worker-id=${id}`;
      // The row: the command to run, the whole hint for screen readers.
      const fix = row.getByRole('link', { name: /^How to fix:/ });
      assert.equal(await fix.locator('code').innerText(), command);
      assert.match(await fix.getAttribute('title'), /systemctl enable --now k3s-agent/);
      await fix.click();
      await h1(page, name).waitFor();
      const banner = page.getByRole('status').filter({ hasText: 'Not ready: node not joined' });
      await banner.waitFor();
      assert.match(await banner.innerText(), /How to fix: no Kubernetes node carries minispod\.dev\/worker-id=/);
      assert.ok(await banner.locator('code').getByText(command, { exact: true }).isVisible(), 'the command as code');
      await screenshot(page, 'worker-not-ready-hint');

      // Joined: the hint goes with the NOT_READY.
      await kube.createNode(name, id);
      await waitFor(async () => (await fact(page, 'Status').innerText()) === 'Active', 20_000, { message: 'ACTIVE once joined' });
      assert.equal(await page.getByText('How to fix:').count(), 0);

      // The dashboard's cluster card: what is linked and how it is.
      await open(page, `${f.cp.url}/`);
      const card = page.getByRole('region', { name: 'Kubernetes cluster' });
      await card.waitFor();
      await waitFor(async () => (await card.getAttribute('data-cluster-state')) === 'CONNECTED', 10_000, { message: 'the card says CONNECTED' });
      const cardFact = (term) => card.locator('dl.facts > div').filter({ has: page.getByRole('term').getByText(term, { exact: true }) }).getByRole('definition');
      assert.equal(await cardFact('Link').innerText(), 'Connected');
      assert.match(await cardFact('API server').innerText(), /^https:\/\//);
      assert.match(await cardFact('Nodes').innerText(), /workers'\)$/);
      assert.equal(await card.getByText('Not linked').count(), 0);
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 10. A control-plane restart under an open fleet page.

describe('control-plane restart', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane({ enrollmentToken: true });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'shows Reconnecting… while the control plane is down, then Live and the worker ACTIVE again',
    TEST_TIMEOUT,
    f.t(async () => {
      const name = 'restart-worker';
      const agent = startAgent(f.cp, { token: f.cp.enrollmentToken, name });
      f.agents.push(agent);
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/workers`);
      await h1(page, 'Fleet').waitFor();
      await waitRowStatus(page, name, 'ACTIVE');
      const badge = linkBadge(page);
      await waitFor(async () => (await badge.innerText()) === 'Live', 30_000, { message: 'badge Live' });
      await markDocument(page);
      await page.evaluate((n) => {
        const w = /** @type {any} */ (window);
        w.__timeline = [];
        const check = () => {
          const badge = document.querySelector('.badge[role="status"]')?.textContent?.replace(/\(.*\)/, '').trim() ?? null;
          const row = document.querySelector(`[role="row"][data-worker="${n}"]`)?.getAttribute('data-status') ?? null;
          const last = w.__timeline.at(-1);
          if (last?.badge !== badge || last?.row !== row) w.__timeline.push({ badge, row, t: Date.now() });
        };
        check();
        new MutationObserver(check).observe(document.body, { subtree: true, childList: true, attributes: true, characterData: true });
      }, name);

      const t0 = Date.now();
      await f.cp.stop();
      const tDown = Date.now();
      await waitFor(async () => /^Reconnecting…/.test(await badge.innerText()), 30_000, { message: 'badge Reconnecting…' });
      note(`badge: ${await badge.innerText()}`);
      await f.cp.restart(); // the process is down already: this starts it again
      const tUp = Date.now();
      await waitFor(async () => (await badge.innerText()) === 'Live', 30_000, { message: 'badge Live again' });
      const tLive = Date.now();
      await waitRowStatus(page, name, 'ACTIVE');
      const tActive = Date.now();
      await assertSameDocument(page, 'restart');
      const timeline = await page.evaluate(() => /** @type {any} */ (window).__timeline);
      note(
        `restart: stop took ${tDown - t0} ms, start ${tUp - tDown} ms; Live ${tLive - tUp} ms and row ACTIVE ${tActive - tUp} ms after the start; ` +
          `timeline ${JSON.stringify(timeline.map((e) => `${e.badge}/${e.row}@${e.t - t0}`))}`,
      );
      assert.ok(timeline.some((e) => e.badge === 'Reconnecting…'), 'never showed Reconnecting…');
      assert.equal(timeline.at(-1).badge, 'Live');
      await page.context().close();
    }),
  );
  it(
    'shows the fleet and the dashboard stale (dimmed, "last update N s ago", counting) while the stream is down, and live again on the new snapshot',
    TEST_TIMEOUT,
    f.t(async () => {
      const name = 'stale-worker';
      const agent = startAgent(f.cp, { token: f.cp.enrollmentToken, name });
      f.agents.push(agent);
      const fleetPage = await f.page({ locale: 'en-US' });
      await signIn(fleetPage, f.cp.url);
      await open(fleetPage, `${f.cp.url}/workers`);
      const row = await waitRowStatus(fleetPage, name, 'ACTIVE');
      await waitFor(async () => (await linkBadge(fleetPage).innerText()) === 'Live', 30_000, { message: 'fleet Live' });
      const dash = await f.page({ locale: 'en-US' });
      await signIn(dash, f.cp.url);
      await h1(dash, 'Dashboard').waitFor();
      await waitFor(async () => (await linkBadge(dash).innerText()) === 'Live', 30_000, { message: 'dashboard Live' });

      const table = fleetPage.getByRole('table', { name: 'Workers' });
      const staleNote = (page) => page.locator('.stale-note');
      const pillColor = () => row.locator('.pill').evaluate((el) => getComputedStyle(el).color);
      const liveColor = await pillColor();
      assert.equal(await staleNote(fleetPage).count(), 0, 'stale while live');
      assert.equal(await table.getAttribute('aria-describedby'), null);

      await f.cp.stop();
      await waitFor(async () => /^Reconnecting…/.test(await linkBadge(fleetPage).innerText()), 30_000, { message: 'fleet Reconnecting…' });
      // Stale: dimmed rows, the time of the last update, counting up.
      await staleNote(fleetPage).waitFor({ timeout: 5_000 });
      const seconds = async (page) => {
        const text = await staleNote(page).innerText();
        const m = /^Not live: last update (\d+) s ago\./.exec(text);
        assert.ok(m, `the stale note says ${JSON.stringify(text)}`);
        return Number(m[1]);
      };
      const first = await seconds(fleetPage);
      assert.match(await table.getAttribute('class'), /\bstale\b/);
      assert.equal(await table.getAttribute('aria-describedby'), 'fleet-stale');
      assert.equal(await fleetPage.locator('#fleet-stale').count(), 1);
      const staleColor = await pillColor();
      assert.notEqual(staleColor, liveColor, 'the Active pill keeps its live colour while stale');
      assert.equal(staleColor, await fleetPage.locator('.vbody').evaluate((el) => getComputedStyle(el).color), 'the pill is not dimmed like the rows');
      await assertAccessible(fleetPage, 'fleet while stale (desktop)');
      await screenshot(fleetPage, 'fleet-stale');
      await waitFor(async () => (await seconds(fleetPage)) >= first + 2, 10_000, { message: 'the last update counting up' });
      await waitFor(async () => /^Reconnecting…/.test(await linkBadge(dash).innerText()), 30_000, { message: 'dashboard Reconnecting…' });
      await staleNote(dash).waitFor({ timeout: 5_000 });
      await seconds(dash);
      assert.equal(await dash.locator('.stats.stale').count(), 1, 'the live fleet figures not dimmed');
      await assertAccessible(dash, 'dashboard while stale (desktop)');
      note(`stale note: ${await staleNote(fleetPage).innerText()}`);

      await f.cp.restart();
      for (const page of [fleetPage, dash]) {
        await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'Live again' });
        await waitFor(async () => (await staleNote(page).count()) === 0, 5_000, { message: 'the stale note gone' });
        assert.equal(await page.locator('.stale').count(), 0, 'still dimmed when live');
      }
      await waitRowStatus(fleetPage, name, 'ACTIVE');
      assert.equal(await table.getAttribute('aria-describedby'), null);
      await waitFor(async () => (await pillColor()) === liveColor, 5_000, { message: 'the live colour back' });
      await fleetPage.context().close();
      await dash.context().close();
    }),
  );
});
