import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import pg from 'pg';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../../events/schema.js';
import { recountJobs, storedJobs, testClose, testDecision } from '../helpers/aggregate-model.js';
import { scratchDatabases } from '../helpers/postgres-scratch-databases.js';

/**
 * PostgreSQL keeps a close in its decision's row (`close_body`) when both are on the same day, same host, the close
 * not before the decision; otherwise a row of its own. Whichever place it takes, it is stored once.
 */

const HOUR = 3_600_000;

/**
 * Two jobs of `perJob` connections from `start` (text ids and UUIDs alternately: hashed and plain keys), every third
 * blocked (no close). Closes 40 ms after their decision, except those listed in `odd` by index: the next day (a row of
 * its own), or before the decision (a producer's clock), or naming another host.
 */
function connections(tag: string, perJob: number, start: number): { decisions: DecisionEvent[]; closes: CloseEvent[] } {
  const decisions: DecisionEvent[] = [];
  const closes: CloseEvent[] = [];
  for (let j = 0; j < 2; j++) {
    for (let i = 0; i < perJob; i++) {
      const id = i % 2 === 0 ? randomUUID() : `${tag}-${j}-${i}`;
      const allowed = i % 3 !== 0;
      const d = testDecision(
        id,
        start + j * 1000 + i * 10,
        `h${i % 4}.close.test`,
        { job_id: `${tag}-job-${j}`, repository: 'org/close' },
        {
          decision: allowed ? 'allowed' : 'blocked',
          message: `allowed by endpoint h${i % 4}.close.test:443`,
        },
      );
      decisions.push(d);
      if (!allowed) continue;
      if (i === 4)
        closes.push(testClose(d, 30 * HOUR, i, 100 + i)); // the next day
      else if (i === 5)
        closes.push(testClose(d, -5, i, 100 + i)); // before its decision
      else if (i === 7) closes.push({ ...testClose(d, 40, i, 100 + i), host: 'elsewhere.close.test' });
      else closes.push(testClose(d, 40 + i, i, 100 + i));
    }
  }
  return { decisions, closes };
}

