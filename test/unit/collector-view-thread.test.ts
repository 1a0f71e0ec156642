import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Worker } from 'node:worker_threads';
import { jobEvents as generatedJob } from '../../bench/collector-events.js';
import { renderJobView, type JobView } from '../../collector/job-view.js';
import { startCollector } from '../../collector/server.js';
import { ROWS_PER_TURN } from '../../collector/stores/in-turns.js';
import { ViewThread, ViewThreadError, type JobRowsRead } from '../../collector/view-thread.js';
import type { JobRowsPage } from '../../collector/stores/job-rows.js';
import { SqliteStore } from '../../collector/stores/sqlite-store.js';
import { jobKey } from '../../events/job-key.js';
import type { DecisionEvent } from '../../events/schema.js';

/** A job (by default of more than two read pages) stored in a SQLite file. */
async function storedJob(name: string, count = ROWS_PER_TURN * 2 + 321) {
  const dir = mkdtempSync(join(tmpdir(), 'eg-view-thread-'));
  const store = new SqliteStore(join(dir, 'collector.db'));
  const generated = generatedJob(name, count, Date.parse('2026-12-01T10:00:00Z'), 40);
  for (let at = 0; at < generated.length; at += 5_000) await store.insert(generated.slice(at, at + 5_000));
  const key = jobKey(generated[0] as DecisionEvent);
  const events = await store.jobEvents(key, LIMIT);
  assert.equal(events.length, generated.length);
  return {
    key,
    events,
    /** The job's rows as the collector reads them; `readDone` says when the read has ended. */
    rows: (): JobRowsRead & { readDone: boolean } => {
      const rows = {
        limit: LIMIT,
        readDone: false,
        read: async (onPage: (page: JobRowsPage) => void, signal?: AbortSignal) => {
          await store.jobRows(key, LIMIT, onPage, signal);
          rows.readDone = true;
        },
      };
      return rows;
    },
    [Symbol.asyncDispose]: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const LIMIT = 200_000;

/** Turns of the caller's event loop after `rows`' read ended until `promise` settled (0: in the turn the read ended). */
async function turnsAfterRead<T>(rows: { readDone: boolean }, promise: Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let ticking = true;
  const tick = () => {
    if (!ticking) return;
    if (rows.readDone) turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  try {
    return { value: await promise, turns };
  } finally {
    ticking = false;
  }
}

test('the view thread unpacks and renders each view as the loop would, while the loop keeps turning', async () => {
  await using job = await storedJob('view-thread-job');
  const { key, events } = job;
  const views = new ViewThread({ from: 0 });
  try {
    const all: JobView[] = [
      { kind: 'page', job: key, nonce: 'bm9uY2U=' },
      { kind: 'summary', job: key },
      { kind: 'policy', job: key, collapse: 0 },
      { kind: 'policy', job: key, collapse: 2 },
    ];
    for (const view of all) {
      const rows = job.rows();
      const { value, turns } = await turnsAfterRead(rows, views.render(view, rows));
      assert.equal(value, renderJobView(view, events), `${view.kind}: the same text`);
      assert.ok(turns > 0, `${view.kind}: rendered off the caller's turn`);
    }
    // Concurrent views each get their own answer.
    const answers = await Promise.all(all.map((view) => views.render(view, job.rows())));
    assert.deepEqual(
      answers,
      all.map((view) => renderJobView(view, events)),
    );
    const none: JobRowsRead = { limit: LIMIT, read: async () => {} };
    assert.equal(await views.render({ kind: 'summary', job: 'no-such-job' }, none), null, 'a job without rows: no view');
  } finally {
    await views.close();
  }
});

test("a job smaller than the threshold is rendered in the caller's turn; rows the thread cannot unpack reject with why", async () => {
  await using job = await storedJob('small-job');
  const { key, events } = job;
  const views = new ViewThread({ from: events.length + 1 });
  try {
    const rows = job.rows();
    const { value, turns } = await turnsAfterRead(rows, views.render({ kind: 'summary', job: key }, rows));
    assert.equal(value, renderJobView({ kind: 'summary', job: key }, events));
    assert.equal(turns, 0);
  } finally {
    await views.close();
  }
  const threaded = new ViewThread({ from: 0 });
  try {
    const garbage: JobRowsPage = { engine: 'sqlite', bodies: Buffer.from('not a body'), rows: [['00ab', -1, 0, 'h.test', null, null, 10, -1]] };
    const broken: JobRowsRead = { limit: LIMIT, read: async (onPage) => onPage(garbage) };
    await assert.rejects(threaded.render({ kind: 'summary', job: 'j' }, broken), (err) => err instanceof ViewThreadError && /could not render/.test(err.message));
    // The thread goes on serving.
    assert.equal(await threaded.render({ kind: 'summary', job: key }, job.rows()), renderJobView({ kind: 'summary', job: key }, events));
  } finally {
    await threaded.close();
  }
});

test('an aborted view rejects with the reason, mid-read or waiting; the thread forgets it and serves the next', async () => {
  await using job = await storedJob('abort-view-job');
  const { key, events } = job;
  const views = new ViewThread({ from: 0 });
  try {
    const reason = new Error('client gone');
    const controller = new AbortController();
    const midRead = views.render({ kind: 'page', job: key, nonce: 'n' }, job.rows(), controller.signal);
    controller.abort(reason); // after the first page (read in the call's own turn), before the second
    await assert.rejects(midRead, (err) => err === reason);

    const later = new AbortController();
    const rows = job.rows();
    const waiting = views.render({ kind: 'summary', job: key }, rows, later.signal);
    for (let i = 0; i < 1_000 && !rows.readDone; i++) await nextTurn();
    assert.ok(rows.readDone);
    later.abort(reason); // every page sent: the thread unpacks or renders, or its answer waits to be read
    await assert.rejects(waiting, (err) => err === reason);

    assert.equal(await views.render({ kind: 'summary', job: key }, job.rows()), renderJobView({ kind: 'summary', job: key }, events));
  } finally {
    await views.close();
  }
});

test('a view dropped while the thread renders others is not rendered when its turn comes', async () => {
  // One page: each view below is read and sent whole in its call's own turn.
  await using job = await storedJob('dropped-queued-job', ROWS_PER_TURN - 1);
  const { key, events } = job;
  const views = new ViewThread({ from: 0 });
  try {
    // The thread is starting (then rendering `first`) while the second view is sent, its client goes and it is
    // dropped: the drop is in the thread's queue before the view's turn to be rendered comes.
    const first = views.render({ kind: 'page', job: key, nonce: 'n' }, job.rows());
    const controller = new AbortController();
    const dropped = views.render({ kind: 'page', job: key, nonce: 'n' }, job.rows(), controller.signal);
    await nextTurn(); // both reads ended, both views sent
    const answered: number[] = [];
    (views as unknown as { worker: Worker }).worker.on('message', (message: { id: number }) => answered.push(message.id));
    controller.abort(new Error('client gone'));
    await assert.rejects(dropped, /client gone/);
    assert.equal(await first, renderJobView({ kind: 'page', job: key, nonce: 'n' }, events));
    assert.equal(await views.render({ kind: 'summary', job: key }, job.rows()), renderJobView({ kind: 'summary', job: key }, events));
    assert.deepEqual(answered, [1, 3], 'the thread answered the first and the third view only');
  } finally {
    await views.close();
  }
});

test('views waiting when the thread stops reject; a closed thread refuses; an idle thread stops and starts again', async () => {
  await using job = await storedJob('stop-view-job');
  const { key } = job;
  const views = new ViewThread({ from: 0 });
  const pending = assert.rejects(views.render({ kind: 'page', job: key, nonce: 'n' }, job.rows()), (err) => err instanceof ViewThreadError && /stopping/.test(err.message));
  await views.close();
  await pending;
  await assert.rejects(views.render({ kind: 'summary', job: key }, job.rows()), ViewThreadError);

  // Closed while a view's first pages are held (the job not yet known to be large): no thread starts after it.
  const holding = new ViewThread({ from: ROWS_PER_TURN + 1 });
  const read = holding.render({ kind: 'summary', job: key }, job.rows());
  await holding.close(); // the first page is read in the call's own turn, the second after it
  await assert.rejects(read, (err) => err instanceof ViewThreadError && /stopping/.test(err.message));
  assert.equal(holding.running, false);

  const idle = new ViewThread({ from: 0, idleMs: 1 });
  try {
    const expected = renderJobView({ kind: 'summary', job: key }, job.events);
    assert.equal(await idle.render({ kind: 'summary', job: key }, job.rows()), expected);
    for (let i = 0; i < 200 && idle.running; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(idle.running, false, 'stopped once idle');
    assert.equal(await idle.render({ kind: 'summary', job: key }, job.rows()), expected, 'started again');
  } finally {
    await idle.close();
  }
});

function get(port: number, path: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.setTimeout(60_000, () => req.destroy(new Error('no answer in 60 s')));
    req.on('error', reject);
    req.end();
  });
}

test("the collector answers a large job's views from its thread and its events in chunks, the same as in one piece", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-view-thread-'));
  const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'collector.db'), viewThreadFrom: 0 });
  try {
    const events = generatedJob('served-view-job', ROWS_PER_TURN * 2 + 321, Date.parse('2026-12-01T10:00:00Z'), 40);
    const key = jobKey(events[0] as DecisionEvent);
    for (let at = 0; at < events.length; at += 5_000) await collector.store.insert(events.slice(at, at + 5_000));
    const stored = await collector.store.jobEvents(key, 200_000);
    const path = `/api/v1/jobs/${encodeURIComponent(key)}`;

    const json = await get(collector.port, `${path}/events`);
    assert.equal(json.status, 200);
    assert.match(String(json.headers['content-type']), /^application\/json/);
    assert.equal(json.body, JSON.stringify({ job: key, events: stored }), 'the JSON answer, byte for byte');
    const ndjson = await get(collector.port, `${path}/events?format=ndjson`);
    assert.match(String(ndjson.headers['content-type']), /^application\/x-ndjson/);
    assert.equal(ndjson.body, stored.map((e) => `${JSON.stringify(e)}\n`).join(''), 'the NDJSON answer, byte for byte');

    const summary = await get(collector.port, `${path}/summary`);
    assert.equal(summary.status, 200);
    assert.equal(summary.body, renderJobView({ kind: 'summary', job: key }, stored));
    const policy = await get(collector.port, `${path}/policy?collapse=1`);
    assert.equal(policy.body, renderJobView({ kind: 'policy', job: key, collapse: 1 }, stored));
    const page = await get(collector.port, `/jobs/${encodeURIComponent(key)}`);
    assert.equal(page.status, 200);
    const nonce = /'nonce-([^']+)'/.exec(String(page.headers['content-security-policy']))![1]!;
    assert.equal(page.body, renderJobView({ kind: 'page', job: key, nonce }, stored));
  } finally {
    await collector.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
