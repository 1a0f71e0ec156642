import pg from 'pg';
import type { EgressEvent } from '../../events/schema.js';
import * as aggregate from './aggregate.js';
import type { DestinationRow, EventRowV2, Link, StoredDecision } from './aggregate.js';
import { CLOSE, DECISION, decodeId, OUTCOME_CODES, packBody, withBodyId } from './codec.js';
import { Dictionary } from './dictionary.js';
import { nextTurn, ROWS_PER_TURN } from './in-turns.js';
import { jobUnpacker, JobRowsPageBuilder, type JobRowsPage } from './job-rows.js';
import { bigintArray, byteaArray, int2Array, int4Array, int8Array, int8SumArray, uuidArray } from './pg-binary-array.js';
import { closeKeyOf, decisionKeyOf, KEEPS_ID_BYTEA_SQL, keepsIdOfId, PG_KEY_OF_BYTEA_SQL, pgKeyOfId } from './pg-key.js';
import { dropObsoleteEventIndex, ensureEventIndex, EVENT_INDEXES, OBSOLETE_EVENT_INDEXES } from './pg-event-indexes.js';
import { CLOSE_LOOKUP_SQL, JOIN_CLOSES_SQL, LINK_CLOSES_SQL, LINK_WINDOW_MS, RELINK_SQL } from './pg-closes.js';
import {
  decodeCursor,
  type EventStore,
  type InsertResult,
  type JobPage,
  type JobQuery,
  type RetentionResult,
  type SearchPage,
  type SearchQuery,
  type SightingFilter,
} from './event-store.js';
import {
  destinationRowSql,
  finite,
  JOB_SELECT,
  jobPage,
  jobRowSql,
  JOB_DELTA_COLUMNS,
  DESTINATION_DELTA_COLUMNS,
  rowsToRead,
  OLD_TABLE,
  RECOMPUTE_SQL,
  SCHEMA_TABLES,
  searchScanSql,
  searchSql,
  searchByJobsSql,
  COUNT_BY_JOBS_ENTRIES,
  WALK_HOSTS,
  stringLookupSql,
  type JobRow,
} from './queries.js';

const SCHEMA_LOCK = 0x6567_7264; // any constant: serialises CREATE ... IF NOT EXISTS across collectors
const PARTITION_LOCK = 0x6567_7265;
const RETENTION_LOCK = 0x6567_7266;
const DAY = 86_400_000;

/**
 * Deadlock, serialization, no partition (dropped meanwhile), out of shared memory (the lock table full: a batch holds
 * one advisory lock per close until commit, so many large batches at once can fill it; docs/collector.md).
 */
const RETRYABLE = new Set(['40P01', '40001', '23514', '53200']);

/** `eg_events_pYYYYMMDD`; a day outside years 1000-9999 (a producer's broken clock) by its day number instead. */
function partitionName(day: number): string {
  const date = new Date(day).toISOString();
  if (/^\d{4}-/.test(date) && !date.startsWith('0')) return `eg_events_p${date.slice(0, 10).replace(/-/g, '')}`;
  return `eg_events_d${day / DAY + 1_000_000_000}`;
}

function dayOfPartition(name: string): number | undefined {
  const m = /^eg_events_p(\d{4})(\d{2})(\d{2})$/.exec(name);
  if (m) return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  const d = /^eg_events_d(\d+)$/.exec(name);
  return d ? (Number(d[1]) - 1_000_000_000) * DAY : undefined;
}

/** Dictionary strings added, and the ids of the added ones and of those committed before this statement began. */
const ADD_STRINGS_SQL = `WITH input AS (SELECT DISTINCT unnest($1::text[]) AS text),
  added AS (INSERT INTO eg_strings (text) SELECT text FROM input ORDER BY 1 ON CONFLICT (text) DO NOTHING RETURNING id, text)
  SELECT id, text FROM added UNION ALL SELECT s.id, s.text FROM eg_strings s JOIN input i ON i.text = s.text`;

/**
 * Every close writer first takes CLOSES_LOCK (two int keys: a space apart from the ids' bigint keys), shared when it
 * then takes its ids' locks, exclusive when its batch has more than MAX_CLOSE_LOCKS closes: one lock per close of
 * batches of the collector's largest size (10,000 events) overflowed PostgreSQL's lock table ("out of shared memory":
 * on a default server, 100 connections, two transactions of 8,000 locks at once, or one of 14,000; with 50
 * connections one of 10,000, on every retry: the batch never stored). Such a batch excludes every other close writer
 * instead, which a small batch's shared lock makes wait.
 */
const CLOSES_LOCK = [0x6567_7267, 1] as const;
export const MAX_CLOSE_LOCKS = 1_000;

/**
 * Locks of a batch's ids that have a close, taken in the order given after CLOSES_LOCK shared (the first element, a
 * placeholder; sorted: two batches never wait on each other in a cycle). Counted, so that one row comes back, not one
 * per lock for the driver to read (an aggregate's argument is evaluated for every row, in the scan's order).
 */
const CLOSE_LOCKS_SQL = `SELECT count(CASE WHEN i = 1 THEN pg_advisory_xact_lock_shared(${CLOSES_LOCK[0]}, ${CLOSES_LOCK[1]}) ELSE pg_advisory_xact_lock(k) END)
  FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, i)`;
const ALL_CLOSES_LOCK_SQL = `SELECT pg_advisory_xact_lock(${CLOSES_LOCK[0]}, ${CLOSES_LOCK[1]})`;

/** A batch's rows into eg_events, from the insert's eleven binary arrays (insertParams), in key order. */
const INSERT_ROWS_SQL = `INSERT INTO eg_events (key, event, time, job_id, host_id, port, decision, bytes_in, bytes_out, body, close_body)
  SELECT * FROM unnest($1::uuid[], $2::smallint[], $3::bigint[], $4::int[], $5::int[], $6::int[], $7::smallint[], $8::bigint[], $9::bigint[], $10::bytea[], $11::bytea[])
  ORDER BY 1, 2`;