describe('PostgreSQL: a close in its decision row (a real server started for the test)', () => {
  const databases = scratchDatabases('closerow');
  const open = async () => {
    const { url } = await databases.create();
    return { url, store: await PostgresStore.open(url) };
  };
  /** Rows of eg_events: all, closes of their own, decision rows holding their close. */
  const layout = async (url: string) => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const r = await client.query('SELECT COUNT(*)::int AS rows, COUNT(*) FILTER (WHERE event = 1)::int AS "closeRows", COUNT(close_body)::int AS joined FROM eg_events');
      return r.rows[0] as { rows: number; closeRows: number; joined: number };
    } finally {
      await client.end();
    }
  };
  const jobsOf = (events: readonly EgressEvent[]) => [...new Set(events.flatMap((e) => (e.event === 'decision' ? [e.ci!.job_id!] : [])))].sort();
  /** What every reader answers: job list, each job's events (JSON text, in order). */
  const reads = async (store: PostgresStore, jobs: readonly string[]) => ({
    jobs: (await store.jobs()).jobs,
    events: JSON.stringify(await Promise.all(jobs.map((j) => store.jobEvents(j, 1000)))),
  });

  it('a pair in one batch is one row; repeated alone, whole, or cut otherwise it is stored once; odd closes are rows of their own', { timeout: 60_000 }, async () => {
    const { url, store } = await open();
    try {
      const { decisions, closes } = connections('pair', 30, Date.UTC(2026, 10, 20, 10));
      const events = [...decisions, ...closes];
      assert.deepEqual(await store.insert(events), { stored: events.length, duplicates: 0 });
      assert.deepEqual(await layout(url), { rows: decisions.length + 6, closeRows: 6, joined: closes.length - 6 }, 'three odd closes per job: rows of their own');
      assert.deepEqual(await store.insert(closes), { stored: 0, duplicates: closes.length }, 'closes repeated alone');
      assert.deepEqual(await store.insert([...closes, ...decisions]), { stored: 0, duplicates: events.length }, 'the whole batch again');
      for (let i = 0; i < events.length; i += 7) assert.equal((await store.insert(events.slice(i, i + 7))).stored, 0, 'cut otherwise');
      assert.equal(await store.count(), events.length);
      assert.deepEqual(await storedJobs(store), recountJobs(events), 'aggregates: each close counted once');
      const stored = (await Promise.all(jobsOf(events).map((j) => store.jobEvents(j, 1000)))).flat();
      const text = (list: readonly EgressEvent[]) => list.map((e) => JSON.stringify(e)).sort();
      assert.deepEqual(text(stored), text(events), 'every event rebuilt exactly');
    } finally {
      await store.close();
    }
  });

  it('a close stored alone before its decision, then repeated with its decision: stored once (a row of its own, linked)', { timeout: 60_000 }, async () => {
    const { url, store } = await open();
    try {
      const { decisions, closes } = connections('early', 20, Date.UTC(2026, 10, 20, 11));
      assert.equal((await store.insert(closes)).stored, closes.length);
      assert.deepEqual(await store.insert([...decisions, ...closes]), { stored: decisions.length, duplicates: closes.length });
      assert.deepEqual(await layout(url), { rows: decisions.length + closes.length, closeRows: closes.length, joined: 0 });
      assert.deepEqual(await store.insert(closes), { stored: 0, duplicates: closes.length });
      assert.equal(await store.count(), decisions.length + closes.length);
      assert.deepEqual(await storedJobs(store), recountJobs([...decisions, ...closes]));
    } finally {
      await store.close();
    }
  });

  it("a close after its decision's batch goes into the stored decision's row, once", { timeout: 60_000 }, async () => {
    const { url, store } = await open();
    try {
      const { decisions, closes } = connections('late', 20, Date.UTC(2026, 10, 20, 12));
      assert.equal((await store.insert(decisions)).stored, decisions.length);
      assert.equal((await store.insert(closes)).stored, closes.length);
      assert.deepEqual(await layout(url), { rows: decisions.length + 6, closeRows: 6, joined: closes.length - 6 });
      assert.deepEqual(await store.insert([...closes, ...decisions]), { stored: 0, duplicates: closes.length + decisions.length });
      assert.equal(await store.count(), decisions.length + closes.length);
      assert.deepEqual(await storedJobs(store), recountJobs([...decisions, ...closes]));
    } finally {
      await store.close();
    }
  });

  it("a job's events are the same JSON, in the same order, for any limit, whether its closes are in their decisions' rows or rows of their own", { timeout: 60_000 }, async () => {
    const joined = await open();
    const apart = await open();
    try {
      // Closes 40+i ms after decisions 10 ms apart: they interleave with later decisions.
      const { decisions, closes } = connections('order', 25, Date.UTC(2026, 10, 20, 13));
      await joined.store.insert([...decisions, ...closes]);
      await apart.store.insert(closes); // before their decisions: rows of their own
      await apart.store.insert(decisions);
      assert.equal((await layout(joined.url)).joined, closes.length - 6);
      assert.equal((await layout(apart.url)).joined, 0);
      const jobs = jobsOf(decisions);
      assert.deepEqual(await reads(joined.store, jobs), await reads(apart.store, jobs));
      for (const limit of [1, 2, 5, 13, 30, 41]) {
        const a = await joined.store.jobEvents(jobs[0]!, limit);
        assert.equal(a.length, limit);
        assert.equal(JSON.stringify(a), JSON.stringify(await apart.store.jobEvents(jobs[0]!, limit)), `the first ${limit}`);
      }
    } finally {
      await joined.store.close();
      await apart.store.close();
    }
  });

  it('a database of the layout before (no close_body column, closes as rows of their own) is read the same, and its closes still deduplicated', { timeout: 60_000 }, async () => {
    const { url, store } = await open();
    const { decisions, closes } = connections('before', 20, Date.UTC(2026, 10, 20, 14));
    const late = connections('beforelate', 10, Date.UTC(2026, 10, 20, 15));
    const jobs = jobsOf([...decisions, ...late.decisions]);
    // The layout the earlier build makes: every close a row of its own (here: closes first), then no close_body column.
    await store.insert(closes);
    await store.insert([...decisions, ...late.decisions]);
    const expected = await reads(store, jobs);
    await store.close();
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await client.query('ALTER TABLE eg_events DROP COLUMN close_body');
    } finally {
      await client.end();
    }
    const reopened = await PostgresStore.open(url);
    try {
      assert.deepEqual(await reads(reopened, jobs), expected);
      assert.deepEqual(await reopened.insert([...decisions, ...closes]), { stored: 0, duplicates: decisions.length + closes.length });
      // Closes of decisions stored by the earlier build go into their rows.
      assert.equal((await reopened.insert(late.closes)).stored, late.closes.length);
      assert.deepEqual(await layout(url), { rows: decisions.length + closes.length + late.decisions.length + 6, closeRows: closes.length + 6, joined: late.closes.length - 6 });
      assert.equal(await reopened.count(), decisions.length + closes.length + late.decisions.length + late.closes.length);
      assert.deepEqual(await storedJobs(reopened), recountJobs([...decisions, ...closes, ...late.decisions, ...late.closes]));
    } finally {
      await reopened.close();
    }
  });
});
