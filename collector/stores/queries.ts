import { encodeCursor, iso, type JobInfo, type JobPage, type JobQuery } from './event-store.js';
import { KEY_FUNCTIONS_SQL } from './pg-key.js';
import { CLOSE_FUNCTIONS_SQL } from './pg-closes.js';

/**
 * The SQL of both stores' compact layout (docs/collector.md, "Storage layout"), side by side. SQLite takes
 * `@name` parameters, PostgreSQL `$n`. Times are milliseconds since the epoch; outcomes and event types integers
 * (codec.ts); strings ids into eg_strings.
 */

/** The table of the first layout (one row of JSON text per event): migrated into this one on start. */
export const OLD_TABLE = 'egress_events';

const AGGREGATE_TABLES = (big: string) => `
CREATE TABLE IF NOT EXISTS eg_job_destinations (
  job_id INTEGER NOT NULL, host_id INTEGER NOT NULL, port INTEGER NOT NULL, decision SMALLINT NOT NULL,
  count ${big} NOT NULL, bytes_in ${big} NOT NULL, bytes_out ${big} NOT NULL, first ${big}, last ${big},
  PRIMARY KEY (job_id, host_id, port, decision)
)`;

const JOB_TABLE = (big: string) => `
CREATE TABLE IF NOT EXISTS eg_jobs (
  job_id INTEGER PRIMARY KEY, repo_id INTEGER, first ${big}, last ${big}, decisions ${big} NOT NULL, allowed ${big} NOT NULL,
  blocked ${big} NOT NULL, would_block ${big} NOT NULL, bytes_in ${big} NOT NULL, bytes_out ${big} NOT NULL
);
CREATE INDEX IF NOT EXISTS eg_jobs_last ON eg_jobs (last, job_id);
CREATE INDEX IF NOT EXISTS eg_jobs_repo ON eg_jobs (repo_id, last, job_id);
`;

/**
 * The host search's index on eg_job_destinations: by (host, last seen). SQLite: holding what the search sums, so that
 * it reads the index alone (SQLite appends the primary key, job_id and decision among it, to every index entry); it
 * replaced a plain (host_id, last) index. PostgreSQL: holding what the scan, the count and the last sightings read
 * (job_id, decision), not what only the page's jobs' rows need (first, count, bytes_out: read from the table by
 * primary key for those jobs). Its entries are appended per host in the middle of leaf pages, whose splits leave
 * both halves ~half full for good: the wide entries (first, count and bytes_out included) took ~114 bytes per row,
 * 40 bytes per event in the bench's history (docs/collector.md, "Sixth round"). A database made before gets the new
 * index, and loses the earlier ones (the covering eg_job_destinations_search, the plain eg_job_destinations_host),
 * on start (built under the schema lock: writes to eg_job_destinations wait meanwhile).
 */
const SEARCH_INDEX = {
  sqlite: `CREATE INDEX IF NOT EXISTS eg_job_destinations_search ON eg_job_destinations (host_id, last, first, count, bytes_out);
DROP INDEX IF EXISTS eg_job_destinations_host;`,
  postgres: `CREATE INDEX IF NOT EXISTS eg_job_destinations_seen ON eg_job_destinations (host_id, last) INCLUDE (job_id, decision);
DROP INDEX IF EXISTS eg_job_destinations_search;
DROP INDEX IF EXISTS eg_job_destinations_host;`,
};

/**
 * SQLite has no reverse() to index, so each dictionary string is also kept reversed, by the store (sqlite-store.ts),
 * for the host search's subdomain lookup (`%.codecov.io`: a prefix of the reversed text, a range of this index). A
 * database made before has the table filled on start from the strings it lacks (ids above its highest).
 */
const REVERSED_STRINGS_SQLITE = `CREATE TABLE IF NOT EXISTS eg_strings_reversed (id INTEGER PRIMARY KEY, reversed TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS eg_strings_reversed_text ON eg_strings_reversed (reversed);`;

export const reversed = (text: string) => [...text].reverse().join('');

