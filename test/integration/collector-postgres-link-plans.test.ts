import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import pg from 'pg';
import { closeKeyOf, pgKeyOfId } from '../../collector/stores/pg-key.js';
import { CLOSE_LOOKUP_SQL, JOIN_CLOSES_SQL, LINK_CLOSES_SQL, LINK_WINDOW_MS, RELINK_SQL } from '../../collector/stores/pg-closes.js';
import { jobEventsQuery, PostgresStore } from '../../collector/stores/postgres-store.js';
import type { CloseEvent, DecisionEvent } from '../../events/schema.js';
import { DAY, recountJobs, storedJobs, testClose, testDecision } from '../helpers/aggregate-model.js';
import { scratchDatabases } from '../helpers/postgres-scratch-databases.js';

/**
 * Linking a close stored before its decision, the re-check after commit, the closes' lookup and joining a close into
 * its stored decision's row read by key (linking through the unlinked closes' own index),
 * whatever the planner makes of the partitions' statistics: never a partition by a sequential scan (a plan made after
 * a tiny partition's ANALYZE, cached while the partition grows) nor the job index's null entries (dead once linked,
 * in numbers that grow with the day's traffic until a vacuum). docs/collector.md, "Tenth round: linking closes".
 */

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Plans?: PlanNode[];
}

/** Every node of a plan, depth first. */
function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/** The plans of every statement `client` runs from now on, nested ones too (auto_explain's, as notices); its own generic ones. */
async function explainPlans(client: pg.Client): Promise<PlanNode[]> {
  const plans: PlanNode[] = [];
  client.on('notice', (msg) => {
    const text = msg.message ?? '';
    if (text.includes('"Plan"')) plans.push((JSON.parse(text.slice(text.indexOf('{'))) as { Plan: PlanNode }).Plan);
  });
  await client.query(`LOAD 'auto_explain'`);
  for (const setting of [
    'auto_explain.log_min_duration = 0',
    'auto_explain.log_nested_statements = on',
    'auto_explain.log_format = json',
    'auto_explain.log_level = notice',
    'client_min_messages = notice',
    'plan_cache_mode = force_generic_plan',
  ])
    await client.query(`SET ${setting}`);
  return plans;
}

/** The reads of eg_events's partitions in these plans. */
function partitionScans(plans: readonly PlanNode[]): PlanNode[] {
  return plans.flatMap(nodes).filter((n) => n['Relation Name']?.startsWith('eg_events') && n['Node Type'].endsWith('Scan'));
}

