import type pg from 'pg';

/**
 * The indexes of PostgreSQL's eg_events (partitioned by day), made on start a few day partitions at a time, and the
 * obsolete ones of earlier layouts dropped (docs/collector.md, "Opening a database of thousands of day partitions").
 *
 * Why not `CREATE INDEX ... ON eg_events` in the schema transaction: on a partitioned table it builds the index on every
 * partition in one transaction, holding a lock on each partition and each new index to commit, and PostgreSQL's lock
 * table is shared, sized max_locks_per_transaction × (max_connections + max_prepared_transactions) (64 × 50 = 3,200 on
 * a server of 50 connections, max_locks_per_transaction at its default): a database of an earlier layout with
 * thousands of day partitions could not be opened ("out of shared memory"). Even `CREATE INDEX IF NOT EXISTS` of an index that exists locks every partition
 * (PostgreSQL 15), so an index is only touched when pg_index says it is missing or not valid. Instead, PostgreSQL's own
 * way: the parent's index `ON ONLY eg_events` (not valid until every partition's index is attached to it), then each
 * partition's index made and attached, PARTITIONS_PER_TRANSACTION partitions a transaction; the last attach makes the
 * parent's index valid. A partition made meanwhile (ensurePartitions) gets the index from its parent, invalid or not.
 * A run stopped halfway (a crash) leaves the parent's index invalid and some partitions without theirs: the next start
 * goes on from there.
 */
export interface EventIndex {
  readonly name: string;
  readonly unique: boolean;
  /** The columns and predicate, as after `ON table`. */
  readonly definition: string;
}

/**
 * The index of a job's events: on job_id alone, so that B-tree deduplication keeps each job's entries of a day
 * partition as one key with a list of row pointers (~7 bytes per event; (job_id, time), unique per event, took ~47).
 * A job's events are sorted after the read (they were read whole before too). Without the rows of no job (closes not
 * linked yet: UNLINKED_INDEX has them), whose null entries, dead once linked, plans of the linking read
 * (docs/collector.md, "Tenth round: linking closes"). It replaced (job_id) with the nulls, which replaced (job_id,
 * time): a database made before gets the new one, and loses the old ones (OBSOLETE_EVENT_INDEXES), on start.
 */
const JOB_INDEX: EventIndex = { name: 'eg_events_job_linked', unique: false, definition: '(job_id) WHERE job_id IS NOT NULL' };

/**
 * The index of the closes not linked to a job yet (a close stored before its decision, until the decision comes): by
 * key, one entry per close, so that an index scan that finds a linked one marks its entry dead for good. Read by
 * pg-closes.ts's functions. A database made before gets it on start.
 */
export const UNLINKED_INDEX: EventIndex = { name: 'eg_events_unlinked', unique: false, definition: '(key) WHERE job_id IS NULL' };

/**
 * The unique index of events. A unique index of a partitioned table must hold the partition key: (key, time) is unique
 * per (id, event) because the key is one per (id, event) and a repeat of an event carries the same time (a foreign
 * producer re-sending an id with another time gets a second row). It replaced (key bytea, event, time): a database made
 * before is migrated on start (postgres-store.ts, migrateKeys), then this is made.
 */
const EVENT_KEY_INDEX: EventIndex = { name: 'eg_events_id', unique: true, definition: '(key, time)' };

export const EVENT_INDEXES: readonly EventIndex[] = [EVENT_KEY_INDEX, JOB_INDEX, UNLINKED_INDEX];

/** The job indexes of earlier layouts: (job_id) with its nulls, and before it (job_id, time). */
export const OBSOLETE_EVENT_INDEXES: readonly string[] = ['eg_events_job_id', 'eg_events_job'];

/** Partitions indexed per transaction: each holds a lock on its table and on its new index, ~2 locks a partition. */
export const PARTITIONS_PER_TRANSACTION = 25;

/** Passes over the partitions still without the index (another pass only when a batch failed: see ensureEventIndex). */
const MAX_PASSES = 5;

/** The attached day partitions of eg_events that have no index attached to `parent` (an index of eg_events). */
const PARTITIONS_WITHOUT_SQL = `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
  WHERE i.inhparent = 'eg_events'::regclass AND NOT i.inhdetachpending AND NOT EXISTS (
    SELECT 1 FROM pg_inherits ii JOIN pg_index x ON x.indexrelid = ii.inhrelid WHERE ii.inhparent = $1::regclass AND x.indrelid = c.oid)
  ORDER BY c.relname`;

/** Whether `name` is an index, and whether it is valid (a partitioned one: every partition has its index attached). */
async function indexState(client: pg.PoolClient, name: string): Promise<'missing' | 'invalid' | 'valid'> {
  const res = await client.query(`SELECT x.indisvalid AS valid FROM pg_index x WHERE x.indexrelid = to_regclass($1)`, [name]);
  if (res.rows.length === 0) return 'missing';
  return res.rows[0].valid ? 'valid' : 'invalid';
}

/** The index of partition `partition` for the parent index: `<partition>_<parent's name less eg_events_>`. */
function partitionIndexName(partition: string, index: EventIndex): string {
  return `${partition}_${index.name.replace(/^eg_events_/, '')}`;
}