/**
 * The insert answers one row: how many rows it stored (`n`), and only when that is fewer than the batch's $12 rows,
 * their keys (`keys`, uuid[] as text). A row per stored row (`RETURNING key`) cost the driver a message, a row object
 * and a string each, for what is nearly always "all of them" (docs/collector.md, "Seventh round").
 */
const INSERT_EVENTS_SQL = `WITH stored AS (${INSERT_ROWS_SQL} ON CONFLICT DO NOTHING RETURNING key)
  SELECT count(*)::int AS n, CASE WHEN count(*) < $12::int THEN array_agg(key)::text END AS keys FROM stored`;

/**
 * The insert without ON CONFLICT, tried first, since a batch nearly always holds only new events: each row then skips
 * the speculative insertion (a probe of the key index before the heap insert, and a confirmation record in the WAL
 * after it), and nothing is returned (all rows are stored, else the statement fails). A key stored already fails it
 * (unique violation, 23505) and the batch is done again with INSERT_EVENTS_SQL (insert()).
 */
const INSERT_NEW_EVENTS_SQL = INSERT_ROWS_SQL;

/**
 * Which of a batch's keys the insert stored: `undefined` for all of them; else the set of its keys (`keys`: a uuid[]
 * as PostgreSQL writes it, `{k1,k2}`, no element quoted; null when it stored none).
 */
function storedKeys(rowCount: number, answer: { n: number; keys: string | null }): ReadonlySet<string> | undefined {
  if (answer.n === rowCount) return undefined;
  return new Set(answer.keys === null || answer.keys === '{}' ? [] : answer.keys.slice(1, -1).split(','));
}

/**
 * A batch's aggregate deltas in one statement: the jobs' columns from $1, the destinations' after them (aggregateParams).
 * PostgreSQL runs a data-modifying WITH part the main statement does not read after the main one: destinations, then
 * jobs, the order in which retention's recompute (queries.ts) locks them too.
 */
const AGGREGATES_SQL = `WITH jobs AS (${jobRowSql('postgres', 1)} RETURNING 1) ${destinationRowSql('postgres', JOB_DELTA_COLUMNS.length + 1)}`;

/**
 * AGGREGATES_SQL's parameters, binary arrays in queries.ts's column order. They were two JSON texts, which PostgreSQL
 * parsed into jsonb, then into records; its CPU per event fell by 1.5-2.4 µs without them (docs/collector.md, "Ninth
 * round").
 */
function aggregateParams({ jobs, destinations }: aggregate.Deltas): Buffer[] {
  return [...deltaArrays(jobs, JOB_DELTA_COLUMNS), ...deltaArrays(destinations, DESTINATION_DELTA_COLUMNS)];
}

/** A binary array per column, for the column's type; bigints as sums (past 2^53 allowed: int8SumArray). */
const DELTA_ARRAY = { int: int4Array, smallint: int2Array, bigint: int8SumArray } as const;

/** The arrays of `rows`' columns, in `columns`' order (queries.ts's lists, which also name them in the SQL). */
function deltaArrays<R>(rows: readonly R[], columns: readonly { field: keyof R; type: keyof typeof DELTA_ARRAY }[]): Buffer[] {
  return columns.map((c) => DELTA_ARRAY[c.type](rows.map((r) => r[c.field] as number | null)));
}

/**
 * Parameter arrays of stored keys with the time window each is looked up in. Every array parameter of ingest's
 * statements is sent binary (pg-binary-array.ts), not as the driver's text literal.
 */
function keyWindows(rows: readonly PgRow[], ...keys: Array<(r: PgRow) => string>) {
  return [...keys.map((key) => uuidArray(rows.map(key))), int8Array(rows.map((r) => r.time - LINK_WINDOW_MS)), int8Array(rows.map((r) => r.time + LINK_WINDOW_MS))];
}

/** The first and last of these times: the partitions that the closes' functions (pg-closes.ts) probe, pruned once when their plan starts. */
function timesSpan(times: readonly number[]): [number, number] {
  let first = Infinity;
  let last = -Infinity;
  for (const t of times) {
    first = Math.min(first, t);
    last = Math.max(last, t);
  }
  return [first, last];
}

/**
 * The first and last time of these rows' windows together (each row's time +- LINK_WINDOW_MS): the linking functions
 * probe only the partitions in it, instead of every partition's probe made ready at each call and pruned per key.
 */
function windowsSpan(rows: readonly { time: number }[]): [number, number] {
  const [first, last] = timesSpan(rows.map((r) => r.time));
  return [first - LINK_WINDOW_MS, last + LINK_WINDOW_MS];
}

/** A decision as stored, with its stored key and time: what linking its close needs. */
type KeyedDecision = StoredDecision & { time: number };

/** A stored decision a close looked up found, and whether its close is in its row already. */
type FoundDecision = KeyedDecision & { joined: boolean };

/**
 * Whether a close goes into its decision's row (`close_body`; its bytes in the row's byte columns) instead of a row of
 * its own: same host (the row has one), not before the decision, and on the same day (so that a job's rows read in
 * time order give its events in time order, and retention drops the close with the day partition it belongs to).
 */
export function joinsDecision(decision: { hostId: number; time: number }, close: { hostId: number; time: number }): boolean {
  return decision.hostId === close.hostId && close.time >= decision.time && Math.floor(close.time / DAY) === Math.floor(decision.time / DAY);
}

/** A batch's row as this store writes it: keyed by pg-key.ts's uuid text. */
type PgRow = EventRowV2<string>;

