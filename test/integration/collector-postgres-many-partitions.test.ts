import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import pg from 'pg';
import { PostgresStore } from '../../collector/stores/postgres-store.js';
import type { EgressEvent } from '../../events/schema.js';
import { DAY, testClose, testDecision } from '../helpers/aggregate-model.js';
import { addDayPartitions, dayPartitionName, inBatches, toEarlierJobIndexLayout } from '../helpers/postgres-earlier-layout.js';
import { scratchDatabases } from '../helpers/postgres-scratch-databases.js';

/**
 * Opening a database of an earlier layout with many day partitions (docs/collector.md, "Opening a database of thousands
 * of day partitions"). The cluster's lock table is made small, max_locks_per_transaction = 10 (the least PostgreSQL
 * takes) instead of 64, with the helper's 50 connections: 500 entries by PostgreSQL's formula instead of 3,200, so that
 * a few hundred day partitions overflow it as ~4,000 do at the default 64 (the build before pg-event-indexes.ts made
 * the new indexes and dropped the old one in one transaction: on this cluster it opened this layout with 450
 * partitions and failed with 500, "out of shared memory"; PARTITIONS leaves a margin). That build failed the first test
 * so, and left the second's half-built index not valid.
 */
const PARTITIONS = 600;
const SMALL_LOCK_TABLE = { max_locks_per_transaction: 10 };
const FIRST_DAY = Date.UTC(2020, 0, 1);
/**
 * The old job's day: near the last of the old partitions, since a job's read locks every partition from its first
 * decision on (docs/collector.md), which the small lock table would not hold from the first one.
 */
const JOB_DAY = FIRST_DAY + (PARTITIONS - 5) * DAY;
const NEW_INDEXES = ['eg_events_id', 'eg_events_job_linked', 'eg_events_unlinked'];

/** A job's decisions and their closes, `n` of them from `start`, a minute apart. */
function jobEvents(job: string, n: number, start: number): EgressEvent[] {
  const decisions = Array.from({ length: n }, (_, i) => testDecision(randomUUID(), start + i * 60_000, `h${i % 3}.partitions.test`, { job_id: job, repository: 'org/partitions' }));
  return [...decisions, ...decisions.map((d, i) => testClose(d, 40, i, 100 + i))];
}

/**
 * A database in the layout before eg_events_job_linked and eg_events_unlinked (the job index (job_id) with its nulls),
 * with a job's events on JOB_DAY and PARTITIONS day partitions from FIRST_DAY on; the job's events as read before. The
 * layout is made while there are few partitions (on a small lock table), then the partitions are added.
 */
async function earlierLayout(url: string, client: pg.Client): Promise<Awaited<ReturnType<PostgresStore['jobEvents']>>> {
  const store = await PostgresStore.open(url);
  try {
    await store.insert(jobEvents('old-job', 20, JOB_DAY + 3_600_000));
    const events = await store.jobEvents('old-job', 1000);
    await toEarlierJobIndexLayout(client);
    await addDayPartitions(client, FIRST_DAY, PARTITIONS);
    return events;
  } finally {
    await store.close();
  }
}

/** Per index of eg_events: whether it is valid, and how many of the attached partitions have no index attached to it. */
async function indexStates(client: pg.Client, names: readonly string[]): Promise<Record<string, { valid: boolean; partitionsWithout: number }>> {
  const res = await client.query(
    `SELECT n AS name, x.indisvalid AS valid, CASE WHEN x.indexrelid IS NOT NULL THEN (SELECT count(*)::int FROM pg_inherits i WHERE i.inhparent = 'eg_events'::regclass
       AND NOT EXISTS (SELECT 1 FROM pg_inherits ii JOIN pg_index xi ON xi.indexrelid = ii.inhrelid WHERE ii.inhparent = x.indexrelid AND xi.indrelid = i.inhrelid)) END AS without
     FROM unnest($1::text[]) AS n LEFT JOIN pg_index x ON x.indexrelid = to_regclass(n)`,
    [names],
  );
  return Object.fromEntries(res.rows.map((r) => [r.name, { valid: r.valid, partitionsWithout: r.without }]));
}