export const SCHEMA_TABLES = {
  sqlite: `
CREATE TABLE IF NOT EXISTS eg_strings (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
${REVERSED_STRINGS_SQLITE}
CREATE TABLE IF NOT EXISTS eg_events (
  seq INTEGER PRIMARY KEY, key BLOB NOT NULL, event INTEGER NOT NULL, time INTEGER NOT NULL, job_id INTEGER, host_id INTEGER NOT NULL,
  port INTEGER NOT NULL, decision INTEGER, bytes_in INTEGER, bytes_out INTEGER, body BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS eg_events_key ON eg_events (key, event);
CREATE INDEX IF NOT EXISTS eg_events_job ON eg_events (job_id, time);
${AGGREGATE_TABLES('INTEGER')} WITHOUT ROWID;
${JOB_TABLE('INTEGER')}
${SEARCH_INDEX.sqlite}`,
  // Partitioned by day on time (partitions made as events arrive, dropped whole by retention). `key` is one per (id,
  // event) (pg-key.ts). Its indexes are made apart, a few day partitions a transaction, after the key migration
  // (pg-event-indexes.ts: one statement here would lock every partition at once). A decision row may
  // hold its close (`close_body`, the close's bytes in bytes_in/bytes_out; postgres-store.ts): a database made before
  // gets the column on start (nullable: no rewrite; its close rows stay as they are).
  postgres: `
CREATE TABLE IF NOT EXISTS eg_strings (id SERIAL PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS eg_strings_reversed ON eg_strings (reverse(text) text_pattern_ops);
CREATE TABLE IF NOT EXISTS eg_events (
  time BIGINT NOT NULL, bytes_in BIGINT, bytes_out BIGINT, job_id INTEGER, host_id INTEGER NOT NULL, port INTEGER NOT NULL,
  event SMALLINT NOT NULL, decision SMALLINT, key UUID NOT NULL, body BYTEA NOT NULL, close_body BYTEA
) PARTITION BY RANGE (time);
ALTER TABLE eg_events ADD COLUMN IF NOT EXISTS close_body BYTEA;
${KEY_FUNCTIONS_SQL}
${CLOSE_FUNCTIONS_SQL}
${AGGREGATE_TABLES('BIGINT')};
${JOB_TABLE('BIGINT')}
${SEARCH_INDEX.postgres}
CREATE TABLE IF NOT EXISTS eg_retention_pending (job_id INTEGER PRIMARY KEY);
`,
};

const JOB_COLUMNS = 'job_id, repo_id, first, last, decisions, allowed, blocked, would_block, bytes_in, bytes_out';
const SUMS = ['decisions', 'allowed', 'blocked', 'would_block', 'bytes_in', 'bytes_out'];
const DEST_COLUMNS = 'job_id, host_id, port, decision, count, bytes_in, bytes_out, first, last';

/** first/last: a null delta (bytes only) keeps the row's own; SQLite's min() of a null is null, PostgreSQL's LEAST skips it. */
function upsert(dialect: 'sqlite' | 'postgres', table: string, sums: string[]): string {
  const [min, max] = dialect === 'sqlite' ? ['min', 'max'] : ['LEAST', 'GREATEST'];
  const t = table;
  return [
    `first = COALESCE(${min}(${t}.first, excluded.first), ${t}.first, excluded.first)`,
    `last = COALESCE(${max}(${t}.last, excluded.last), ${t}.last, excluded.last)`,
    ...sums.map((c) => `${c} = ${t}.${c} + excluded.${c}`),
  ].join(', ');
}

/** A column of an aggregate delta row: its field in aggregate.ts's JobDelta or DestinationDelta, and its PostgreSQL type. */
export interface DeltaColumn {
  readonly field: string;
  readonly type: 'int' | 'smallint' | 'bigint';
}

/**
 * The delta rows of an aggregate upsert, in `columns`' order: SQLite's one row by name; PostgreSQL's rows as one array
 * parameter per column (sent binary by postgres-store.ts, from the same list), from `$first` on.
 */
function deltaRows(dialect: 'sqlite' | 'postgres', columns: readonly DeltaColumn[], first: number): string {
  if (dialect === 'sqlite') return `VALUES (${columns.map((c) => `@${c.field}`).join(', ')})`;
  const params = columns.map((c, i) => `$${first + i}::${c.type}[]`);
  return `SELECT * FROM unnest(${params.join(', ')}) AS x(${columns.map((c) => `"${c.field}"`).join(', ')})`;
}

