import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { decodeIdHex } from '../../collector/stores/codec.js';
import { ROWS_PER_TURN } from '../../collector/stores/in-turns.js';
import { SqliteStore } from '../../collector/stores/sqlite-store.js';
import { jobKey } from '../../events/job-key.js';
import { jobEvents as generatedJob } from '../../bench/collector-events.js';
import type { EgressEvent } from '../../events/schema.js';

const key = (e: EgressEvent) => `${e.event}:${e.id}`;

test("a job's events read a page per event-loop turn: the same events in the same order as one read, the limit kept, the loop free between pages", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-job-read-'));
  try {
    const path = join(dir, 'collector.db');
    const store = new SqliteStore(path);
    // More than two pages, many events at one millisecond (a page may end inside a run of equal times).
    const events = generatedJob('paged-job', ROWS_PER_TURN * 2 + 1_234, Date.parse('2026-12-01T10:00:00Z'), 40).map((e, i) => ({
      ...e,
      time: new Date(Date.parse('2026-12-01T10:00:00Z') + Math.floor(i / 9)).toISOString(),
    }));
    for (let i = 0; i < events.length; i += 5_000) await store.insert(events.slice(i, i + 5_000));
    const job = jobKey(events[0] as Parameters<typeof jobKey>[0]);

    let ticks = 0;
    const ticker = setInterval(() => ticks++, 0);
    const read = await store.jobEvents(job, 200_000);
    clearInterval(ticker);
    // Three pages, two turns between them; the first may come in the loop's own check phase, before any timer: at
    // least one timer callback (a read in one turn runs none).
    assert.ok(ticks >= 1, `the loop ran between pages (${ticks} timer callbacks during the read)`);

    // The order one SQL read gives (time, then the row's sequence), from the file itself.
    const db = new Database(path, { readonly: true });
    const jobId = (db.prepare('SELECT id FROM eg_strings WHERE text = ?').get(job) as { id: number }).id;
    const order = db.prepare('SELECT lower(hex(key)) AS k, event FROM eg_events WHERE job_id = ? ORDER BY time, seq').all(jobId) as Array<{ k: string; event: number }>;
    db.close();
    assert.equal(read.length, events.length);
    assert.equal(order.length, events.length);
    assert.equal(new Set(read.map(key)).size, events.length, 'no event twice');
    assert.deepEqual(new Set(read.map(key)), new Set(events.map(key)), 'every stored event');
    for (let i = 1; i < read.length; i++) assert.ok(read[i - 1]!.time <= read[i]!.time, `in time order at ${i}`);
    // The same sequence as the single read, row by row.
    assert.deepEqual(
      read.map(key),
      order.map((r) => `${r.event === 0 ? 'decision' : 'close'}:${decodeIdHex(r.k)}`),
    );

    const limited = await store.jobEvents(job, ROWS_PER_TURN + 7);
    assert.deepEqual(limited.map(key), read.slice(0, ROWS_PER_TURN + 7).map(key));
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a job read while a late decision comes in: the view holds no close without its decision (a close stored first gets the job then)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-job-read-late-'));
  try {
    const store = new SqliteStore(join(dir, 'collector.db'));
    const events = generatedJob('late-job', ROWS_PER_TURN * 2 + 500, Date.parse('2026-12-01T10:00:00Z'), 40);
    // An allowed decision of the first page held back; its close, timed after every other event, stored first: it
    // has no job until its decision comes (aggregate.ts), then it has this one.
    const i = events.findIndex((e, k) => k > 100 && e.event === 'decision' && events[k + 1]?.event === 'close');
    const late = events[i]!;
    const close = { ...events[i + 1]!, time: new Date(Date.parse(events.at(-1)!.time) + 1_000).toISOString() };
    const rest = events.filter((_, k) => k !== i && k !== i + 1);
    for (let k = 0; k < rest.length; k += 5_000) await store.insert(rest.slice(k, k + 5_000));
    await store.insert([close]);
    const job = jobKey(late as Parameters<typeof jobKey>[0]);

    const reading = store.jobEvents(job, 200_000);
    // The first page is read in the call's own turn; the decision, timed in it, is stored before the second page.
    await store.insert([late]);
    const view = await reading;
    const decided = new Set(view.filter((e) => e.event === 'decision').map((e) => e.id));
    assert.deepEqual(
      view.filter((e) => e.event === 'close' && !decided.has(e.id)).map((e) => e.id),
      [],
      'no close without its decision',
    );
    assert.equal(view.length, rest.length, 'the events stored before the read, whole');

    const later = await store.jobEvents(job, 200_000);
    assert.deepEqual(
      later.filter((e) => e.id === late.id).map((e) => e.event),
      ['decision', 'close'],
      'a later read has both',
    );
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a job of fewer rows than a page is read in one query, in the caller's turn; a page cut short ends the read", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-job-read-small-'));
  try {
    const store = new SqliteStore(join(dir, 'collector.db'));
    const small = generatedJob('small-job', 500, Date.parse('2026-12-01T10:00:00Z'), 10);
    await store.insert(small);
    const job = jobKey(small[0] as Parameters<typeof jobKey>[0]);
    // An immediate queued before the read runs before it ends only if the read waited for a turn (nextTurn).
    let turned = false;
    setImmediate(() => (turned = true));
    const read = await store.jobEvents(job, 200_000);
    assert.equal(read.length, small.length);
    assert.equal(turned, false, 'no turn waited for after a page shorter than asked');
    await store.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
