// The shared set-up of the console's Chromium tests (tests/console/*.test.mjs):
// the per-describe fixture (control plane, browser, agents, pages, logs on
// failure), CONSOLE_ONLY, and the helpers that find the console's
// elements by role and label, sign in, create users and tokens, and talk
// to the control plane and the Kubernetes stand-in directly. The processes
// themselves start in ../harness.mjs.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { describe as nodeDescribe } from 'node:test';
import { promisify } from 'node:util';

import {
  ADMIN_EMAIL,
  ADMIN_PASSWORD,
  REPO_ROOT,
  binPath,
  freePort,
  newPage,
  screenshot,
  waitFor,
  withLogs,
} from '../harness.mjs';

export const TEST_TIMEOUT = { timeout: 180_000 };

// CONSOLE_ONLY=<regex> runs only the describe blocks whose name matches
// (the others are skipped with their before hooks: no processes start).
const only = process.env.CONSOLE_ONLY ? new RegExp(process.env.CONSOLE_ONLY) : undefined;
/** @type {typeof nodeDescribe} */
export const describe = (name, fn) => (only && !only.test(name) ? nodeDescribe.skip(name, fn) : nodeDescribe(name, fn));

// ---------------------------------------------------------------------------
// Helpers.

/** Logs a line to the test output (TAP diagnostics go to stdout). */
export function note(msg) {
  process.stdout.write(`[console] ${msg}\n`);
}

/**
 * A per-describe fixture: control plane, browser, agents and pages, with
 * everything closed in `after`, and the logs to append to a failure.
 */