const allValid = Object.fromEntries(NEW_INDEXES.map((n) => [n, { valid: true, partitionsWithout: 0 }]));

async function partitionCount(client: pg.Client): Promise<number> {
  return (await client.query(`SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = 'eg_events'::regclass`)).rows[0].n;
}

/** The warnings' codes process.emitWarning gives while `work` runs. */
async function warningCodes(work: () => Promise<void>): Promise<string[]> {
  const codes: string[] = [];
  const listener = (w: Error & { code?: string }) => codes.push(w.code ?? w.name);
  process.on('warning', listener);
  try {
    await work();
    await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
  } finally {
    process.off('warning', listener);
  }
  return codes;
}

describe('PostgreSQL: opening a database of an earlier layout with many day partitions (a real server, small lock table)', () => {
  const databases = scratchDatabases('manyparts', SMALL_LOCK_TABLE);

  it(
    `${PARTITIONS} day partitions: the new indexes made on every partition and valid, the old rows read through them; the old index dropped once it fits`,
    { timeout: 120_000 },
    async () => {
      const { url } = await databases.create();
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const expected = await earlierLayout(url, client);
        assert.equal(expected.length, 40);
        assert.ok((await partitionCount(client)) >= PARTITIONS);
        assert.deepEqual(await indexStates(client, ['eg_events_job_linked', 'eg_events_unlinked']), {
          eg_events_job_linked: { valid: null, partitionsWithout: null },
          eg_events_unlinked: { valid: null, partitionsWithout: null },
        });

        let store: PostgresStore | undefined;
        // Dropping eg_events_job_id locks ~2 entries a partition at once: more than this lock table holds, so it is kept.
        const warned = await warningCodes(async () => {
          store = await PostgresStore.open(url);
        });
        try {
          assert.deepEqual(warned, ['EG_OBSOLETE_INDEX_KEPT']);
          assert.deepEqual(await indexStates(client, NEW_INDEXES), allValid);
          assert.equal((await indexStates(client, ['eg_events_job_id'])).eg_events_job_id!.valid, true, 'the old index kept');
          assert.deepEqual(await store!.jobEvents('old-job', 1000), expected);
          // The old partition's rows are found through its new index.
          await client.query('BEGIN; SET LOCAL enable_seqscan = off');
          const plan = await client.query(
            `EXPLAIN (FORMAT JSON) SELECT key FROM eg_events WHERE job_id = (SELECT job_id FROM eg_jobs LIMIT 1) AND time >= ${JOB_DAY} AND time < ${JOB_DAY + DAY}`,
          );
          await client.query('COMMIT');
          assert.match(JSON.stringify(plan.rows[0]['QUERY PLAN']), new RegExp(`"Index Name":"${dayPartitionName(JOB_DAY)}_job_linked"`));
          // A new event in an old partition still gets its job; repeats still dropped (the unique index).
          const late = jobEvents('old-job', 1, JOB_DAY + 7_200_000);
          assert.deepEqual(await store!.insert(late), { stored: 2, duplicates: 0 });
          assert.deepEqual(await store!.insert(late), { stored: 0, duplicates: 2 });
          assert.equal((await store!.jobEvents('old-job', 1000)).length, 42);
        } finally {
          await store!.close();
        }

        // Retention leaves fewer partitions: the next start drops the old index.
        const days = Array.from({ length: PARTITIONS }, (_, i) => FIRST_DAY + i * DAY).filter((d) => d !== JOB_DAY);
        await inBatches(
          client,
          days.slice(100).map((day) => `DROP TABLE ${dayPartitionName(day)}`),
        );
        const warnedAgain = await warningCodes(async () => {
          store = await PostgresStore.open(url);
        });
        try {
          assert.deepEqual(warnedAgain, []);
          assert.deepEqual(await indexStates(client, ['eg_events_job_id']), { eg_events_job_id: { valid: null, partitionsWithout: null } });
          assert.deepEqual(await indexStates(client, NEW_INDEXES), allValid);
          assert.equal((await store!.jobEvents('old-job', 1000)).length, 42);
        } finally {
          await store!.close();
        }
      } finally {
        await client.end();
      }
    },
  );

  it(
    'a start stopped halfway (the parent index invalid, half the partitions indexed) is finished by the next, two collectors starting at once while a third ingests',
    { timeout: 120_000 },
    async () => {
      const { url } = await databases.create();
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const writer = await PostgresStore.open(url); // a collector already running (its start done before the layout was made)
      try {
        const expected = await earlierLayout(url, client);
        // What a start stopped halfway leaves: the parent's index on eg_events only, half the partitions' indexes attached.
        await client.query('CREATE INDEX eg_events_job_linked ON ONLY eg_events (job_id) WHERE job_id IS NOT NULL');
        const partitions = (await client.query(`SELECT inhrelid::regclass::text AS name FROM pg_inherits WHERE inhparent = 'eg_events'::regclass ORDER BY 1`)).rows.map(
          (r) => r.name as string,
        );
        await inBatches(
          client,
          partitions
            .filter((_, i) => i % 2 === 0)
            .flatMap((p) => [`CREATE INDEX ${p}_job_linked ON ${p} (job_id) WHERE job_id IS NOT NULL`, `ALTER INDEX eg_events_job_linked ATTACH PARTITION ${p}_job_linked`]),
        );
        const before = await indexStates(client, ['eg_events_job_linked']);
        assert.equal(before.eg_events_job_linked!.valid, false);
        assert.equal(before.eg_events_job_linked!.partitionsWithout, Math.floor(partitions.length / 2));

        // Its batches, each of one day, into an old partition being indexed and into today's, while the two start.
        const batches = Array.from({ length: 10 }, (_, i) => jobEvents('writer-job', 10, i % 2 === 0 ? JOB_DAY + 2 * DAY + i * 3_600_000 : Date.now() - (i + 1) * 600_000));
        const ingest = (async () => {
          for (const batch of batches) assert.deepEqual(await writer.insert(batch), { stored: batch.length, duplicates: 0 });
        })();
        const stores = await Promise.all([PostgresStore.open(url), PostgresStore.open(url)]);
        await ingest;
        try {
          assert.deepEqual(await indexStates(client, NEW_INDEXES), allValid);
          assert.equal((await stores[0]!.jobEvents('writer-job', 1000)).length, 200);
          assert.deepEqual(await writer.insert(batches.flat()), { stored: 0, duplicates: 200 });
          // One index a partition for each parent index, not two.
          const perPartition = await client.query(
            `SELECT count(*)::int AS n FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid WHERE ii.inhparent = 'eg_events_job_linked'::regclass`,
          );
          assert.equal(perPartition.rows[0].n, await partitionCount(client));
          for (const store of stores) assert.deepEqual(await store.jobEvents('old-job', 1000), expected);
        } finally {
          await Promise.all(stores.map((s) => s.close()));
        }
      } finally {
        await writer.close();
        await client.end();
      }
    },
  );

  it('a day partition dropped (as by retention) while a start waits to index it: the start goes on without it', { timeout: 120_000 }, async () => {
    const { url } = await databases.create();
    const client = new pg.Client({ connectionString: url });
    const retention = new pg.Client({ connectionString: url });
    await client.connect();
    await retention.connect();
    try {
      await earlierLayout(url, client);
      // The first partition in name order: the first statement of the start's first batch, which then holds no other lock.
      const first = dayPartitionName(FIRST_DAY);
      await retention.query(`BEGIN; LOCK TABLE ${first} IN ACCESS EXCLUSIVE MODE`);
      const opening = PostgresStore.open(url);
      opening.catch(() => undefined); // awaited below; a failure is reported there
      let waiting = false;
      for (let i = 0; i < 400 && !waiting; i++) {
        const res = await client.query(`SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND relation = to_regclass($1)`, [first]);
        waiting = res.rows[0].n > 0;
        if (!waiting) await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.ok(waiting, 'the start waits for the partition');
      await retention.query(`DROP TABLE ${first}; COMMIT`);
      const store = await opening;
      try {
        assert.deepEqual(await indexStates(client, NEW_INDEXES), allValid);
        assert.equal((await client.query('SELECT to_regclass($1) AS t', [first])).rows[0].t, null);
      } finally {
        await store.close();
      }
    } finally {
      await retention.end();
      await client.end();
    }
  });
});
