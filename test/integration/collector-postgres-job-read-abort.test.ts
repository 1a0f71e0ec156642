import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { jobEvents as generatedJob } from '../../bench/collector-events.js';
import { ROWS_PER_TURN } from '../../collector/stores/in-turns.js';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import { jobKey } from '../../events/job-key.js';
import { startPostgresCluster, type PostgresCluster } from '../helpers/postgres-cluster.js';

let cluster: PostgresCluster;
before(async () => {
  cluster = await startPostgresCluster();
});
after(() => cluster?.stop());

test("PostgreSQL: a job's read stops once its signal is aborted (the client went away), with the signal's reason", async () => {
  const store = await PostgresStore.open(cluster.url);
  try {
    const events = generatedJob('pg-abort-job', ROWS_PER_TURN * 2 + 500, Date.parse('2026-12-01T10:00:00Z'), 40);
    for (let i = 0; i < events.length; i += 5_000) await store.insert(events.slice(i, i + 5_000));
    const job = jobKey(events[0] as Parameters<typeof jobKey>[0]);
    const whole = await store.jobEvents(job, 200_000);
    assert.equal(whole.length, events.length, 'read whole without a signal');

    const controller = new AbortController();
    const reason = new Error('client gone');
    const read = store.jobEvents(job, 200_000, controller.signal);
    controller.abort(reason); // while its queries are under way
    await assert.rejects(read, (err) => err === reason);
    await assert.rejects(store.jobEvents(job, 200_000, controller.signal), (err) => err === reason, 'an aborted signal reads nothing');
    assert.equal((await store.jobEvents(job, 200_000)).length, events.length, 'the pool still serves reads');
  } finally {
    await store.close();
  }
});