/** eg_jobs' delta rows: the order of jobRowSql's values and of PostgreSQL's array parameters. */
export const JOB_DELTA_COLUMNS = [
  { field: 'jobId', type: 'int' },
  { field: 'repoId', type: 'int' },
  { field: 'first', type: 'bigint' },
  { field: 'last', type: 'bigint' },
  { field: 'decisions', type: 'bigint' },
  { field: 'allowed', type: 'bigint' },
  { field: 'blocked', type: 'bigint' },
  { field: 'wouldBlock', type: 'bigint' },
  { field: 'bytesIn', type: 'bigint' },
  { field: 'bytesOut', type: 'bigint' },
] as const satisfies readonly DeltaColumn[];

export function jobRowSql(dialect: 'sqlite' | 'postgres', first = 1): string {
  const values = deltaRows(dialect, JOB_DELTA_COLUMNS, first) + (dialect === 'postgres' ? ' ORDER BY 1' : '');
  return `INSERT INTO eg_jobs (${JOB_COLUMNS}) ${values}
    ON CONFLICT (job_id) DO UPDATE SET repo_id = COALESCE(eg_jobs.repo_id, excluded.repo_id), ${upsert(dialect, 'eg_jobs', SUMS)}`;
}

/** eg_job_destinations' delta rows, as JOB_DELTA_COLUMNS. */
export const DESTINATION_DELTA_COLUMNS = [
  { field: 'jobId', type: 'int' },
  { field: 'hostId', type: 'int' },
  { field: 'port', type: 'int' },
  { field: 'decision', type: 'smallint' },
  { field: 'count', type: 'bigint' },
  { field: 'bytesIn', type: 'bigint' },
  { field: 'bytesOut', type: 'bigint' },
  { field: 'first', type: 'bigint' },
  { field: 'last', type: 'bigint' },
] as const satisfies readonly DeltaColumn[];

export function destinationRowSql(dialect: 'sqlite' | 'postgres', first = 1): string {
  const values = deltaRows(dialect, DESTINATION_DELTA_COLUMNS, first) + (dialect === 'postgres' ? ' ORDER BY 1, 2, 3, 4' : '');
  return `INSERT INTO eg_job_destinations (${DEST_COLUMNS}) ${values}
    ON CONFLICT (job_id, host_id, port, decision) DO UPDATE SET ${upsert(dialect, 'eg_job_destinations', ['count', 'bytes_in', 'bytes_out'])}`;
}

/**
 * How a decision row `d` and a close row `c` of one id are joined: SQLite keys both by the id; PostgreSQL keys each
 * event apart (pg-key.ts), the close's key computed from the decision's.
 */
const PAIRS = {
  sqlite: { closeOf: (d: string) => `${d}.key`, decisionOf: (c: string) => `${c}.key`, bytes: (c: string, _d: string, column: string) => `${c}.${column}` },
  // A close is either a row of its own or in its decision's row (never both): its bytes from whichever holds them (a
  // decision row without its close has null bytes).
  postgres: {
    closeOf: (d: string) => `eg_close_key(${d}.key)`,
    decisionOf: (c: string) => `eg_decision_key(${c}.key)`,
    bytes: (c: string, d: string, column: string) => `COALESCE(${c}.${column}, ${d}.${column})`,
  },
};
type Pairs = (typeof PAIRS)['sqlite'];