/** Statements in a transaction of their own on `client`, undone on failure. */
async function inTransaction(client: pg.PoolClient, sql: string): Promise<void> {
  await client.query('BEGIN');
  try {
    await client.query(sql);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * `index` on eg_events and on each day partition, valid, PARTITIONS_PER_TRANSACTION partitions a transaction. The
 * caller holds the schema lock (one collector at a time). Nothing is locked when the index is valid already.
 */
export async function ensureEventIndex(client: pg.PoolClient, index: EventIndex): Promise<void> {
  if ((await indexState(client, index.name)) === 'valid') return;
  const unique = index.unique ? 'UNIQUE ' : '';
  const id = (name: string) => client.escapeIdentifier(name);
  await client.query(`CREATE ${unique}INDEX IF NOT EXISTS ${id(index.name)} ON ONLY eg_events ${index.definition}`);
  for (let pass = 1; pass <= MAX_PASSES; pass++) {
    const partitions = (await client.query(PARTITIONS_WITHOUT_SQL, [index.name])).rows.map((r: { name: string }) => r.name);
    if (partitions.length === 0) break;
    let skipped = 0;
    for (let i = 0; i < partitions.length; i += PARTITIONS_PER_TRANSACTION) {
      const batch = partitions.slice(i, i + PARTITIONS_PER_TRANSACTION);
      const sql = batch.map((p) => {
        const child = id(partitionIndexName(p, index));
        return `CREATE ${unique}INDEX IF NOT EXISTS ${child} ON ${id(p)} ${index.definition}; ALTER INDEX ${id(index.name)} ATTACH PARTITION ${child};`;
      });
      try {
        await inTransaction(client, sql.join('\n'));
      } catch (err) {
        // A deadlock with ingest (a batch's insert locks its partitions in its rows' order, this in name order: PostgreSQL
        // ends one of the two), or a partition dropped or detached by retention meanwhile: the next pass lists the
        // partitions still without the index again.
        if ((err as { code?: string }).code !== '40P01' && !(await someDetached(client, batch))) throw err;
        skipped++;
      }
    }
    if (skipped === 0) break;
    if (pass === MAX_PASSES) throw new Error(`${index.name}: day partitions still without the index after ${MAX_PASSES} passes`);
  }
  if ((await indexState(client, index.name)) === 'valid') return;
  // Every partition has its index and the parent's is still not valid: the last ones attached came with their partition
  // (made after a retention dropped the last one without it). Attaching an attached index again validates the parent.
  const attached = await client.query(`SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY 1 LIMIT 1`, [
    index.name,
  ]);
  if (attached.rows[0]) await client.query(`ALTER INDEX ${id(index.name)} ATTACH PARTITION ${id(attached.rows[0].name)}`);
  if ((await indexState(client, index.name)) !== 'valid') throw new Error(`${index.name}: not valid after every day partition got its index`);
}

/** Whether any of these tables is no longer an attached partition of eg_events. */
async function someDetached(client: pg.PoolClient, partitions: readonly string[]): Promise<boolean> {
  const res = await client.query(
    `SELECT count(*)::int AS n FROM pg_inherits WHERE inhparent = 'eg_events'::regclass AND NOT inhdetachpending AND inhrelid = ANY(
       SELECT to_regclass(p) FROM unnest($1::text[]) AS p)`,
    [partitions],
  );
  return res.rows[0].n < partitions.length;
}

/** What became of an obsolete index: dropped, not there, or kept (its drop would not fit in the lock table). */
export type DropOutcome = 'dropped' | 'absent' | 'kept';

/**
 * An obsolete index of eg_events dropped, in a transaction of its own. There is no bounded way: DROP INDEX of a
 * partitioned index locks every partition of the table and every partition's index at once (PostgreSQL 15: ~2 locks a
 * partition, measured), and a partition's index cannot be detached from its parent's or dropped alone; the only
 * other way, detaching each partition from eg_events, would hide its rows from readers and writers meanwhile. So
 * when the drop would not fit in the shared lock table (estimated from the server's settings beforehand, or failing
 * with "out of shared memory"), the index is kept (queries are answered the same; inserts keep maintaining it, as
 * before the upgrade) and a warning says so. Each start tries again: it goes once retention has dropped enough
 * partitions, or with max_locks_per_transaction raised.
 */
export async function dropObsoleteEventIndex(client: pg.PoolClient, name: string): Promise<DropOutcome> {
  if ((await indexState(client, name)) === 'missing') return 'absent';
  const res = await client.query(
    `SELECT (SELECT count(*)::int FROM pg_inherits WHERE inhparent = $1::regclass) AS partitions,
       current_setting('max_locks_per_transaction')::int * (current_setting('max_connections')::int + current_setting('max_prepared_transactions')::int) AS capacity`,
    [name],
  );
  const { partitions, capacity } = res.rows[0] as { partitions: number; capacity: number };
  const keep = () => {
    process.emitWarning(
      `obsolete index ${name} of eg_events kept: dropping it locks its ${partitions} day partitions and their indexes at once (~${2 * partitions} locks), ` +
        `more than the server's lock table holds (max_locks_per_transaction × (max_connections + max_prepared_transactions) = ${capacity}); ` +
        `it is dropped on a later start once fewer partitions are kept or max_locks_per_transaction is raised`,
      { code: 'EG_OBSOLETE_INDEX_KEPT' },
    );
    return 'kept' as const;
  };
  if (2 * partitions + 10 > capacity) return keep();
  try {
    await inTransaction(client, `DROP INDEX IF EXISTS ${client.escapeIdentifier(name)}`);
  } catch (err) {
    if ((err as { code?: string }).code === '53200') return keep();
    throw err;
  }
  return 'dropped';
}
