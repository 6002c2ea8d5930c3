// End-to-end tests of the web console: Debian's Chromium (playwright-core)
// against the real control plane and real agent processes, over TLS that
// the browser trusts because the MiniSpod CA was imported into its NSS
// database, as a user would do it.
//
//   cd web && node --test --test-concurrency=1 tests/
//
// Every describe block starts its own control plane (fresh data dir, random
// port) and stops it, with its agents and browser, at the end. Elements are
// found by role and label, so the tests also prove the console's labelling.
// Screenshots go to <repo>/target/console-screenshots/; figures (kill -9 →
// INACTIVE, restart recovery, refresh counts) are printed as "[console]"
// lines. CONSOLE_ONLY=<regex> limits the run to matching describe blocks.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { execFile, spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe as nodeDescribe, it } from 'node:test';
import { promisify } from 'node:util';

import {
  ADMIN_EMAIL,
  ADMIN_PASSWORD,
  REPO_ROOT,
  assertAccessible,
  binPath,
  freePort,
  launchBrowser,
  newPage,
  screenshot,
  sleep,
  startAgent,
  startAgentFromCommand,
  startControlPlane,
  startNginx,
  startSmtpSink,
  waitFor,
  withLogs,
} from './harness.mjs';

const TEST_TIMEOUT = { timeout: 180_000 };

// CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches
// (the others are skipped with their before hooks: no processes start).
const only = process.env.CONSOLE_ONLY ? new RegExp(process.env.CONSOLE_ONLY) : undefined;
/** @type {typeof nodeDescribe} */
const describe = (name, fn) => (only && !only.test(name) ? nodeDescribe.skip(name, fn) : nodeDescribe(name, fn));

// ---------------------------------------------------------------------------
// Helpers.

/** Logs a line to the test output (TAP diagnostics go to stdout). */
function note(msg) {
  process.stdout.write(`[console] ${msg}\n`);
}

/**
 * A per-describe fixture: control plane, browser, agents and pages, with
 * everything closed in `after`, and the logs to append to a failure.
 */
function fixture() {
  const f = {
    /** @type {import('./harness.mjs').ControlPlane | undefined} */
    cp: undefined,
    /** @type {import('./harness.mjs').TrustingBrowser | undefined} */
    browser: undefined,
    /** @type {import('./harness.mjs').Agent[]} */
    agents: [],
    /** @type {Array<{log: () => string, name?: string}>} */
    extraLogs: [],
    /** @type {string[]} */
    pageErrors: [],
    logs() {
      return [
        f.cp,
        ...f.agents,
        ...f.extraLogs,
        { name: 'browser page errors', log: () => f.pageErrors.join('\n') },
      ];
    },
    /** New page in a fresh context, its errors recorded. */
    async page(opts) {
      const page = await newPage(f.browser, opts);
      page.on('pageerror', (e) => f.pageErrors.push(`${page.url()}: ${e.message}`));
      page.on('console', (m) => {
        if (m.type() === 'error') f.pageErrors.push(`${page.url()}: console.error: ${m.text()}`);
      });
      return page;
    },
    async close() {
      await f.browser?.close().catch(() => {});
      for (const a of f.agents) await a.stop().catch(() => {});
      await f.cp?.stop().catch(() => {});
    },
    /** Wraps a test body so that a failure carries the logs. */
    t(fn) {
      const body = withLogs(() => f.logs(), fn);
      return async (t) => {
        try {
          return await body(t);
        } catch (e) {
          // What every open page showed, for the failure report.
          const shots = [];
          for (const [i, page] of (f.browser?.contexts() ?? []).flatMap((c) => c.pages()).entries()) {
            try {
              const file = await screenshot(page, `failure-${t?.name ?? 'test'}-${i}`);
              const text = (await page.locator('body').innerText({ timeout: 2000 })).slice(0, 600);
              shots.push(`page ${i}: ${page.url()}\n  screenshot ${file}\n  text: ${JSON.stringify(text)}`);
            } catch (err) {
              shots.push(`page ${i}: ${page.url()} (no screenshot: ${err.message})`);
            }
          }
          if (shots.length && e instanceof Error) e.message += `\n--- open pages ---\n${shots.join('\n')}`;
          throw e;
        } finally {
          // A failed test leaves no contexts behind for the next one.
          for (const c of f.browser?.contexts() ?? []) await c.close().catch(() => {});
        }
      };
    },
  };
  return f;
}

/** The page's <h1> with exactly this text. */
function h1(page, name) {
  return page.getByRole('heading', { level: 1, name, exact: true });
}

/** A fleet table row (role=row, data-worker=<name>). */
function workerRow(page, name) {
  return page.getByRole('row').and(page.locator(`[data-worker="${name}"]`));
}

/** The words the console shows for the API's status names. */
const STATUS_WORDS = {
  PENDING: 'Pending',
  ACTIVE: 'Active',
  INACTIVE: 'Inactive',
  MAINTENANCE: 'Maintenance',
  NOT_READY: 'Not ready',
  PROVISIONING: 'Provisioning',
  RUNNING: 'Running',
  DEGRADED: 'Degraded',
  SUSPENDED: 'Suspended',
  DELETING: 'Deleting',
  FAILED: 'Failed',
};

/** Waits until the worker's row says `status` (an API name), in data-status and in words in its text. */
async function waitRowStatus(page, name, status, timeoutMs = 30_000) {
  const row = workerRow(page, name);
  await waitFor(
    async () => {
      if ((await row.count()) !== 1) return false;
      if ((await row.getAttribute('data-status', { timeout: 1000 })) !== status) return false;
      return row.getByRole('cell').first().getByText(STATUS_WORDS[status], { exact: true }).isVisible();
    },
    timeoutMs,
    { message: `row ${name} with status ${status}` },
  );
  return row;
}

/** The link-state badge (role=status) of the fleet pages. */
function linkBadge(page) {
  return page.getByRole('status').and(page.locator('.badge'));
}

/** How many page loads stayed on the console's first "Loading…" (see settle). */
/**
 * Waits until the console has left its first "Loading…" (the session
 * restore finished, signed in or not). A page that stays there is a bug
 * (it once raced: the restore could finish before the app subscribed).
 */
async function settle(page, what) {
  const stuck = page.locator('#app > p.loading').filter({ hasText: /^Loading…$/ });
  await waitFor(async () => (await stuck.count()) === 0, 15_000, { message: `${what}: the console left "Loading…"` });
}

/** page.goto, then settle. */
async function open(page, url) {
  const res = await page.goto(url);
  await settle(page, `goto ${url}`);
  return res;
}

/** page.reload, then settle. */
async function reload(page) {
  await page.reload();
  await settle(page, 'reload');
}