/** A job's aggregates recomputed from its remaining raw events (after retention). `J` is the job parameter. */
function recompute(J: string, pairs: Pairs): string[] {
  const outcome = (code: number) => `SUM(CASE WHEN decision = ${code} THEN count ELSE 0 END)`;
  return [
    // Closes whose decision is gone no longer count: unlink them (a close has a job iff its bytes are counted).
    `UPDATE eg_events SET job_id = NULL WHERE job_id = ${J} AND event = 1 AND NOT EXISTS (SELECT 1 FROM eg_events d WHERE d.key = ${pairs.decisionOf('eg_events')} AND d.event = 0)`,
    `DELETE FROM eg_job_destinations WHERE job_id = ${J}`,
    `INSERT INTO eg_job_destinations (${DEST_COLUMNS})
     SELECT d.job_id, d.host_id, d.port, d.decision, COUNT(*), COALESCE(SUM(${pairs.bytes('c', 'd', 'bytes_in')}), 0), COALESCE(SUM(${pairs.bytes('c', 'd', 'bytes_out')}), 0), MIN(d.time), MAX(d.time)
     FROM eg_events d LEFT JOIN eg_events c ON c.key = ${pairs.closeOf('d')} AND c.event = 1 AND c.job_id = d.job_id
     WHERE d.job_id = ${J} AND d.event = 0 GROUP BY d.job_id, d.host_id, d.port, d.decision`,
    `DELETE FROM eg_jobs WHERE job_id = ${J} AND NOT EXISTS (SELECT 1 FROM eg_job_destinations WHERE job_id = ${J})`,
    `UPDATE eg_jobs SET (first, last, decisions, allowed, blocked, would_block, bytes_in, bytes_out) =
     (SELECT MIN(first), MAX(last), SUM(count), ${outcome(0)}, ${outcome(1)}, ${outcome(2)}, SUM(bytes_in), SUM(bytes_out)
      FROM eg_job_destinations WHERE job_id = ${J}) WHERE job_id = ${J}`,
  ];
}

/** Decisions of one aggregate row inside a search window, recounted from the raw events. */
function windowCount(p: { job: string; host: string; port: string; decision: string; since: string; until: string }, pairs: Pairs): string {
  return `SELECT COUNT(*) AS count, COALESCE(SUM(${pairs.bytes('c', 'd', 'bytes_out')}), 0) AS "bytesOut", MIN(d.time) AS first, MAX(d.time) AS last
    FROM eg_events d LEFT JOIN eg_events c ON c.key = ${pairs.closeOf('d')} AND c.event = 1 AND c.job_id = d.job_id
    WHERE d.job_id = ${p.job} AND d.event = 0 AND d.host_id = ${p.host} AND d.port = ${p.port} AND d.decision = ${p.decision}
      AND d.time >= ${p.since} AND d.time <= ${p.until}`;
}

export const RECOMPUTE_SQL = {
  sqlite: {
    job: recompute('@job', PAIRS.sqlite),
    windowCount: windowCount({ job: '@jobId', host: '@hostId', port: '@port', decision: '@decision', since: '@since', until: '@until' }, PAIRS.sqlite),
  },
  postgres: {
    job: recompute('$1', PAIRS.postgres),
    windowCount: windowCount({ job: '$1', host: '$2', port: '$3', decision: '$4', since: '$5', until: '$6' }, PAIRS.postgres),
  },
};

/**
 * The host search's queries (aggregate.SearchReads), given the SQL of their parameters: a host-id list condition, the
 * window ends, the outcome, a job-id list condition. A row "seen" in the window has its last sighting inside it
 * (`last` is a decision's time, so that decision is in the window: the row counts, and its job's last sighting in the
 * window is at least `last`); such a row either lies wholly inside or straddles `since` (recounted for its sums). The
 * rows that straddle `until` (`edges`: last after it, first at or before it) are the only ones whose last sighting in
 * the window is not their `last` (recounted, aggregate.windowedRows). `count`: the jobs with a row seen (a page of
 * none asks for it); `lasts`: the last sighting of some jobs among their seen rows; `rows`: every row of some jobs that
 * overlaps the window (by primary key), for their sums. The page's order comes from searchScanSql (PostgreSQL) or
 * SEARCH_SCAN_SQLITE, which read the seen rows per host in last-seen order.
 */
