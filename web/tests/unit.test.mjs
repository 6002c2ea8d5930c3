// Unit tests of the console's pure logic (TypeScript modules bundled on the
// fly by esbuild, imported as data URLs): reconnect backoff, the sign-in
// redirect target.
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import * as esbuild from 'esbuild';

const src = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');

async function load(file) {
  const out = await esbuild.build({ entryPoints: [path.join(src, file)], bundle: true, format: 'esm', write: false, platform: 'neutral', logLevel: 'silent' });
  return import(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0].text).toString('base64')}`);
}

describe('reconnect backoff', async () => {
  const { nextBackoff } = await load('backoff.ts');
  it('doubles its ceiling from the base up to the cap', () => {
    const ceilings = [];
    let c = 0;
    for (let i = 0; i < 8; i++) {
      c = nextBackoff(c, 500, 15_000, () => 0.5).ceiling;
      ceilings.push(c);
    }
    assert.deepEqual(ceilings, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  });
  it('draws the delay anywhere below the ceiling (full jitter)', () => {
    assert.equal(nextBackoff(1000, 500, 15_000, () => 0).delay, 0);
    assert.equal(nextBackoff(1000, 500, 15_000, () => 0.25).delay, 500);
    const delays = Array.from({ length: 200 }, () => nextBackoff(4000).delay);
    assert.ok(delays.every((d) => d >= 0 && d < 8000));
    assert.ok(new Set(delays.map((d) => Math.floor(d / 1000))).size > 4, 'spread over the range');
  });
});

describe('where sign-in returns to', async () => {
  const { safeNext } = await load('next.ts');
  const origin = 'https://cp.example.org:7443';
  it('keeps paths of this origin with their query', () => {
    assert.equal(safeNext('/users?role=administrator', origin), '/users?role=administrator');
    assert.equal(safeNext('/workers/0190-ab#notes', origin), '/workers/0190-ab#notes');
  });
  it('never leaves the origin or loops back to sign-in', () => {
    for (const bad of [null, '', 'https://evil.example/', '//evil.example/x', '/\\evil.example', '/\t/evil.example', 'javascript:alert(1)', '/signin?next=/users', '/register']) {
      assert.equal(safeNext(bad, origin), '/', String(bad));
    }
  });
});
