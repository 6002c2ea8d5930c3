// Smoke test of the web console: the control plane serves it at `/` over TLS
// that a browser trusts once the MiniSpod CA is imported, with the security
// headers, and nginx (systemd/nginx-minispod.conf) serves it too.
//
//   node --test web/tests/        (from the repo root, after cargo build)

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
  launchBrowser,
  newPage,
  screenshot,
  startControlPlane,
  startNginx,
  withLogs,
} from './harness.mjs';

/** Collects CSP violations reported on the page's console. */
function watchCsp(page) {
  const violations = [];
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) violations.push(msg.text());
  });
  page.on('pageerror', (err) => {
    if (/Content Security Policy/i.test(err.message)) violations.push(err.message);
  });
  return violations;
}

describe('console smoke', () => {
  /** @type {import('./harness.mjs').ControlPlane} */
  let cp;
  /** @type {import('./harness.mjs').Nginx | undefined} */
  let nginx;
  /** @type {import('./harness.mjs').TrustingBrowser | undefined} */
  let browser;
  /** @type {import('./harness.mjs').TrustingBrowser[]} */
  const others = [];
  const logs = () => [cp, nginx];

  before(async () => {
    cp = await startControlPlane();
    browser = await launchBrowser(cp.caPath);
  });

  after(async () => {
    for (const b of [browser, ...others]) await b?.close().catch(() => {});
    await nginx?.stop();
    await cp?.stop();
  });

  it(
    'serves / with security headers over TLS trusted through the imported CA',
    withLogs(logs, async () => {
      const page = await newPage(browser);
      const csp = watchCsp(page);
      const response = await page.goto(`${cp.url}/`, { waitUntil: 'load' });
      assert.ok(response, 'no response for /');
      assert.equal(response.status(), 200);
      const headers = await response.allHeaders();
      const policy = headers['content-security-policy'];
      assert.ok(policy, `no content-security-policy header; headers: ${JSON.stringify(headers)}`);
      assert.match(policy, /frame-ancestors 'none'/);
      assert.match(policy, /connect-src 'self'/);
      assert.equal(headers['x-content-type-options'], 'nosniff');
      assert.ok(headers['referrer-policy'], 'no referrer-policy header');
      assert.match(headers['content-type'] ?? '', /^text\/html/);
      assert.notEqual((await page.title()).trim(), '', 'the page has no title');
      assert.deepEqual(csp, [], 'the page violated its own Content-Security-Policy');
      await screenshot(page, 'smoke');
      await page.context().close();
    }),
  );

  it(
    'fails with a certificate error in a browser that has not imported the CA',
    withLogs(logs, async () => {
      const untrusted = await launchBrowser(null);
      others.push(untrusted);
      const page = await newPage(untrusted);
      await assert.rejects(page.goto(`${cp.url}/`), /net::ERR_CERT_AUTHORITY_INVALID/);
      await page.context().close();
    }),
  );

  it(
    'serves / through nginx with its public certificate',
    withLogs(logs, async () => {
      nginx = await startNginx(cp);
      // A user behind nginx trusts only the public certificate's CA.
      const publicBrowser = await launchBrowser(nginx.caPath);
      others.push(publicBrowser);
      const page = await newPage(publicBrowser);
      const csp = watchCsp(page);
      const response = await page.goto(`${nginx.url}/`, { waitUntil: 'load' });
      assert.ok(response, 'no response for / through nginx');
      assert.equal(response.status(), 200, `status ${response.status()} through nginx; access log:\n${nginx.accessLog()}`);
      assert.notEqual((await page.title()).trim(), '', 'the page has no title through nginx');
      assert.deepEqual(csp, [], 'the page violated its Content-Security-Policy through nginx');
      await screenshot(page, 'smoke-nginx');
      await page.context().close();
    }),
  );
});