/** A read by a probe of a key (its index condition starts with the key's equality). */
const keyProbe = (n: PlanNode) => /^Index (Only )?Scan$/.test(n['Node Type']) && /^\(+key = /.test(n['Index Cond'] ?? '');

/** Decisions of one job, `n` of them from `start`, `spacing` ms apart, and their closes 40 ms after each. */
function pairs(job: string, n: number, start: number, spacing = 10): { decisions: DecisionEvent[]; closes: CloseEvent[] } {
  const decisions = Array.from({ length: n }, (_, i) => testDecision(randomUUID(), start + i * spacing, `h${i % 5}.link.test`, { job_id: job, repository: 'org/link' }));
  return { decisions, closes: decisions.map((d, i) => testClose(d, 40, i, 100 + i)) };
}

/** 200 day partitions of eg_events from 2026-01-01 on, as the store names them; returns 01:00 of their last day. */
async function makeDayPartitions(client: pg.Client): Promise<number> {
  const first = Date.UTC(2026, 0, 1);
  await client.query('BEGIN');
  for (let day = first; day < first + 200 * DAY; day += DAY) {
    const name = `eg_events_p${new Date(day).toISOString().slice(0, 10).replace(/-/g, '')}`;
    await client.query(`CREATE TABLE ${name} PARTITION OF eg_events FOR VALUES FROM (${day}) TO (${day + DAY})`);
  }
  await client.query('COMMIT');
  return first + 199 * DAY + 3_600_000;
}

/** The day partitions of eg_events that `client`'s open transaction holds a lock on. */
async function lockedPartitions(client: pg.Client): Promise<number> {
  const res = await client.query(
    `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE l.pid = pg_backend_pid() AND c.relkind = 'r' AND c.relname LIKE 'eg_events_p%'`,
  );
  return res.rows[0].n as number;
}

describe('PostgreSQL: linking closes through their own index (a real server started for the test)', () => {
  const databases = scratchDatabases('closelink');
  /** A test's work on a store of a fresh database, and a client of its own of that database. */
  const withStore = (work: (store: PostgresStore, client: pg.Client) => Promise<void>) => async () => {
    const { url } = await databases.create();
    const store = await PostgresStore.open(url);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      await work(store, client);
    } finally {
      await client.end();
      await store.close();
    }
  };

  it(
    "after a tiny partition's ANALYZE and a large one's, the functions' plans link, re-check, look closes up and join them without a sequential scan or the job index",
    { timeout: 120_000 },
    withStore(async (store, client) => {
      const large = Date.UTC(2026, 10, 20, 1);
      const big = pairs('link-large', 2_000, large);
      for (let i = 0; i < big.decisions.length; i += 250) await store.insert([...big.decisions.slice(i, i + 250), ...big.closes.slice(i, i + 250)]);
      // The next day: three closes before their decisions (rows of their own, no job yet), alone in their partition.
      const late = pairs('link-late', 3, large + DAY);
      await store.insert(late.closes);
      await client.query('ANALYZE eg_events');

      const plans = await explainPlans(client);

      const closeKeys = late.decisions.map((d) => closeKeyOf(pgKeyOfId(d.id, 0)));
      const decisionKeys = late.decisions.map((d) => pgKeyOfId(d.id, 0));
      const times = late.closes.map((c) => Date.parse(c.time));
      const windows = [times.map((t) => t - LINK_WINDOW_MS), times.map((t) => t + LINK_WINDOW_MS), Math.min(...times) - LINK_WINDOW_MS, Math.max(...times) + LINK_WINDOW_MS];
      // The re-check: the closes are found unlinked, their decisions are not stored.
      const recheck = await client.query({ name: 'relink', text: RELINK_SQL, values: [closeKeys, decisionKeys, ...windows] });
      assert.equal(recheck.rows.length, 0);
      // Linking, undone after: the three closes get the job given.
      await client.query('BEGIN');
      const linked = await client.query({ name: 'link', text: LINK_CLOSES_SQL, values: [closeKeys, [1, 1, 1], ...windows] });
      await client.query('ROLLBACK');
      assert.deepEqual(linked.rows.map((r) => r.key).sort(), [...closeKeys].sort());

      // The closes' lookup (decisions of the large day, the late closes' own rows) and joining closes into stored
      // decision rows (those of the large day hold theirs already: nothing joined), undone after.
      const bigKeys = big.decisions.slice(0, 3).map((d) => pgKeyOfId(d.id, 0));
      const bigTimes = big.decisions.slice(0, 3).map((d) => Date.parse(d.time));
      const lookup = await client.query({
        name: 'lookup',
        text: CLOSE_LOOKUP_SQL,
        values: [
          bigKeys,
          bigTimes.map((t) => t - LINK_WINDOW_MS),
          bigTimes.map((t) => t + LINK_WINDOW_MS),
          closeKeys,
          times,
          Math.min(...bigTimes) - LINK_WINDOW_MS,
          Math.max(...times),
        ],
      });
      assert.deepEqual(lookup.rows.map((r) => [r.own, r.joined]).sort(), [...Array(3).fill([false, true]), ...Array(3).fill([true, false])].sort());
      await client.query('BEGIN');
      const joined = await client.query({
        name: 'join',
        text: JOIN_CLOSES_SQL,
        values: [bigKeys, bigTimes, bigKeys.map(() => Buffer.from([0])), [1, 1, 1], [1, 1, 1], Math.min(...bigTimes), Math.max(...bigTimes)],
      });
      await client.query('ROLLBACK');
      assert.equal(joined.rows.length, 0);

      const scans = partitionScans(plans);
      assert.ok(scans.length > 0, 'auto_explain showed the plans');
      // Each partition read through the unlinked closes' index (its few entries, however large the partition or the
      // day's traffic), or by a probe of a key; never by a sequential or bitmap scan, nor through the job index.
      const unlinkedIndex = (n: PlanNode) => /^eg_events_p\d+_key_idx$/.test(n['Index Name'] ?? '');
      assert.deepEqual(
        scans.filter((n) => !keyProbe(n) && !(/^Index (Only )?Scan$/.test(n['Node Type']) && unlinkedIndex(n))),
        [],
        'every partition read through the unlinked closes or by a key',
      );
      assert.ok(
        scans.some((n) => n['Index Name'] === 'eg_events_p20261120_key_idx'),
        'the unlinked closes of the large partition read from their index',
      );

      // The decisions come: their closes are linked by the store, and the aggregates are a recount's.
      await store.insert(late.decisions);
      const unlinked = await client.query('SELECT count(*)::int AS n FROM eg_events WHERE job_id IS NULL');
      assert.equal(unlinked.rows[0].n, 0);
      assert.deepEqual(await storedJobs(store), recountJobs([...big.decisions, ...big.closes, ...late.decisions, ...late.closes]));
    }),
  );
  it(
    "on a small history (a new database's first batches), joining closes into stored decisions probes each decision's (key, time), not the batch's time span",
    { timeout: 120_000 },
    withStore(async (store, client) => {
      // 1,000 decisions over 50 minutes, their closes not come yet; analyzed, as autovacuum does early in a table's life.
      const start = Date.UTC(2026, 10, 20, 1);
      const { decisions } = pairs('join-small', 1_000, start, 3_000);
      await store.insert(decisions);
      await client.query('ANALYZE eg_events');
      const plans = await explainPlans(client);
      // The closes of the first and last decisions come: a batch whose decisions' times span the 50 minutes.
      const ends = [decisions[0]!, decisions.at(-1)!];
      const keys = ends.map((d) => pgKeyOfId(d.id, 0));
      const times = ends.map((d) => Date.parse(d.time));
      await client.query('BEGIN');
      const joined = await client.query({
        name: 'join',
        text: JOIN_CLOSES_SQL,
        values: [keys, times, keys.map(() => Buffer.from([0])), [1, 1], [1, 1], Math.min(...times), Math.max(...times)],
      });
      await client.query('ROLLBACK');
      assert.deepEqual(joined.rows.map((r) => r.key).sort(), [...keys].sort());
      const scans = partitionScans(plans);
      assert.ok(scans.length > 0, 'auto_explain showed the plans');
      assert.deepEqual(
        scans.filter((n) => !keyProbe(n)),
        [],
        'every decision row found by a probe of its key',
      );
    }),
  );
  it(
    "a call locks the partitions of its batch's span only, however many day partitions there are (a generic plan locked them all, which filled the lock table)",
    { timeout: 120_000 },
    withStore(async (store, client) => {
      const lastDay = await makeDayPartitions(client);
      // A decision stored without its close and a close stored before its decision, on the last day.
      const { decisions, closes } = pairs('locks', 2, lastDay);
      await store.insert([decisions[0]!, closes[1]!]);
      const keys = decisions.map((d) => pgKeyOfId(d.id, 0));
      const times = decisions.map((d) => Date.parse(d.time));
      const windows = [times.map((t) => t - LINK_WINDOW_MS), times.map((t) => t + LINK_WINDOW_MS), Math.min(...times) - LINK_WINDOW_MS, Math.max(...times) + LINK_WINDOW_MS];
      const calls = [
        { name: 'relink', text: RELINK_SQL, values: [keys.map(closeKeyOf), keys, ...windows] },
        { name: 'link', text: LINK_CLOSES_SQL, values: [keys.map(closeKeyOf), [1, 1], ...windows] },
        { name: 'lookup', text: CLOSE_LOOKUP_SQL, values: [keys, windows[0], windows[1], keys.map(closeKeyOf), times, windows[2], windows[3]] },
        { name: 'join', text: JOIN_CLOSES_SQL, values: [keys, times, keys.map(() => Buffer.from([0])), [1, 1], [1, 1], Math.min(...times), Math.max(...times)] },
      ];
      // Each statement called more than five times (when a session's cached plan may turn generic).
      for (let round = 0; round < 7; round++) {
        for (const call of calls) {
          await client.query('BEGIN');
          await client.query(call);
          const locked = await lockedPartitions(client);
          await client.query('ROLLBACK');
          assert.ok(locked <= 5, `${call.name}, call ${round + 1}: ${locked} partitions locked`);
        }
      }
    }),
  );
  it(
    "a job's read locks the day partitions from its first decision (less the linking window) on, not the history before it; its events are all there",
    { timeout: 120_000 },
    withStore(async (store, client) => {
      const lastDay = await makeDayPartitions(client);
      // A job on the last day: three decisions, two closes joined into their rows, one close stored before its decision.
      const { decisions, closes } = pairs('job-read', 3, lastDay);
      await store.insert([...decisions.slice(0, 2), ...closes.slice(0, 2), closes[2]!]);
      await store.insert([decisions[2]!]);
      const all = await store.jobEvents('job-read', 100);
      assert.equal(all.length, 6, 'three decisions and three closes');
      const ids = await client.query(`SELECT j.job_id, j.first FROM eg_jobs j JOIN eg_strings s ON s.id = j.job_id WHERE s.text = 'job-read'`);
      const { job_id: jobId, first: jobFirst } = ids.rows[0] as { job_id: number; first: string };
      await client.query('BEGIN');
      const read = await client.query(jobEventsQuery(jobId, 100, Number(jobFirst)));
      const locked = await lockedPartitions(client);
      await client.query('ROLLBACK');
      assert.equal(read.rows.length, 4, "the three decisions' rows (two with their closes) and the close's own row");
      // The partitions from the job's first decision less the linking window (two days) on: the window's days, the job's
      // and those after it (the store makes today's and tomorrow's on start). Without the bound: every one of them.
      const from = new Date(Number(jobFirst) - LINK_WINDOW_MS).toISOString().slice(0, 10).replace(/-/g, '');
      const partitions = await client.query(`SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'eg_events_p%'`);
      const expected = (partitions.rows as Array<{ relname: string }>).filter((r) => r.relname.slice('eg_events_p'.length) >= from).length;
      assert.ok(expected < 10 && partitions.rows.length > 200, `${expected} of ${partitions.rows.length} partitions from ${from}`);
      assert.equal(locked, expected, 'partitions locked');
    }),
  );
  it(
    "a close more than the linking window before its decision is linked (or not) alike in its decision's batch or another: a job's read, bounded by its first decision less that window, still has every row of the job",
    { timeout: 120_000 },
    withStore(async (store, client) => {
      const at = Date.UTC(2026, 10, 20, 12);
      // The proxy's clock went back three days between the decision and its close (for the last, forward: in the
      // decision's batch that close is the job's, read with it).
      const jobs = ['skew-one-batch', 'skew-two-batches', 'skew-forward'];
      const [one, two, forward] = jobs.map((job) => pairs(job, 1, at));
      const back = (p: typeof one) => testClose(p!.decisions[0]!, -3 * DAY, 7, 11);
      await store.insert([one!.decisions[0]!, back(one)]);
      await store.insert([two!.decisions[0]!]);
      await store.insert([back(two)]);
      await store.insert([forward!.decisions[0]!, testClose(forward!.decisions[0]!, 3 * DAY, 7, 11)]);
      for (const job of jobs) {
        const read = await store.jobEvents(job, 100);
        const stored = await client.query(
          `SELECT count(*)::int + count(e.close_body)::int AS n, j.bytes_in::int AS "bytesIn" FROM eg_events e JOIN eg_jobs j ON j.job_id = e.job_id
           JOIN eg_strings s ON s.id = e.job_id WHERE s.text = $1 GROUP BY j.bytes_in`,
          [job],
        );
        const { n, bytesIn } = stored.rows[0] as { n: number; bytesIn: number };
        assert.equal(read.length, n, `${job}: every event stored with the job is read (${read.map((e) => e.event).join(', ')})`);
        assert.deepEqual(
          { events: read.map((e) => e.event), bytesIn },
          job === 'skew-forward' ? { events: ['decision', 'close'], bytesIn: 7 } : { events: ['decision'], bytesIn: 0 },
          `${job}: the close is not the job's, as a close stored apart from its decision further than the window is not`,
        );
      }
    }),
  );
});
