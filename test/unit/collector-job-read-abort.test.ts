import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import pino from 'pino';
import { jobEvents as generatedJob } from '../../bench/collector-events.js';
import { startCollector } from '../../collector/server.js';
import { ROWS_PER_TURN } from '../../collector/stores/in-turns.js';
import { SqliteStore } from '../../collector/stores/sqlite-store.js';
import { jobKey } from '../../events/job-key.js';
import type { EgressEvent } from '../../events/schema.js';

/** A job of more than two read pages, stored. */
async function storedJob(insert: (events: EgressEvent[]) => Promise<unknown>): Promise<string> {
  const events = generatedJob('abort-job', ROWS_PER_TURN * 2 + 500, Date.parse('2026-12-01T10:00:00Z'), 40);
  for (let i = 0; i < events.length; i += 5_000) await insert(events.slice(i, i + 5_000));
  return jobKey(events[0] as Parameters<typeof jobKey>[0]);
}

/**
 * A collector logging at debug level, and a check that a request it was serving stopped because its client went away:
 * the line that says so, no error. Waits for the line at most 20 s (a request that does not notice logs nothing).
 */
async function loggingCollector(dir: string, options: { viewThreadFrom?: number } = {}) {
  const lines: Array<{ level: number; msg: string }> = [];
  let logged: (() => void) | undefined;
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as { level: number; msg: string });
      logged?.();
      done();
    },
  });
  const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'collector.db'), log: pino({ level: 'debug' }, sink), ...options });
  const wentAwayQuietly = async () => {
    const done = () => lines.some((l) => /client went away|request failed/.test(l.msg));
    if (!done()) await Promise.race([new Promise<void>((resolve) => (logged = () => done() && resolve())), delay(20_000)]);
    assert.ok(
      lines.some((l) => l.msg === 'collector: client went away; request stopped'),
      lines.map((l) => l.msg).join('\n'),
    );
    assert.ok(!lines.some((l) => l.level >= 50), 'no error logged');
  };
  return { collector, wentAwayQuietly };
}

test("a job's read in turns stops at its next turn once its signal is aborted, with the signal's reason", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-job-read-abort-'));
  const store = new SqliteStore(join(dir, 'collector.db'));
  try {
    const job = await storedJob((events) => store.insert(events));
    assert.ok((await store.jobEvents(job, 200_000)).length > ROWS_PER_TURN * 2, 'read whole without a signal');
    const controller = new AbortController();
    const reason = new Error('client gone');
    const read = store.jobEvents(job, 200_000, controller.signal);
    controller.abort(reason); // after the first page (read in the call's own turn), before the second
    await assert.rejects(read, (err) => err === reason);
    await assert.rejects(store.jobEvents(job, 200_000, controller.signal), (err) => err === reason, 'an aborted signal reads nothing');
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the collector stops a job page's read when its client goes away, quietly (no error logged, no answer written)", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-job-page-abort-'));
  const { collector, wentAwayQuietly } = await loggingCollector(dir);
  try {
    const job = await storedJob((events) => collector.store.insert(events));
    // The read starts once the client has gone (so that it cannot end first): the store is asked with a signal,
    // and the read it does then rejects at once with the signal's reason.
    const read = collector.store.jobRows.bind(collector.store);
    let asked: (signal: AbortSignal | undefined) => void;
    const askedWith = new Promise<AbortSignal | undefined>((resolve) => (asked = resolve));
    let reading: Promise<void> | undefined;
    collector.store.jobRows = async (name, limit, onPage, signal) => {
      asked(signal);
      if (signal) await once(signal, 'abort');
      reading = read(name, limit, onPage, signal);
      return reading;
    };

    const client = request({ host: '127.0.0.1', port: collector.port, path: `/jobs/${encodeURIComponent(job)}` });
    client.on('error', () => {});
    client.end();
    const signal = await Promise.race([askedWith, delay(20_000).then(() => assert.fail("the page never read the job's rows"))]);
    assert.ok(signal, "the job's read is given a signal");
    client.destroy();
    await once(signal, 'abort');
    await assert.rejects(reading!, (err) => err === signal.reason, 'the read stops with the reason');

    await wentAwayQuietly();
  } finally {
    await collector.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the collector stops a job's events answer when its client goes away mid-answer, quietly", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eg-job-events-abort-'));
  const { collector, wentAwayQuietly } = await loggingCollector(dir);
  try {
    const job = await storedJob((events) => collector.store.insert(events));
    // The client takes the head and the first bytes, then reads nothing more: the answer (~9 MB) waits for a drain
    // that never comes until the client goes away.
    const client = request({ host: '127.0.0.1', port: collector.port, path: `/api/v1/jobs/${encodeURIComponent(job)}/events` });
    client.on('error', () => {});
    client.end();
    const [res] = (await once(client, 'response')) as [import('node:http').IncomingMessage];
    assert.equal(res.statusCode, 200);
    await once(res, 'data');
    res.pause();
    client.destroy();

    await wentAwayQuietly();
  } finally {
    await collector.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

for (const when of ['while its read is under way', 'while the view thread renders its view'] as const) {
  test(`close() stops a request ${when} quietly: before the store and the view thread close under it`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'eg-close-in-flight-'));
    const { collector, wentAwayQuietly } = await loggingCollector(dir, { viewThreadFrom: 0 });
    try {
      const job = await storedJob((events) => collector.store.insert(events));
      // close() is called with the read's first page read (its next ones a turn each), or once the read is done and
      // the view thread unpacks and renders the view.
      const read = collector.store.jobRows.bind(collector.store);
      let closing: Promise<void> | undefined;
      collector.store.jobRows = async (name, limit, onPage, signal) => {
        const reading = read(name, limit, onPage, signal);
        if (when === 'while its read is under way') {
          closing = collector.close();
          return reading;
        }
        await reading;
        await delay(1);
        closing = collector.close();
      };
      const client = request({ host: '127.0.0.1', port: collector.port, path: `/api/v1/jobs/${encodeURIComponent(job)}/summary` });
      client.on('error', () => {});
      client.end();
      for (let i = 0; i < 2_000 && !closing; i++) await delay(10);
      assert.ok(closing, "the job's read was asked for");
      await closing;
      await wentAwayQuietly();
    } finally {
      await collector.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
