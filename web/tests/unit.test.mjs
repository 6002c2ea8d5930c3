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

describe('the fleet\'s orders', async () => {
  const { NameOrder, Settle, compareWorkers, orderIds } = await load('order.ts');
  const worker = (id, name, extra = {}) => ({ id, name, status: 2, ipAddress: '', cpuUsedPercent: 0, memoryUsedBytes: 0n, memoryBytes: 0n, storageUsedBytes: 0n, storageBytes: 0n, ...extra });
  // A small deterministic random source, so a failure can be replayed.
  let seed = 23;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  it('keeps the name order in step with upserts, renames and deletes', () => {
    const map = new Map();
    const order = new NameOrder((id) => map.get(id));
    const names = ['alpha', 'Beta', 'beta', 'gamma', 'w-10', 'w-9', 'Älg', 'zeta', ''];
    for (let i = 0; i < 50; i++) map.set(`id${i}`, worker(`id${i}`, names[rand(names.length)]));
    order.reset(map.values());
    for (let step = 0; step < 2000; step++) {
      const id = `id${rand(70)}`;
      const old = map.get(id);
      if (old && rand(4) === 0) {
        order.remove(old);
        map.delete(id);
      } else {
        // Same name (a status change) half the time, else a new name.
        const w = worker(id, old && rand(2) ? old.name : names[rand(names.length)]);
        order.upsert(old, w);
        map.set(id, w);
      }
      const expected = [...map.values()].sort(compareWorkers).map((w) => w.id);
      assert.deepEqual(order.ids, expected, `after step ${step}`);
    }
  });
  it('sorts by a figure with ties in name order, both ways', () => {
    const ws = [worker('a', 'a', { cpuUsedPercent: 5 }), worker('b', 'b', { cpuUsedPercent: 50 }), worker('c', 'c', { cpuUsedPercent: 5 }), worker('d', 'd', { cpuUsedPercent: 0.5 })];
    const get = (id) => ws.find((w) => w.id === id);
    const ids = ws.map((w) => w.id);
    assert.deepEqual(orderIds(ids, 'cpu', false, get), ['d', 'a', 'c', 'b']);
    assert.deepEqual(orderIds(ids, 'cpu', true, get), ['b', 'a', 'c', 'd']);
    assert.deepEqual(orderIds(ids, 'name', true, get), ['d', 'c', 'b', 'a']);
  });
  it('sorts IPv4 addresses by value, then the others, empty first', () => {
    const ips = ['10.0.0.10', '10.0.0.9', '', 'fd00::2', '9.255.255.255', 'fd00::10'];
    const ws = ips.map((ip, i) => worker(String(i), String(i), { ipAddress: ip }));
    const get = (id) => ws[Number(id)];
    assert.deepEqual(
      orderIds(ws.map((w) => w.id), 'ip', false, get).map((id) => get(id).ipAddress),
      ['', '9.255.255.255', '10.0.0.9', '10.0.0.10', 'fd00::2', 'fd00::10'],
    );
  });
  it('sorts by a figure again once the figures are still, or at the latest after the longest wait', () => {
    const settle = new Settle(250, 1500);
    // One change: sort again when nothing followed for the quiet time.
    assert.equal(settle.changed(1000), 250);
    // A flush arriving over several frames: each change moves the time on.
    assert.equal(settle.changed(1016), 250);
    assert.equal(settle.changed(1100), 250);
    settle.done();
    // Figures that never rest (a change every 100 ms): the view sorts
    // again the longest wait after the first change, not later.
    let dueAt = Infinity;
    for (let t = 2000; t < dueAt; t += 100) dueAt = t + settle.changed(t);
    assert.equal(dueAt, 3500);
    settle.done();
    // After a sort the wait starts over.
    assert.equal(settle.changed(10_000), 250);
  });
});

describe('words and numbers', async () => {
  const { count, plural, statusWord, subscriptionStatusWord } = await load('format.ts');
  it('says statuses in words', () => {
    assert.deepEqual(Object.values(statusWord), ['Unknown', 'Pending', 'Active', 'Inactive', 'Maintenance', 'Not ready']);
    assert.equal(subscriptionStatusWord[3], 'Running');
  });
  it('counts with separators and the right plural', () => {
    assert.equal(count(10000), (10000).toLocaleString());
    assert.equal(plural(1, 'user'), '1 user');
    assert.equal(plural(2n, 'user'), '2 users');
    assert.equal(plural(0, 'worker'), '0 workers');
    assert.equal(plural(1, 'core'), '1 core');
  });
});