/** Signs in through the form at /signin (or the page already showing it). */
async function signIn(page, base, { email = ADMIN_EMAIL, password = ADMIN_PASSWORD, goto = true } = {}) {
  if (goto) await open(page, `${base}/signin`);
  await h1(page, 'Sign in').waitFor();
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // (The main navigation is behind a menu button on a phone.)
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

/** The value of one fact (dt/dd pair) on the worker page. */
function fact(page, term) {
  return page
    .locator('dl.facts > div')
    .filter({ has: page.getByRole('term').getByText(term, { exact: true }) })
    .getByRole('definition');
}

/** The value of one entry of a service's "What runs" list. */
function specFact(page, term) {
  return page
    .getByRole('region', { name: 'What runs' })
    .locator('dl.facts > div')
    .filter({ has: page.getByRole('term').getByText(term, { exact: true }) })
    .getByRole('definition');
}

/** The text of the error an input points to with aria-describedby. */
async function describedError(input) {
  return input.evaluate((el) => {
    const ids = (el.getAttribute('aria-describedby') ?? '').split(/\s+/).filter(Boolean);
    const errs = ids.map((id) => document.getElementById(id)).filter((e) => e && e.classList.contains('error'));
    return errs.map((e) => e.textContent.trim()).join(' ');
  });
}

/** The small.error inside the same .field as the input. */
async function fieldError(input) {
  return input.evaluate((el) => el.closest('.field')?.querySelector('small.error')?.textContent.trim() ?? '');
}

/**
 * Creates an enrollment token on the console's Enrollment page (the page
 * must be signed in as an administrator) and returns the token and the
 * join command the page shows.
 */
async function createTokenInConsole(page, base, { description, hours = '1', maxUses = '1' }) {
  await open(page, `${base}/enrollment`);
  await h1(page, 'Enrollment tokens').waitFor();
  await page.getByLabel('Description').fill(description);
  await page.getByLabel('Valid for (hours)').fill(hours);
  await page.getByLabel('Max uses').fill(maxUses);
  await page.getByRole('button', { name: 'Create token' }).click();
  const command = page.getByLabel('Join command');
  await command.waitFor();
  return { token: await page.getByLabel('Token', { exact: true }).inputValue(), command: await command.inputValue() };
}

/** Registers a customer account at /register; the console then shows the catalog. */
async function register(page, base, { name, email, password }) {
  await open(page, `${base}/register`);
  await h1(page, 'Create an account').waitFor();
  await page.getByLabel('Name').fill(name);
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Create account' }).click();
  await h1(page, 'Catalog').waitFor();
}

/**
 * Submits the sign-in form with credentials that must be refused; returns
 * the Login call's grpc-status and message and the alert the page shows.
 */
async function signInRefused(page, base, { email, password, goto = true }) {
  if (goto) await open(page, `${base}/signin`);
  await h1(page, 'Sign in').waitFor();
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  const answered = page.waitForResponse((r) => r.url().endsWith('/minispod.v1.AuthService/Login'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  const res = await answered;
  const headers = await res.allHeaders();
  const body = await res.body().catch(() => Buffer.alloc(0));
  const outcome = grpcWebOutcome(body, headers);
  const message = headers['grpc-message'] ?? /grpc-message:\s*([^\r\n]*)/i.exec(body.toString('latin1'))?.[1];
  assert.notEqual(outcome.status, 0, `the sign-in as ${email} succeeded`);
  // The form is idle again (the button's label is back) with the answer shown.
  await page.getByRole('button', { name: 'Sign in', exact: true }).and(page.locator(':enabled')).waitFor();
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 0, 'signed in after all');
  return { status: outcome.status, message: message && decodeURIComponent(message), alert: (await alert.innerText()).trim() };
}

/**
 * Creates a user with the Users page's "New user" form (the page must be
 * signed in as an administrator) and waits for the page's confirmation.
 */
async function createUserInConsole(page, base, { email, name, password, role = 'user', goto = true }) {
  if (goto) {
    await open(page, `${base}/users`);
    await h1(page, 'Users').waitFor();
  }
  const form = page.getByRole('region', { name: 'New user' });
  if (!(await form.isVisible())) await page.getByRole('button', { name: 'New user' }).click();
  await form.getByLabel('Email').fill(email);
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Password').fill(password);
  await form.getByLabel('Role').selectOption(role);
  await form.getByRole('button', { name: 'Create user' }).click();
  await page.getByRole('status').filter({ hasText: `Created ${email}.` }).waitFor();
}

/** The data-email of every row of the users table, in order. */
function userEmails(page) {
  return page.locator('tr[data-email]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-email')));
}

/** The total the users page's pager shows ("N users"), as a number. */
async function usersTotal(page) {
  const text = await page.getByRole('navigation', { name: 'Pages' }).getByText(/^[\d,]+ users?$/).innerText();
  return Number(text.split(' ')[0].replaceAll(',', ''));
}

/** The names on the catalog's service cards, sorted. */
async function cardNames(page) {
  const names = await page.getByRole('main').getByRole('article').getByRole('heading', { level: 2 }).allInnerTexts();
  return names.map((n) => n.trim()).sort();
}

/** Waits until the catalog shows exactly these cards; the failure names what it shows. */
async function waitCards(page, expected, what, timeoutMs = 15_000) {
  const want = [...expected].sort();
  let last = [];
  try {
    await waitFor(
      async () => {
        last = await cardNames(page);
        return JSON.stringify(last) === JSON.stringify(want);
      },
      timeoutMs,
      { message: `${what}: cards ${JSON.stringify(want)}` },
    );
  } catch (e) {
    e.message += `; showing ${JSON.stringify(last)} at ${page.url()}`;
    throw e;
  }
}

/** Marks the document so that a reload (a new document) can be detected. */
async function markDocument(page) {
  await page.evaluate(() => {
    /** @type {any} */ (window).__sameDocument = true;
  });
}
async function assertSameDocument(page, what) {
  assert.equal(await page.evaluate(() => /** @type {any} */ (window).__sameDocument === true), true, `${what}: the page was reloaded`);
}

/**
 * Parses a grpc-web response body: the trailer frame's grpc-status, and
 * whether any message frame came before it.
 * @param {Buffer} body
 * @param {Record<string, string>} headers
 */
function grpcWebOutcome(body, headers) {
  let status = headers['grpc-status'];
  let messages = 0;
  let i = 0;
  while (i + 5 <= body.length) {
    const flag = body[i];
    const len = body.readUInt32BE(i + 1);
    const payload = body.subarray(i + 5, i + 5 + len);
    if (flag & 0x80) {
      const m = /grpc-status:\s*(\d+)/i.exec(payload.toString('latin1'));
      if (m) status = m[1];
    } else {
      messages++;
    }
    i += 5 + len;
  }
  return { status: status === undefined ? undefined : Number(status), messages };
}

/**
 * POSTs an empty grpc-web message to the control plane from Node (trusting
 * its CA), with extra headers; returns the HTTP status and grpc outcome.
 * @param {{port: number, caPath: string}} cp
 * @param {string} path
 * @param {Record<string, string>} headers
 */
async function grpcWebPost(cp, path, headers) {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        servername: 'localhost',
        port: cp.port,
        path,
        method: 'POST',
        ca: fs.readFileSync(cp.caPath),
        headers: { host: `localhost:${cp.port}`, 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1', ...headers },
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const h = /** @type {Record<string, string>} */ (res.headers);
          const body = Buffer.concat(chunks);
          const message = h['grpc-message'] ?? /grpc-message:\s*([^\r\n]*)/i.exec(body.toString('latin1'))?.[1];
          resolve({ http: res.statusCode, ...grpcWebOutcome(body, h), message: message && decodeURIComponent(message) });
        });
      },
    );
    req.on('error', reject);
    req.end(Buffer.from([0, 0, 0, 0, 0]));
  });
}

/**
 * Whether the document is wider than the device's viewport, and which
 * elements make it so (found by hiding each candidate and measuring again;
 * the innermost ones are named). On an emulated phone window.innerWidth
 * grows with the content, so the width to fit is the configured viewport's.
 * @param {import('playwright-core').Page} page
 */
async function horizontalOverflow(page) {
  const vw = page.viewportSize()?.width ?? 0;
  return page.evaluate((vw) => {
    const doc = document.documentElement.scrollWidth;
    const body = document.body.scrollWidth;
    const overflow = doc > vw + 1 || body > vw + 1;
    /** @type {Element[]} */
    const culprits = [];
    if (overflow) {
      const width = () => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);
      const base = width();
      for (const el of document.querySelectorAll('body *')) {
        if (el.getBoundingClientRect().right <= vw + 1) continue;
        const h = /** @type {HTMLElement} */ (el);
        const old = h.style.getPropertyValue('display');
        h.style.setProperty('display', 'none');
        const w = width();
        if (old) h.style.setProperty('display', old);
        else h.style.removeProperty('display');
        if (w < base) culprits.push(el);
      }
    }
    const describe = (el) => {
      const r = el.getBoundingClientRect();
      const cls = el.getAttribute('class');
      const text = (el.textContent ?? '').trim().slice(0, 30);
      return `<${el.tagName.toLowerCase()}${cls ? ` class="${cls}"` : ''}> "${text}" x ${Math.round(r.left)}–${Math.round(r.right)}, position ${getComputedStyle(el).position}`;
    };
    // Out-of-flow elements that escape a scroller are the usual cause; name them alone when present.
    const escaped = culprits.filter((el) => ['absolute', 'fixed'].includes(getComputedStyle(el).position));
    const innermost = escaped.length ? escaped : culprits.filter((el) => !culprits.some((o) => o !== el && el.contains(o)));
    return { vw, doc, body, overflow, offenders: innermost.slice(0, 6).map(describe) };
  }, vw);
}