export function fixture() {
  const f = {
    /** @type {import('../harness.mjs').ControlPlane | undefined} */
    cp: undefined,
    /** @type {import('../harness.mjs').TrustingBrowser | undefined} */
    browser: undefined,
    /** @type {import('../harness.mjs').Agent[]} */
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
export function h1(page, name) {
  return page.getByRole('heading', { level: 1, name, exact: true });
}

/** A fleet table row (role=row, data-worker=<name>). */
export function workerRow(page, name) {
  return page.getByRole('row').and(page.locator(`[data-worker="${name}"]`));
}

/** The words the console shows for the API's status names. */
export const STATUS_WORDS = {
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
export async function waitRowStatus(page, name, status, timeoutMs = 30_000) {
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
export function linkBadge(page) {
  return page.getByRole('status').and(page.locator('.badge'));
}

/** How many page loads stayed on the console's first "Loading…" (see settle). */
/**
 * Waits until the console has left its first "Loading…" (the session
 * restore finished, signed in or not). A page that stays there is a bug
 * (it once raced: the restore could finish before the app subscribed).
 */
export async function settle(page, what) {
  const stuck = page.locator('#app > p.loading').filter({ hasText: /^Loading…$/ });
  await waitFor(async () => (await stuck.count()) === 0, 15_000, { message: `${what}: the console left "Loading…"` });
}

/** page.goto, then settle. */
export async function open(page, url) {
  const res = await page.goto(url);
  await settle(page, `goto ${url}`);
  return res;
}

/** page.reload, then settle. */
export async function reload(page) {
  await page.reload();
  await settle(page, 'reload');
}

/** Signs in through the form at /signin (or the page already showing it). */
export async function signIn(page, base, { email = ADMIN_EMAIL, password = ADMIN_PASSWORD, goto = true } = {}) {
  if (goto) await open(page, `${base}/signin`);
  await h1(page, 'Sign in').waitFor();
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  // (The main navigation is behind a menu button on a phone.)
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

/** The value of one fact (dt/dd pair) on the worker page. */
export function fact(page, term) {
  return page
    .locator('dl.facts > div')
    .filter({ has: page.getByRole('term').getByText(term, { exact: true }) })
    .getByRole('definition');
}

/** The value of one entry of a service's "What runs" list. */
export function specFact(page, term) {
  return page
    .getByRole('region', { name: 'What runs' })
    .locator('dl.facts > div')
    .filter({ has: page.getByRole('term').getByText(term, { exact: true }) })
    .getByRole('definition');
}

/** The text of the error an input points to with aria-describedby. */
export async function describedError(input) {
  return input.evaluate((el) => {
    const ids = (el.getAttribute('aria-describedby') ?? '').split(/\s+/).filter(Boolean);
    const errs = ids.map((id) => document.getElementById(id)).filter((e) => e && e.classList.contains('error'));
    return errs.map((e) => e.textContent.trim()).join(' ');
  });
}

/** The small.error inside the same .field as the input. */
export async function fieldError(input) {
  return input.evaluate((el) => el.closest('.field')?.querySelector('small.error')?.textContent.trim() ?? '');
}

/**
 * Creates an enrollment token on the console's Enrollment page (the page
 * must be signed in as an administrator) and returns the token and the
 * join command the page shows.
 */
export async function createTokenInConsole(page, base, { description, hours = '1', maxUses = '1' }) {
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
export async function register(page, base, { name, email, password }) {
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
export async function signInRefused(page, base, { email, password, goto = true }) {
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
export async function createUserInConsole(page, base, { email, name, password, role = 'user', goto = true }) {
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
export function userEmails(page) {
  return page.locator('tr[data-email]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-email')));
}

/** The total the users page's pager shows ("N users"), as a number. */
export async function usersTotal(page) {
  const text = await page.getByRole('navigation', { name: 'Pages' }).getByText(/^[\d,]+ users?$/).innerText();
  return Number(text.split(' ')[0].replaceAll(',', ''));
}

/** The names on the catalog's service cards, sorted. */
export async function cardNames(page) {
  const names = await page.getByRole('main').getByRole('article').getByRole('heading', { level: 2 }).allInnerTexts();
  return names.map((n) => n.trim()).sort();
}

/** Waits until the catalog shows exactly these cards; the failure names what it shows. */
export async function waitCards(page, expected, what, timeoutMs = 15_000) {
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
export async function markDocument(page) {
  await page.evaluate(() => {
    /** @type {any} */ (window).__sameDocument = true;
  });
}
export async function assertSameDocument(page, what) {
  assert.equal(await page.evaluate(() => /** @type {any} */ (window).__sameDocument === true), true, `${what}: the page was reloaded`);
}

/**
 * Parses a grpc-web response body: the trailer frame's grpc-status, and
 * whether any message frame came before it.
 * @param {Buffer} body
 * @param {Record<string, string>} headers
 */
export function grpcWebOutcome(body, headers) {
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
export async function grpcWebPost(cp, path, headers) {
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
export async function horizontalOverflow(page) {
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
export async function assertReachable(page, action, what) {
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

/**
 * The stand-in Kubernetes API server (`minispod-kube-standin`) as a
 * process, and a small client for it: what a kubelet would write.
 */
export async function startKubeStandin(dir, { storageRoot } = {}) {
  const kubeconfig = `${dir}/kubeconfig`;
  const args = ['--kubeconfig-out', kubeconfig, ...(storageRoot ? ['--storage-root', storageRoot] : [])];
  const child = spawn(binPath('minispod-kube-standin'), args, { stdio: ['ignore', 'pipe', 'pipe'] });
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

/** grpcurl: $MINISPOD_GRPCURL (set by .ci/test.sh), else the one it installs. */
export const GRPCURL = process.env.MINISPOD_GRPCURL || path.join(REPO_ROOT, '.ci', '.venv', 'bin', 'grpcurl');

/** Calls `method` (e.g. 'minispod.v1.CatalogService/GetService') with grpcurl; the JSON answer. */
export async function grpcurl(cp, method, body, token) {
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
export const TEST_TEMPLATE = {
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

// ---------------------------------------------------------------------------
// moto, the S3-compatible server of the backup tests and bench.

const PYTHON = process.env.MINISPOD_TEST_PYTHON || path.join(REPO_ROOT, '.ci', '.venv', 'bin', 'python');

/** One plain-HTTP request to moto; its status. */
export function s3Request(port, method, p) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', reject);
    req.end();
  });
}

/** moto's S3 server on a random port (as testkit/src/s3.rs starts it). */
export async function startMoto() {
  const port = await freePort();
  const child = spawn(PYTHON, ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out = (out + d).slice(-20_000)));
  child.stderr.on('data', (d) => (out = (out + d).slice(-20_000)));
  await waitFor(async () => (await s3Request(port, 'GET', '/').catch(() => 0)) === 200, 30_000, { message: `moto to answer (python ${PYTHON} with moto[server])` });
  return { port, endpoint: `http://127.0.0.1:${port}`, name: 'moto', log: () => out, stop: () => child.kill('SIGTERM') };
}

