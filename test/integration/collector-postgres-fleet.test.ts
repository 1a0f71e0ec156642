import assert from 'node:assert/strict';
import { Agent } from 'node:http';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { randomUUID } from 'node:crypto';
import { encodeId, unpackEvent, withBodyId } from '../../collector/stores/codec.js';
import { decisionKeyOf } from '../../collector/stores/pg-key.js';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import { startCollector } from '../../collector/server.js';
import type { EgressEvent } from '../../events/schema.js';
import { hostQuery } from '../../collector/host-search.js';
import type { SearchQuery, SightingFilter } from '../../collector/stores/event-store.js';
import { DAY, recountJobs, runSteps, scenario, storedJobs, StoreModel, testClose, testDecision } from '../helpers/aggregate-model.js';
import { postEvents, startCollectorProcess, type CollectorProcess } from '../helpers/collector-process.js';
import { scratchDatabases } from '../helpers/postgres-scratch-databases.js';

const TOKEN = 'fleet-token';

/** `jobs` jobs of `perJob` connections each (a decision and, for allowed ones, a close), times from `start`. */
function fleetEvents(jobs: number, perJob: number, start: number, tag: string): EgressEvent[] {
  const out: EgressEvent[] = [];
  for (let j = 0; j < jobs; j++) {
    for (let i = 0; i < perJob; i++) {
      const id = `${tag}-${j}-${i}`;
      const time = start + j * 60_000 + i * 100;
      const allowed = i % 4 !== 0;
      const d = testDecision(
        id,
        time,
        `h${i % 9}.fleet.test`,
        { job_id: `${tag}-job-${j}`, repository: `org/repo-${j % 3}` },
        {
          decision: allowed ? 'allowed' : 'blocked',
          reason: allowed ? 'allowed-endpoint' : 'not-allowed-endpoint',
          mode: 'block',
        },
      );
      out.push(d);
      if (allowed) out.push(testClose(d, 50, i, 1));
    }
  }
  return out;
}

/**
 * Every column of eg_job_destinations and eg_jobs (the bytes in too, which no API answers) equals a recount from the
 * stored events: a close's bytes from its own row or from its decision's row, counted once its decision is stored.
 */
async function assertTablesEqualRecount(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const rows = async (sql: string) => (await client.query(sql)).rows.map((r) => JSON.stringify(r));
    const recount = `SELECT d.job_id, d.host_id, d.port, d.decision, COUNT(*)::bigint AS count, COALESCE(SUM(COALESCE(c.bytes_in, d.bytes_in)), 0)::bigint AS bytes_in,
        COALESCE(SUM(COALESCE(c.bytes_out, d.bytes_out)), 0)::bigint AS bytes_out, MIN(d.time) AS first, MAX(d.time) AS last
      FROM eg_events d LEFT JOIN eg_events c ON c.key = eg_close_key(d.key) AND c.event = 1 AND c.job_id = d.job_id
      WHERE d.event = 0 GROUP BY 1, 2, 3, 4`;
    assert.deepEqual(
      await rows('SELECT job_id, host_id, port, decision, count, bytes_in, bytes_out, first, last FROM eg_job_destinations ORDER BY 1, 2, 3, 4'),
      await rows(`${recount} ORDER BY 1, 2, 3, 4`),
      'eg_job_destinations equals a recount',
    );
    const outcome = (code: number) => `SUM(CASE WHEN decision = ${code} THEN count ELSE 0 END)::bigint`;
    assert.deepEqual(
      await rows('SELECT job_id, first, last, decisions, allowed, blocked, would_block, bytes_in, bytes_out FROM eg_jobs ORDER BY 1'),
      await rows(
        `SELECT job_id, MIN(first) AS first, MAX(last) AS last, SUM(count)::bigint AS decisions, ${outcome(0)} AS allowed, ${outcome(1)} AS blocked,
           ${outcome(2)} AS would_block, SUM(bytes_in)::bigint AS bytes_in, SUM(bytes_out)::bigint AS bytes_out FROM (${recount}) r GROUP BY 1 ORDER BY 1`,
      ),
      'eg_jobs equals a recount',
    );
  } finally {
    await client.end();
  }
}

function batches<T>(list: readonly T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, i * size + size));
}