export function searchSql(p: { hosts: string; since: string; until: string; decision?: string; jobs: string }): {
  count: string;
  lasts: string;
  rows: string;
  edges: string;
} {
  const base = [p.hosts, ...(p.decision ? [`decision = ${p.decision}`] : [])];
  const seen = [...base, `last >= ${p.since}`, `last <= ${p.until}`].join(' AND ');
  const overlap = [...base, `last >= ${p.since}`, `first <= ${p.until}`].join(' AND ');
  // `last >= since` is implied here (last > until); stated so that every query takes the same parameters.
  const edges = [...base, `last > ${p.until}`, `first <= ${p.until}`, `last >= ${p.since}`].join(' AND ');
  const rows = `SELECT job_id AS "jobId", host_id AS "hostId", port, decision, count, bytes_out AS "bytesOut", first, last FROM eg_job_destinations`;
  return {
    count: `SELECT COUNT(DISTINCT job_id) AS total FROM eg_job_destinations WHERE ${seen}`,
    lasts: `SELECT job_id AS "jobId", MAX(last) AS last FROM eg_job_destinations WHERE ${seen} AND ${p.jobs} GROUP BY job_id`,
    rows: `${rows} WHERE ${overlap} AND ${p.jobs}`,
    edges: `${rows} WHERE ${edges}`,
  };
}

/** One host's seen rows before a (last, job id) position (the condition of both engines' scans). */
const seenBefore = (host: string, p: { since: string; until: string; at: string; job: string }, decision?: number) =>
  `SELECT last, job_id AS "jobId" FROM eg_job_destinations WHERE host_id = ${host} AND last >= ${p.since} AND last <= ${p.until}
    AND last <= ${p.at} AND (last < ${p.at} OR job_id < ${p.job})${decision === undefined ? '' : ` AND decision = ${decision}`}`;

/** The same, newest first, `rows` of them. */
const scanOf = (host: string, p: { since: string; until: string; at: string; job: string; rows: string }, decision?: number) =>
  `${seenBefore(host, p, decision)} ORDER BY last DESC, job_id DESC LIMIT ${p.rows}`;

/**
 * Up to this many hosts the scan is one statement with a branch per host, merged in order by the database (PostgreSQL:
 * Merge Append; planned each time: ~40 ms for 300 hosts here); beyond, each host's first chunk is read and merged
 * after (PostgreSQL: a LATERAL join; SQLite: a query per host), which reads hosts x chunk rows: far more when a job
 * has rows on many hosts and the chunk grows (a pattern of 300 hosts read that way took 3 s, against 1.6 s for the
 * earlier grouping and ~0.1-0.2 s merged). SQLite takes 500 parts in a compound statement at most.
 */
export const SCAN_UNION_HOSTS = { postgres: 1000, sqlite: 500 };

/**
 * PostgreSQL: the seen rows of the matching hosts in (last, job id) descending order, strictly before the position
 * ($3, $4), `$5` of them at most; `$1`/`$2` the window. Each host's rows come from a backward scan of the search index
 * (host_id, last) (an incremental sort puts the job ids of one millisecond in order), so the database reads about as
 * many rows as it answers, whatever the number of matching jobs. Up to SCAN_UNION_HOSTS hosts, one branch each under
 * a Merge Append (the host ids are integers from the dictionary, written into the text); beyond, a LATERAL join over
 * `$6` (each host's first `$5` rows, then sorted): a statement of thousands of branches would take long to plan.
 */
export function searchScanSql(hostIds: readonly number[], decision?: number): { text: string; lateral: boolean } {
  const p = { since: '$1::bigint', until: '$2::bigint', at: '$3::bigint', job: '$4::bigint', rows: '$5' };
  const order = 'ORDER BY last DESC, "jobId" DESC LIMIT $5';
  if (hostIds.length <= SCAN_UNION_HOSTS.postgres) {
    return { text: `SELECT * FROM (${hostIds.map((h) => `(${scanOf(String(Math.trunc(h)), p, decision)})`).join('\nUNION ALL ')}) AS s ${order}`, lateral: false };
  }
  return { text: `SELECT s.* FROM unnest($6::int[]) AS h(id) CROSS JOIN LATERAL (${scanOf('h.id', p, decision)}) AS s ${order}`, lateral: true };
}

/**
 * From this many matching hosts a page without `until` is read by jobs (aggregate.searchPage's walk, PostgreSQL): the
 * scan by host plans a branch per host each chunk (104-114 ms for 300 at 100 million events, docs/collector.md) and
 * reads many rows per job placed when a job met many of the hosts.
 */
export const WALK_HOSTS = 64;

/**
 * Entries of the search index per job since the window's start above which the count goes by jobs (searchByJobsSql):
 * ~0.25 µs per entry read against ~8 µs per job that matches (20 million events here).
 */
