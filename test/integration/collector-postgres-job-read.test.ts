import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { jobEvents as generatedJob } from '../../bench/collector-events.js';
import { renderJobView, type JobView } from '../../collector/job-view.js';
import { ROWS_PER_TURN } from '../../collector/stores/in-turns.js';
import type { JobRowsPage } from '../../collector/stores/job-rows.js';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import { ViewThread } from '../../collector/view-thread.js';
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

test("PostgreSQL: the view thread unpacks a job's rows (closes joined into their decisions' rows) and renders each view as the loop would", async () => {
  const store = await PostgresStore.open(cluster.url);
  const views = new ViewThread({ from: 0 });
  try {
    const generated = generatedJob('pg-view-job', ROWS_PER_TURN * 2 + 77, Date.parse('2026-12-01T12:00:00Z'), 40);
    for (let i = 0; i < generated.length; i += 5_000) await store.insert(generated.slice(i, i + 5_000));
    const job = jobKey(generated[0] as Parameters<typeof jobKey>[0]);
    const events = await store.jobEvents(job, 200_000);
    assert.equal(events.length, generated.length);
    const rows = (limit: number) => ({ limit, read: (onPage: (page: JobRowsPage) => void, signal?: AbortSignal) => store.jobRows(job, limit, onPage, signal) });
    for (const view of [
      { kind: 'page', job, nonce: 'n' },
      { kind: 'summary', job },
      { kind: 'policy', job, collapse: 0 },
    ] satisfies JobView[]) {
      assert.equal(await views.render(view, rows(200_000)), renderJobView(view, events), view.kind);
    }
    // A limit inside the job: the same first events either side.
    const first = await store.jobEvents(job, 3_001);
    assert.equal(first.length, 3_001);
    assert.equal(await views.render({ kind: 'summary', job }, rows(3_001)), renderJobView({ kind: 'summary', job }, first));
  } finally {
    await views.close();
    await store.close();
  }
});
