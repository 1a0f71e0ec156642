import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import Database from 'better-sqlite3';
import { SqliteStore } from '../../collector/stores/sqlite-store.js';
import { hostQuery } from '../../collector/host-search.js';
import { startCollector } from '../../collector/server.js';
import { collectorCommand } from '../../cli/collector-command.js';
import { runCaptured } from '../helpers/capture-io.js';
import type { DecisionEvent, EgressEvent } from '../../events/schema.js';
import { runSteps, scenario, StoreModel, testDecision, writeFirstLayoutDb } from '../helpers/aggregate-model.js';
import { checkManyHostSearch } from '../helpers/host-search-scenario.js';
import { SCAN_UNION_HOSTS } from '../../collector/stores/queries.js';
import { encodeCursor } from '../../collector/stores/event-store.js';

function decision(i: number, job: string, time: string, extra: Partial<DecisionEvent> = {}): DecisionEvent {
  return testDecision(`d-${job}-${i}`, Date.parse(time), `h${i % 3}.example.com`, { job_id: job, repository: job.startsWith('x') ? 'org/x' : 'org/y' }, extra);
}

describe('collector aggregates, paging and retention (SQLite)', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'egress-agg-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('aggregates equal a recount of the raw events after random batches, repeats and retention runs', async () => {
    await fc.assert(
      fc.asyncProperty(scenario(), async ({ steps }) => {
        const store = new SqliteStore(':memory:');
        const model = new StoreModel((time, cutoff) => time < cutoff);
        try {
          await runSteps(store, model, steps, true);
        } finally {
          await store.close();
        }
      }),
      { numRuns: 60 },
    );
  });

  it('pages the job list by cursor or offset, filters by repository, and keeps the unpaged answer', async () => {
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'paging.db') });
    try {
      const base = `http://127.0.0.1:${collector.port}`;
      const events = Array.from({ length: 25 }, (_, i) =>
        decision(i, `${i % 2 ? 'x' : 'y'}-job-${String(i).padStart(2, '0')}`, new Date(Date.UTC(2026, 10, 1, 0, i)).toISOString()),
      );
      assert.equal((await fetch(`${base}/api/v1/events`, { method: 'POST', body: events.map((e) => JSON.stringify(e)).join('\n') })).status, 200);
      const get = async (query: string) =>
        (await (await fetch(`${base}/api/v1/jobs${query}`)).json()) as { jobs: Array<{ job: string; repository: string }>; next?: string | null };
      const all = await get('');
      assert.equal(all.jobs.length, 25);
      assert.equal('next' in all, false, 'the unpaged answer is the first API one: {jobs}');
      assert.equal(all.jobs[0]!.job, 'y-job-24', 'most recent first');
      const seen: string[] = [];
      let page = await get('?limit=10');
      for (;;) {
        seen.push(...page.jobs.map((j) => j.job));
        if (!page.next) break;
        page = await get(`?limit=10&cursor=${page.next}`);
      }
      assert.deepEqual(
        seen,
        all.jobs.map((j) => j.job),
        'cursor pages cover every job once, in order',
      );
      assert.deepEqual(
        (await get('?limit=5&offset=20')).jobs.map((j) => j.job),
        all.jobs.slice(20).map((j) => j.job),
      );
      const x = await get('?repository=org%2Fx&limit=100');
      assert.equal(x.jobs.length, 12);
      assert.ok(x.jobs.every((j) => j.repository === 'org/x'));
      assert.equal(x.next, null);
      assert.deepEqual((await get('?repository=org%2Fnone')).jobs, []);
      assert.equal((await fetch(`${base}/api/v1/jobs?cursor=nonsense`)).status, 400);
      assert.equal((await fetch(`${base}/api/v1/jobs?limit=ten`)).status, 400);
    } finally {
      await collector.close();
    }
  });

  it('retention deletes old events in batches, recomputes the jobs they touched, and gives pages back to the file', async () => {
    const path = join(dir, 'retention.db');
    const now = Date.now();
    const old = (i: number) => new Date(now - (40 + (i % 5)) * 86_400_000).toISOString();
    // job "span": decisions on both sides of the horizon; job "gone": all old; job "fresh": all new.
    const events: EgressEvent[] = [
      ...Array.from({ length: 5000 }, (_, i) => decision(i, 'gone', old(i))),
      ...Array.from({ length: 3 }, (_, i) => decision(i, 'span', old(i))),
      ...Array.from({ length: 4 }, (_, i) => decision(100 + i, 'span', new Date(now - 3_600_000).toISOString(), { decision: 'blocked' })),
      decision(0, 'fresh', new Date(now).toISOString()),
    ];
    const store = new SqliteStore(path);
    assert.ok(store.incrementalVacuum(), 'a new database is made with auto_vacuum = INCREMENTAL');
    await store.insert(events);
    const before = await store.storageBytes();
    await store.close();
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: path, retentionDays: 30, retentionIntervalMs: 60_000 });
    try {
      const result = await collector.retention(); // after the run made at start
      assert.ok(result);
      const jobs = (await collector.store.jobs()).jobs;
      assert.deepEqual(
        jobs.map((j) => [j.job, j.decisions, j.allowed, j.blocked]),
        [
          ['fresh', 1, 1, 0],
          ['span', 4, 0, 4],
        ],
      );
      assert.equal(await collector.store.count(), 5);
      assert.ok((await collector.store.storageBytes()) < before, 'incremental vacuum shrank the file');
      const span = await (await fetch(`http://127.0.0.1:${collector.port}/api/v1/jobs/span/summary`)).json();
      assert.equal(span.decisions, 4);
    } finally {
      await collector.close();
    }
  });

  it('a database of the first layout is migrated: its events into the compact tables and aggregates, then vacuumed', async () => {
    const path = join(dir, 'v1.db');
    const events = Array.from({ length: 30 }, (_, i) => decision(i, 'old-layout', new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString()));
    writeFirstLayoutDb(path, events);
    const store = new SqliteStore(path);
    try {
      assert.ok(store.incrementalVacuum(), 'the migration turned auto_vacuum on');
      assert.deepEqual(
        (await store.jobEvents('old-layout', 100)).map((e) => JSON.stringify(e)),
        events.map((e) => JSON.stringify(e)),
      );
      assert.equal((await store.jobs()).jobs[0]!.decisions, 30);
    } finally {
      await store.close();
    }
  });

  it('pages a host search in the database: ties in the last sighting, straddling jobs merged in, no job twice or missing', async () => {
    const store = new SqliteStore(':memory:');
    try {
      // 40 jobs; 4 of them share each last sighting (ties), each job's last decision at its minute and an earlier one
      // an hour before. Jobs 0-7 also ran before `since` (their rows straddle it and are recounted): with `since` at
      // 00:30 their earlier decisions do not count.
      const minute = (m: number) => new Date(Date.UTC(2026, 0, 2, 0, m)).toISOString();
      const events: EgressEvent[] = [];
      for (let j = 0; j < 40; j++) {
        const job = `tie-${String(j).padStart(2, '0')}`;
        const last = 60 + Math.floor(j / 4);
        events.push(decision(j, job, minute(last)), decision(300 + j, job, minute(j < 8 ? 0 : last - 1)));
      }
      await store.insert(events);
      const query = hostQuery('example.com');
      const filter = { likes: query.likes, matches: query.matches, since: minute(30) };
      const all = await store.searchJobs(filter, { limit: 500, offset: 0 });
      assert.equal(all.total, 40);
      // Newest first; among ties, the job added last first (job ids follow insertion order here).
      const expectedOrder = Array.from({ length: 40 }, (_, i) => 39 - i).map((j) => `tie-${String(j).padStart(2, '0')}`);
      assert.deepEqual(
        all.jobs.map((j) => j.job),
        expectedOrder,
      );
      for (const j of all.jobs) {
        const n = Number(j.job.slice(4));
        assert.equal(j.decisions, n < 8 ? 1 : 2, `${j.job}: decisions before since do not count`);
        assert.equal(j.last, minute(60 + Math.floor(n / 4)));
      }
      // With `since` the straddling jobs are merged in by the collector; without it the database cuts the page itself.
      const open = { likes: query.likes, matches: query.matches };
      assert.deepEqual(
        (await store.searchJobs(open, { limit: 500, offset: 0 })).jobs.map((j) => j.job),
        expectedOrder,
      );
      for (const f of [filter, open]) {
        const whole = await store.searchJobs(f, { limit: 500, offset: 0 });
        for (const limit of [1, 3, 4, 7, 40]) {
          for (const scanRows of [1, 5, undefined]) {
            const chunks = scanRows === undefined ? {} : { scanRows };
            const seen: string[] = [];
            for (let offset = 0; offset < 45; offset += limit) {
              const page = await store.searchJobs(f, { limit, offset, ...chunks });
              if (page.total !== undefined) assert.equal(page.total, 40, `total of the page at ${offset} (limit ${limit})`);
              assert.deepEqual(page.jobs, whole.jobs.slice(offset, offset + limit), `page at ${offset} (limit ${limit})`);
              seen.push(...page.jobs.map((j) => j.job));
            }
            assert.deepEqual(seen, expectedOrder, `pages of ${limit}: each job once, in order`);
            // The same by cursor: ties in the last sighting cut between pages resume at the right job.
            const byCursor: string[] = [];
            for (let page = await store.searchJobs(f, { limit, ...chunks }); ; page = await store.searchJobs(f, { limit, cursor: page.next!, ...chunks })) {
              byCursor.push(...page.jobs.map((j) => j.job));
              if (!page.next) break;
              assert.ok(byCursor.length < 40, 'a next page only while jobs remain');
            }
            assert.deepEqual(byCursor, expectedOrder, `pages of ${limit} by cursor (scan chunks ${scanRows ?? 'default'})`);
          }
        }
      }
      assert.deepEqual(await store.searchJobs(open, { limit: 6, offset: 40 }), { jobs: [], total: 40, more: false, next: null });
      // A page cut before the scan ran out does not know the total, and says that more follow.
      const cut = await store.searchJobs(open, { limit: 4, offset: 0, scanRows: 2 });
      assert.deepEqual([cut.jobs.length, cut.total, cut.more], [4, undefined, true]);
      // A page of none after a cursor tells whether jobs follow that cursor (it answered the count of all jobs, and
      // `more: true` after the last job).
      for (const f of [filter, open]) {
        const before = await store.searchJobs(f, { limit: 39 });
        assert.deepEqual(await store.searchJobs(f, { limit: 0, cursor: before.next! }), { jobs: [], more: true, next: null });
        assert.deepEqual(await store.searchJobs(f, { limit: 0, cursor: encodeCursor(0, 0) }), { jobs: [], more: false, next: null }, 'after the last job');
      }
    } finally {
      await store.close();
    }
  });

  it('a host search pages by cursor: jobs seen through several hosts once with their sums, older rows of an earlier page not again, until-straddlers in order', async () => {
    const store = new SqliteStore(':memory:');
    try {
      const at = (h: number, m = 0) => new Date(Date.UTC(2026, 0, 3, h, m)).toISOString();
      const events: EgressEvent[] = [];
      const ev = (i: number, job: string, time: string, host: string, extra: Partial<DecisionEvent> = {}) =>
        events.push(testDecision(`c-${job}-${i}`, Date.parse(time), host, { job_id: job, repository: 'org/c' }, extra));
      // "long": talks to two hosts of the domain at 01:00 and again at 10:00 (newest of all), so it is first, once,
      // with both hosts summed; its 01:00 rows come again in the scan after the first page and must not bring it back.
      ev(1, 'long', at(1), 'a.pkg.test');
      ev(2, 'long', at(1), 'b.pkg.test', { decision: 'blocked' });
      ev(3, 'long', at(10), 'b.pkg.test');
      for (let j = 0; j < 6; j++) ev(10 + j, `mid-${j}`, at(2 + j), j % 2 ? 'a.pkg.test' : 'b.pkg.test');
      // "late": its row runs from 05:30 to 12:00; with until 09:00 its last sighting in the window is 05:30.
      ev(20, 'late', at(5, 30), 'a.pkg.test');
      ev(21, 'late', at(12), 'a.pkg.test');
      ev(30, 'other', at(9), 'pkg.test.evil.example', { decision: 'blocked' });
      await store.insert(events);
      const q = hostQuery('pkg.test');
      const jobsOf = async (filter: Parameters<SqliteStore['searchJobs']>[0], limit: number, scanRows?: number) => {
        const out: Array<{ job: string; decisions: number; blocked: number; hosts: string[]; last: string }> = [];
        let cursor: string | undefined;
        for (let n = 0; n < 20; n++) {
          const page = await store.searchJobs(filter, { limit, ...(cursor && { cursor }), ...(scanRows && { scanRows }) });
          out.push(...page.jobs.map((j) => ({ job: j.job, decisions: j.decisions, blocked: j.blocked, hosts: j.hosts, last: j.last })));
          if (!page.next) return out;
          cursor = page.next;
        }
        throw new Error('more than 20 pages');
      };
      const open = { likes: q.likes, matches: q.matches };
      for (const [limit, scanRows] of [
        [1, 1],
        [2, 1],
        [3, 2],
        [50, undefined],
      ] as Array<[number, number | undefined]>) {
        const all = await jobsOf(open, limit, scanRows);
        assert.deepEqual(
          all.map((j) => j.job),
          ['late', 'long', 'mid-5', 'mid-4', 'mid-3', 'mid-2', 'mid-1', 'mid-0'],
          `open window, pages of ${limit}`,
        );
        assert.deepEqual(all[1], { job: 'long', decisions: 3, blocked: 1, hosts: ['a.pkg.test', 'b.pkg.test'], last: at(10) });
        const blocked = await jobsOf({ ...open, decision: 'blocked' }, limit, scanRows);
        assert.deepEqual(
          blocked.map((j) => [j.job, j.decisions, j.last]),
          [['long', 1, at(1)]],
          'decision filter: only the blocked row, its own last sighting',
        );
        const until = await jobsOf({ ...open, until: at(9) }, limit, scanRows);
        assert.deepEqual(
          until.map((j) => [j.job, j.decisions, j.last]),
          [
            ['mid-5', 1, at(7)],
            ['mid-4', 1, at(6)],
            ['late', 1, at(5, 30)],
            ['mid-3', 1, at(5)],
            ['mid-2', 1, at(4)],
            ['mid-1', 1, at(3)],
            ['mid-0', 1, at(2)],
            ['long', 2, at(1)],
          ],
          `until 09:00, pages of ${limit}: late placed by its recounted sighting, long by its 01:00 rows`,
        );
      }
    } finally {
      await store.close();
    }
  });

  it('pages a search whose pattern matches more hosts than one compound statement takes (a scan per host, merged)', async () => {
    const store = new SqliteStore(':memory:');
    try {
      await checkManyHostSearch(store, SCAN_UNION_HOSTS.sqlite + 10);
    } finally {
      await store.close();
    }
  });

  it('a database with the earlier search index (host_id, last) gets the covering one on start, and the same answers', async () => {
    const path = join(dir, 'search-index.db');
    const events = Array.from({ length: 30 }, (_, i) =>
      decision(i, i % 2 ? 'x-index' : 'y-index', new Date(Date.UTC(2026, 0, 1, 0, i)).toISOString(), { decision: i % 3 ? 'allowed' : 'blocked' }),
    );
    const search = (store: SqliteStore) => {
      const query = hostQuery('example.com');
      return store.searchJobs({ likes: query.likes, matches: query.matches, since: '2026-01-01T00:10:00Z' }, { limit: 50, offset: 0 });
    };
    const indexes = (db: Database.Database) =>
      (
        db.prepare(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'eg_job_destinations' AND sql IS NOT NULL ORDER BY name`).all() as Array<{ name: string }>
      ).map((r) => r.name);
    let store = new SqliteStore(path);
    await store.insert(events);
    const expected = await search(store);
    await store.close();
    // The layout as the earlier version made it.
    const db = new Database(path);
    db.exec('DROP INDEX eg_job_destinations_search; CREATE INDEX eg_job_destinations_host ON eg_job_destinations (host_id, last)');
    assert.deepEqual(indexes(db), ['eg_job_destinations_host']);
    db.close();
    store = new SqliteStore(path);
    try {
      const after = new Database(path, { readonly: true });
      assert.deepEqual(indexes(after), ['eg_job_destinations_search']);
      after.close();
      assert.equal(expected.jobs.length, 2);
      assert.deepEqual(await search(store), expected);
    } finally {
      await store.close();
    }
  });

  it('--retention-days and EGRESS_COLLECTOR_RETENTION_DAYS take a whole number of days', async () => {
    for (const [argv, env] of [
      [['--retention-days', '0'], {}],
      [['--retention-days', '1.5'], {}],
      [[], { EGRESS_COLLECTOR_RETENTION_DAYS: 'month' }],
    ] as Array<[string[], NodeJS.ProcessEnv]>) {
      const result = await runCaptured(collectorCommand, ['--db', join(dir, 'cli.db'), ...argv], env);
      assert.equal(result.code, 2, `${argv.join(' ')} ${JSON.stringify(env)}: a usage error`);
      assert.match(result.stderr, /retention-days: ".*" is not a whole number of days/);
    }
  });
});
