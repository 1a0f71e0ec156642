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
import { ViewThread, ViewThreadError } from '../../collector/view-thread.js';
import { jobKey } from '../../events/job-key.js';
import type { DecisionEvent, EgressEvent } from '../../events/schema.js';

/** A job of more than two chunks: the view thread gets it over several turns. */
function job(name: string): { key: string; events: EgressEvent[] } {
  const events = generatedJob(name, ROWS_PER_TURN * 2 + 321, Date.parse('2026-12-01T10:00:00Z'), 40);
  return { key: jobKey(events[0] as DecisionEvent), events };
}

/** Turns of the caller's event loop until `promise` settles (0: it settled in the caller's turn, before any other). */
async function turnsUntil<T>(promise: Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let ticking = true;
  const tick = () => {
    if (!ticking) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  try {
    return { value: await promise, turns };
  } finally {
    ticking = false;
  }
}

test('the view thread renders each view as the loop would, while the loop keeps turning', async () => {
  const { key, events } = job('view-thread-job');
  const views = new ViewThread({ from: 0 });
  try {
    const all: JobView[] = [
      { kind: 'page', job: key, nonce: 'bm9uY2U=' },
      { kind: 'summary', job: key },
      { kind: 'policy', job: key, collapse: 0 },
      { kind: 'policy', job: key, collapse: 2 },
    ];
    for (const view of all) {
      const { value, turns } = await turnsUntil(views.render(view, events));
      assert.equal(value, renderJobView(view, events), `${view.kind}: the same text`);
      assert.ok(turns > 2, `${view.kind}: rendered off the caller's turn (${turns} turns)`);
    }
    // Concurrent views each get their own answer.
    const answers = await Promise.all(all.map((view) => views.render(view, events)));
    assert.deepEqual(
      answers,
      all.map((view) => renderJobView(view, events)),
    );
  } finally {
    await views.close();
  }
});

test("a job smaller than the threshold is rendered in the caller's turn; events the thread cannot render reject with why", async () => {
  const { key, events } = job('small-job');
  const views = new ViewThread({ from: events.length + 1 });
  try {
    const { turns } = await turnsUntil(views.render({ kind: 'summary', job: key }, events));
    assert.equal(turns, 0);
  } finally {
    await views.close();
  }
  const threaded = new ViewThread({ from: 0 });
  try {
    const broken = [{ event: 'decision', id: 'x' } as unknown as EgressEvent];
    await assert.rejects(threaded.render({ kind: 'summary', job: 'j' }, broken), (err) => err instanceof ViewThreadError && /could not render/.test(err.message));
    // The thread goes on serving.
    assert.equal(await threaded.render({ kind: 'summary', job: key }, events), renderJobView({ kind: 'summary', job: key }, events));
  } finally {
    await threaded.close();
  }
});

test('an aborted view rejects with the reason, mid-send or waiting; the thread forgets it and serves the next', async () => {
  const { key, events } = job('abort-view-job');
  const views = new ViewThread({ from: 0 });
  try {
    const reason = new Error('client gone');
    const controller = new AbortController();
    const midSend = views.render({ kind: 'page', job: key, nonce: 'n' }, events, controller.signal);
    controller.abort(reason); // after the first chunk (sent in the call's own turn), before the second
    await assert.rejects(midSend, (err) => err === reason);

    const later = new AbortController();
    const waiting = views.render({ kind: 'summary', job: key }, events, later.signal);
    // Every chunk sent (a turn per chunk), then aborted while the thread renders or before its answer is read.
    for (let i = 0; i < Math.ceil(events.length / ROWS_PER_TURN) + 1; i++) await nextTurn();
    later.abort(reason);
    await assert.rejects(waiting, (err) => err === reason);

    assert.equal(await views.render({ kind: 'summary', job: key }, events), renderJobView({ kind: 'summary', job: key }, events));
  } finally {
    await views.close();
  }
});

test('a view dropped while the thread renders others is not rendered when its turn comes', async () => {
  const { key, events } = job('dropped-queued-job');
  const one = events.slice(0, ROWS_PER_TURN - 1); // one chunk: each view below is sent whole in this turn
  const views = new ViewThread({ from: 0 });
  try {
    // The thread is starting (then rendering `first`) while the second view is sent, its client goes and it is
    // dropped: the drop is in the thread's queue before the view's turn to be rendered comes.
    const first = views.render({ kind: 'page', job: key, nonce: 'n' }, one);
    const controller = new AbortController();
    const dropped = views.render({ kind: 'page', job: key, nonce: 'n' }, one, controller.signal);
    const answered: number[] = [];
    (views as unknown as { worker: Worker }).worker.on('message', (message: { id: number }) => answered.push(message.id));
    controller.abort(new Error('client gone'));
    await assert.rejects(dropped, /client gone/);
    const expected = renderJobView({ kind: 'summary', job: key }, one);
    assert.equal(await first, renderJobView({ kind: 'page', job: key, nonce: 'n' }, one));
    assert.equal(await views.render({ kind: 'summary', job: key }, one), expected);
    assert.deepEqual(answered, [1, 3], 'the thread answered the first and the third view only');
  } finally {
    await views.close();
  }
});

test('views waiting when the thread stops reject; a closed thread refuses; an idle thread stops and starts again', async () => {
  const { key, events } = job('stop-view-job');
  const views = new ViewThread({ from: 0 });
  const pending = assert.rejects(views.render({ kind: 'page', job: key, nonce: 'n' }, events), (err) => err instanceof ViewThreadError && /stopping/.test(err.message));
  await views.close();
  await pending;
  await assert.rejects(views.render({ kind: 'summary', job: key }, events), ViewThreadError);

  const idle = new ViewThread({ from: 0, idleMs: 1 });
  try {
    const expected = renderJobView({ kind: 'summary', job: key }, events);
    assert.equal(await idle.render({ kind: 'summary', job: key }, events), expected);
    for (let i = 0; i < 200 && idle.running; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(idle.running, false, 'stopped once idle');
    assert.equal(await idle.render({ kind: 'summary', job: key }, events), expected, 'started again');
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
    const { key, events } = job('served-view-job');
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
