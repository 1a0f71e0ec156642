import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import type { CloseEvent, DecisionEvent } from '../../events/schema.js';
import { recountJobs, storedJobs, testClose, testDecision } from '../helpers/aggregate-model.js';
import { scratchDatabases } from '../helpers/postgres-scratch-databases.js';

/** The PostgreSQL store's close in its decision's row under large batches, concurrent cuts and retention (each test failed before its fix). */

/** The collector's largest batch (server.ts DEFAULT_LIMITS.maxEvents). */
const MAX_EVENTS = 10_000;

describe('PostgreSQL store: close locks under large and concurrent batches, partitions dropped meanwhile (a real server started for the test)', () => {
  const databases = scratchDatabases('close_locks');
  const open = async () => {
    const { url } = await databases.create();
    return { url, store: await PostgresStore.open(url) };
  };

  it("a batch of the collector's largest size, all closes, is stored (one advisory lock per close overflowed the server's lock table)", { timeout: 120_000 }, async () => {
    const { store } = await open();
    try {
      const start = Date.UTC(2026, 10, 21, 10);
      const decisions: DecisionEvent[] = [];
      const closes: CloseEvent[] = [];
      for (let i = 0; i < MAX_EVENTS; i++) {
        const d = testDecision(randomUUID(), start + i, `h${i % 7}.lock.test`, { job_id: `lock-job-${i % 3}`, repository: 'org/lock' });
        decisions.push(d);
        closes.push(testClose(d, 50, i, 2 * i));
      }
      for (let i = 0; i < decisions.length; i += 2_500) assert.equal((await store.insert(decisions.slice(i, i + 2_500))).stored, 2_500);
      assert.deepEqual(await store.insert(closes), { stored: closes.length, duplicates: 0 });
      assert.equal(await store.count(), 2 * MAX_EVENTS);
      assert.deepEqual(await storedJobs(store), recountJobs([...decisions, ...closes]));
    } finally {
      await store.close();
    }
  });
  it(
    'a batch over the per-close lock limit and small batches of the same closes at once, through four collectors: each close stored once, counted once',
    { timeout: 120_000 },
    async () => {
      const { url, store } = await open();
      const others = await Promise.all([1, 2, 3].map(() => PostgresStore.open(url)));
      try {
        const start = Date.UTC(2026, 10, 21, 12);
        const decisions: DecisionEvent[] = [];
        const closes: CloseEvent[] = [];
        for (let i = 0; i < 3_000; i++) {
          const d = testDecision(i % 2 ? randomUUID() : `big-${i}`, start + i, `h${i % 5}.big.test`, { job_id: `big-job-${i % 4}`, repository: 'org/big' });
          decisions.push(d);
          closes.push(testClose(d, 20, i, 3 * i));
        }
        await store.insert(decisions.slice(0, 1_500)); // half the closes go into stored rows, half with their decision
        const small = (from: number) => [...decisions.slice(from, from + 300), ...closes.slice(from, from + 300)];
        const results = await Promise.all([
          store.insert([...decisions, ...closes]),
          others[0]!.insert(small(1_200)),
          others[1]!.insert(closes.slice(0, 400)),
          others[2]!.insert(small(2_600)),
        ]);
        assert.equal(
          results.reduce((n, r) => n + r.stored, 0),
          3_000 + 1_500,
        );
        assert.equal(await store.count(), 6_000);
        assert.deepEqual(await storedJobs(store), recountJobs([...decisions, ...closes]));
      } finally {
        await Promise.all([store, ...others].map((s) => s.close()));
      }
    },
  );
  it(
    'four collectors storing random cuts of pairs (repeats, closes alone, before, after, on the next day) at once: each event once, aggregates and job events equal the recount',
    { timeout: 120_000 },
    async () => {
      const { url, store } = await open();
      const stores = [store, ...(await Promise.all([1, 2, 3].map(() => PostgresStore.open(url))))];
      try {
        let seed = 12345;
        const random = (n: number) => {
          seed = (seed * 1103515245 + 12345) % 2 ** 31;
          return seed % n;
        };
        const start = Date.UTC(2026, 10, 22, 23, 59, 59, 500); // a half second before midnight: some closes on the next day
        const events: Array<DecisionEvent | CloseEvent> = [];
        for (let i = 0; i < 400; i++) {
          const d = testDecision(i % 3 ? randomUUID() : `stress-${i}`, start + random(400), `h${i % 4}.stress.test`, { job_id: `stress-job-${i % 5}`, repository: 'org/s' });
          events.push(d);
          if (i % 7 === 0) continue; // no close
          events.push(testClose(d, [0, 1, 30, 800, -3][i % 5]!, i, 7 * i));
        }
        for (let round = 0; round < 6; round++) {
          const batches = stores.map(() => {
            const batch: Array<DecisionEvent | CloseEvent> = [];
            for (let k = 0; k < 150; k++) batch.push(events[random(events.length)]!);
            return batch;
          });
          await Promise.all(batches.map((b, i) => stores[i]!.insert(b)));
        }
        await Promise.all(stores.map((s, i) => s.insert(events.filter((_, k) => k % 4 === i))));
        assert.equal(await store.count(), events.length);
        assert.deepEqual(await store.insert(events), { stored: 0, duplicates: events.length });
        const jobs = recountJobs(events);
        assert.deepEqual(await storedJobs(store), jobs);
        for (const job of jobs) {
          const all = await store.jobEvents(job.job, 10_000);
          const mine = new Set(events.filter((e) => e.event === 'decision' && e.ci!.job_id === job.job).map((e) => e.id));
          const expected = events
            .filter((e) => mine.has(e.id))
            .map((e) => ({ e, t: Date.parse(e.time), ev: e.event === 'decision' ? 0 : 1 }))
            .sort((a, b) => a.t - b.t || a.ev - b.ev);
          assert.equal(all.length, expected.length, job.job);
          assert.deepEqual(
            all.map((e) => `${e.time} ${e.event}`),
            expected.map((x) => `${x.e.time} ${x.e.event}`),
            job.job,
          );
          for (const limit of [1, 7, 40]) assert.deepEqual(await store.jobEvents(job.job, limit), all.slice(0, limit), `${job.job}, the first ${limit}`);
        }
      } finally {
        await Promise.all(stores.map((s) => s.close()));
      }
    },
  );
  it("an event of a day whose partition another collector's retention dropped after this one made it is stored (every retry failed before)", { timeout: 60_000 }, async () => {
    const { url, store } = await open();
    const other = await PostgresStore.open(url);
    try {
      const day = Date.UTC(2026, 10, 10);
      const d = testDecision(randomUUID(), day + 3_600_000, 'late.test', { job_id: 'late-job', repository: 'org/late' });
      assert.equal((await store.insert([d])).stored, 1); // this collector made the day's partition
      await other.retain(new Date(day + 86_400_000)); // the other drops it
      const late = testDecision(randomUUID(), day + 7_200_000, 'late.test', { job_id: 'late-job', repository: 'org/late' });
      assert.deepEqual(await store.insert([late, testClose(late, 10, 1, 2)]), { stored: 2, duplicates: 0 });
      assert.equal(await store.count(), 2);
    } finally {
      await store.close();
      await other.close();
    }
  });
});
