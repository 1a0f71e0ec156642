import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { startEventStream } from '../../events/delivery/stream-client.js';
import { startCollector, type Collector } from '../../collector/server.js';
import { emitConnections } from '../helpers/emit-events.js';
import { startPostgresCluster, type PostgresCluster } from '../helpers/postgres-cluster.js';
import { waitFor } from '../helpers/wait-for.js';
import { checkHostSearch, checkManyHostSearch, hostSearchEvents } from '../helpers/host-search-scenario.js';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import { SCAN_UNION_HOSTS, searchScanSql } from '../../collector/stores/queries.js';

const TOKEN = 'pg-token';

async function postBatch(port: number, events: EgressEvent[]): Promise<any> {
  const res = await fetch(`http://127.0.0.1:${port}/api/v1/events`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/x-ndjson' },
    body: events.map((e) => JSON.stringify(e)).join('\n'),
  });
  assert.equal(res.status, 200);
  return res.json();
}

// Not skippable: without a PostgreSQL server this suite fails (the fleet storage would be untested).
describe('collector on PostgreSQL (a real server started for the test)', () => {
  let cluster: PostgresCluster | undefined;
  let dir: string;
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'egress-pgtest-'));
    cluster = await startPostgresCluster();
  });
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers which jobs talked to a host, and when (GET /api/v1/search)', async () => {
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: `${cluster!.url.replace(/\/[^/]*$/, '')}/postgres`, token: TOKEN });
    cleanups.push(() => collector.close());
    await postBatch(collector.port, hostSearchEvents());
    await checkHostSearch(collector.port);
  });

  it('pages a search whose pattern matches more hosts than one UNION ALL branch each (the LATERAL scan), by cursor and offset', async () => {
    const hosts = SCAN_UNION_HOSTS.postgres + 10;
    assert.equal(searchScanSql(Array.from({ length: hosts }, (_, i) => i + 1)).lateral, true, 'this many hosts take the LATERAL form');
    // The search test's database (its hosts are others): the one below counts every event of its own.
    const store = await PostgresStore.open(`${cluster!.url.replace(/\/[^/]*$/, '')}/postgres`);
    cleanups.push(() => store.close());
    await checkManyHostSearch(store, hosts);
  });

  it('lets several collectors write to one database: each event stored once', async () => {
    // Started together: schema creation must not race.
    const [a, b] = await Promise.all([0, 1].map(() => startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: cluster!.url, token: TOKEN })));
    cleanups.push(
      () => a!.close(),
      () => b!.close(),
    );

    const log = new EventLog({ stdout: false, ci: { job_id: 'fleet-job' } });
    const events: EgressEvent[] = [];
    log.subscribe((e) => events.push(e));
    emitConnections(log, 300);
    // The same events through both collectors at once, in overlapping batches in different orders.
    const batches = (list: EgressEvent[]) => Array.from({ length: Math.ceil(list.length / 50) }, (_, i) => list.slice(i * 50, i * 50 + 50));
    const results = await Promise.all([
      ...batches(events).map((batch) => postBatch(a!.port, batch)),
      ...batches([...events].reverse()).map((batch) => postBatch(b!.port, batch)),
      ...batches(events.slice(25)).map((batch) => postBatch(b!.port, batch)),
    ]);
    const stored = results.reduce((n, r) => n + r.stored, 0);
    const duplicates = results.reduce((n, r) => n + r.duplicates, 0);
    assert.equal(stored, 600);
    assert.equal(duplicates, 600 + 575);
    assert.equal(await a!.store.count(), 600);
    const fromB = await (await fetch(`http://127.0.0.1:${b!.port}/api/v1/jobs`)).json();
    assert.deepEqual(
      fromB.jobs.map((j: any) => [j.job, j.decisions, j.allowed]),
      [['fleet-job', 300, 300]],
    );
  });

  it('streams from two proxies through two collectors, a collector restarting mid-stream, with nothing lost or duplicated', async () => {
    let a: Collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: cluster!.url, token: TOKEN });
    const b: Collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: cluster!.url, token: TOKEN });
    const portA = a.port;
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    const logs = [new EventLog({ stdout: false, ci: { job_id: 'proxy-1' } }), new EventLog({ stdout: false, ci: { job_id: 'proxy-2' } })];
    const streams = [
      startEventStream({
        url: `http://127.0.0.1:${portA}`,
        token: TOKEN,
        spoolDir: join(dir, 's1'),
        events: logs[0]!,
        flushIntervalMs: 10,
        batchMaxEvents: 20,
        backoffInitialMs: 20,
        backoffMaxMs: 100,
      }),
      startEventStream({
        url: `http://127.0.0.1:${b.port}`,
        token: TOKEN,
        spoolDir: join(dir, 's2'),
        events: logs[1]!,
        flushIntervalMs: 10,
        batchMaxEvents: 20,
        backoffInitialMs: 20,
        backoffMaxMs: 100,
      }),
    ];
    cleanups.push(
      () => streams[0]!.stop(),
      () => streams[1]!.stop(),
    );
    const before = await a.store.count();
    for (let round = 0; round < 20; round++) {
      emitConnections(logs[0]!, 5);
      emitConnections(logs[1]!, 5);
      if (round === 8) await a.close();
      if (round === 14) a = await startCollector({ listen: { host: '127.0.0.1', port: portA }, db: cluster!.url, token: TOKEN });
      await new Promise((r) => setTimeout(r, 10));
    }
    await waitFor('both streams drained', () => streams.every((s) => s.stats().queued === 0), 15_000);
    assert.ok(streams[0]!.stats().failures > 0, 'proxy 1 saw the collector go away');
    assert.equal((await a.store.count()) - before, 2 * 20 * 5 * 2);
    const jobs = (await (await fetch(`http://127.0.0.1:${b.port}/api/v1/jobs`)).json()).jobs;
    const decisions = Object.fromEntries(jobs.map((j: any) => [j.job, j.decisions]));
    assert.equal(decisions['proxy-1'], 100);
    assert.equal(decisions['proxy-2'], 100);
    const events = (await (await fetch(`http://127.0.0.1:${portA}/api/v1/jobs/proxy-1/events`)).json()).events;
    assert.equal(events.length, 200);
    assert.equal(new Set(events.map((e: any) => `${e.id}/${e.event}`)).size, 200);
  });
});