/**
 * Asserts that a row action is in full view on a phone without sideways
 * scrolling: scrolled to vertically only, its box inside the configured
 * viewport's width, and neither the page nor any box around it scrolled
 * sideways to get there. Then the caller uses it (click, select).
 * @param {import('playwright-core').Page} page
 * @param {import('playwright-core').Locator} action
 * @param {string} what
 */
async function assertReachable(page, action, what) {
  const vw = page.viewportSize()?.width ?? 0;
  await action.waitFor();
  const r = await action.evaluate((el, vw) => {
    const top = el.getBoundingClientRect().top + window.scrollY;
    window.scrollTo(0, Math.max(0, top - 200));
    const box = el.getBoundingClientRect();
    const scrolled = [];
    for (let p = el.parentElement; p; p = p.parentElement) if (p.scrollLeft !== 0) scrolled.push(p.className || p.tagName);
    return { left: box.left, right: box.right, top: box.top, bottom: box.bottom, width: box.width, scrollX: window.scrollX, scrolled, vh: window.innerHeight, vw };
  }, vw);
  assert.ok(r.width > 0, `${what}: not rendered`);
  assert.equal(r.scrollX, 0, `${what}: the page is scrolled sideways`);
  assert.deepEqual(r.scrolled, [], `${what}: a box around it is scrolled sideways`);
  assert.ok(r.left >= 0 && r.right <= vw + 0.5, `${what}: at x ${Math.round(r.left)}–${Math.round(r.right)}, outside the ${vw} px viewport`);
  assert.ok(r.top >= 0 && r.bottom <= r.vh, `${what}: at y ${Math.round(r.top)}–${Math.round(r.bottom)}, outside the viewport`);
}

// ---------------------------------------------------------------------------
// 1. Sign in.

describe('sign in', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane();
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'shows the server\'s error for a wrong password, then signs in to the dashboard',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await open(page, `${f.cp.url}/`);
      // Signed out: the app sends us to sign in.
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      await page.getByLabel('Email').fill(ADMIN_EMAIL);
      await page.getByLabel('Password').fill('not-the-password-at-all');
      await page.getByRole('button', { name: 'Sign in' }).click();
      const alert = page.getByRole('alert');
      await alert.waitFor();
      assert.match(await alert.innerText(), /invalid email or password/);
      assert.equal(new URL(page.url()).pathname, '/signin');

      await page.getByLabel('Password').fill(ADMIN_PASSWORD);
      await page.getByRole('button', { name: 'Sign in' }).click();
      await h1(page, 'Dashboard').waitFor();
      assert.equal(new URL(page.url()).pathname, '/');
      assert.equal(await page.getByRole('alert').count(), 0, 'the error stays after a successful sign-in');
      await page.context().close();
    }),
  );

  it(
    'leaves "Loading…" by itself when the first frame comes late (as in a background tab)',
    TEST_TIMEOUT,
    f.t(async () => {
      // Five fresh loads with no animation frames (background tabs get none);
      // Preact then runs effects after its 35 ms fallback timer.
      const results = [];
      for (let i = 0; i < 5; i++) {
        const page = await f.page();
        await page.addInitScript(() => {
          window.requestAnimationFrame = () => 0;
        });
        await page.goto(`${f.cp.url}/signin`);
        const ok = await h1(page, 'Sign in')
          .waitFor({ timeout: 5_000 })
          .then(() => true, () => false);
        results.push(ok ? 'sign-in form' : JSON.stringify(await page.locator('#app').innerText()));
        await page.context().close();
      }
      note(`loads without animation frames showed: ${results.join(', ')}`);
      assert.deepEqual(results, Array(5).fill('sign-in form'));
    }),
  );

  it(
    'returns to the deep link it was sent away from',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      const deep = `${f.cp.url}/users?role=administrator`;
      await open(page, deep);
      await h1(page, 'Sign in').waitFor();
      const u = new URL(page.url());
      assert.equal(u.pathname, '/signin');
      assert.equal(u.searchParams.get('next'), '/users?role=administrator');
      await signIn(page, f.cp.url, { goto: false });
      await h1(page, 'Users').waitFor();
      await waitFor(() => page.url() === deep, 10_000, { message: `URL ${deep}, is ${page.url()}` });
      assert.equal(await page.getByLabel('Role', { exact: true }).inputValue(), 'administrator');
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      await page.context().close();
    }),
  );
});

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

// ---------------------------------------------------------------------------
// 5. Users.

/**
 * The stand-in Kubernetes API server (`minispod-kube-standin`) as a
 * process, and a small client for it: what a kubelet would write.
 */