export const COUNT_BY_JOBS_ENTRIES = 32;

/**
 * PostgreSQL, for a pattern of WALK_HOSTS hosts or more: the search by jobs, through eg_jobs' (last, job_id) index (a
 * job's `last` is the newest of its rows', so a job with a row seen since `$1` has its own `last` since then too), each
 * job's rows of the hosts `$6` seen in the window ($1, $2) read by the primary key (job_id, ...). The host ids are a
 * filter there, hashed (`host_id + 0`: not an index condition, which would descend the primary key once per host id).
 * - `walk` (aggregate.SearchReads.walk): the jobs newest first strictly before ($3, $4), `$5` of them, each with the
 *   newest `last` of those rows.
 * - `count` (aggregate.SearchReads.count, parameters as searchSql's, `$1` the host ids): the jobs since `$2` with such
 *   a row; it stops at a job's first. The count through the search index reads every matching entry instead: ~150 per
 *   job for a pattern of all 300 hosts (2.1 million entries, ~0.5 s, for 7 days at 20 million events here), against
 *   ~4 buffers per job since `$2` this way; but a job without such a row is read whole (~150 rows), so it is taken
 *   only when the planner expects over COUNT_BY_JOBS_ENTRIES entries of the search index per job since `$2`
 *   (`windowJobs`, `$1` the start: the jobs since then, for the estimate).
 */
export function searchByJobsSql(decision?: number): { walk: string; count: string; windowJobs: string } {
  const outcome = decision === undefined ? '' : ` AND d.decision = ${Math.trunc(decision)}`;
  const rows = (hosts: string, since: string, until: string) =>
    `FROM eg_job_destinations d WHERE d.job_id = j.job_id AND d.host_id + 0 = ANY(${hosts}::int[]) AND d.last >= ${since}::bigint AND d.last <= ${until}::bigint${outcome}`;
  return {
    walk: `SELECT j.job_id AS "jobId", j.last AS "jobLast", (SELECT MAX(d.last) ${rows('$6', '$1', '$2')}) AS last
    FROM eg_jobs j WHERE j.last >= $1::bigint AND (j.last, j.job_id) < ($3::bigint, $4::bigint) ORDER BY j.last DESC, j.job_id DESC LIMIT $5`,
    count: `SELECT COUNT(*) AS total FROM eg_jobs j WHERE j.last >= $2::bigint AND EXISTS (SELECT 1 ${rows('$1', '$2', '$3')})`,
    windowJobs: 'SELECT 1 FROM eg_jobs WHERE last >= $1::bigint',
  };
}

/**
 * SQLite: the same scan with named parameters (@since, @until, @at, @job, @rows). Up to SCAN_UNION_HOSTS hosts one
 * compound statement (`perHost` false): SQLite merges the per-host index scans in order (MERGE (UNION ALL)) and stops
 * at the limit. Beyond (a compound statement has at most 500 parts) one host's scan (`@host`), run per host and
 * merged by the store.
 */
export function searchScanSqlite(hostIds: readonly number[], decision?: number): { text: string; perHost: boolean } {
  const p = { since: '@since', until: '@until', at: '@at', job: '@job', rows: '@rows' };
  if (hostIds.length > SCAN_UNION_HOSTS.sqlite) return { text: scanOf('@host', p, decision), perHost: true };
  const arms = hostIds.map((h) => seenBefore(String(Math.trunc(h)), p, decision));
  return { text: `${arms.join('\nUNION ALL ')}\nORDER BY last DESC, "jobId" DESC LIMIT @rows`, perHost: false };
}

export interface JobRow {
  jobId: number;
  repoId: number | null;
  first: number | string;
  last: number | string;
  decisions: number | string;
  allowed: number | string;
  blocked: number | string;
  wouldBlock: number | string;
  bytesIn: number | string;
  bytesOut: number | string;
}

export const JOB_SELECT = `SELECT job_id AS "jobId", repo_id AS "repoId", first, last, decisions, allowed, blocked, would_block AS "wouldBlock",
  bytes_in AS "bytesIn", bytes_out AS "bytesOut" FROM eg_jobs`;

