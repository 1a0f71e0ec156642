import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { headSweep } from '../../proxy/explicit/head-timeout.js';

/** How often `expire` runs in a second of mocked time while one connection is watched, with head-timeout `timeoutMs`. */
function sweepsPerSecond(t: TestContext, timeoutMs: number): number {
  t.mock.timers.enable({ apis: ['setInterval'] });
  let sweeps = 0;
  // Always a connection left to watch (an idle keep-alive connection keeps the readers' sweep running).
  const sweep = headSweep(() => ++sweeps > 0, timeoutMs);
  sweep.arm();
  for (let ms = 0; ms < 1000; ms++) t.mock.timers.tick(1);
  sweep.stop();
  t.mock.timers.reset();
  return sweeps;
}

// Until review45 the sweep ran every `timeoutMs` when that was under a second: head-timeout 1 meant a timer firing
// every millisecond (a walk over every connection read as HTTP each time) for as long as one connection was open.
test('a tiny head-timeout does not make the sweep run more than 10 times a second', (t) => {
  const sweeps = sweepsPerSecond(t, 1);
  assert.ok(sweeps >= 1 && sweeps <= 10, `${sweeps} sweeps in a second`);
});

test('the default head-timeout is swept once a second; one of half a second twice', (t) => {
  assert.equal(sweepsPerSecond(t, 30_000), 1);
  assert.equal(sweepsPerSecond(t, 500), 2);
});

test('each sweep asks about heads begun more than head-timeout ago', (t) => {
  // Date mocked too: with the real clock, a millisecond passing between the sweep's Date.now() and this one made 2.
  t.mock.timers.enable({ apis: ['setInterval', 'Date'] });
  const asked: number[] = [];
  const sweep = headSweep((startedBefore) => asked.push(Date.now() - startedBefore) > 0, 1);
  sweep.arm();
  for (let ms = 0; ms < 1000; ms++) t.mock.timers.tick(1);
  sweep.stop();
  t.mock.timers.reset();
  assert.ok(asked.length > 0);
  assert.deepEqual(new Set(asked), new Set([1]));
});