const PG_ROW_KEYS: aggregate.RowKeys<string> = { key: pgKeyOfId, keepsId: keepsIdOfId, joinsDecision };

/** The rows of a batch as insert makes them (also what bench/collector-ingest-profile.ts counts). */
export function batchRows(events: readonly EgressEvent[], ids: ReadonlyMap<string, number>): PgRow[] {
  return aggregate.toRows(events, ids, PG_ROW_KEYS);
}

/** A close's body packed with its time relative to `base` (its decision's time in that row, its own in a row of its own). */
function packedAt(close: PgRow, base: number): void {
  if (close.base === base) return;
  close.body = packBody(close.source, close.time, close.keepsId, base);
  close.base = base;
}

/**
 * The advisory lock keys of these close keys (the first 64 bits, which a close's key shares with its decision's),
 * sorted, once each: every writer of a close takes them in this order.
 */
function closeLocks(keys: readonly string[]): bigint[] {
  const ids = new Set(keys.map((k) => BigInt.asIntN(64, BigInt(`0x${k.slice(0, 8)}${k.slice(9, 13)}${k.slice(14, 18)}`))));
  return [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The insert's columns (INSERT_EVENTS_SQL's $1-$11) of `rows`, and each row's close that goes into it (a decision's, else undefined). */
interface InsertColumns {
  keys: string[];
  events: number[];
  times: number[];
  jobIds: Array<number | null>;
  hostIds: number[];
  ports: number[];
  decisions: Array<number | null>;
  bytesIn: Array<number | null>;
  bytesOut: Array<number | null>;
  bodies: Buffer[];
  closeBodies: Array<Buffer | null>;
  closes: Array<PgRow | undefined>;
}

/**
 * The insert's columns in one pass over the rows, each row's close in its decision's row looked up once (a close of a
 * row of its own has its own bytes; a decision's row has its close's bytes and body, or nulls).
 */
function insertColumns(rows: readonly PgRow[], withDecision: ReadonlyMap<PgRow, PgRow>): InsertColumns {
  const n = rows.length;
  const c: InsertColumns = {
    keys: new Array(n),
    events: new Array(n),
    times: new Array(n),
    jobIds: new Array(n),
    hostIds: new Array(n),
    ports: new Array(n),
    decisions: new Array(n),
    bytesIn: new Array(n),
    bytesOut: new Array(n),
    bodies: new Array(n),
    closeBodies: new Array(n),
    closes: new Array(n),
  };
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    const close = r.event === DECISION && withDecision.size > 0 ? withDecision.get(r) : undefined;
    c.keys[i] = r.key;
    c.events[i] = r.event;
    c.times[i] = r.time;
    c.jobIds[i] = r.jobId;
    c.hostIds[i] = r.hostId;
    c.ports[i] = r.port;
    c.decisions[i] = r.decision;
    c.bytesIn[i] = r.event === CLOSE ? r.bytesIn : (close?.bytesIn ?? null);
    c.bytesOut[i] = r.event === CLOSE ? r.bytesOut : (close?.bytesOut ?? null);
    c.bodies[i] = r.body;
    c.closeBodies[i] = close?.body ?? null;
    c.closes[i] = close;
  }
  return c;
}

/** INSERT_EVENTS_SQL's parameters, binary (pg-binary-array.ts). */
function insertParams(c: InsertColumns): unknown[] {
  return [
    uuidArray(c.keys),
    int2Array(c.events),
    int8Array(c.times),
    int4Array(c.jobIds),
    int4Array(c.hostIds),
    int4Array(c.ports),
    int2Array(c.decisions),
    int8Array(c.bytesIn),
    int8Array(c.bytesOut),
    byteaArray(c.bodies),
    byteaArray(c.closeBodies),
    c.keys.length,
  ];
}

/** A stored decision row as linkCloses needs it (one object: no spread of decisionOf's). */
function keyedDecision(r: PgRow): KeyedDecision {
  return { jobId: r.jobId!, hostId: r.hostId, port: r.port, decision: r.decision!, time: r.time };
}

/** The earlier layout's key column (bytea, `encodeId`'s key, one per id) is migrated to pg-key.ts's on start. */
async function keyColumnType(client: pg.PoolClient): Promise<string | undefined> {
  const res = await client.query(`SELECT format_type(atttypid, NULL) AS t FROM pg_attribute WHERE attrelid = 'eg_events'::regclass AND attname = 'key'`);
  return res.rows[0]?.t;
}

/**
 * The read of a job's rows (jobEvents): the job's id, at most `limit` rows, from the job's first decision (`first`,
 * eg_jobs) less LINK_WINDOW_MS on (see jobEvents).
 */
export function jobEventsQuery(jobId: number, limit: number, first: number): { text: string; values: unknown[] } {
  return {
    text: `SELECT e.key, e.event, e.time, e.body, e.bytes_in, e.bytes_out, e.close_body, s.text AS host FROM eg_events e JOIN eg_strings s ON s.id = e.host_id
       WHERE e.job_id = $1 AND e.time >= $3 ORDER BY e.time, e.event, e.key LIMIT $2`,
    values: [jobId, limit, first - LINK_WINDOW_MS],
  };
}

/**
 * PostgreSQL store for fleets: several collectors may write to one database at once. Events live in per-day
 * partitions of eg_events (made as events arrive, dropped whole by retention); aggregates in eg_jobs and
 * eg_job_destinations, updated in the transaction that stores the events.
 */
export class PostgresStore implements EventStore {
  private readonly strings = new Dictionary();
  private readonly partitions = new Set<number>();

  private constructor(private readonly pool: pg.Pool) {}