async function startKubeStandin(dir) {
  const { spawn } = await import('node:child_process');
  const kubeconfig = `${dir}/kubeconfig`;
  const child = spawn(binPath('minispod-kube-standin'), ['--kubeconfig-out', kubeconfig], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  await waitFor(() => /^https:\/\/\S+\n/.test(out), 10_000, { message: `the stand-in to start: ${out}` });
  const url = new URL(out.split('\n')[0]);
  const text = fs.readFileSync(kubeconfig, 'utf8');
  const ca = Buffer.from(/certificate-authority-data: (\S+)/.exec(text)[1], 'base64').toString();
  const token = /token: (\S+)/.exec(text)[1];
  /** One API request; the answer's JSON. */
  const request = (method, path, body, contentType = 'application/json') =>
    new Promise((resolve, reject) => {
      const req = https.request(
        { host: url.hostname, port: url.port, path, method, ca, servername: '127.0.0.1', headers: { authorization: `Bearer ${token}`, 'content-type': contentType } },
        (res) => {
          let data = '';
          res.on('data', (d) => (data += d));
          res.on('end', () => (res.statusCode < 300 ? resolve(JSON.parse(data)) : reject(new Error(`${method} ${path}: ${res.statusCode} ${data}`))));
        },
      );
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
  const condition = (status, reason, message) => ({ type: 'Ready', status, reason, message, lastHeartbeatTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'), lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') });
  return {
    kubeconfig,
    log: () => out,
    name: 'kube stand-in',
    stop: () => child.kill('SIGTERM'),
    /** A Node carrying the worker's id, Ready, as a kubelet registers one. */
    async createNode(name, workerId) {
      await request('POST', '/api/v1/nodes', { apiVersion: 'v1', kind: 'Node', metadata: { name, labels: { 'minispod.dev/worker-id': workerId } } });
      const resources = { cpu: '4', memory: '8Gi', 'ephemeral-storage': '100Gi', pods: '110' };
      await request('PATCH', `/api/v1/nodes/${name}/status?fieldManager=kubelet`, { status: { capacity: resources, allocatable: resources, conditions: [condition('True', 'KubeletReady', 'kubelet is posting ready status')], nodeInfo: { machineID: '0', systemUUID: '0', bootID: '0', kernelVersion: '6.1.0', osImage: 'Debian GNU/Linux 12 (bookworm)', containerRuntimeVersion: 'containerd://1.7.0', kubeletVersion: 'v1.33.5+k3s1', kubeProxyVersion: 'v1.33.5+k3s1', operatingSystem: 'linux', architecture: 'amd64' } } }, 'application/merge-patch+json');
    },
    async setReady(name, status, reason, message) {
      await request('PATCH', `/api/v1/nodes/${name}/status?fieldManager=kubelet`, { status: { conditions: [condition(status, reason, message)] } }, 'application/merge-patch+json');
    },
    getNode: (name) => request('GET', `/api/v1/nodes/${name}`),
  };
}

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

describe('users', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane();
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  const userRow = (page, email) => page.locator(`tr[data-email="${email}"]`);
  // Columns: select, Email, Name, Role, State, Last sign-in, actions.
  const cell = (page, email, i) => userRow(page, email).getByRole('cell').nth(i);

  async function createUser(page, { email, name, password, role = 'user' }) {
    const form = page.getByRole('region', { name: 'New user' });
    if (!(await form.isVisible())) await page.getByRole('button', { name: 'New user' }).click();
    await form.getByLabel('Email').fill(email);
    await form.getByLabel('Name').fill(name);
    await form.getByLabel('Password').fill(password);
    await form.getByLabel('Role').selectOption(role);
    await form.getByRole('button', { name: 'Create user' }).click();
    return form;
  }

  it(
    'creates, edits, changes the role of, bulk-deactivates and filters users',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/users`);
      await h1(page, 'Users').waitFor();
      await userRow(page, ADMIN_EMAIL).waitFor();

      // A field error from the server, next to its field.
      const form = await createUser(page, { email: 'ana@example.test', name: 'Ana Lima', password: 'short' });
      const pw = form.getByLabel('Password');
      await waitFor(async () => (await pw.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Password aria-invalid' });
      const described = await describedError(pw);
      assert.match(described, /at least 8 characters/);
      assert.equal(await fieldError(pw), described);
      assert.equal(await form.getByLabel('Email').getAttribute('aria-invalid'), null, 'Email marked invalid');
      assert.equal(await userRow(page, 'ana@example.test').count(), 0);

      await pw.fill('ana-password-123');
      await form.getByRole('button', { name: 'Create user' }).click();
      await userRow(page, 'ana@example.test').waitFor();
      await page.getByRole('status').filter({ hasText: 'Created ana@example.test.' }).waitFor();
      assert.equal(await form.count(), 0, 'the form stays open after creating');
      assert.equal(await cell(page, 'ana@example.test', 2).innerText(), 'Ana Lima');
      assert.equal(await cell(page, 'ana@example.test', 4).innerText(), 'Active');

      await createUser(page, { email: 'bruno@example.test', name: 'Bruno Costa', password: 'bruno-password-123' });
      await userRow(page, 'bruno@example.test').waitFor();
      await createUser(page, { email: 'carla@example.test', name: 'Carla Dias', password: 'carla-password-123' });
      await userRow(page, 'carla@example.test').waitFor();

      // Edit in a dialog.
      await page.getByRole('button', { name: 'Edit ana@example.test', exact: true }).click();
      const dialog = page.getByRole('dialog', { name: 'Edit ana@example.test' });
      await dialog.waitFor();
      await dialog.getByLabel('Name').fill('Ana Maria Lima');
      await dialog.getByRole('button', { name: 'Save changes' }).click();
      await page.getByRole('status').filter({ hasText: 'Saved ana@example.test.' }).waitFor();
      await waitFor(async () => (await cell(page, 'ana@example.test', 2).innerText()) === 'Ana Maria Lima', 10_000, { message: 'name edited' });
      assert.equal(await dialog.count(), 0, 'the dialog stays open');

      // Role: asked first; cancelled, nothing changes.
      await page.getByLabel('Role of carla@example.test').selectOption('administrator');
      const promote = page.getByRole('dialog', { name: 'Make carla@example.test an administrator?' });
      await promote.waitFor();
      await promote.getByRole('button', { name: 'Cancel' }).click();
      await waitFor(async () => (await promote.count()) === 0 || !(await promote.isVisible()), 10_000, { message: 'the dialog closed' });
      assert.equal(await page.getByLabel('Role of carla@example.test').inputValue(), 'user', 'the role changed without a yes');
      await page.getByLabel('Role of carla@example.test').selectOption('administrator');
      await promote.getByRole('button', { name: 'Make administrator' }).click();
      await page.getByRole('status').filter({ hasText: 'carla@example.test is now Administrator.' }).waitFor();

      // Bulk: each selected row shows its own result.
      await page.getByLabel('Select ana@example.test').check();
      await page.getByLabel('Select bruno@example.test').check();
      await page.getByRole('group', { name: 'Bulk actions' }).getByText('2 selected').waitFor();
      await page.getByRole('button', { name: 'Deactivate selected' }).click();
      const deactivating = page.getByRole('dialog', { name: 'Deactivate 2 users?' });
      assert.match(await deactivating.innerText(), /signed out at once/);
      await deactivating.getByRole('button', { name: 'Deactivate' }).click();
      for (const email of ['ana@example.test', 'bruno@example.test']) {
        await userRow(page, email).getByText('Deactivate: done', { exact: true }).waitFor();
        await waitFor(async () => (await cell(page, email, 4).innerText()) === 'Inactive', 10_000, { message: `${email} Inactive` });
        assert.equal(await page.getByLabel(`Select ${email}`).isChecked(), false);
      }
      await page.getByRole('status').filter({ hasText: 'Deactivate: 2 succeeded, 0 failed.' }).waitFor();
      for (const email of ['carla@example.test', ADMIN_EMAIL]) {
        assert.equal(await userRow(page, email).getByText(/Deactivate:/).count(), 0, `${email} shows a result`);
        assert.equal(await cell(page, email, 4).innerText(), 'Active');
      }

      // Everything persisted; the role filter in the URL.
      await open(page, `${f.cp.url}/users?role=administrator`);
      await h1(page, 'Users').waitFor();
      await userRow(page, 'carla@example.test').waitFor();
      const emails = await page.locator('tr[data-email]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-email')).sort());
      assert.deepEqual(emails, [ADMIN_EMAIL, 'carla@example.test']);
      for (const email of emails) assert.equal(await page.getByLabel(`Role of ${email}`).inputValue(), 'administrator');
      assert.equal(await page.getByLabel('Role', { exact: true }).inputValue(), 'administrator');

      await open(page, `${f.cp.url}/users?state=inactive`);
      await userRow(page, 'ana@example.test').waitFor();
      const inactive = await page.locator('tr[data-email]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-email')).sort());
      assert.deepEqual(inactive, ['ana@example.test', 'bruno@example.test']);
      assert.equal(await cell(page, 'ana@example.test', 2).innerText(), 'Ana Maria Lima');
      await page.context().close();
    }),
  );

  it(
    'pages through the users 25 at a time with Next and Previous page, with the right total',
    TEST_TIMEOUT,
    f.t(async () => {
      const PAGE = 25; // web/src/pages/users.tsx
      const N = PAGE + 1;
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/users`);
      await h1(page, 'Users').waitFor();
      await userRow(page, ADMIN_EMAIL).waitFor();
      const before = await usersTotal(page);
      const t0 = Date.now();
      const made = [];
      for (let i = 1; i <= N; i++) {
        const email = `pager-${String(i).padStart(2, '0')}@example.test`;
        await createUserInConsole(page, f.cp.url, { email, name: `Pager ${i}`, password: `pager-password-${i}`, goto: false });
        made.push(email);
      }
      note(`created ${N} users with the New user form in ${Date.now() - t0} ms`);
      await waitFor(async () => (await usersTotal(page)) === before + N, 10_000, { message: `${before + N} users` });

      const pager = page.getByRole('navigation', { name: 'Pages' });
      const next = pager.getByRole('button', { name: 'Next page' });
      const prev = pager.getByRole('button', { name: 'Previous page' });
      /** Waits for the table to show `n` rows other than `not`, and returns them. */
      const rowsChange = async (not, n, what) => {
        let last = [];
        await waitFor(
          async () => {
            last = await userEmails(page);
            return last.length === n && JSON.stringify(last) !== JSON.stringify(not);
          },
          10_000,
          { message: `${what}: ${n} rows other than before` },
        ).catch((e) => {
          e.message += `; showing ${last.length} rows: ${JSON.stringify(last)}`;
          throw e;
        });
        return last;
      };

      // Every user: 25, then the rest.
      const total = before + N;
      const first = await userEmails(page);
      assert.equal(first.length, PAGE);
      assert.equal(await prev.isDisabled(), true, 'Previous page enabled on the first page');
      assert.equal(await next.isEnabled(), true, 'Next page disabled with more users than a page');
      await next.click();
      const second = await rowsChange(first, total - PAGE, 'page 2');
      assert.ok(new URL(page.url()).searchParams.get('page'), `no page in the URL: ${page.url()}`);
      assert.deepEqual(second.filter((e) => first.includes(e)), [], 'a user on both pages');
      for (const e of [ADMIN_EMAIL, ...made]) assert.ok([...first, ...second].includes(e), `${e} on neither page`);
      assert.equal(await usersTotal(page), total);
      assert.equal(await next.isDisabled(), true, 'Next page enabled on the last page');
      assert.equal(await prev.isEnabled(), true, 'Previous page disabled on page 2');
      await prev.click();
      await rowsChange(second, PAGE, 'back to page 1');
      assert.deepEqual(await userEmails(page), first);
      assert.equal(new URL(page.url()).searchParams.get('page'), null);
      assert.equal(await prev.isDisabled(), true);

      // With a search: only the new users, newest first; page 2 survives a reload.
      await page.getByRole('searchbox', { name: 'Search' }).fill('pager-');
      await page.getByRole('search').getByRole('button', { name: 'Search', exact: true }).click();
      const newestFirst = [...made].reverse();
      await waitFor(async () => (await usersTotal(page)) === N, 10_000, { message: `${N} users matching "pager-"` });
      await waitFor(async () => JSON.stringify(await userEmails(page)) === JSON.stringify(newestFirst.slice(0, PAGE)), 10_000, { message: 'search page 1' });
      await next.click();
      await waitFor(async () => JSON.stringify(await userEmails(page)) === JSON.stringify(newestFirst.slice(PAGE)), 10_000, { message: 'search page 2' });
      const searchPage2 = page.url();
      assert.equal(new URL(searchPage2).searchParams.get('q'), 'pager-');
      await reload(page);
      await h1(page, 'Users').waitFor();
      await waitFor(async () => JSON.stringify(await userEmails(page)) === JSON.stringify(newestFirst.slice(PAGE)), 10_000, { message: 'search page 2 after a reload' });
      assert.equal(page.url(), searchPage2);
      assert.equal(await usersTotal(page), N);
      assert.equal(await page.getByRole('searchbox', { name: 'Search' }).inputValue(), 'pager-');
      await prev.click();
      await waitFor(async () => JSON.stringify(await userEmails(page)) === JSON.stringify(newestFirst.slice(0, PAGE)), 10_000, { message: 'search page 1 again' });
      assert.equal(new URL(page.url()).searchParams.get('q'), 'pager-');
      assert.equal(new URL(page.url()).searchParams.get('page'), null);
      await page.context().close();
    }),
  );
  it(
    "sets a customer's own limits, with the server's field errors",
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await open(page, `${f.cp.url}/users`);
      await h1(page, 'Users').waitFor();
      await createUser(page, { email: 'dana@example.test', name: 'Dana Reis', password: 'dana-password-123' });
      await userRow(page, 'dana@example.test').waitFor();

      await page.getByRole('button', { name: 'Limits of dana@example.test', exact: true }).click();
      const dialog = page.getByRole('dialog', { name: 'Limits of dana@example.test' });
      await dialog.waitFor();
      const row = (name) => dialog.getByRole('row', { name: new RegExp(`^${name}`) });
      // The defaults in force, and nothing used yet.
      await waitFor(async () => /^Subscriptions\s+0\s+5/.test((await row('Subscriptions').innerText()).trim()), 10_000, { message: 'the share loaded' });
      const field = dialog.getByLabel('Subscriptions limit');
      assert.equal(await field.inputValue(), '', 'no override yet');

      await field.fill('-1');
      await dialog.getByRole('button', { name: 'Save limits' }).click();
      await waitFor(async () => (await field.getAttribute('aria-invalid')) === 'true', 10_000, { message: 'Subscriptions limit aria-invalid' });
      assert.match(await describedError(field), /must be 0 to 1000/);

      await field.fill('2');
      await dialog.getByLabel('Storage limit').fill('20');
      await dialog.getByRole('button', { name: 'Save limits' }).click();
      await page.getByRole('status').filter({ hasText: 'Saved the limits of dana@example.test.' }).waitFor();
      assert.equal(await dialog.count(), 0, 'the dialog stays open');

      // Kept by the server: the dialog shows them again.
      await page.getByRole('button', { name: 'Limits of dana@example.test', exact: true }).click();
      await dialog.waitFor();
      await waitFor(async () => (await dialog.getByLabel('Subscriptions limit').inputValue()) === '2', 10_000, { message: 'the override shown' });
      assert.equal(await dialog.getByLabel('Storage limit').inputValue(), '20');
      assert.equal(await dialog.getByLabel('CPU limit').inputValue(), '', 'the others follow the defaults');
      assert.match((await row('Storage').innerText()).trim(), /^Storage\s+0\s+20 GiB/);
      await dialog.getByRole('button', { name: 'Cancel' }).click();
    }),
  );
});

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