/** Post every batch, retrying each until the collector (any of `ports()`) answers 200, like the proxy's delivery. */
async function deliver(ports: () => number[], list: readonly EgressEvent[][], connections: number): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  let next = 0;
  const worker = async (w: number) => {
    for (let i = next++; i < list.length; i = next++) {
      for (let attempt = 0; ; attempt++) {
        const candidates = ports();
        const port = candidates[(w + attempt) % candidates.length]!;
        const answer = await postEvents(port, list[i]!, TOKEN, agent).catch(() => undefined);
        if (answer?.status === 200) break;
        if (attempt > 400) throw new Error(`batch ${i} not delivered`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: connections }, (_, w) => worker(w)));
  } finally {
    agent.destroy();
  }
}

describe('collector at fleet scale on PostgreSQL (a real server started for the test)', () => {
  const processes: CollectorProcess[] = [];
  // Registered first, so the collectors stop before the cluster they use (after-hooks run in order).
  after(async () => {
    for (const p of processes) await p.stop('SIGKILL');
  });
  const databases = scratchDatabases('fleet');
  const database = () => databases.create();

  it('aggregates (every column of both tables) equal a recount of the raw events after random batches, repeats and partition drops', { timeout: 240_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(scenario(), async ({ steps }) => {
        const db = await database();
        const store = await PostgresStore.open(db.url);
        // Retention drops the day partitions that end at or before the cutoff.
        const model = new StoreModel((time, cutoff) => Math.floor(time / DAY) * DAY + DAY <= cutoff);
        try {
          await runSteps(store, model, steps, false);
          await assertTablesEqualRecount(db.url);
        } finally {
          await store.close();
          await databases.drop(db);
        }
      }),
      { numRuns: 12 },
    );
  });

  it('a batch whose bytes add up past 2^53 (each close within the schema limit) is stored, aggregates equal a recount', { timeout: 60_000 }, async () => {
    const db = await database();
    const store = await PostgresStore.open(db.url);
    try {
      const time = Date.now();
      const job = { job_id: 'big-bytes-job', repository: 'org/big' };
      const events = [0, 1].flatMap((i) => {
        const d = testDecision(`big-${i}`, time + i, 'big.fleet.test', job);
        return [d, testClose(d, 10, Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER - 1)];
      });
      assert.deepEqual(await store.insert(events), { stored: 4, duplicates: 0 });
      await assertTablesEqualRecount(db.url);
    } finally {
      await store.close();
      await databases.drop(db);
    }
  });

  it('retention drops whole day partitions and recomputes the jobs that had events in them; search and job list agree', { timeout: 60_000 }, async () => {
    const db = await database();
    const now = Date.now();
    const old = fleetEvents(3, 20, now - 45 * DAY, 'old');
    const fresh = fleetEvents(2, 20, now - 2 * 3_600_000, 'new');
    // A job with events on both sides of the horizon.
    const span = [...fleetEvents(1, 8, now - 40 * DAY, 'span'), ...fleetEvents(1, 8, now - DAY, 'span').map((e) => ({ ...e, id: `${e.id}-late` }))];
    const seed = await PostgresStore.open(db.url);
    await seed.insert([...old, ...fresh, ...span]);
    await seed.close();
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: db.url, retentionDays: 30 });
    try {
      await collector.retention();
      const jobs = (await collector.store.jobs()).jobs.map((j) => `${j.job}:${j.decisions}`);
      assert.deepEqual(jobs.sort(), ['new-job-0:20', 'new-job-1:20', 'span-job-0:8']);
      assert.equal(await collector.store.count(), fresh.length + span.length / 2);
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      const partitions = await client.query(`SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'eg_events'::regclass`);
      await client.end();
      const horizon = new Date(now - 30 * DAY).toISOString().slice(0, 10).replace(/-/g, '');
      assert.deepEqual(
        partitions.rows.map((r) => r.relname as string).filter((name) => name.slice(-8) < horizon),
        [],
        'no partition older than the horizon',
      );
      const search = await (await fetch(`http://127.0.0.1:${collector.port}/api/v1/search?host=fleet.test`)).json();
      assert.deepEqual(search.jobs.map((j: { job: string }) => j.job).sort(), ['new-job-0', 'new-job-1', 'span-job-0']);
      const spanJob = search.jobs.find((j: { job: string }) => j.job === 'span-job-0');
      assert.equal(spanJob.bytesOut, 6, 'the bytes of the closes that remain');
    } finally {
      await collector.close();
    }
  });

  it('events from a broken clock (year 1, year 50000) are stored in partitions of their own and retention drops the old one', { timeout: 60_000 }, async () => {
    const db = await database();
    const store = await PostgresStore.open(db.url);
    try {
      const job = { job_id: 'clock-job', repository: 'org/clock' };
      const ancient = testDecision('clock-1', Date.parse('0001-01-01T10:00:00Z'), 'a.clock.test', job);
      const future = testDecision('clock-2', Date.parse('+050000-01-01T10:00:00Z'), 'b.clock.test', job);
      assert.equal((await store.insert([ancient, future, testClose(future, 10, 1, 2)])).stored, 3);
      assert.deepEqual(
        (await store.jobEvents('clock-job', 10)).map((e) => e.time),
        [ancient.time, future.time, new Date(Date.parse(future.time) + 10).toISOString()],
      );
      assert.deepEqual(await store.retain(new Date()), { deleted: 1, jobs: 1 });
      const [info] = (await store.jobs()).jobs;
      assert.deepEqual([info!.job, info!.decisions, info!.bytesOut, info!.first], ['clock-job', 1, 2, future.time]);
    } finally {
      await store.close();
    }
  });

  // The job index of two earlier layouts: (job_id, time), then (job_id) with the unlinked closes' nulls in it (before
  // eg_events_unlinked, pg-closes.ts). A close stored unlinked in the earlier layout is linked by its decision after.
  for (const [layout, earlier] of [
    ['(job_id, time)', 'CREATE INDEX eg_events_job ON eg_events (job_id, time)'],
    ['(job_id) with its nulls', 'CREATE INDEX eg_events_job_id ON eg_events (job_id)'],
  ] as const) {
    it(
      `a database with the earlier job index ${layout} gets the one without nulls and the unlinked closes' on start, and a job's events and aggregates the same`,
      { timeout: 60_000 },
      async () => {
        const db = await database();
        const events = fleetEvents(2, 30, Date.now() - 3_600_000, 'jobindex');
        const late = fleetEvents(1, 3, Date.now() - 1_800_000, 'jobindex-late');
        const lateDecisions = late.filter((e) => e.event === 'decision');
        let store = await PostgresStore.open(db.url);
        await store.insert(events);
        const expected = await store.jobEvents('jobindex-job-1', 1000);
        await store.close();
        const client = new pg.Client({ connectionString: db.url });
        await client.connect();
        const indexes = async () =>
          (
            await client.query(
              `SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'eg_events' AND indexname LIKE 'eg_events_%' AND indexname <> 'eg_events_id' ORDER BY 1`,
            )
          ).rows.map((r) => `${r.indexname}: ${r.indexdef.replace(/^.* USING btree /, '')}`);
        try {
          // The layout as the earlier version made it, with closes whose decisions are not stored yet (no job).
          await client.query(`DROP INDEX eg_events_job_linked, eg_events_unlinked; ${earlier}`);
          assert.deepEqual((await indexes()).length, 1);
          store = await PostgresStore.open(db.url);
          try {
            await store.insert(late.filter((e) => e.event === 'close'));
          } finally {
            await store.close();
          }
          await client.query(`DROP INDEX eg_events_job_linked, eg_events_unlinked; ${earlier}`);
          store = await PostgresStore.open(db.url);
          try {
            assert.deepEqual(await indexes(), ['eg_events_job_linked: (job_id) WHERE (job_id IS NOT NULL)', 'eg_events_unlinked: (key) WHERE (job_id IS NULL)']);
            const unlinked = async () => (await client.query('SELECT count(*)::int AS n FROM eg_events WHERE job_id IS NULL')).rows[0].n;
            assert.equal(await unlinked(), late.length - lateDecisions.length);
            assert.equal(expected.length, 52);
            assert.deepEqual(await store.jobEvents('jobindex-job-1', 1000), expected);
            await store.insert(lateDecisions);
            assert.equal(await unlinked(), 0);
            assert.deepEqual(await storedJobs(store), recountJobs([...events, ...late]));
          } finally {
            await store.close();
          }
        } finally {
          await client.end();
        }
      },
    );
  }

  it('a database with the earlier covering search index gets the narrower one on start, and the same search answers', { timeout: 60_000 }, async () => {
    const db = await database();
    const start = Date.now() - 3_600_000;
    let store = await PostgresStore.open(db.url);
    await store.insert(fleetEvents(6, 30, start, 'searchindex'));
    const iso = (t: number) => new Date(t).toISOString();
    const searches: Array<[string, Omit<SightingFilter, 'likes' | 'matches'>, SearchQuery]> = [
      ['fleet.test', {}, { limit: 50, offset: 0 }],
      ['h3.fleet.test', { since: iso(start + 90_000) }, { limit: 2, offset: 1 }],
      // `until` inside job 3: its rows that straddle it are read (their `first`, not in the new index) and recounted.
      ['*.fleet.test', { since: iso(start + 30_000), until: iso(start + 181_000) }, { limit: 3, offset: 0 }],
      ['fleet.test', { until: iso(start + 150_000), decision: 'blocked' }, { limit: 50, offset: 0 }],
      ['fleet.test', { since: iso(start + 100_000) }, { limit: 0, offset: 0 }],
    ];
    const answers = async (s: PostgresStore) => {
      const out = [];
      for (const [host, window, page] of searches) out.push(await s.searchJobs({ ...hostQuery(host), ...window }, page));
      return out;
    };
    const expected = await answers(store);
    await store.close();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    const indexes = async () =>
      (await client.query(`SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'eg_job_destinations' AND indexname LIKE 'eg_job_destinations_s%' ORDER BY 1`)).rows.map(
        (r) => `${r.indexname}: ${/USING btree (.*)$/.exec(r.indexdef)![1]}`,
      );
    try {
      // The layout as the earlier version made it.
      await client.query(
        'DROP INDEX eg_job_destinations_seen; CREATE INDEX eg_job_destinations_search ON eg_job_destinations (host_id, last) INCLUDE (first, count, bytes_out, job_id, decision)',
      );
      assert.deepEqual(await indexes(), ['eg_job_destinations_search: (host_id, last) INCLUDE (first, count, bytes_out, job_id, decision)']);
      store = await PostgresStore.open(db.url);
      try {
        assert.deepEqual(await indexes(), ['eg_job_destinations_seen: (host_id, last) INCLUDE (job_id, decision)']);
        assert.deepEqual(
          expected.map((p) => p.jobs.length + (p.total ?? 0)),
          [12, 6, 6, 6, 4], // jobs on the page + total: 6 jobs of 6; 2 of jobs 2-5; jobs 1-3 (3 straddles until); 0-2; 2-5
        );
        assert.deepEqual(await answers(store), expected);
      } finally {
        await store.close();
      }
    } finally {
      await client.end();
    }
  });

  it(
    'a database with the earlier key (bytea, one per id) is migrated on start: the same events and aggregates, repeats still dropped, closes still linked',
    { timeout: 60_000 },
    async () => {
      const start = Date.now() - 3_600_000;
      const uuids = new Map<string, string>();
      const events = [
        ...fleetEvents(2, 30, start, 'keys'), // text ids: hashed keys, the id kept in the body
        ...fleetEvents(1, 30, start, 'uuidkeys').map((e) => ({ ...e, id: uuids.get(e.id) ?? uuids.set(e.id, randomUUID()).get(e.id)! })),
      ];
      // Closes that arrive after the migration, for decisions stored before it.
      const late = events.filter((e, i) => e.event === 'close' && i % 3 === 0);
      const early = events.filter((e) => !late.includes(e));
      const jobs = ['keys-job-0', 'keys-job-1', 'uuidkeys-job-0'];
      const reference = await PostgresStore.open((await database()).url);
      await reference.insert(events);
      const expected = { jobs: await reference.jobs(), events: await Promise.all(jobs.map((j) => reference.jobEvents(j, 1000))) };
      await reference.close();

      const db = await database();
      let store = await PostgresStore.open(db.url);
      await store.insert(early);
      await store.close();
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      const layout = async () => ({
        key: (await client.query(`SELECT format_type(atttypid, NULL) AS t FROM pg_attribute WHERE attrelid = 'eg_events'::regclass AND attname = 'key'`)).rows[0].t,
        indexes: (await client.query(`SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'eg_events' AND indexdef LIKE '%UNIQUE%' ORDER BY 1`)).rows.map(
          (r) => `${r.indexname}: ${/\((.*)\)/.exec(r.indexdef)![1]}`,
        ),
      });
      try {
        // The layout as the earlier version made it: key = encodeId(id) for both events of an id, no id in the body.
        const rows = (await client.query('SELECT key, event, time, body FROM eg_events')).rows as Array<{ key: string; event: number; time: string; body: Buffer }>;
        const old = rows.map((r) => {
          const id = unpackEvent(r.body, decisionKeyOf(r.key), 'h', Number(r.time), null, null).id;
          return { key: r.key, oldKey: encodeId(id), body: withBodyId(r.body, 0) };
        });
        assert.ok(old.some((r) => r.oldKey[0] === 1) && old.some((r) => r.oldKey[0] === 0), 'both kinds of id');
        await client.query('DROP INDEX eg_events_id; ALTER TABLE eg_events ALTER COLUMN key TYPE bytea USING uuid_send(key)');
        await client.query(
          `UPDATE eg_events e SET key = x.old, body = x.body FROM unnest($1::uuid[], $2::bytea[], $3::bytea[]) AS x(key, old, body) WHERE e.key = uuid_send(x.key)`,
          [old.map((r) => r.key), old.map((r) => r.oldKey), old.map((r) => r.body)],
        );
        await client.query('CREATE UNIQUE INDEX eg_events_key ON eg_events (key, event, time)');
        assert.deepEqual(await layout(), { key: 'bytea', indexes: ['eg_events_key: key, event, "time"'] });
        store = await PostgresStore.open(db.url);
        try {
          assert.deepEqual(await layout(), { key: 'uuid', indexes: ['eg_events_id: key, "time"'] });
          assert.deepEqual(await store.insert(late), { stored: late.length, duplicates: 0 });
          assert.deepEqual(await store.insert(events), { stored: 0, duplicates: events.length });
          assert.equal(await store.count(), events.length);
          assert.deepEqual(await store.jobs(), expected.jobs);
          const migrated = await Promise.all(jobs.map((j) => store.jobEvents(j, 1000)));
          assert.equal(JSON.stringify(migrated), JSON.stringify(expected.events));
          assert.equal(
            JSON.stringify(migrated.flat().sort((a, b) => (a.id + a.event < b.id + b.event ? -1 : 1))),
            JSON.stringify([...events].sort((a, b) => (a.id + a.event < b.id + b.event ? -1 : 1))),
            'every event rebuilt exactly',
          );
        } finally {
          await store.close();
        }
      } finally {
        await client.end();
      }
    },
  );

  it('four collector processes on one database: every event stored once, aggregates exact', { timeout: 120_000 }, async () => {
    const db = await database();
    const started = await Promise.all([0, 1, 2, 3].map(() => startCollectorProcess(db.url, { token: TOKEN })));
    processes.push(...started);
    const events = fleetEvents(40, 50, Date.now() - 3_600_000, 'four');
    // Every event twice, through different collectors, in batches cut differently and in different orders, and the
    // closes a third time alone: a close goes into its decision's row or a row of its own, whichever collector wins.
    const cuts = [batches(events, 500), batches([...events].reverse(), 300), batches(events.filter((e) => e.event === 'close').reverse(), 250)];
    const list = Array.from({ length: Math.max(...cuts.map((c) => c.length)) }, (_, i) => cuts.flatMap((c) => c.slice(i, i + 1))).flat();
    await deliver(() => started.map((p) => p.port), list, 8);
    const store = await PostgresStore.open(db.url);
    try {
      assert.equal(await store.count(), events.length);
      assert.deepEqual(
        await storedJobs(store),
        recountJobs(events).map((j) => ({ ...j, repository: `org/repo-${Number(j.job.split('-').at(-1)) % 3}` })),
      );
    } finally {
      await store.close();
      for (const p of started) assert.equal(await p.stop(), 0, p.output());
    }
  });

  it('a collector killed mid-ingest and started again: nothing lost, nothing doubled', { timeout: 120_000 }, async () => {
    const db = await database();
    let current = await startCollectorProcess(db.url, { token: TOKEN });
    processes.push(current);
    const events = fleetEvents(30, 60, Date.now() - 3_600_000, 'crash');
    const delivery = deliver(() => [current.port], batches(events, 200), 4);
    // Kill it (no clean shutdown) once some batches are in, start another on the same database.
    const probe = await PostgresStore.open(db.url);
    try {
      for (let i = 0; i < 400 && (await probe.count()) < events.length / 4; i++) await new Promise((resolve) => setTimeout(resolve, 25));
      await current.stop('SIGKILL');
      const killedAt = await probe.count();
      assert.ok(killedAt < events.length, 'killed while events were still coming');
      current = await startCollectorProcess(db.url, { token: TOKEN });
      processes.push(current);
      await delivery;
      assert.equal(await probe.count(), events.length);
      assert.deepEqual(
        (await storedJobs(probe)).map(({ repository: _r, ...j }) => j),
        recountJobs(events).map(({ repository: _r, ...j }) => j),
      );
    } finally {
      await probe.close();
      assert.equal(await current.stop(), 0, current.output());
    }
  });
});
