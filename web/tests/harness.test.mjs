// Self-test of harness.mjs: the mechanics the console tests rely on, checked
// independently of what the console shows.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  NGINX_EXAMPLE_CONF,
  assertAccessible,
  checkAccessibility,
  launchBrowser,
  newPage,
  portAccepts,
  rewriteNginxConf,
  startAgent,
  startAgentFromCommand,
  startControlPlane,
  startNginx,
  waitFor,
  withLogs,
} from './harness.mjs';

describe('harness', () => {
  /** @type {import('./harness.mjs').ControlPlane} */
  let cp;
  /** @type {import('./harness.mjs').Agent[]} */
  const agents = [];
  /** @type {import('./harness.mjs').TrustingBrowser[]} */
  const browsers = [];
  /** @type {import('./harness.mjs').Nginx | undefined} */
  let nginx;
  const logs = () => [cp, nginx, ...agents];

  before(async () => {
    cp = await startControlPlane({ enrollmentToken: true });
  });

  after(async () => {
    for (const b of browsers) await b.close().catch(() => {});
    for (const a of agents) await a.stop();
    await nginx?.stop();
    await cp?.stop();
  });

  it(
    'restarts the control plane on the same port, data dir and CA',
    withLogs(logs, async () => {
      const { port, caHash } = cp;
      await cp.kill();
      assert.equal(await portAccepts(port), false);
      await cp.restart();
      assert.equal(await portAccepts(port), true);
      assert.equal(cp.port, port);
      assert.equal(cp.caHash, caHash);
      assert.match(cp.log(), /\[harness\] start #2/);
    }),
  );

  it(
    'starts named agents, directly and from a console join command',
    withLogs(logs, async () => {
      const a = startAgent(cp, { token: cp.enrollmentToken, name: 'harness-direct' });
      agents.push(a);
      const command =
        `minispod-agent run --server ${cp.url} --state-dir /var/lib/minispod-agent ` +
        `--token '${cp.enrollmentToken}' --ca-hash '${cp.caHash}'`;
      const b = startAgentFromCommand(command, { name: 'harness-pasted' });
      agents.push(b);
      assert.ok(!b.command.includes('/var/lib/minispod-agent'), b.command);
      for (const [agent, name] of [[a, 'harness-direct'], [b, 'harness-pasted']]) {
        await waitFor(() => /stream up/.test(agent.log()), 30_000, { message: `${name} connected` });
        await waitFor(() => cp.log().includes(`name=${name} status=ACTIVE`), 10_000, { message: `${name} online` });
        assert.ok(fs.existsSync(path.join(agent.stateDir, 'credentials.json')));
      }
      assert.deepEqual(await b.stop(), { code: 0, signal: null });
      assert.equal((await a.kill9()).signal, 'SIGKILL');
    }),
  );

  it(
    'runs axe under the console\'s Content-Security-Policy',
    withLogs(logs, async () => {
      const browser = await launchBrowser(cp.caPath);
      browsers.push(browser);
      const page = await newPage(browser, { phone: true });
      // A deliberately inaccessible page under the same origin and CSP.
      await page.route(`${cp.url}/axe-probe`, (route) =>
        route.fulfill({
          status: 200,
          contentType: 'text/html',
          headers: { 'content-security-policy': "default-src 'none'; script-src 'self'" },
          body:
            '<!doctype html><html lang="en"><head><title>probe</title></head><body><main>' +
            '<img src="x.png"><button></button><script>document.title = "inline ran"</script>' +
            '</main></body></html>',
        }),
      );
      await page.goto(`${cp.url}/axe-probe`);
      assert.equal(await page.title(), 'probe', 'CSP should have blocked the inline script');
      const violations = await checkAccessibility(page, 'probe');
      const ids = violations.map((v) => v.id).sort();
      assert.deepEqual(ids, ['button-name', 'image-alt']);
      await assert.rejects(assertAccessible(page, 'probe'), /image-alt \(critical\)/);
      await page.context().close();
    }),
  );

  it('rewrites the example nginx configuration', () => {
    const text = fs.readFileSync(NGINX_EXAMPLE_CONF, 'utf8');
    const out = rewriteNginxConf(text, {
      ports: new Map([['443', 12345]]),
      cpPort: 23456,
      pkiDir: '/data/pki',
      certPath: '/t/localhost.crt',
      keyPath: '/t/localhost.key',
      legacyHttp2: true,
    });
    const code = out
      .split('\n')
      .map((l) => l.replace(/#.*/, ''))
      .join('\n');
    assert.match(code, /listen 127\.0\.0\.1:12345 ssl http2;/);
    assert.doesNotMatch(code, /http2 on;/);
    assert.doesNotMatch(code, /7443|\/var\/lib\/minispod|example\.org/);
    assert.match(code, /server_name localhost;/);
    assert.match(code, /ssl_certificate \/t\/localhost\.crt;/);
    assert.match(code, /ssl_certificate_key \/t\/localhost\.key;/);
    assert.match(code, /127\.0\.0\.1:23456/);
  });

  it(
    'proxies grpc-web through nginx with the public test certificate',
    withLogs(logs, async () => {
      nginx = await startNginx(cp);
      const browser = await launchBrowser(nginx.caPath);
      browsers.push(browser);
      const page = await newPage(browser);
      // Any response from nginx puts the page on its origin; / may be a 404
      // until the config proxies the console.
      await page.goto(`${nginx.url}/`);
      const r = await page.evaluate(async () => {
        const res = await fetch('/minispod.v1.CatalogService/ListServices', {
          method: 'POST',
          headers: { 'content-type': 'application/grpc-web+proto', 'x-grpc-web': '1' },
          body: new Uint8Array([0, 0, 0, 0, 0]),
        });
        return { status: res.status, type: res.headers.get('content-type'), body: (await res.arrayBuffer()).byteLength };
      });
      assert.equal(r.status, 200);
      assert.match(r.type ?? '', /^application\/grpc-web/);
      assert.ok(r.body > 0);
      assert.match(nginx.accessLog(), /POST \/minispod\.v1\.CatalogService\/ListServices HTTP\/2\.0" 200/);
      // The control plane's CA alone does not vouch for nginx's certificate.
      const cpOnly = await launchBrowser(cp.caPath);
      browsers.push(cpOnly);
      const p2 = await newPage(cpOnly);
      await assert.rejects(p2.goto(`${nginx.url}/`), /net::ERR_CERT_AUTHORITY_INVALID/);
    }),
  );
});