// ---------------------------------------------------------------------------
// 8. The session: short-lived access tokens, the HttpOnly refresh cookie.

describe('session', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane({ args: ['--access-token-ttl', '3s'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'refreshes a 3 s access token by itself, survives reloads, and signs out for good',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      const context = page.context();
      let refreshes = 0;
      page.on('request', (r) => {
        if (r.url().endsWith('/minispod.v1.AuthService/Refresh')) refreshes++;
      });
      await signIn(page, f.cp.url);
      await h1(page, 'Dashboard').waitFor();
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Fleet' }).click();
      await h1(page, 'Fleet').waitFor();
      await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'badge Live' });
      await markDocument(page);
      await sleep(8_000);
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Users' }).click();
      await h1(page, 'Users').waitFor();
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0, 'an error banner on the users page');
      await assertSameDocument(page, 'navigation after 8 s');
      note(`refreshes during ~8 s with a 3 s access token: ${refreshes}`);
      assert.ok(refreshes >= 2, `only ${refreshes} refreshes`);

      await reload(page);
      await h1(page, 'Users').waitFor();
      assert.equal(new URL(page.url()).pathname, '/users');
      assert.equal(await page.getByLabel('Password').count(), 0, 'a sign-in form after reload');

      assert.equal(await page.evaluate(() => document.cookie), '');
      const cookies = await context.cookies(f.cp.url + '/minispod.v1.AuthService/Refresh');
      const session = cookies.find((c) => c.name === 'minispod_session');
      assert.ok(session, `no minispod_session cookie: ${JSON.stringify(cookies.map((c) => c.name))}`);
      assert.equal(session.httpOnly, true);
      assert.equal(session.secure, true);
      assert.equal(session.sameSite, 'Strict');
      assert.equal(session.path, '/minispod.v1.AuthService/');

      // Sign out; keep the cookie value that went with the Logout call.
      const logout = page.waitForRequest((r) => r.url().endsWith('/minispod.v1.AuthService/Logout'));
      await page.getByRole('button', { name: 'Sign out' }).click();
      const sent = (await (await logout).allHeaders()).cookie ?? '';
      const m = /(?:^|;\s*)minispod_session=([^;]+)/.exec(sent);
      assert.ok(m, `Logout carried no session cookie: ${JSON.stringify(sent)}`);
      const old = m[1];
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      await waitFor(async () => !(await context.cookies(f.cp.url + '/minispod.v1.AuthService/')).some((c) => c.name === 'minispod_session'), 10_000, {
        message: 'cookie cleared',
      });
      await reload(page);
      await h1(page, 'Sign in').waitFor();

      // The old refresh token is dead on the server too.
      await context.addCookies([{ ...session, value: old }]);
      const refreshed = page.waitForResponse((r) => r.url().endsWith('/minispod.v1.AuthService/Refresh'));
      await open(page, `${f.cp.url}/users`);
      const res = await refreshed;
      const outcome = grpcWebOutcome(await res.body().catch(() => Buffer.alloc(0)), await res.allHeaders());
      note(`Refresh with the signed-out cookie: HTTP ${res.status()}, grpc-status ${outcome.status}`);
      assert.notEqual(outcome.status, 0);
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      await sleep(500);
      assert.equal(await page.getByRole('navigation', { name: 'Main' }).count(), 0);
      await context.close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 9. CSRF: another site cannot use the refresh cookie.

describe('cross-site requests', () => {
  const f = fixture();
  /** @type {http.Server} */
  let evil;
  let evilPort = 0;
  before(async () => {
    evilPort = await freePort();
    f.cp = await startControlPlane({ args: ['--cors-origin', `http://127.0.0.1:${evilPort}`] });
    const target = `${f.cp.url}/minispod.v1.AuthService/Refresh`;
    const html = `<!doctype html><html lang="en"><head><title>evil</title></head><body><main><h1>Win a prize</h1>
<script>
(async () => {
  const out = {};
  try {
    const res = await fetch(${JSON.stringify(target)}, {
      method: 'POST',
      credentials: 'include',
      headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
      body: new Uint8Array([0, 0, 0, 0, 0]),
    });
    const body = new Uint8Array(await res.arrayBuffer());
    out.status = res.status;
    out.grpcStatus = res.headers.get('grpc-status');
    out.body = Array.from(body);
  } catch (e) {
    out.error = String(e);
  }
  window.__result = out;
})();
</script></main></body></html>`;
    evil = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html);
    });
    await new Promise((r) => evil.listen(evilPort, '127.0.0.1', r));
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(async () => {
    evil?.close();
    await f.close();
  });

  it(
    'gives a page of another origin no access token, and leaves the session intact',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await h1(page, 'Dashboard').waitFor();

      // CORS itself admits the evil origin: a cookie-less call gets through.
      const evilPage = await page.context().newPage();
      await evilPage.goto(`http://127.0.0.1:${evilPort}/`);
      const result = await evilPage.waitForFunction(() => /** @type {any} */ (window).__result, undefined, { timeout: 30_000 });
      const r = await result.jsonValue();
      let obtained = false;
      let grpcStatus = r.grpcStatus === null || r.grpcStatus === undefined ? undefined : Number(r.grpcStatus);
      if (r.body) {
        const o = grpcWebOutcome(Buffer.from(r.body), r.grpcStatus ? { 'grpc-status': r.grpcStatus } : {});
        grpcStatus = o.status;
        obtained = o.messages > 0 || o.status === 0;
      }
      note(`evil page's Refresh: ${JSON.stringify({ ...r, body: r.body ? `${r.body.length} bytes` : undefined, grpcStatus })}`);
      assert.equal(obtained, false, 'the evil page obtained an access token');
      if (!r.error) assert.notEqual(grpcStatus, 0);

      // Also with the evil page's origin allowed by CORS, an uncredentialed
      // call works (so CORS is not what stops the credentialed one alone).
      const plain = await evilPage.evaluate(async (url) => {
        try {
          const res = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
            body: new Uint8Array([0, 0, 0, 0, 0]),
          });
          return { status: res.status, grpcStatus: res.headers.get('grpc-status'), body: Array.from(new Uint8Array(await res.arrayBuffer())) };
        } catch (e) {
          return { error: String(e) };
        }
      }, `${f.cp.url}/minispod.v1.CatalogService/ListServices`);
      note(`evil page's uncredentialed ListServices: HTTP ${plain.status ?? plain.error}`);
      assert.equal(plain.status, 200, `CORS did not admit the configured origin: ${JSON.stringify(plain.error ?? plain)}`);
      await evilPage.close();

      // Were the cookie sent anyway (a browser without SameSite, a looser
      // CORS setup), the server refuses it for a cross-site request before
      // looking at the token: replay the real cookie with the headers a
      // browser would send from the evil page.
      const cookie = (await page.context().cookies(`${f.cp.url}/minispod.v1.AuthService/Refresh`)).find((c) => c.name === 'minispod_session');
      assert.ok(cookie, 'no session cookie');
      const forged = await grpcWebPost(f.cp, '/minispod.v1.AuthService/Refresh', {
        cookie: `minispod_session=${cookie.value}`,
        origin: `http://127.0.0.1:${evilPort}`,
        'sec-fetch-site': 'cross-site',
        'sec-fetch-mode': 'cors',
      });
      note(`forged cross-site Refresh with the real cookie: HTTP ${forged.http}, grpc-status ${forged.status} ${forged.message ?? ''}`);
      assert.equal(forged.status, 7, 'expected PERMISSION_DENIED');
      assert.equal(forged.messages, 0);

      // The console's session was neither spent nor revoked.
      await reload(page);
      await h1(page, 'Dashboard').waitFor();
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Users' }).click();
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0);
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
  /** @type {import('./harness.mjs').Nginx | undefined} */
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
// 13. The own profile: name, password, deactivation.