/** Rows to ask for: one more than the page, to know whether another page follows. */
export function rowsToRead(query: JobQuery): number | null {
  return query.limit === undefined ? null : query.limit + 1;
}

/** Rows of eg_jobs (PostgreSQL answers bigint as text; `rowsToRead` of them) as the API answers them. */
export function jobPage(read: readonly JobRow[], query: JobQuery, text: (id: number) => string | undefined): JobPage {
  const rows = query.limit === undefined ? read : read.slice(0, query.limit);
  const jobs: JobInfo[] = rows.map((r) => {
    const repository = r.repoId === null ? undefined : text(r.repoId);
    return {
      job: text(r.jobId) ?? `#${r.jobId}`,
      ...(repository !== undefined && { repository }),
      first: iso(r.first),
      last: iso(r.last),
      decisions: Number(r.decisions),
      allowed: Number(r.allowed),
      blocked: Number(r.blocked),
      wouldBlock: Number(r.wouldBlock),
      bytesIn: Number(r.bytesIn),
      bytesOut: Number(r.bytesOut),
    };
  });
  const lastRow = rows.at(-1);
  return { jobs, next: read.length > rows.length && lastRow ? encodeCursor(Number(lastRow.last), lastRow.jobId) : null };
}

/** A search window end as a number both engines take (open ends: the extremes). */
export function finite(n: number): number {
  return Number.isFinite(n) ? n : n > 0 ? Number.MAX_SAFE_INTEGER : Number.MIN_SAFE_INTEGER;
}

/** A LIKE pattern of the host search (escape `\\`): one literal text, a literal after a leading `%`, or anything else. */
export type LikeShape = { kind: 'exact' | 'suffix'; text: string } | { kind: 'other' };

export function likeShape(pattern: string): LikeShape {
  let text = '';
  let suffix = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '\\') {
      if (i + 1 === pattern.length) return { kind: 'other' };
      text += pattern[++i];
    } else if (c === '%' && i === 0) suffix = true;
    else if (c === '%' || c === '_') return { kind: 'other' };
    else text += c;
  }
  return { kind: suffix ? 'suffix' : 'exact', text };
}

const escapeLike = (text: string) => text.replace(/[\\%_]/g, (c) => `\\${c}`);

/** The first text after every text that starts with `prefix` (BINARY order), or undefined when its last character has none. */
function afterPrefix(prefix: string): string | undefined {
  const last = prefix.charCodeAt(prefix.length - 1);
  return prefix.length === 0 || last >= 0xd7ff ? undefined : `${prefix.slice(0, -1)}${String.fromCharCode(last + 1)}`;
}

/**
 * The dictionary strings any of the search's LIKE patterns matches, by index where the pattern allows: a literal by
 * the unique index on text; a `%` then a literal (`%.codecov.io`: the subdomains) as a prefix of the reversed text
 * (PostgreSQL: index eg_strings_reversed on reverse(text); SQLite: a range of the table eg_strings_reversed); anything
 * else (a `*` inside a label) by a scan of the dictionary. `param(i)` is the SQL of the i-th parameter.
 */
export function stringLookupSql(dialect: 'sqlite' | 'postgres', likes: readonly string[], param: (i: number) => string): { where: string; params: string[] } {
  const params: string[] = [];
  const terms = likes.map((pattern) => {
    const shape = likeShape(pattern);
    if (shape.kind === 'exact') {
      params.push(shape.text);
      return `text = ${param(params.length)}`;
    }
    if (shape.kind === 'suffix' && dialect === 'postgres') {
      params.push(`${escapeLike(reversed(shape.text))}%`);
      return `reverse(text) LIKE ${param(params.length)} ESCAPE '\\'`;
    }
    const end = shape.kind === 'suffix' ? afterPrefix(reversed(shape.text)) : undefined;
    if (shape.kind === 'suffix' && end !== undefined) {
      params.push(reversed(shape.text), end);
      return `id IN (SELECT id FROM eg_strings_reversed WHERE reversed >= ${param(params.length - 1)} AND reversed < ${param(params.length)})`;
    }
    params.push(pattern);
    return `text LIKE ${param(params.length)} ESCAPE '\\'`;
  });
  return { where: terms.join(' OR '), params };
}
