import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import type { CloseEvent, DecisionEvent } from '../../events/schema.js';
import { StoreModel, testClose, testDecision } from '../helpers/aggregate-model.js';
import { startPostgresCluster, type PostgresCluster } from '../helpers/postgres-cluster.js';

/** Review findings on the PostgreSQL store's close in its decision's row (each test failed before its fix). */

/** The collector's largest batch (server.ts DEFAULT_LIMITS.maxEvents). */
const MAX_EVENTS = 10_000;

describe('PostgreSQL store: review findings (a real server started for the test)', () => {
  let cluster: PostgresCluster | undefined;
  let admin: pg.Client;
  let databases = 0;
  const open = async () => {
    const name = `review5_${++databases}`;
    await admin.query(`CREATE DATABASE ${name}`);
    const url = cluster!.url.replace(/\/[^/]*$/, `/${name}`);
    return { url, store: await PostgresStore.open(url) };
  };

  before(async () => {
    cluster = await startPostgresCluster();
    admin = new pg.Client({ connectionString: cluster.url });
    await admin.connect();
  });
  after(async () => {
    await admin?.end().catch(() => undefined);
    cluster?.stop();
  });

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
      const model = new StoreModel(() => false);
      model.insert([...decisions, ...closes]);
      assert.deepEqual(
        (await store.jobs()).jobs.sort((a, b) => a.job.localeCompare(b.job)),
        model.jobs(),
      );
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
        const model = new StoreModel(() => false);
        model.insert([...decisions, ...closes]);
        assert.deepEqual(
          (await store.jobs()).jobs.sort((a, b) => a.job.localeCompare(b.job)),
          model.jobs(),
        );
      } finally {
        await Promise.all([store, ...others].map((s) => s.close()));
      }
    },
  );
});
