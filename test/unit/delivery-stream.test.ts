import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { startEventStream } from '../../events/delivery/stream-client.js';
import { startCollector, type Collector } from '../../collector/server.js';
import { emitConnections } from '../helpers/emit-events.js';
import { waitFor } from '../helpers/wait-for.js';

const TOKEN = 'stream-test-token';

async function getJson(port: number, path: string): Promise<any> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return res.json();
}

function spoolBytes(dir: string): number {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.ndjson'))
    .reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

describe('event stream client -> collector (SQLite)', () => {
  let dir: string;
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'egress-stream-'));
  });
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  it('delivers every decision and close event once, with the bearer token, and empties the spool', async () => {
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'a.db'), token: TOKEN });
    cleanups.push(() => collector.close());
    const events = new EventLog({ stdout: false, ci: { job_id: 'job-a' } });
    const spoolDir = join(dir, 'spool-a');
    const stream = startEventStream({ url: `http://127.0.0.1:${collector.port}`, token: TOKEN, spoolDir, events, flushIntervalMs: 20, batchMaxEvents: 25 });
    cleanups.push(() => stream.stop());

    emitConnections(events, 120);
    await waitFor('240 events sent', () => stream.stats().sent === 240);
    assert.equal(await collector.store.count(), 240);
    const { jobs } = await getJson(collector.port, '/api/v1/jobs');
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0].job, 'job-a');
    assert.equal(jobs[0].decisions, 120);
    const { events: stored } = await getJson(collector.port, '/api/v1/jobs/job-a/events');
    assert.equal(stored.length, 240);
    assert.equal(stored.filter((e: any) => e.event === 'close').length, 120);
    const stats = stream.stats();
    assert.equal(stats.queued, 0);
    assert.equal(stats.spooled, 240);
    assert.equal(stats.dropped, 0);
    assert.equal(spoolBytes(spoolDir), 0, 'delivered events are removed from the spool');
  });

  it('loses and duplicates nothing when the collector is killed and restarted mid-stream, or the proxy restarts', async () => {
    const db = join(dir, 'b.db');
    let collector: Collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db, token: TOKEN });
    const port = collector.port;
    cleanups.push(() => collector.close());
    const events = new EventLog({ stdout: false, ci: { repository: 'octo/repo', run_id: '77', job: 'build' } });
    const spoolDir = join(dir, 'spool-b');
    const options = { url: `http://127.0.0.1:${port}/`, token: TOKEN, spoolDir, events, flushIntervalMs: 10, batchMaxEvents: 10, backoffInitialMs: 20, backoffMaxMs: 100 };
    let stream = startEventStream(options);

    // Emit while the collector goes away: batches in flight fail and are retried later.
    const emitting = (async () => {
      for (let i = 0; i < 30; i++) {
        emitConnections(events, 5);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    await waitFor('some events sent', () => stream.stats().sent > 0);
    await collector.close();
    await emitting;
    await waitFor('a failed delivery', () => stream.stats().failures > 0);
    assert.ok(spoolBytes(spoolDir) > 0, 'undelivered events wait on disk');

    // Proxy restart while the collector is down: the new client picks the spool up.
    await stream.stop();
    const pendingAtStop = stream.stats().queued;
    assert.ok(pendingAtStop > 0);
    stream = startEventStream(options);
    cleanups.push(() => stream.stop());
    assert.equal(stream.stats().queued, pendingAtStop, 'spooled events survive the restart');
    emitConnections(events, 10);

    collector = await startCollector({ listen: { host: '127.0.0.1', port }, db, token: TOKEN });
    const total = (30 * 5 + 10) * 2;
    await waitFor('all events stored', async () => (await collector.store.count()) === total && stream.stats().queued === 0, 15_000);
    assert.equal(await collector.store.count(), total, 'no event duplicated');
    const { jobs } = await getJson(port, '/api/v1/jobs');
    assert.deepEqual(
      jobs.map((j: any) => [j.job, j.decisions]),
      [['octo/repo/77/build', 160]],
    );
    const { events: stored } = await getJson(port, `/api/v1/jobs/${encodeURIComponent('octo/repo/77/build')}/events`);
    assert.equal(new Set(stored.map((e: any) => `${e.id}/${e.event}`)).size, total);
    assert.equal(spoolBytes(spoolDir), 0);
  });

  it('bounds the memory queue without a spool and counts dropped events', async () => {
    const events = new EventLog({ stdout: false });
    // Nothing listens on this port: grab one and release it.
    const probe = http.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const stream = startEventStream({ url: `http://127.0.0.1:${port}`, events, maxQueue: 50, flushIntervalMs: 10, backoffInitialMs: 50, stopTimeoutMs: 200 });
    emitConnections(events, 40); // 80 events into a queue of 50
    const stats = stream.stats();
    assert.equal(stats.queued, 50);
    assert.equal(stats.dropped, 30);
    assert.equal(stats.spooled, 0);
    await stream.stop();
    assert.equal(stream.stats().dropped, 80, 'what was never delivered counts as dropped at stop');
  });

  it('sends NDJSON with the bearer token, gzip for large batches only', async () => {
    const requests: Array<{ encoding?: string; auth?: string; type?: string; lines: number }> = [];
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        requests.push({
          encoding: req.headers['content-encoding'],
          auth: req.headers.authorization,
          type: req.headers['content-type'],
          lines: body
            .toString()
            .split('\n')
            .filter(Boolean)
            .map((l) => JSON.parse(l)).length,
        });
        res.end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => server.close(r)));
    const events = new EventLog({ stdout: false });
    const stream = startEventStream({
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      token: 's3cret',
      events,
      flushIntervalMs: 10,
      batchMaxEvents: 100,
      gzipMinBytes: 4096,
    });
    cleanups.push(() => stream.stop());
    events.decision({
      kind: 'http',
      client: '127.0.0.1:1',
      host: 'one.example.test',
      port: 80,
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: 'x',
      message: 'm',
      mode: 'audit',
    });
    await waitFor('small batch', () => requests.length === 1);
    emitConnections(events, 50);
    await waitFor('large batch', () => stream.stats().sent === 101);
    assert.deepEqual(requests[0], { encoding: undefined, auth: 'Bearer s3cret', type: 'application/x-ndjson', lines: 1 });
    assert.equal(requests[1]!.encoding, 'gzip');
    assert.equal(
      requests.reduce((n, r) => n + r.lines, 0),
      101,
    );
  });

  it('keeps retrying with backoff while the token is refused, and delivers once it is accepted', async () => {
    const db = join(dir, 'c.db');
    let collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db, token: 'new-token' });
    const port = collector.port;
    cleanups.push(() => collector.close());
    const events = new EventLog({ stdout: false });
    const stream = startEventStream({ url: `http://127.0.0.1:${port}`, token: 'old-token', events, flushIntervalMs: 10, backoffInitialMs: 20, backoffMaxMs: 50 });
    cleanups.push(() => stream.stop());
    emitConnections(events, 3);
    await waitFor('two failures', () => stream.stats().failures >= 2);
    assert.match(stream.stats().lastError ?? '', /401/);
    assert.equal(await collector.store.count(), 0);
    await collector.close();
    collector = await startCollector({ listen: { host: '127.0.0.1', port }, db, token: 'old-token' });
    await waitFor('delivered', () => stream.stats().sent === 6);
    assert.equal(await collector.store.count(), 6);
    assert.equal(existsSync(db), true);
  });

  it('a line the collector refuses is counted as rejected; the valid events of its batch are stored, none dropped', async () => {
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'rejected.db'), token: TOKEN });
    cleanups.push(() => collector.close());
    // A producer the sidecar is not (the event log conforms what it writes): its listener is fed by hand.
    const log = new EventLog({ stdout: false });
    let listener: ((event: EgressEvent) => void) | undefined;
    const producer = { log: log.log, subscribe: (l: (event: EgressEvent) => void) => ((listener = l), () => undefined) } as unknown as EventLog;
    const stream = startEventStream({ url: `http://127.0.0.1:${collector.port}`, token: TOKEN, events: producer, flushIntervalMs: 20, batchMaxEvents: 50 });
    cleanups.push(() => stream.stop());
    const seen: EgressEvent[] = [];
    log.subscribe((e) => seen.push(e));
    emitConnections(log, 5);
    const invalid = { ...seen[0]!, id: 'invalid-1', host: '' } as EgressEvent;
    for (const event of [...seen.slice(0, 5), invalid, ...seen.slice(5)]) listener!(event);
    await waitFor('10 sent', () => stream.stats().sent === 10);
    const stats = stream.stats();
    assert.equal(stats.rejected, 1);
    assert.equal(stats.dropped, 0);
    assert.match(stats.lastError ?? '', /line 6 .*"host" is empty/);
    assert.equal(await collector.store.count(), 10);
  });
});