describe('profile', () => {
  const f = fixture();
  before(async () => {
    // Many sign-ins in one block: room above the default login rate limit.
    f.cp = await startControlPlane({ args: ['--login-ip-burst', '200', '--login-ip-per-minute', '200'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'saves a new name ("Profile saved.") that the header shows, also after a reload',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      const header = page.getByRole('banner');
      const newName = 'Ada Renamed';
      assert.equal(await header.getByText(newName, { exact: true }).count(), 0);
      const nameField = page.getByLabel('Name', { exact: true });
      await nameField.fill(newName);
      // Only the email needs the password.
      assert.equal(await page.getByLabel('Password (to change the email)').count(), 0);
      await page.getByRole('button', { name: 'Save profile' }).click();
      await page.getByRole('status').filter({ hasText: 'Profile saved.' }).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0);
      await header.getByText(newName, { exact: true }).waitFor();

      await reload(page);
      await h1(page, 'Profile').waitFor();
      await header.getByText(newName, { exact: true }).waitFor();
      assert.equal(await nameField.inputValue(), newName);
      // Also where administrators see it.
      await open(page, `${f.cp.url}/users`);
      await waitFor(async () => (await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).getByRole('cell').nth(2).innerText()) === newName, 10_000, {
        message: 'the new name in the users table',
      });
      await page.context().close();
    }),
  );

  it(
    'changes the password: a wrong current one shows the server\'s error; then the page keeps working, the old password fails and the new one signs in',
    TEST_TIMEOUT,
    f.t(async () => {
      const email = 'pat@example.test';
      const oldPassword = 'pat-old-password-1';
      const newPassword = 'pat-new-password-2';
      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await createUserInConsole(admin, f.cp.url, { email, name: 'Pat Admin', password: oldPassword, role: 'administrator' });
      await admin.context().close();

      const page = await f.page();
      await signIn(page, f.cp.url, { email, password: oldPassword });
      const nav = page.getByRole('navigation', { name: 'Main' });
      await nav.getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      await markDocument(page);
      const form = page.getByRole('region', { name: 'Password', exact: true });
      const current = form.getByLabel('Current password');
      const next = form.getByLabel('New password');

      await current.fill('not-my-password-9');
      await next.fill(newPassword);
      await form.getByRole('button', { name: 'Change password' }).click();
      // The server's answer: "is wrong", as a field error of current_password
      // (INVALID_ARGUMENT) with the banner, or in the banner alone.
      const alert = form.getByRole('alert');
      await alert.waitFor();
      const said = `${await alert.innerText()} | ${await describedError(current)}`;
      note(`wrong current password shows: ${JSON.stringify(said)}`);
      assert.match(said, /wrong/);
      assert.equal(new URL(page.url()).pathname, '/profile', 'a wrong current password left the page');
      assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 1, 'a wrong current password signed out');

      await current.fill(oldPassword);
      await form.getByRole('button', { name: 'Change password' }).click();
      await page.getByRole('status').filter({ hasText: 'Password changed. Your other sessions were signed out.' }).waitFor();
      assert.equal(await alert.count(), 0, 'the error stays after the change');
      assert.equal(await current.inputValue(), '');
      assert.equal(await next.inputValue(), '');

      // The page goes on with the new session: other pages load, and a reload
      // resumes from the session cookie ChangePassword set.
      await nav.getByRole('link', { name: 'Users' }).click();
      await h1(page, 'Users').waitFor();
      await page.locator(`tr[data-email="${email}"]`).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0, 'an error on the users page after the change');
      await nav.getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      await assertSameDocument(page, 'navigation after the password change');
      await reload(page);
      await h1(page, 'Profile').waitFor();
      assert.equal(new URL(page.url()).pathname, '/profile');
      await page.getByRole('button', { name: 'Sign out' }).waitFor();
      await nav.getByRole('link', { name: 'Users' }).click();
      await page.locator(`tr[data-email="${email}"]`).waitFor();
      assert.equal(await page.getByRole('alert').count(), 0, 'an error on the users page after the reload');

      // Signing in afresh: the old password is refused, the new one works.
      const other = await f.page();
      const refused = await signInRefused(other, f.cp.url, { email, password: oldPassword });
      assert.match(refused.alert, /invalid email or password/);
      await signIn(other, f.cp.url, { email, password: newPassword });
      await h1(other, 'Dashboard').waitFor();
      await other.context().close();
      await page.context().close();
    }),
  );

  it(
    'deactivates the own account after a confirmation; signing in again is refused with the server\'s reason',
    TEST_TIMEOUT,
    f.t(async () => {
      const email = 'dee@example.test';
      const password = 'dee-password-123';
      const page = await f.page();
      await register(page, f.cp.url, { name: 'Dee Parting', email, password });
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Profile' }).click();
      await h1(page, 'Profile').waitFor();
      const zone = page.getByRole('region', { name: 'Deactivate account', exact: true });
      const field = zone.getByLabel('Password (to deactivate)');
      const dialog = page.getByRole('dialog', { name: 'Deactivate your account?' });

      // A wrong password: the server's error, still signed in.
      await field.fill('not-my-password-9');
      await zone.getByRole('button', { name: 'Deactivate my account' }).click();
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Deactivate', exact: true }).click();
      const alert = zone.getByRole('alert');
      await alert.waitFor();
      const said = `${await alert.innerText()} | ${await describedError(field)}`;
      note(`wrong password to deactivate shows: ${JSON.stringify(said)}`);
      assert.match(said, /wrong/);
      assert.equal(new URL(page.url()).pathname, '/profile');
      assert.equal(await page.getByRole('button', { name: 'Sign out' }).count(), 1);

      // Cancel leaves the account alone.
      await field.fill(password);
      await zone.getByRole('button', { name: 'Deactivate my account' }).click();
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Cancel' }).click();
      await waitFor(async () => !(await dialog.isVisible()), 5_000, { message: 'dialog closed' });
      assert.equal(new URL(page.url()).pathname, '/profile');

      await zone.getByRole('button', { name: 'Deactivate my account' }).click();
      await dialog.waitFor();
      await dialog.getByRole('button', { name: 'Deactivate', exact: true }).click();
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      assert.equal(await page.getByRole('navigation', { name: 'Main' }).count(), 0);
      // The session is over on the server too: a reload stays signed out.
      await reload(page);
      await h1(page, 'Sign in').waitFor();

      const refused = await signInRefused(page, f.cp.url, { email, password, goto: false });
      note(`sign-in to a deactivated account: grpc-status ${refused.status}, alert ${JSON.stringify(refused.alert)}`);
      assert.match(refused.alert, /the account is deactivated/);
      assert.equal(new URL(page.url()).pathname, '/signin');
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 14. A session revoked or expired under an open page: sign in, then back.

describe('session revocation', () => {
  const f = fixture();
  const sam = { email: 'sam@example.test', password: 'sam-password-123' };
  before(async () => {
    f.cp = await startControlPlane({ enrollmentToken: true, args: ['--login-ip-burst', '200', '--login-ip-per-minute', '200'] });
    f.browser = await launchBrowser(f.cp.caPath);
    // Sam, a second administrator, and a plain user for the role=user list.
    const page = await f.page();
    await signIn(page, f.cp.url);
    await createUserInConsole(page, f.cp.url, { ...sam, name: 'Sam Second', role: 'administrator' });
    await createUserInConsole(page, f.cp.url, { email: 'uma@example.test', name: 'Uma User', password: 'uma-password-123', goto: false });
    await page.context().close();
  });
  after(() => f.close());

  /** Sam, signed in, on /users?role=user with its rows loaded. */
  async function samOnUsers() {
    const page = await f.page();
    await signIn(page, f.cp.url, sam);
    await open(page, `${f.cp.url}/users?role=user`);
    await h1(page, 'Users').waitFor();
    await page.locator('tr[data-email="uma@example.test"]').waitFor();
    return page;
  }

  /** The page is on /signin with next = `next`; signing in returns to exactly that URL. */
  async function signInReturnsTo(page, next, password = sam.password) {
    await h1(page, 'Sign in').waitFor();
    await waitFor(() => new URL(page.url()).pathname === '/signin', 10_000, { message: `on /signin, is ${page.url()}` });
    assert.equal(new URL(page.url()).searchParams.get('next'), next, `next of ${page.url()}`);
    await signIn(page, f.cp.url, { email: sam.email, password, goto: false });
    await h1(page, 'Users').waitFor();
    await waitFor(() => page.url() === `${f.cp.url}${next}`, 10_000, { message: `back on ${next}, is ${page.url()}` });
    await page.locator('tr[data-email="uma@example.test"]').waitFor();
    assert.equal(await page.getByLabel('Role', { exact: true }).inputValue(), 'user');
  }

  it(
    'after an administrator deactivates and re-activates the user, the next call in the app goes to sign-in and back to the page',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await samOnUsers();
      await markDocument(page);

      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/users`);
      await admin.getByRole('button', { name: `Deactivate ${sam.email}`, exact: true }).click();
      await admin.getByRole('status').filter({ hasText: `${sam.email} deactivated.` }).waitFor();
      await admin.getByRole('button', { name: `Activate ${sam.email}`, exact: true }).click();
      await admin.getByRole('status').filter({ hasText: `${sam.email} activated.` }).waitFor();

      // Sam changes a filter: the list call is refused, the refresh too.
      await page.getByLabel('State', { exact: true }).selectOption('active');
      const next = '/users?role=user&state=active';
      await signInReturnsTo(page, next);
      assert.equal(await page.getByLabel('State', { exact: true }).inputValue(), 'active');
      await assertSameDocument(page, 'sign-in after a revoked session');
      await page.context().close();
    }),
  );

  it(
    'after a password change in another browser, a reload goes to sign-in and, with the new password, back to the page',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await samOnUsers();
      const newPassword = 'sam-password-456';

      const second = await f.page();
      await signIn(second, f.cp.url, sam);
      await open(second, `${f.cp.url}/profile`);
      const form = second.getByRole('region', { name: 'Password', exact: true });
      await form.getByLabel('Current password').fill(sam.password);
      await form.getByLabel('New password').fill(newPassword);
      await form.getByRole('button', { name: 'Change password' }).click();
      await second.getByRole('status').filter({ hasText: 'Password changed.' }).waitFor();

      await reload(page);
      await signInReturnsTo(page, '/users?role=user', newPassword);
      sam.password = newPassword;
      await page.context().close();
    }),
  );

  it(
    'a deactivated administrator\'s open fleet page stops getting the live fleet and goes to sign-in',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url, sam);
      await open(page, `${f.cp.url}/workers`);
      await h1(page, 'Fleet').waitFor();
      await waitFor(async () => (await linkBadge(page).innerText()) === 'Live', 30_000, { message: 'badge Live' });

      const admin = await f.page();
      await signIn(admin, f.cp.url);
      await open(admin, `${f.cp.url}/users`);
      await admin.getByRole('button', { name: `Deactivate ${sam.email}`, exact: true }).click();
      await admin.getByRole('status').filter({ hasText: `${sam.email} deactivated.` }).waitFor();
      try {
        // A worker joins after the deactivation: the admin's fleet shows it ...
        const name = 'after-deactivation';
        f.agents.push(startAgent(f.cp, { token: f.cp.enrollmentToken, name }));
        await open(admin, `${f.cp.url}/workers`);
        await waitRowStatus(admin, name, 'ACTIVE');
        const seen = await workerRow(page, name).count();
        const badge = await linkBadge(page).innerText().catch(() => '(none)');
        note(`deactivated user's fleet page: ${page.url()}, badge ${JSON.stringify(badge)}, sees the new worker: ${seen > 0}`);
        // ... the deactivated one's must not, and must be on the sign-in page.
        await h1(page, 'Sign in').waitFor({ timeout: 15_000 });
        assert.equal(await workerRow(page, name).count(), 0, 'the deactivated user saw a worker that joined after');
      } finally {
        await open(admin, `${f.cp.url}/users`);
        await admin.getByRole('button', { name: `Activate ${sam.email}`, exact: true }).click();
        await admin.getByRole('status').filter({ hasText: `${sam.email} activated.` }).waitFor();
      }
    }),
  );
});

