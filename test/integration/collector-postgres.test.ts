import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { startEventStream } from '../../events/delivery/stream-client.js';
import { startCollector, type Collector } from '../../collector/server.js';
import { emitConnections } from '../helpers/emit-events.js';
import { startPostgresCluster, type PostgresCluster } from '../helpers/postgres-cluster.js';
import { waitFor } from '../helpers/wait-for.js';
import { startEgressGuard } from '../helpers/egress-guard-process.js';
import { checkHostSearch, checkManyHostSearch, hostSearchEvents } from '../helpers/host-search-scenario.js';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import type { SearchPage } from '../../collector/stores/event-store.js';
import { SCAN_UNION_HOSTS, searchScanSql, WALK_HOSTS } from '../../collector/stores/queries.js';
import { hostQuery } from '../../collector/host-search.js';
import { testDecision } from '../helpers/aggregate-model.js';

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

  it('reads a pattern of many hosts by jobs: the same pages and counts as by host, on both sides of WALK_HOSTS', async () => {
    const store = await PostgresStore.open(`${cluster!.url.replace(/\/[^/]*$/, '')}/postgres`);
    cleanups.push(() => store.close());
    const hosts = WALK_HOSTS + 6;
    const base = Date.UTC(2026, 1, 1);
    const minute = 60_000;
    const events: EgressEvent[] = [];
    // 260 jobs on the pattern's hosts (two or three rows each, ties in pairs); three in four of them long: seen there
    // early (their key), then elsewhere 150 minutes later (their own last sighting), so that the walk reads jobs in
    // another order than the answer's. Then 300 jobs on none of them, all within a minute among the others (the walk gives up on some pages).
    const keys: Array<[string, number]> = [];
    for (let j = 0; j < 260; j++) {
      const ci = { job_id: `walk-${j}`, repository: 'org/walk' };
      const t = base + (j % 10 === 9 ? j - 1 : j) * minute;
      const key = j % 4 === 1 ? t - 20_000 : t - 150 * minute;
      keys.push([`walk-${j}`, key]);
      events.push(testDecision(`walk-${j}-a`, key, `w${j % hosts}.walk.test`, ci), testDecision(`walk-${j}-b`, key, `w${(j * 7 + 3) % hosts}.walk.test`, ci));
      if (j % 4 === 0) events.push(testDecision(`walk-${j}-c`, key - 10_000, `w${(j + 1) % hosts}.walk.test`, ci, { decision: 'blocked' }));
      if (j % 4 !== 1) events.push(testDecision(`walk-${j}-d`, t, 'other.nowalk.test', ci));
    }
    for (let k = 0; k < 300; k++)
      events.push(testDecision(`nowalk-${k}`, base + 200 * minute + 30_000 + k * 100, 'x.nowalk.test', { job_id: `nowalk-${k}`, repository: 'org/walk' }));
    await store.insert(events);

    // Which statements run, to tell the walk from the scan by host (the walk's run in a transaction of their own).
    const statements: string[] = [];
    const query = pg.Client.prototype.query;
    pg.Client.prototype.query = function (this: pg.Client, ...args: any[]) {
      statements.push(typeof args[0] === 'string' ? args[0] : args[0].text);
      return (query as any).apply(this, args);
    } as typeof query;
    const walked = async (run: () => Promise<unknown>) => {
      statements.length = 0;
      await run();
      return statements.some((s) => s.includes('FROM eg_jobs j'));
    };

    const iso = (minutes: number) => new Date(base + minutes * minute).toISOString();
    const all = hostQuery('walk.test');
    const few = hostQuery('w1*.walk.test'); // w1, w10-w19: fewer hosts than WALK_HOSTS
    const filters = [{}, { since: iso(100) }, { decision: 'blocked' }, { since: iso(50), until: iso(200) }, { since: iso(299) }];
    for (const [pattern, walks] of [
      [all, true],
      [few, false],
    ] as const) {
      for (const window of filters) {
        const filter = { likes: pattern.likes, matches: pattern.matches, ...window };
        const count = (await store.searchJobs(filter, { limit: 0, byJobs: false })).total;
        for (const [limit, offset] of [
          [1, 0],
          [7, 0],
          [7, 13],
          [50, 0],
          [500, 0],
          [0, 0],
        ] as const) {
          const what = `${pattern === all ? 'walk.test' : 'w1*.walk.test'} ${JSON.stringify(window)} limit ${limit} offset ${offset}`;
          const byHost = await store.searchJobs(filter, { limit, offset, byJobs: false });
          const byJobs = await store.searchJobs(filter, { limit, offset, byJobs: true });
          // `total` comes free only when the reads ran out, which the walk and the scan by host do on different pages;
          // when both give it, it is the same, and it is the count.
          const same = (a: SearchPage, b: SearchPage) => {
            const { total: ta, ...restA } = a;
            const { total: tb, ...restB } = b;
            assert.deepEqual(restA, restB, what);
            for (const total of [ta, tb]) if (total !== undefined) assert.equal(total, count, what);
          };
          same(byJobs, byHost);
          let page = byHost;
          const byDefault = await walked(async () => (page = await store.searchJobs(filter, { limit, offset })));
          // (A count alone goes by jobs by the planner's estimates, not by the number of hosts.)
          if (limit > 0) assert.equal(byDefault, walks && !('until' in window), `${what}: by jobs by default`);
          same(page, byHost);
          if (byHost.next)
            assert.deepEqual(await store.searchJobs(filter, { limit, cursor: byJobs.next! }), await store.searchJobs(filter, { limit, cursor: byHost.next, byJobs: false }));
        }
      }
    }
    // Newest key first, ties by job (added later first), a later sighting elsewhere not counted.
    const expected = keys.map(([job, key], j) => ({ job, key, j })).sort((a, b) => b.key - a.key || b.j - a.j);
    const first = await store.searchJobs({ likes: all.likes, matches: all.matches }, { limit: 20 });
    assert.deepEqual(
      first.jobs.map((j) => [j.job, j.last]),
      expected.slice(0, 20).map((e) => [e.job, new Date(e.key).toISOString()]),
    );
    assert.equal((await store.searchJobs({ likes: all.likes, matches: all.matches }, { limit: 0 })).total, 260);
    pg.Client.prototype.query = query;
  });

  it('reads a page by jobs in one snapshot: a job active elsewhere meanwhile keeps its place', async () => {
    // The walk reads jobs newest first by their own last sighting (any host), a read at a time: a job that a decision
    // on another host moved above the walk between two reads was read by neither, and its matching sightings, which
    // had not changed, were missing from the page, from the total and from every later page.
    const admin = new pg.Client({ connectionString: cluster!.url });
    await admin.connect();
    await admin.query('CREATE DATABASE walk_snapshot');
    await admin.end();
    const store = await PostgresStore.open(cluster!.url.replace(/\/[^/]*$/, '/walk_snapshot'));
    cleanups.push(() => store.close());
    const base = Date.UTC(2026, 3, 1);
    const minute = 60_000;
    const hosts = Array.from({ length: WALK_HOSTS }, (_, i) => `s${i}.snap.test`);
    const job = (name: string) => ({ job_id: name, repository: 'org/snap' });
    // Two jobs on the pattern's hosts, under 40 newer jobs on none of them: more than the walk's first read.
    const events: EgressEvent[] = [testDecision('snap-k', base, hosts[1]!, job('snap-k')), testDecision('snap-j', base + minute, hosts[2]!, job('snap-j'))];
    for (let i = 0; i < 40; i++) events.push(testDecision(`snap-idle-${i}`, base + 10 * minute + i * 1000, 'x.nosnap.test', job(`snap-idle-${i}`)));
    await store.insert(events);
    const filter = { likes: hostQuery('snap.test').likes, matches: hostQuery('snap.test').matches };

    // After the walk's first read, job snap-j talks to another host (a batch another collector stores meanwhile).
    const clientQuery = pg.Client.prototype.query;
    let walkReads = 0;
    const moveJob = () => store.insert([testDecision('snap-j-later', base + 20 * minute, 'x.nosnap.test', job('snap-j'))]);
    pg.Client.prototype.query = function (this: pg.Client, ...args: any[]) {
      const text: unknown = typeof args[0] === 'string' ? args[0] : args[0]?.text;
      if (typeof text !== 'string' || !text.includes('FROM eg_jobs j') || text.startsWith('EXPLAIN') || ++walkReads !== 1) return (clientQuery as any).apply(this, args);
      const callback = args.findIndex((a) => typeof a === 'function');
      if (callback === -1) return (clientQuery as any).apply(this, args).then(async (res: unknown) => (await moveJob(), res));
      const done = args[callback];
      args[callback] = (err: unknown, res: unknown) => void moveJob().then(() => done(err, res), done);
      return (clientQuery as any).apply(this, args);
    } as typeof clientQuery;
    let byJobs: SearchPage;
    try {
      byJobs = await store.searchJobs(filter, { limit: 1, byJobs: true });
    } finally {
      pg.Client.prototype.query = clientQuery;
    }
    assert.ok(walkReads >= 2, `the walk read ${walkReads} times`);
    const byHost = await store.searchJobs(filter, { limit: 1, byJobs: false });
    assert.deepEqual(
      byHost.jobs.map((j) => j.job),
      ['snap-j'],
    );
    assert.deepEqual(byJobs, byHost);
  });

  it('refuses the lines whose text PostgreSQL cannot store (NUL, a lone surrogate, over 2,048 bytes) and stores the rest of their batch', async () => {
    // Such a line made the whole batch fail on PostgreSQL (503, "retry later"): a stream client sent it again forever,
    // and nothing queued behind it was stored.
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: `${cluster!.url.replace(/\/[^/]*$/, '')}/postgres`, token: TOKEN });
    cleanups.push(() => collector.close());
    const t = Date.UTC(2026, 2, 1);
    const ci = { job_id: 'text-job', repository: 'org/text' };
    const answer = await postBatch(collector.port, [
      testDecision('text-ok', t, 'ok.nultext.test', ci),
      testDecision('text-nul-host', t, 'a\u0000.nultext.test', ci),
      testDecision('text-surrogate-host', t, 'b\ud800.nultext.test', ci),
      testDecision('text-nul-repository', t, 'ok.nultext.test', { job_id: 'text-job-2', repository: 'org/\u0000' }),
      testDecision('text-surrogate-job', t, 'ok.nultext.test', { job_id: 'text-\udc00', repository: 'org/text' }),
      // Two ids that differ in a lone surrogate have one UTF-8 form, so one key: the second was taken for a repeat.
      testDecision('text-\ud800', t, 'ok.nultext.test', ci),
      testDecision('text-\udbff', t, 'ok.nultext.test', ci),
      testDecision('text-\ud83d\ude00', t, 'ok.nultext.test', ci),
      // Over what PostgreSQL's index on the dictionary takes (54000): a sidecar names such a host in the invalid-host
      // decision of a CONNECT to a long junk target; text that does not compress.
      testDecision('text-long-host', t, `${randomBytes(1536).toString('hex')}.nultext.test`, ci, { decision: 'blocked', reason: 'invalid-host' }),
      testDecision('text-long-job', t, 'ok.nultext.test', { job_id: randomBytes(1536).toString('hex'), repository: 'org/text' }),
      testDecision('text-long-cjk-host', t, `${'\u4e00'.repeat(700)}.nultext.test`, ci),
      testDecision('text-host-2048-bytes', t, `${randomBytes(1016).toString('hex')}.nultext.test`, ci),
    ]);
    assert.deepEqual(
      answer.rejected.map((r: { line: number }) => r.line),
      [2, 3, 4, 5, 6, 7, 9, 10, 11],
    );
    assert.equal(answer.stored, 3);
  });

  it("a job's CONNECT to a long junk target does not stop its sidecar's stream to the collector", async () => {
    // Its invalid-host decision named the target as written (3,072 characters): stored, it failed its batch (503) and
    // every batch after it waited behind it. The sidecar now cuts such a host to what the stores keep (2,048 bytes),
    // so the decision reaches the collector too.
    const admin = new pg.Client({ connectionString: cluster!.url });
    await admin.connect();
    await admin.query('CREATE DATABASE long_stream');
    await admin.end();
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: cluster!.url.replace(/\/[^/]*$/, '/long_stream'), token: TOKEN });
    cleanups.push(() => collector.close());
    const guard = await startEgressGuard([], {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test',
      EGRESS_COLLECTOR_URL: `http://127.0.0.1:${collector.port}`,
      EGRESS_COLLECTOR_TOKEN: TOKEN,
      EGRESS_JOB_ID: 'long-stream',
    });
    cleanups.push(() => guard.stop());
    const connect = (target: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = net.connect(guard.port, '127.0.0.1', () => socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
        socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer to CONNECT ${target.slice(0, 40)}`)));
        socket.once('data', (data) => {
          resolve(data.toString('latin1').split('\r\n')[0]!);
          socket.destroy();
        });
        socket.once('error', reject);
      });
    assert.match(await connect(`${randomBytes(1536).toString('hex')}:443`), / 403 /);
    const long = await guard.waitFor((l) => l.event === 'decision' && l.reason === 'invalid-host');
    assert.equal(String(long.host).length, 2048);
    // Later decisions of the job, in the same batch or after it.
    assert.match(await connect('after.test:443'), / 403 /);
    const later = await guard.waitFor((l) => l.event === 'decision' && l.host === 'after.test');
    await waitFor('the later decision stored at the collector', async () => (await collector.store.jobEvents('long-stream', 100)).some((e) => e.id === later.id), 20_000);
    assert.ok((await collector.store.jobEvents('long-stream', 100)).some((e) => e.id === long.id && e.host === long.host));
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
