// Rate limits per real client through nginx (systemd/nginx-minispod.conf):
// the control plane trusts nginx's address (--trusted-proxy), so clients
// behind it get buckets of their own, and none can name another address.
//
// Clients here are plain gRPC over HTTP/2 from distinct loopback source
// addresses (127.0.0.2, 127.0.0.3, ...), as distinct machines would be.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import http2 from 'node:http2';
import { after, before, describe, it } from 'node:test';

import { REPO_ROOT, startControlPlane, startNginx, withLogs } from './harness.mjs';

/** grpcurl: $MINISPOD_GRPCURL (set by .ci/test.sh), else the one it installs. */
const GRPCURL = process.env.MINISPOD_GRPCURL || path.join(REPO_ROOT, '.ci', '.venv', 'bin', 'grpcurl');

/** protobuf: a length-delimited string field. */
function stringField(num, s) {
  const bytes = Buffer.from(s, 'utf8');
  assert.ok(bytes.length < 128);
  return Buffer.concat([Buffer.from([(num << 3) | 2, bytes.length]), bytes]);
}

/**
 * One AuthService/Login over plain gRPC through `url`, from `localAddress`,
 * with extra request headers; resolves to the grpc-status.
 */
function login(url, caPem, localAddress, headers = {}) {
  const message = Buffer.concat([stringField(1, 'nobody@example.test'), stringField(2, 'not-the-password')]);
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, { ca: caPem, localAddress, servername: 'localhost' });
    session.on('error', reject);
    const req = session.request({
      ':method': 'POST',
      ':path': '/minispod.v1.AuthService/Login',
      'content-type': 'application/grpc',
      te: 'trailers',
      ...headers,
    });
    let status;
    req.on('response', (h) => {
      if (h['grpc-status'] !== undefined) status = Number(h['grpc-status']);
    });
    req.on('trailers', (t) => {
      if (t['grpc-status'] !== undefined) status = Number(t['grpc-status']);
    });
    req.on('data', () => {});
    req.on('end', () => {
      session.close();
      if (status === undefined) reject(new Error('no grpc-status'));
      else resolve(status);
    });
    req.on('error', reject);
    req.end(frame);
  });
}

const UNAUTHENTICATED = 16;
const RESOURCE_EXHAUSTED = 8;

describe('rate limits through nginx', () => {
  /** @type {import('./harness.mjs').ControlPlane} */
  let cp;
  /** @type {import('./harness.mjs').Nginx} */
  let nginx;
  let caPem = '';
  const logs = () => [cp, nginx];

  before(async () => {
    cp = await startControlPlane({
      args: ['--trusted-proxy', '127.0.0.1', '--login-ip-burst', '3', '--login-ip-per-minute', '1'],
    });
    nginx = await startNginx(cp);
    caPem = fs.readFileSync(nginx.caPath, 'utf8');
  });

  after(async () => {
    await nginx?.stop();
    await cp?.stop();
  });

  it(
    'gives each client behind nginx its own bucket, whatever x-forwarded-for it sends',
    withLogs(logs, async () => {
      for (let i = 0; i < 3; i += 1) {
        assert.equal(await login(nginx.url, caPem, '127.0.0.2'), UNAUTHENTICATED, `attempt ${i + 1}`);
      }
      assert.equal(await login(nginx.url, caPem, '127.0.0.2'), RESOURCE_EXHAUSTED, 'the fourth from one client');
      // Naming another address does not help: nginx says who connected.
      assert.equal(
        await login(nginx.url, caPem, '127.0.0.2', { 'x-forwarded-for': '203.0.113.9' }),
        RESOURCE_EXHAUSTED,
        'a forged x-forwarded-for',
      );
      // Another client behind the same nginx is not affected.
      assert.equal(await login(nginx.url, caPem, '127.0.0.3'), UNAUTHENTICATED, 'another client');
    }),
  );

  it(
    'serves grpcurl through nginx: reflection lists the services and health answers SERVING',
    withLogs(logs, async () => {
      const run = promisify(execFile);
      const target = `localhost:${nginx.port}`;
      const list = await run(GRPCURL, ['-cacert', nginx.caPath, target, 'list']);
      for (const svc of ['minispod.v1.AuthService', 'minispod.v1.WorkerService', 'grpc.health.v1.Health']) {
        assert.ok(list.stdout.split('\n').includes(svc), `${svc} missing from:\n${list.stdout}`);
      }
      const health = await run(GRPCURL, ['-cacert', nginx.caPath, target, 'grpc.health.v1.Health/Check']);
      assert.match(health.stdout, /"SERVING"/);
    }),
  );
});