describe('expired session', () => {
  const f = fixture();
  before(async () => {
    f.cp = await startControlPlane({ args: ['--refresh-token-ttl', '3s'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'an expired session sends a reload to sign-in and, after it, back to the page',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await signIn(page, f.cp.url);
      const deep = '/users?role=administrator';
      await open(page, `${f.cp.url}${deep}`);
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      // The refresh token lives 3 s (the access token 15 min, so nothing
      // refreshes meanwhile): let it lapse.
      await sleep(4_000);
      const refreshed = page.waitForResponse((r) => r.url().endsWith('/minispod.v1.AuthService/Refresh'));
      await reload(page);
      const res = await refreshed;
      const outcome = grpcWebOutcome(await res.body().catch(() => Buffer.alloc(0)), await res.allHeaders());
      // The cookie expires with the token (no cookie: INVALID_ARGUMENT); were
      // it sent, the server refuses it (UNAUTHENTICATED).
      note(`Refresh after the refresh token's 3 s: HTTP ${res.status()}, grpc-status ${outcome.status}`);
      assert.notEqual(outcome.status, 0, 'an expired session was refreshed');
      await h1(page, 'Sign in').waitFor();
      assert.equal(new URL(page.url()).pathname, '/signin');
      assert.equal(new URL(page.url()).searchParams.get('next'), deep);
      await signIn(page, f.cp.url, { goto: false });
      await waitFor(() => page.url() === `${f.cp.url}${deep}`, 10_000, { message: `back on ${deep}, is ${page.url()}` });
      await page.locator(`tr[data-email="${ADMIN_EMAIL}"]`).waitFor();
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// 15. Login rate limits: the sign-in page says when to try again.

describe('login rate limit', () => {
  const f = fixture();
  const BURST = 3;
  before(async () => {
    f.cp = await startControlPlane({ args: ['--login-ip-burst', String(BURST), '--login-ip-per-minute', '1'] });
    f.browser = await launchBrowser(f.cp.caPath);
  });
  after(() => f.close());

  it(
    'shows the server\'s RESOURCE_EXHAUSTED message with when to retry once the limit is hit, for the right password too',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await open(page, `${f.cp.url}/signin`);
      const attempts = [];
      for (let i = 0; i < BURST + 5; i++) {
        const r = await signInRefused(page, f.cp.url, { email: ADMIN_EMAIL, password: `wrong-password-${i}`, goto: false });
        attempts.push(r);
        if (r.status === 8) break;
      }
      note(`login attempts: ${JSON.stringify(attempts.map((a) => `${a.status}: ${a.alert}`))}`);
      const last = attempts.at(-1);
      assert.equal(last.status, 8, 'never RESOURCE_EXHAUSTED');
      assert.equal(attempts.length, BURST + 1, `refused after ${attempts.length - 1} attempts with a burst of ${BURST}`);
      for (const a of attempts.slice(0, -1)) assert.match(a.alert, /invalid email or password/);
      // The server's message, then the console's retry time from RetryInfo.
      assert.ok(last.alert.startsWith(last.message), `alert ${JSON.stringify(last.alert)} does not start with the server's ${JSON.stringify(last.message)}`);
      assert.match(last.alert, /too many attempts from this address/);
      const m = /retry in (\d+) ?s$/.exec(last.alert);
      assert.ok(m, `no "retry in N s" in ${JSON.stringify(last.alert)}`);
      const n = Number(m[1]);
      assert.ok(n >= 1 && n <= 60, `try again in ${n} s with one attempt a minute`);

      // The right password is refused too while the limit holds.
      const right = await signInRefused(page, f.cp.url, { email: ADMIN_EMAIL, password: ADMIN_PASSWORD, goto: false });
      assert.equal(right.status, 8);
      assert.match(right.alert, /too many attempts from this address.*retry in \d+ ?s$/);
      assert.equal(new URL(page.url()).pathname, '/signin');
      await page.context().close();
    }),
  );

  it(
    'names one retry time in the rate-limit alert',
    TEST_TIMEOUT,
    f.t(async () => {
      const page = await f.page();
      await open(page, `${f.cp.url}/signin`);
      let r;
      for (let i = 0; i < BURST + 2; i++) {
        r = await signInRefused(page, f.cp.url, { email: ADMIN_EMAIL, password: `wrong-password-x${i}`, goto: false });
        if (r.status === 8) break;
      }
      assert.equal(r.status, 8, 'never RESOURCE_EXHAUSTED');
      const seconds = [...r.alert.matchAll(/(\d+) ?s\b/g)].map((m) => Number(m[1]));
      assert.ok(seconds.length >= 1, r.alert);
      assert.equal(new Set(seconds).size, 1, `different retry times in ${JSON.stringify(r.alert)}`);
      await page.context().close();
    }),
  );
});

// ---------------------------------------------------------------------------
// Subscriptions (#14): customers subscribe to a seeded catalog entry and
// follow it to RUNNING on the stand-in cluster; administrators see every
// one, suspend and resume it, and count it on the dashboard.

/** grpcurl: $MINISPOD_GRPCURL (set by .ci/test.sh), else the one it installs. */
const GRPCURL = process.env.MINISPOD_GRPCURL || path.join(REPO_ROOT, '.ci', '.venv', 'bin', 'grpcurl');

/** Calls `method` (e.g. 'minispod.v1.CatalogService/GetService') with grpcurl; the JSON answer. */
async function grpcurl(cp, method, body, token) {
  const args = ['-cacert', cp.caPath, '-d', JSON.stringify(body)];
  if (token) args.push('-H', `authorization: Bearer ${token}`);
  args.push(`localhost:${cp.port}`, method);
  const { stdout } = await promisify(execFile)(GRPCURL, args, { timeout: 30_000 });
  return JSON.parse(stdout || '{}');
}

/**
 * A template for a seeded entry that has none: one Ghost component with a
 * volume, the variables of every type the form renders, and notes with
 * placeholders.
 */
const TEST_TEMPLATE = {
  components: [
    {
      name: 'ghost',
      image: 'docker.io/library/ghost:5.96-alpine',
      ports: [{ name: 'http', containerPort: 2368 }],
      env: [
        { name: 'url', value: '${PUBLIC_URL}' },
        { name: 'database__client', value: 'sqlite3' },
        { name: 'SITE_TITLE', value: '${SITE_TITLE}' },
        { name: 'MAIL_FROM', value: '${ADMIN_EMAIL}' },
      ],
      volumes: [{ name: 'content', mountPath: '/var/lib/ghost/content', sizeGb: 1 }],
      readinessProbe: { httpPath: '/', port: 'http' },
      resources: { cpuRequestMillicores: 250, memoryRequestMb: 256, memoryLimitMb: 512 },
      exposePort: 'http',
    },
  ],
  variables: [
    { name: 'ADMIN_EMAIL', label: 'Administrator email', description: 'Where Ghost sends the owner invitation.', type: 'VARIABLE_TYPE_EMAIL', required: true },
    { name: 'SITE_TITLE', label: 'Site title', type: 'VARIABLE_TYPE_STRING', defaultValue: 'My blog', pattern: '[A-Za-z0-9 ]{1,40}', description: 'Letters, digits and spaces.' },
    { name: 'POSTS_PER_PAGE', label: 'Posts per page', type: 'VARIABLE_TYPE_NUMBER', defaultValue: '10' },
    { name: 'THEME', label: 'Theme', type: 'VARIABLE_TYPE_SELECT', options: ['casper', 'source', 'edition'], defaultValue: 'casper' },
    { name: 'MEMBERS', label: 'Enable members', type: 'VARIABLE_TYPE_BOOLEAN', defaultValue: 'false' },
    { name: 'MAIL_PASSWORD', label: 'SMTP password', type: 'VARIABLE_TYPE_SECRET' },
  ],
  generated: [{ name: 'ADMIN_TOKEN', kind: 'GENERATED_VALUE_KIND_HEX', length: 32 }],
  notes: 'Open ${PUBLIC_URL}/ghost to finish the setup; the invitation goes to ${ADMIN_EMAIL}. Site: ${SITE_TITLE}.',
};

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

// ---------------------------------------------------------------------------
// Mail: a forgotten password and a new account's address, through a real
// SMTP server, with sign-in gated on a confirmed address.

describe('mail', () => {
  const f = fixture();
  /** @type {import('./harness.mjs').SmtpSink} */
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
      assert.deepEqual((await subsFilter.locator('option').allInnerTexts()).map((t) => t.trim()), ['Any', 'Pending', 'Provisioning', 'Running', 'Degraded', 'Suspended', 'Deleting', 'Failed']);
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