  static async open(url: string): Promise<PostgresStore> {
    const pool = new pg.Pool({ connectionString: url, max: 8 });
    pool.on('error', () => {
      // An idle client lost its connection; the pool replaces it on next use.
    });
    const store = new PostgresStore(pool);
    try {
      await store.transaction(async (client) => {
        await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
        await client.query(SCHEMA_TABLES.postgres);
        await migrateKeys(client);
      });
      // The indexes of eg_events apart, a few day partitions a transaction (pg-event-indexes.ts): made in the schema
      // transaction they locked every partition at once, which thousands of day partitions overflowed.
      await store.withSchemaLock(async (client) => {
        for (const index of EVENT_INDEXES) await ensureEventIndex(client, index);
        for (const name of OBSOLETE_EVENT_INDEXES) await dropObsoleteEventIndex(client, name);
      });
      await store.ensurePartitions([Date.now(), Date.now() + DAY]);
      await store.migrateOldTable();
      await store.recomputePending();
    } catch (err) {
      await pool.end();
      throw err;
    }
    return store;
  }

  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>, begin = 'BEGIN'): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query(begin);
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /**
   * A transaction retried on deadlock, serialization failure, or a partition dropped under it (`times`: the rows'
   * times, whose day partitions are made again before the retry: another collector's retention may have dropped one
   * this one had made, and without it every retry failed the same way).
   */
  private async retried<T>(work: (client: pg.PoolClient) => Promise<T>, times: readonly number[] = []): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.transaction(work);
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt >= 5 || !code || !RETRYABLE.has(code)) throw err;
        await new Promise((resolve) => setTimeout(resolve, 10 * attempt));
        if (code === '23514') {
          this.partitions.clear();
          await this.ensurePartitions(times);
        }
      }
    }
  }

  /** The day partitions for these times exist (made under a lock: CREATE ... IF NOT EXISTS races across sessions). */
  private async ensurePartitions(times: readonly number[]): Promise<void> {
    const days = [...new Set(times.map((t) => Math.floor(t / DAY) * DAY))].filter((d) => !this.partitions.has(d));
    if (days.length === 0) return;
    await this.transaction(async (client) => {
      await client.query('SELECT pg_advisory_xact_lock($1)', [PARTITION_LOCK]);
      for (const day of days.sort((a, b) => a - b)) {
        await client.query(`CREATE TABLE IF NOT EXISTS ${partitionName(day)} PARTITION OF eg_events FOR VALUES FROM (${day}) TO (${day + DAY})`);
      }
    });
    for (const day of days) this.partitions.add(day);
  }

  /**
   * Dictionary ids of a batch's strings: the unknown ones added and read back in one statement (a string another
   * collector committed while this one waited on it is not in that statement's snapshot: read in a second one).
   */
  private async ids(texts: readonly string[]): Promise<Map<string, number>> {
    const unknown = this.strings.unknownTexts(texts);
    const fresh = new Map<string, number>();
    const remember = (rows: Array<{ id: number; text: string }>) => {
      for (const r of rows) {
        fresh.set(r.text, r.id);
        this.strings.remember(r.id, r.text);
      }
    };
    if (unknown.length > 0) {
      remember((await this.pool.query({ name: 'eg-strings-add', text: ADD_STRINGS_SQL, values: [unknown] })).rows);
      const missed = unknown.filter((t) => !fresh.has(t));
      if (missed.length > 0) remember((await this.pool.query('SELECT id, text FROM eg_strings WHERE text = ANY($1::text[])', [missed])).rows);
    }
    return this.strings.idMap(texts, fresh);
  }

  private async find(text: string): Promise<number | undefined> {
    const known = this.strings.id(text);
    if (known !== undefined) return known;
    const res = await this.pool.query('SELECT id FROM eg_strings WHERE text = $1', [text]);
    if (res.rows[0]) this.strings.remember(res.rows[0].id, text);
    return res.rows[0]?.id;
  }

  private async texts(ids: readonly number[]): Promise<(id: number) => string | undefined> {
    const unknown = this.strings.unknownIds(ids);
    const fresh = new Map<number, string>();
    if (unknown.length > 0) {
      const res = await this.pool.query('SELECT id, text FROM eg_strings WHERE id = ANY($1::int[])', [unknown]);
      for (const r of res.rows) {
        fresh.set(r.id, r.text);
        this.strings.remember(r.id, r.text);
      }
    }
    const map = this.strings.textMap(ids, fresh);
    return (id) => map.get(id);
  }

  /** The batch's aggregate changes in one statement (no round trip when there are none). */
  private async applyDeltas(client: pg.PoolClient, newDecisions: readonly PgRow[], links: readonly Link[]): Promise<void> {
    const deltas = aggregate.aggregateDeltas(newDecisions, links);
    if (deltas.jobs.length === 0 && deltas.destinations.length === 0) return;
    await client.query({ name: 'eg-aggregates', text: AGGREGATES_SQL, values: aggregateParams(deltas) });
  }

  /**
   * Link stored closes (job_id still null) of these decisions (by stored key): exactly one transaction gets each (WHERE
   * job_id IS NULL).
   */
  private async linkCloses(client: pg.PoolClient, decisions: ReadonlyMap<string, KeyedDecision>): Promise<Link[]> {
    if (decisions.size === 0) return [];
    const keys = [...decisions.keys()];
    const list = [...decisions.values()];
    const res = await client.query({
      name: 'eg-link-closes',
      text: LINK_CLOSES_SQL,
      values: [
        uuidArray(keys.map(closeKeyOf)),
        int4Array(list.map((d) => d.jobId)),
        int8Array(list.map((d) => d.time - LINK_WINDOW_MS)),
        int8Array(list.map((d) => d.time + LINK_WINDOW_MS)),
        ...windowsSpan(list),
      ],
    });
    return res.rows.map((r) => ({ decision: decisions.get(decisionKeyOf(r.key))!, bytesIn: Number(r.bytes_in), bytesOut: Number(r.bytes_out) }));
  }

  /**
   * Where each of these closes goes, read under their ids' locks: nowhere when it is stored already (a row of its own,
   * or in its decision's row), into its stored decision's row, with its decision of the batch (`batch`: the decisions
   * about to be inserted), else a row of its own (its job that of its decision when known).
   */
  private async placeCloses(client: pg.PoolClient, closes: readonly PgRow[], withBatch: boolean) {
    const found = new Map<string, FoundDecision>(); // by row id, as aggregate.ts pairs a batch's rows
    const own = new Set<string>();
    const place = { own: [] as PgRow[], joinStored: [] as Array<{ close: PgRow; decision: FoundDecision }>, withDecision: new Map<PgRow, PgRow>() };
    if (closes.length === 0) return { place, found };
    // A close's decision of the batch (toRows paired them), when this pass stores the batch's decisions.
    const inBatch = (c: PgRow) => (withBatch ? c.pair : null);
    const idOf = new Map(closes.map((r) => [decisionKeyOf(r.key), r.id]));
    // A close whose decision is in the batch needs no decision lookup: that decision's insert conflicts when it is
    // stored already, and its close is placed again then (storePass).
    const alone = closes.filter((r) => !inBatch(r));
    const res = await client.query({
      name: 'eg-close-lookup',
      text: CLOSE_LOOKUP_SQL,
      values: [
        ...keyWindows(alone, (r) => decisionKeyOf(r.key)),
        uuidArray(closes.map((r) => r.key)),
        int8Array(closes.map((r) => r.time)),
        ...timesSpan([...alone.flatMap((r) => [r.time - LINK_WINDOW_MS, r.time + LINK_WINDOW_MS]), ...closes.map((r) => r.time)]),
      ],
    });
    for (const r of res.rows) {
      const id = idOf.get(r.key)!;
      if (r.own) own.add(id);
      else found.set(id, { jobId: r.jobId, hostId: r.hostId, port: r.port, decision: r.decision, time: Number(r.time), joined: r.joined });
    }
    for (const c of closes) {
      const stored = found.get(c.id);
      const decision = inBatch(c);
      if (own.has(c.id) || stored?.joined) continue; // a repeat
      if (stored && joinsDecision(stored, c)) place.joinStored.push({ close: c, decision: stored });
      else if (!stored && decision && joinsDecision(decision, c)) place.withDecision.set(decision, c);
      else {
        // Its batch's decision gives it its job unless it is more than LINK_WINDOW_MS before it, as a stored decision
        // does not (the lookup's and the linking's windows): a job's read (jobEvents) starts at its first decision less
        // that window. (A close more than the window after its decision in the same batch keeps its job, as before.)
        const linkable = decision && c.time >= decision.time - LINK_WINDOW_MS ? decision : null;
        c.jobId = stored?.jobId ?? linkable?.jobId ?? null;
        place.own.push(c);
      }
    }
    return { place, found };
  }

  /**
   * Store `decisions` (new ones) and place `closes` (placeCloses), adding what is stored to `inserted` (refs) and the
   * closes' bytes counted to `links`. Returns the closes meant for a batch decision whose insert lost to a concurrent
   * one (that decision is committed then, so a second pass finds it).
   */
  private async storePass(client: pg.PoolClient, decisions: readonly PgRow[], closes: readonly PgRow[], inserted: Set<PgRow>, links: Link[], repeats: boolean): Promise<PgRow[]> {
    const { place, found } = await this.placeCloses(client, closes, decisions.length > 0);
    const bytes = (c: PgRow) => ({ bytesIn: c.bytesIn ?? 0, bytesOut: c.bytesOut ?? 0 });
    if (place.joinStored.length > 0) {
      const list = place.joinStored;
      for (const j of list) packedAt(j.close, j.decision.time);
      const res = await client.query({
        name: 'eg-join-closes',
        text: JOIN_CLOSES_SQL,
        values: [
          uuidArray(list.map((j) => decisionKeyOf(j.close.key))),
          int8Array(list.map((j) => j.decision.time)),
          byteaArray(list.map((j) => j.close.body)),
          int8Array(list.map((j) => j.close.bytesIn)),
          int8Array(list.map((j) => j.close.bytesOut)),
          ...timesSpan(list.map((j) => j.decision.time)),
        ],
      });
      const done = new Set(res.rows.map((r) => r.key as string));
      for (const j of list) {
        if (done.has(decisionKeyOf(j.close.key))) {
          inserted.add(j.close);
          links.push({ decision: j.decision, ...bytes(j.close) });
        } else {
          // Its decision's row went meanwhile (retention): a row of its own, unlinked.
          j.close.jobId = null;
          place.own.push(j.close);
        }
      }
    }
    for (const c of place.own) packedAt(c, c.time);
    for (const [decision, c] of place.withDecision) packedAt(c, decision.time);
    const rows = [...decisions, ...place.own];
    if (rows.length === 0) return [];
    const params = insertColumns(rows, place.withDecision);
    const values = insertParams(params);
    let stored: ReadonlySet<string> | undefined; // undefined: every row
    if (repeats) stored = storedKeys(rows.length, (await client.query({ name: 'eg-insert-events', text: INSERT_EVENTS_SQL, values })).rows[0]);
    else await client.query({ name: 'eg-insert-new-events', text: INSERT_NEW_EVENTS_SQL, values: values.slice(0, 11) }); // every row, or it fails
    const lost: PgRow[] = [];
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      const close = params.closes[i];
      if (stored && !stored.has(r.key)) {
        if (close) lost.push(close);
        continue;
      }
      inserted.add(r);
      if (close) {
        inserted.add(close);
        links.push({ decision: aggregate.decisionOf(r), ...bytes(close) });
      } else if (r.event === CLOSE && r.jobId !== null) {
        const decision = found.get(r.id) ?? aggregate.decisionOf(r.pair!);
        links.push({ decision, ...bytes(r) });
      }
    }
    return lost;
  }

  /**
   * One batch, in one transaction: BEGIN, the locks of the ids that have a close and the lookup of what is stored of
   * them (when the batch has closes), closes into their stored decisions' rows (when some are), the insert (a decision
   * with its close in one row when both are in the batch), the linking of stored closes when a new decision's close is
   * not in the batch, the aggregates, COMMIT; then the re-check after commit when some row may still need it.
   */
  async insert(events: readonly EgressEvent[]): Promise<InsertResult> {
    const rows = batchRows(events, await this.ids(aggregate.batchStrings(events)));
    const times = rows.map((r) => r.time);
    await this.ensurePartitions(times);
    const decisions = rows.filter((r) => r.event === DECISION);
    const closes = rows.filter((r) => r.event === CLOSE);
    const locks = closeLocks(closes.map((r) => r.key));
    const store = (repeats: boolean) =>
      this.retried(async (client) => {
        const inserted = new Set<PgRow>();
        const links: Link[] = [];
        // Every writer of a close holds its id's lock while it looks where the close is and puts it there, so a close
        // is stored once, as a row of its own or in its decision's row, whatever other collectors do meanwhile.
        if (locks.length > MAX_CLOSE_LOCKS) await client.query(ALL_CLOSES_LOCK_SQL);
        else if (locks.length > 0) await client.query({ name: 'eg-close-locks', text: CLOSE_LOCKS_SQL, values: [bigintArray([0n, ...locks])] });
        const lost = await this.storePass(client, decisions, closes, inserted, links, repeats);
        if (lost.length > 0) await this.storePass(client, [], lost, inserted, links, true);
        const newDecisions = decisions.filter((r) => inserted.has(r));
        // A new decision whose close this batch stored has it counted already; the others may have one stored as a row
        // of its own (before, or by a concurrent batch whose insert this one's waited on, committed now, so visible to this statement).
        const closeless = newDecisions.filter((r) => r.pair === null || !inserted.has(r.pair));
        links.push(...(await this.linkCloses(client, new Map(closeless.map((r) => [r.key, keyedDecision(r)])))));
        await this.applyDeltas(client, newDecisions, links);
        // What may still need linking once this commits: a decision and its close (a row of its own) stored by
        // concurrent transactions see neither the other; whichever re-checks after both committed links them. Repeats
        // are re-checked too: a collector that died between commit and re-check did not answer, so the batch comes
        // again (and a repeated close stored unlinked then is linked by it, whatever this batch's lookup found). Only a
        // pair that this transaction stored both halves of is settled.
        return { inserted: inserted.size, recheck: rows.filter((r) => !aggregate.pairStored(r, inserted)) };
      }, times);
    // New events only first; a key stored already (a batch sent again, or a concurrent collector's) fails that
    // transaction, and the batch is stored again with the repeats dropped.
    const { inserted, recheck } = await store(false).catch((err: unknown) => {
      if ((err as { code?: string }).code !== '23505') throw err;
      return store(true);
    });
    if (recheck.length > 0) await this.relink(recheck);
    return { stored: inserted, duplicates: events.length - inserted };
  }

  /** After commit: closes of these rows (or these closes) still without a job whose decision is now stored get linked. */
  private async relink(rows: readonly PgRow[]): Promise<void> {
    const values = keyWindows(
      rows,
      (r) => closeKeyOf(r.key),
      (r) => decisionKeyOf(r.key),
    );
    const res = await this.pool.query({ name: 'eg-relink', text: RELINK_SQL, values: [...values, ...windowsSpan(rows)] });
    if (res.rows.length === 0) return;
    const decisions = new Map(res.rows.map((r) => [r.key as string, { ...(r as StoredDecision), time: Number(r.time) }]));
    await this.retried(async (client) => this.applyDeltas(client, [], await this.linkCloses(client, decisions)));
  }

  async jobs(query: JobQuery = {}): Promise<JobPage> {
    const params: unknown[] = [];
    const where: string[] = [];
    if (query.repository !== undefined) {
      const repo = await this.find(query.repository);
      if (repo === undefined) return { jobs: [], next: null };
      params.push(repo);
      where.push(`repo_id = $${params.length}`);
    }
    const after = query.cursor ? decodeCursor(query.cursor) : undefined;
    if (after) {
      params.push(after.last, after.jobId);
      where.push(`(last, job_id) < ($${params.length - 1}, $${params.length})`);
    }
    params.push(rowsToRead(query), after ? 0 : (query.offset ?? 0));
    const res = await this.pool.query(
      `${JOB_SELECT} ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY last DESC, job_id DESC LIMIT $${params.length - 1} OFFSET $${params.length}`,
      params,
    );
    const rows = res.rows as JobRow[];
    return jobPage(rows, query, await this.texts(rows.flatMap((r) => (r.repoId === null ? [r.jobId] : [r.jobId, r.repoId]))));
  }

  async jobEvents(job: string, limit: number, signal?: AbortSignal): Promise<EgressEvent[]> {
    const unpacker = jobUnpacker('postgres', job, limit);
    await this.jobRows(job, limit, (page) => unpacker.add(page), signal);
    return unpacker.finish();
  }

  async jobRows(job: string, limit: number, onPage: (page: JobRowsPage) => void, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const jobId = await this.find(job);
    if (jobId === undefined) return;
    // From the job's first decision on, less the linking window: a row of the job is a decision or a close linked to
    // one, never further from it than LINK_WINDOW_MS (a close normally after it; the window covers a clock that went
    // back). With that time as a parameter the plan leaves out the day partitions before it: neither read nor locked.
    // Without it every read of a job locked every partition (and their indexes): with 700 days kept, a few job pages at
    // once took the lock table's room that ingest needs ("out of shared memory"; docs/collector.md).
    const first = (await this.pool.query('SELECT first FROM eg_jobs WHERE job_id = $1', [jobId])).rows[0]?.first as string | null | undefined;
    if (first === undefined || first === null) return;
    // A close has a job only while its decision is stored (aggregate.ts), so this is a job's decisions and their
    // closes; the first `limit` rows in (time, event, key) order (job-rows.ts sorts the joined closes in).
    const res = await this.pool.query(jobEventsQuery(jobId, limit, Number(first)));
    // Packed a page per event-loop turn (in-turns.ts), as the driver already read them.
    for (let at = 0; at < res.rows.length; at += ROWS_PER_TURN) {
      if (at > 0) await nextTurn();
      signal?.throwIfAborted();
      const packed = new JobRowsPageBuilder('postgres');
      for (const r of res.rows.slice(at, at + ROWS_PER_TURN)) {
        const bytesIn = r.bytes_in === null ? null : Number(r.bytes_in);
        const bytesOut = r.bytes_out === null ? null : Number(r.bytes_out);
        packed.add(r.key, r.event, Number(r.time), r.host, bytesIn, bytesOut, r.body, r.close_body);
      }
      onPage(packed.page());
    }
  }

  async searchJobs(filter: SightingFilter, page: SearchQuery): Promise<SearchPage> {
    const lookup = async (likes: readonly string[]) => {
      const sql = stringLookupSql('postgres', likes, (i) => `$${i}`);
      return (await this.pool.query(`SELECT id, text FROM eg_strings WHERE ${sql.where}`, sql.params)).rows as aggregate.SearchHost[];
    };
    return aggregate.searchJobs(filter, page, lookup, (hosts, window, decision) => {
      const hostIds = hosts.map((h) => h.id);
      const params = [hostIds, finite(window.since), finite(window.until)];
      const sql = searchSql({
        hosts: 'host_id = ANY($1::int[])',
        since: '$2',
        until: '$3',
        ...(decision !== undefined && { decision: String(decision) }),
        jobs: 'job_id = ANY($4::int[])',
      });
      const scan = searchScanSql(hostIds, decision);
      const byJobs = (page.byJobs ?? hostIds.length >= WALK_HOSTS) ? searchByJobsSql(decision) : undefined;
      return {
        scan: async (at, rows) => (await this.pool.query(scan.text, [params[1], params[2], at.last, at.jobId, rows, ...(scan.lateral ? [hostIds] : [])])).rows,
        ...(byJobs && {
          // Its reads in one read-only snapshot (aggregate.WalkRead).
          walk: <T>(walk: (read: aggregate.WalkRead) => Promise<T>) =>
            this.transaction(
              (client) => walk(async (at, jobs) => (await client.query(byJobs.walk, [params[1], params[2], at.last, at.jobId, jobs, hostIds])).rows),
              'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
            ),
        }),
        count: async () => {
          // By jobs when the search index holds many entries per job for these hosts (the planner's estimates).
          const estimate = async (text: string, values: unknown[]) => {
            let node = (await this.pool.query(`EXPLAIN (FORMAT JSON) ${text}`, values)).rows[0]['QUERY PLAN'][0].Plan;
            while (node['Relation Name'] === undefined && node.Plans?.length) node = node.Plans[0];
            return Number(node['Plan Rows']);
          };
          const countByJobs = byJobs && (page.byJobs ?? (await estimate(sql.count, params)) > COUNT_BY_JOBS_ENTRIES * (await estimate(byJobs.windowJobs, [params[1]])));
          return Number((await this.pool.query(countByJobs ? byJobs.count : sql.count, params)).rows[0].total);
        },
        lasts: async (jobIds) => (await this.pool.query(sql.lasts, [...params, jobIds])).rows,
        rows: async (jobIds) => (await this.pool.query(sql.rows, [...params, jobIds])).rows.map(aggregate.destinationRow),
        edges: async () => (await this.pool.query(sql.edges, params)).rows.map(aggregate.destinationRow),
        recount: async (row) => {
          const r = await this.pool.query(RECOMPUTE_SQL.postgres.windowCount, [row.jobId, row.hostId, row.port, row.decision, params[1], params[2]]);
          return aggregate.destinationRow({ ...row, ...r.rows[0] });
        },
        jobText: async (jobIds) => this.texts(jobIds),
      };
    });
  }

  /** Jobs whose partition was dropped: their aggregates recomputed from what remains, one transaction each. */
  private async recomputePending(): Promise<number> {
    const pending = await this.pool.query('SELECT job_id FROM eg_retention_pending ORDER BY job_id');
    for (const { job_id: job } of pending.rows) {
      await this.retried(async (client) => {
        // The job's row first, as ingest locks it first: ingest of this job waits, then adds to the recount.
        await client.query('SELECT 1 FROM eg_jobs WHERE job_id = $1 FOR UPDATE', [job]);
        for (const sql of RECOMPUTE_SQL.postgres.job) await client.query(sql, [job]);
        await client.query('DELETE FROM eg_retention_pending WHERE job_id = $1', [job]);
      });
    }
    return pending.rows.length;
  }

  async retain(cutoff: Date): Promise<RetentionResult> {
    const client = await this.pool.connect();
    let broken = false;
    try {
      const lock = await client.query('SELECT pg_try_advisory_lock($1) AS ok', [RETENTION_LOCK]);
      if (!lock.rows[0].ok) return { deleted: 0, jobs: 0 }; // another collector is at it
      try {
        return await this.dropPartitions(client, cutoff);
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        // A connection that cannot unlock is closed (which unlocks), not returned to the pool holding the lock.
        await client.query('SELECT pg_advisory_unlock($1)', [RETENTION_LOCK]).catch(() => (broken = true));
      }
    } finally {
      client.release(broken);
    }
  }

  private async dropPartitions(client: pg.PoolClient, cutoff: Date): Promise<RetentionResult> {
    // Attached day partitions that end at or before the cutoff, and tables a crash left detached.
    const res = await client.query(
      `SELECT c.relname AS name, i.inhparent IS NOT NULL AS attached FROM pg_class c
       LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
       WHERE c.relkind = 'r' AND c.relname ~ '^eg_events_[pd][0-9]+$' AND c.relnamespace = 'public'::regnamespace`,
    );
    let deleted = 0;
    for (const { name, attached } of res.rows as Array<{ name: string; attached: boolean }>) {
      const day = dayOfPartition(name);
      if (day === undefined || day + DAY > cutoff.getTime()) continue;
      // Detached without blocking ingest or reads (PostgreSQL 14+), then its jobs marked and the table dropped.
      if (attached) await client.query(`ALTER TABLE eg_events DETACH PARTITION ${name} CONCURRENTLY`);
      this.partitions.delete(day);
      await client.query('BEGIN');
      const n = await client.query(`SELECT COUNT(*) + COUNT(close_body) AS n FROM ${name}`);
      await client.query(`INSERT INTO eg_retention_pending SELECT DISTINCT job_id FROM ${name} WHERE job_id IS NOT NULL ON CONFLICT DO NOTHING`);
      await client.query(`DROP TABLE ${name}`);
      await client.query('COMMIT');
      deleted += Number(n.rows[0].n);
    }
    const jobs = await this.recomputePending();
    await this.ensurePartitions([Date.now(), Date.now() + DAY]);
    return { deleted, jobs };
  }

  /** A database from before the compact layout: its events go through insert (so into the aggregates), then its table goes. */
  private async migrateOldTable(): Promise<void> {
    await this.withSchemaLock(async (client) => {
      const exists = await client.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [OLD_TABLE]);
      if (!exists.rows[0].ok) return;
      for (let after = 0; ;) {
        const res = await client.query(`SELECT seq, body FROM ${OLD_TABLE} WHERE seq > $1 ORDER BY seq LIMIT 5000`, [after]);
        if (res.rows.length === 0) break;
        await this.insert(res.rows.map((r) => JSON.parse(r.body) as EgressEvent));
        after = Number(res.rows.at(-1).seq);
      }
      await client.query(`DROP TABLE ${OLD_TABLE}`);
    });
  }

  /**
   * Schema work of several transactions on one connection, under the schema lock held by the session (other
   * collectors' starts wait; a crash releases it with the connection).
   */
  private async withSchemaLock(work: (client: pg.PoolClient) => Promise<void>): Promise<void> {
    const client = await this.pool.connect();
    let unlockFailed: Error | undefined;
    try {
      await client.query('SELECT pg_advisory_lock($1)', [SCHEMA_LOCK]);
      try {
        await work(client);
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [SCHEMA_LOCK]).catch((err: Error) => {
          unlockFailed = err;
        });
      }
    } finally {
      client.release(unlockFailed); // a connection that may still hold the lock is closed, not pooled (closing releases it)
    }
  }

  async count(): Promise<number> {
    const res = await this.pool.query('SELECT COUNT(*) + COUNT(close_body) AS n FROM eg_events'); // a decision's row may hold its close
    return Number(res.rows[0].n);
  }

  async storageBytes(): Promise<number> {
    const res = await this.pool.query(
      `SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS n FROM pg_class c
       WHERE c.relkind = 'r' AND c.relname LIKE 'eg\\_%' AND c.relnamespace = 'public'::regnamespace`,
    );
    return Number(res.rows[0].n);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

/**
 * A database of the earlier layout (`key` bytea, one per id; unique index (key, event, time)) gets pg-key.ts's keys,
 * in the schema transaction (ingest waits; the table is rewritten: a while for a large one). First the events whose
 * id the new key does not give back get it into their body (in pages of 5,000; done again harmlessly after a crash,
 * as the whole transaction is undone), then the column is converted and the old index dropped (the new one is made after).
 * Not bounded by partitions: ALTER COLUMN TYPE rewrites every partition in this one transaction (~13 locks a partition;
 * a partition's column cannot be altered apart): more than ~700 day partitions on a server of 50 connections (default
 * max_locks_per_transaction) need max_locks_per_transaction raised for this start (docs/collector.md, "Opening a
 * database of thousands of day partitions").
 */
async function migrateKeys(client: pg.PoolClient): Promise<void> {
  if ((await keyColumnType(client)) !== 'bytea') return;
  for (let after: unknown[] | undefined; ;) {
    const res = await client.query(
      `SELECT key, event, time, body FROM eg_events WHERE ${KEEPS_ID_BYTEA_SQL} ${after ? 'AND (key, event, time) > ($1, $2, $3)' : ''} ORDER BY key, event, time LIMIT 5000`,
      after ?? [],
    );
    if (res.rows.length === 0) break;
    const rows = res.rows as Array<{ key: Buffer; event: number; time: string; body: Buffer }>;
    await client.query(
      `UPDATE eg_events e SET body = x.body FROM unnest($1::bytea[], $2::smallint[], $3::bigint[], $4::bytea[]) AS x(key, event, time, body)
       WHERE e.key = x.key AND e.event = x.event AND e.time = x.time`,
      [rows.map((r) => r.key), rows.map((r) => r.event), rows.map((r) => r.time), rows.map((r) => withBodyId(r.body, decodeId(r.key)))],
    );
    const last = rows.at(-1)!;
    after = [last.key, last.event, last.time];
  }
  await client.query('DROP INDEX IF EXISTS eg_events_key');
  await client.query(`ALTER TABLE eg_events ALTER COLUMN key TYPE uuid USING ${PG_KEY_OF_BYTEA_SQL}`);
}
