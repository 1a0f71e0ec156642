import type { EgressEvent } from '../../events/schema.js';
import { jobKey } from '../../events/job-key.js';
import { wellFormedText } from '../../events/well-formed.js';
import { dateTextMs } from '../../events/validate.js';
import { CLOSE, DECISION, OUTCOME_CODES, packBody } from './codec.js';
import type { JobSighting } from '../../report/host-sightings.js';
import { decodeCursor, encodeCursor, iso, type SearchPage, type SearchQuery, type SightingFilter } from './event-store.js';
import { finite } from './queries.js';

/**
 * What both stores do with a batch, apart from SQL: the rows to insert and the aggregate deltas of what was stored.
 * Aggregates: per (job, host, port, outcome) and per job, updated in the transaction that stores the events. The
 * rules, which make them equal to a recount from the raw events:
 * - a decision counts once, in the transaction that stores it (a duplicate is not stored, so not counted);
 * - a close's bytes count once its decision is stored, in the transaction that sets the close's `job_id`: at its
 *   insert when its decision is stored already (or in the same batch), else when the decision arrives (an UPDATE
 *   ... WHERE job_id IS NULL, so exactly one transaction links it). A close row has a job iff its bytes are counted.
 */
export interface EventRowV2<K = unknown> {
  /**
   * The event's id as its key gives it back (lone surrogates as U+FFFD, as UTF-8 writes them): what a decision and its
   * close share, so a batch pairs them and drops repeats by it.
   */
  id: string;
  /** The key the store writes (SQLite: codec.ts encodeId; PostgreSQL: pg-key.ts's uuid text). */
  key: K;
  /** Whether the body keeps the id (its key does not give it back: PostgreSQL's hashed keys). */
  keepsId: boolean;
  /** The other event of its pair when it is in the batch (a decision's close, a close's decision), else null. */
  pair: EventRowV2<K> | null;
  event: typeof DECISION | typeof CLOSE;
  time: number;
  /** Decisions: their job; closes: that of their decision when it is known (else null, set when it arrives). */
  jobId: number | null;
  repoId: number | null;
  hostId: number;
  port: number;
  /** Decisions: OUTCOME_CODES. */
  decision: number | null;
  bytesIn: number | null;
  bytesOut: number | null;
  body: Buffer;
  /** The time `body`'s time is relative to (codec.ts packBody): the row's own, or its decision's for a close packed to go into its decision's row. */
  base: number;
  /** The event (to pack its body again relative to another time). */
  source: EgressEvent;
}

export interface StoredDecision {
  jobId: number;
  hostId: number;
  port: number;
  decision: number;
}

/** A close linked to its decision: its bytes go to that decision's aggregate rows. */
export interface Link {
  decision: StoredDecision;
  bytesIn: number;
  bytesOut: number;
}

export interface JobDelta {
  jobId: number;
  repoId: number | null;
  first: number | null;
  last: number | null;
  decisions: number;
  allowed: number;
  blocked: number;
  wouldBlock: number;
  bytesIn: number;
  bytesOut: number;
}

export interface DestinationDelta {
  jobId: number;
  hostId: number;
  port: number;
  decision: number;
  count: number;
  bytesIn: number;
  bytesOut: number;
  first: number | null;
  last: number | null;
}

export interface Deltas {
  jobs: JobDelta[];
  destinations: DestinationDelta[];
}

/** The dictionary strings a batch needs: hosts, jobs, repositories. */
export function batchStrings(events: readonly EgressEvent[]): string[] {
  const out = new Set<string>();
  for (const e of events) {
    out.add(e.host);
    if (e.event === 'decision') {
      out.add(jobKey(e));
      if (e.ci?.repository) out.add(e.ci.repository);
    }
  }
  return [...out];
}

/** How a store keys its rows (toRows): the key it writes, from the event's id and type, and whether a body keeps the id. */
export interface RowKeys<K> {
  key(id: string, event: typeof DECISION | typeof CLOSE): K;
  /** Whether an event with this id keeps it in its body (PostgreSQL's hashed keys: pg-key.ts); default none. */
  keepsId?(id: string): boolean;
  /**
   * Whether a close goes into its decision's row (PostgreSQL: postgres-store.ts); such a close of a batch decision has
   * its body's time relative to the decision's (`base`).
   */
  joinsDecision?(decision: EventRowV2<K>, close: EventRowV2<K>): boolean;
}

/**
 * The id a row is paired and deduplicated by: the id's text as its key gives it back. Both stores' keys are made from
 * the id's UTF-8 (codec.ts encodeId), which writes a lone surrogate as U+FFFD: two ids that differ only there share a
 * key, so they must share this too.
 */
const pairId = wellFormedText;

/**
 * The rows of a batch (one per (id, event): a repeat within the batch is dropped here), in the order of their first
 * event, each close paired with its decision when that is in the batch (and given its job). One object per row: its
 * pair is the other row itself, repeats are found by the id (no key text, no hex, no name string per row).
 */
export function toRows<K>(events: readonly EgressEvent[], ids: ReadonlyMap<string, number>, keys: RowKeys<K>): EventRowV2<K>[] {
  const rows: EventRowV2<K>[] = [];
  const decisions = new Map<string, EventRowV2<K>>();
  const closes = new Map<string, EventRowV2<K>>();
  const id = (text: string) => {
    const n = ids.get(text);
    if (n === undefined) throw new Error(`no dictionary id for "${text}"`);
    return n;
  };
  for (const e of events) {
    const rowId = pairId(e.id);
    const isDecision = e.event === 'decision';
    const own = isDecision ? decisions : closes;
    if (own.has(rowId)) continue;
    const event = isDecision ? DECISION : CLOSE;
    const time = dateTextMs(e.time); // Date.parse's number, without its cost for a sidecar's time
    const pair = (isDecision ? closes : decisions).get(rowId) ?? null;
    const row: EventRowV2<K> = {
      id: rowId,
      key: keys.key(e.id, event),
      keepsId: keys.keepsId?.(e.id) ?? false,
      pair,
      event,
      time,
      jobId: isDecision ? id(jobKey(e)) : (pair?.jobId ?? null),
      repoId: isDecision && e.ci?.repository ? id(e.ci.repository) : null,
      hostId: id(e.host),
      port: e.port,
      decision: isDecision ? OUTCOME_CODES[e.decision] : null,
      bytesIn: isDecision ? null : e.bytes_in,
      bytesOut: isDecision ? null : e.bytes_out,
      body: EMPTY,
      base: time,
      source: e,
    };
    if (pair) {
      pair.pair = row;
      if (isDecision) pair.jobId = row.jobId; // a close that came before its decision gets its job
    }
    own.set(rowId, row);
    rows.push(row);
  }
  for (const r of rows) {
    if (r.event === CLOSE && r.pair && keys.joinsDecision?.(r.pair, r)) r.base = r.pair.time;
    r.body = packBody(r.source, r.time, r.keepsId, r.base);
  }
  return rows;
}

const EMPTY = Buffer.alloc(0);

/** Closes of the batch whose decision is stored already (`stored`: by row id) get its job before they are inserted. */
export function linkStoredDecisions(rows: readonly EventRowV2[], stored: ReadonlyMap<string, StoredDecision>): void {
  for (const r of rows) if (r.event === CLOSE && r.jobId === null) r.jobId = stored.get(r.id)?.jobId ?? null;
}

export function decisionOf(row: EventRowV2): StoredDecision {
  return { jobId: row.jobId!, hostId: row.hostId, port: row.port, decision: row.decision! };
}

/** The links made by inserting `inserted` rows: closes inserted with a job (their decision in the batch or stored). */
export function insertLinks(rows: readonly EventRowV2[], inserted: ReadonlySet<EventRowV2>, stored: ReadonlyMap<string, StoredDecision>): Link[] {
  const links: Link[] = [];
  for (const r of rows) {
    if (r.event !== CLOSE || r.jobId === null || !inserted.has(r)) continue;
    const decision = r.pair ? decisionOf(r.pair) : stored.get(r.id);
    if (decision) links.push({ decision, bytesIn: r.bytesIn ?? 0, bytesOut: r.bytesOut ?? 0 });
  }
  return links;
}

/**
 * Whether `inserted` (the rows one transaction stored) holds both this row's decision and its close: such a pair was
 * linked at insert and counted by that transaction, so nothing about it is left to re-check after commit.
 */
export function pairStored(row: EventRowV2, inserted: ReadonlySet<EventRowV2>): boolean {
  return row.pair !== null && inserted.has(row) && inserted.has(row.pair);
}

/** A job's delta with its destinations' deltas, by destKey. */
interface JobDeltas {
  job: JobDelta;
  destinations: Map<number | string, DestinationDelta>;
}

/**
 * A destination's key within its job: one number for the (host, port, outcome) every stored row has (a dictionary id,
 * a port 0-65535, an outcome code 0-2: 49 bits at most), so that the Map hashes no string per event; any other value
 * (never stored by this collector, but read back from the database) as text.
 */
function destKey(hostId: number, port: number, decision: number): number | string {
  // `x | 0` and `x & mask` give x back only for an integer in range (a fraction, NaN or a larger number comes back changed).
  if (hostId >= 0 && (hostId | 0) === hostId && (port & 0xffff) === port && (decision & 3) === decision) return hostId * 0x4_0000 + port * 4 + decision;
  return `${hostId}:${port}:${decision}`;
}

/**
 * Aggregate changes: newly stored decisions count, links add bytes. One job entry per job, its destinations by a
 * numeric key (destKey), each decision added from its row's fields (no key string, object or array per event).
 */
export function aggregateDeltas(newDecisions: readonly EventRowV2[], links: readonly Link[]): Deltas {
  const jobs = new Map<number, JobDeltas>();

  const add = (jobId: number, hostId: number, port: number, decision: number, time: number | null, bytesIn: number, bytesOut: number): JobDelta => {
    let entry = jobs.get(jobId);
    if (!entry) {
      const job: JobDelta = { jobId, repoId: null, first: Infinity, last: -Infinity, decisions: 0, allowed: 0, blocked: 0, wouldBlock: 0, bytesIn: 0, bytesOut: 0 };
      entry = { job, destinations: new Map() };
      jobs.set(jobId, entry);
    }
    const { job } = entry;
    const key = destKey(hostId, port, decision);
    let dest = entry.destinations.get(key);
    if (!dest) {
      dest = { jobId, hostId, port, decision, count: 0, bytesIn: 0, bytesOut: 0, first: Infinity, last: -Infinity };
      entry.destinations.set(key, dest);
    }
    job.bytesIn += bytesIn;
    job.bytesOut += bytesOut;
    dest.bytesIn += bytesIn;
    dest.bytesOut += bytesOut;
    if (time === null) return job;
    job.decisions++;
    if (decision === OUTCOME_CODES.allowed) job.allowed++;
    else if (decision === OUTCOME_CODES.blocked) job.blocked++;
    else job.wouldBlock++;
    dest.count++;
    job.first = Math.min(job.first!, time);
    job.last = Math.max(job.last!, time);
    dest.first = Math.min(dest.first!, time);
    dest.last = Math.max(dest.last!, time);
    return job;
  };

  for (const r of newDecisions) {
    const job = add(r.jobId!, r.hostId, r.port, r.decision!, r.time, 0, 0);
    if (r.repoId !== null) job.repoId ??= r.repoId;
  }
  for (const { decision: d, bytesIn, bytesOut } of links) add(d.jobId, d.hostId, d.port, d.decision, null, bytesIn, bytesOut);
  const byKey = (a: DestinationDelta, b: DestinationDelta) => a.jobId - b.jobId || a.hostId - b.hostId || a.port - b.port || a.decision - b.decision;
  // Bytes-only deltas have no time: null first/last leave the row's own. Key order: concurrent batches lock the same
  // aggregate rows in the same order (no deadlock).
  const times = <T extends { first: number | null; last: number | null }>(t: T): T => (t.first === Infinity ? { ...t, first: null, last: null } : t);
  const destinations: DestinationDelta[] = [];
  for (const entry of jobs.values()) for (const d of entry.destinations.values()) destinations.push(d);
  return {
    jobs: [...jobs.values()]
      .map((entry) => entry.job)
      .sort((a, b) => a.jobId - b.jobId)
      .map(times),
    destinations: destinations.sort(byKey).map(times),
  };
}

/** A (job, host, port, outcome) aggregate row as the search reads it (ids resolved to text). */
export interface DestinationRow {
  jobId: number;
  hostId: number;
  port: number;
  decision: number;
  count: number;
  bytesOut: number;
  first: number;
  last: number;
}

export interface Window {
  since: number;
  until: number;
}

/** The time window of a search filter, in milliseconds (open ends as +-Infinity). */
export function searchWindow(filter: { since?: string; until?: string }): Window {
  return { since: filter.since ? Date.parse(filter.since) : -Infinity, until: filter.until ? Date.parse(filter.until) : Infinity };
}

/** Whether a window has an end a row can straddle (an open window has none: the straddling rows need no scan). */
export function hasEnds(window: Window): boolean {
  return window.since > -Infinity || window.until < Infinity;
}

/**
 * Search rows from the aggregates: a row inside the window counts whole; a row that straddles an end of it (the
 * few jobs running at `since` or `until`) is recounted from its raw events (`recount`), so the answer is exact.
 */
export async function windowedRows(
  rows: readonly DestinationRow[],
  window: Window,
  recount: (row: DestinationRow) => Promise<DestinationRow | undefined>,
): Promise<DestinationRow[]> {
  const out: DestinationRow[] = [];
  for (const row of rows) {
    if (row.last < window.since || row.first > window.until) continue;
    if (row.first >= window.since && row.last <= window.until) out.push(row);
    else {
      const counted = await recount(row);
      if (counted && counted.count > 0) out.push(counted);
    }
  }
  return out;
}

/** A dictionary string a host search's lookup found: a host, by its id. */
export interface SearchHost {
  id: number;
  text: string;
}

/**
 * A store's host search, the part both engines share: the hosts the store's dictionary `lookup` finds for the filter's
 * LIKE patterns, narrowed to those the pattern matches, then one page (searchPage) through the store's `reads` over
 * them (`decision`: the outcome's code, when filtered). No host: a page of none.
 */
export async function searchJobs(
  filter: SightingFilter,
  page: SearchQuery,
  lookup: (likes: readonly string[]) => Promise<SearchHost[]>,
  readsFor: (hosts: readonly SearchHost[], window: Window, decision: number | undefined) => SearchReads,
): Promise<SearchPage> {
  const none: SearchPage = { jobs: [], ...(!page.cursor && { total: 0 }), more: false, next: null };
  if (filter.likes.length === 0) return none;
  const hosts = (await lookup(filter.likes)).filter((h) => filter.matches(h.text));
  if (hosts.length === 0) return none;
  const window = searchWindow(filter);
  const decision = filter.decision ? OUTCOME_CODES[filter.decision as keyof typeof OUTCOME_CODES] : undefined;
  const hostText = new Map(hosts.map((h) => [h.id, h.text]));
  return searchPage(readsFor(hosts, window, decision), window, page, (id) => hostText.get(id) ?? `#${id}`);
}

/** A job's place in the search order: its last sighting in the window, then its id (both descending). */
export interface SearchKey {
  last: number;
  jobId: number;
}

/** Whether `a` comes after `b` in the search order (newest first; ties: the higher job id first). */
function after(a: SearchKey, b: SearchKey): boolean {
  return a.last < b.last || (a.last === b.last && a.jobId < b.jobId);
}

/** What a store reads for one page of a host search (queries.ts searchSql, searchScanSql, searchScanSqlite). */
export interface SearchReads {
  /**
   * The matching rows whose last sighting is in the window, in (last, job id) descending order, strictly after `at` in
   * that order, `rows` of them at most (drivers may answer numbers as text).
   */
  scan(at: SearchKey, rows: number): Promise<Array<{ jobId: unknown; last: unknown }>>;
  /** The number of jobs with such a row (asked only for a page of none). */
  count(): Promise<number>;
  /** The last sighting among such rows of each of these jobs that has one. */
  lasts(jobIds: readonly number[]): Promise<Array<{ jobId: unknown; last: unknown }>>;
  /** The rows of these jobs that overlap the window. */
  rows(jobIds: readonly number[]): Promise<DestinationRow[]>;
  /** The rows that straddle `until` (last after it, first at or before it); asked only when `until` is given. */
  edges(): Promise<DestinationRow[]>;
  /**
   * Runs `walk` with the reads of the walk by jobs (WalkRead), all from one snapshot of the store. Offered by a store
   * for patterns of many hosts (searchPage's walk by jobs).
   */
  walk?<T>(walk: (read: WalkRead) => Promise<T>): Promise<T>;
  /** A row's decisions inside the window, recounted from its raw events. */
  recount(row: DestinationRow): Promise<DestinationRow | undefined>;
  /** The text of these jobs' ids. */
  jobText(jobIds: readonly number[]): Promise<(id: number) => string | undefined>;
}

/**
 * The jobs newest first by their own last sighting (any host; eg_jobs), strictly after `at` in (last, job id) descending
 * order, last at or after the window's start, `jobs` of them at most, each with its last sighting among its seen rows
 * of the matching hosts (`last`, null when it has none); `jobLast` is an upper bound of `last`. The reads of one walk
 * see one snapshot: a job's own last sighting moves up when it is active on any host, and a job moved above where the
 * walk had read to, between two reads, was read by neither (its place on the page lost, though its key had not moved).
 */
export type WalkRead = (at: SearchKey, jobs: number) => Promise<Array<{ jobId: unknown; jobLast: unknown; last: unknown }>>;

/** A row as a driver answers it (PostgreSQL: bigint as text) as numbers. */
export function destinationRow(r: Record<string, unknown>): DestinationRow {
  const n = (k: string) => Number(r[k]);
  return {
    jobId: n('jobId'),
    hostId: n('hostId'),
    port: n('port'),
    decision: n('decision'),
    count: n('count'),
    bytesOut: n('bytesOut'),
    first: n('first'),
    last: n('last'),
  };
}

/** Rows per read of the ordered scan: ~8 per job still wanted at first (a job has a row per host, port and outcome it met), doubled each read. */
const scanRows = (wanted: number) => Math.min(4096, Math.max(64, wanted * 8));
const MAX_SCAN_ROWS = 65_536;

/**
 * One page of a host search, read in the order of the answer. A job's last sighting in the window is the newest `last`
 * of its rows seen there (queries.ts searchSql), except for the few jobs with a row that straddles `until`, recounted
 * first (their order known before the scan, which skips them). The scan reads the seen rows newest first, by host
 * index, a chunk at a time; the first row of a job gives its place, so it stops once `offset + limit + 1` jobs are
 * placed at or above where it is (the +1 tells whether more follow), and only the page's jobs are then summed (their
 * rows by primary key; the ones that straddle an end recounted). After a cursor the scan starts at its position, and a
 * job met there is kept only if its newest seen row is past the cursor too (a job of an earlier page has older rows).
 * `total` is known when the scan ran out on a page asked from the start; a page of none (`limit` 0) counts on purpose
 * (after a cursor it only scans for the job that follows, for `more`).
 */
export async function searchPage(reads: SearchReads, window: Window, page: SearchQuery, hostText: (id: number) => string): Promise<SearchPage> {
  const cursor = page.cursor ? decodeCursor(page.cursor) : undefined;
  const offset = cursor ? 0 : (page.offset ?? 0);
  const keys = new Map<number, number>(); // job -> its last sighting in the window, for the jobs placed so far
  const edgeJobs = new Set<number>();
  const recounted = new Map<string, Promise<DestinationRow | undefined>>();
  const recount = (row: DestinationRow) => {
    const id = `${row.jobId}:${row.hostId}:${row.port}:${row.decision}`;
    if (!recounted.has(id)) recounted.set(id, reads.recount(row));
    return recounted.get(id)!;
  };
  if (window.until < Infinity) {
    const edges = await windowedRows(await reads.edges(), window, recount);
    for (const r of edges) edgeJobs.add(r.jobId);
    const seen = new Map((await reads.lasts([...edgeJobs])).map((r) => [Number(r.jobId), Number(r.last)]));
    for (const r of edges) {
      const last = Math.max(r.last, keys.get(r.jobId) ?? -Infinity, seen.get(r.jobId) ?? -Infinity);
      keys.set(r.jobId, last);
    }
    if (page.limit === 0 && !cursor) {
      const extra = [...edgeJobs].filter((job) => !seen.has(job)).length;
      const total = (await reads.count()) + extra;
      return { jobs: [], total, more: total > offset, next: null };
    }
    if (cursor) for (const [job, last] of keys) if (!after({ last, jobId: job }, cursor)) keys.delete(job);
  } else if (page.limit === 0 && !cursor) {
    // A page of none counts all matching jobs; after a cursor it goes through the scan (below) to tell whether jobs
    // follow that cursor (`more`), which the count of all jobs does not.
    const total = await reads.count();
    return { jobs: [], total, more: total > offset, next: null };
  }

  const wanted = offset + page.limit + 1;
  let at: SearchKey = cursor ?? { last: finite(window.until), jobId: Number.MAX_SAFE_INTEGER };
  let rows = page.scanRows ?? scanRows(wanted);
  const met = new Set<number>();
  const placedFrom = (position: SearchKey) => [...keys].filter(([jobId, last]) => !after({ last, jobId }, position)).length;
  // Without `until`, a store may offer the walk by jobs (a pattern of many hosts); if it gives up, the scan below finds
  // the same keys again for the jobs it meets (a job's key is exact either way).
  const walked = reads.walk && window.until === Infinity ? await reads.walk((read) => walkJobs(read, keys, wanted, placedFrom, cursor)) : 'gave-up';
  let exhausted = walked === 'exhausted';
  while (walked === 'gave-up') {
    const chunk = (await reads.scan(at, rows)).map((r) => ({ jobId: Number(r.jobId), last: Number(r.last) }));
    const fresh = chunk.filter((r) => !met.has(r.jobId) && !edgeJobs.has(r.jobId) && met.add(r.jobId));
    if (cursor && fresh.length > 0) {
      // A job whose newest seen row is not past the cursor was on an earlier page.
      const newest = new Map((await reads.lasts(fresh.map((r) => r.jobId))).map((r) => [Number(r.jobId), Number(r.last)]));
      for (const r of fresh) if (after({ last: newest.get(r.jobId) ?? r.last, jobId: r.jobId }, cursor)) keys.set(r.jobId, r.last);
    } else for (const r of fresh) keys.set(r.jobId, r.last);
    if (chunk.length < rows) {
      exhausted = true;
      break;
    }
    at = chunk.at(-1)!;
    if (placedFrom(at) >= wanted) break;
    if (page.scanRows === undefined) rows = Math.min(rows * 2, MAX_SCAN_ROWS);
  }

  const order = [...keys].map(([jobId, last]) => ({ jobId, last })).sort((a, b) => b.last - a.last || b.jobId - a.jobId);
  const onPage = order.slice(offset, offset + page.limit);
  const more = order.length > offset + page.limit;
  const total = exhausted && !cursor ? order.length : undefined;
  const next = more && onPage.length > 0 ? encodeCursor(onPage.at(-1)!.last, onPage.at(-1)!.jobId) : null;
  if (onPage.length === 0) return { jobs: [], ...(total !== undefined && { total }), more, next };
  const ids = onPage.map((k) => k.jobId);
  const byJob = new Map<number, DestinationRow[]>(ids.map((id) => [id, []]));
  for (const r of await windowedRows(await reads.rows(ids), window, recount)) byJob.get(r.jobId)?.push(r);
  const jobText = await reads.jobText(ids);
  return { jobs: ids.map((id) => sightingOf(byJob.get(id)!, jobText(id) ?? `#${id}`, hostText)), ...(total !== undefined && { total }), more, next };
}

/** Jobs per read of the walk by jobs: two per job wanted at first, doubled each read. */
const walkJobsPerRead = (wanted: number) => Math.max(32, wanted * 2);
/** The walk gives up past this many jobs read without a seen row (a pattern few jobs match)... */
const walkIdleJobs = (wanted: number) => Math.max(256, wanted * 4);
/** ... or past this many jobs of earlier pages (a cursor deep in the answer: those are read again on every page). */
const WALK_EARLIER_JOBS = 2048;

/**
 * The walk by jobs, for a pattern of many hosts (where the scan by host reads rows of many hosts per job and a
 * statement of a branch per host is planned again per chunk): the jobs newest first by their own last sighting
 * (`jobLast`, any host), each with its key (its last sighting among the matching hosts' seen rows). A job's key is at
 * most its `jobLast`, so every job not yet read comes after the last one read in the search order: once `wanted` jobs
 * are placed at or above that position, the page is known. After a cursor, a job whose key is not past it was on an
 * earlier page: skipped, but read (the walk starts at the newest job whatever the cursor). The jobs read that place
 * nothing are what it costs more than the scan: past walkIdleJobs or WALK_EARLIER_JOBS of them it gives up, and the
 * scan takes over.
 */
async function walkJobs(
  walk: WalkRead,
  keys: Map<number, number>,
  wanted: number,
  placedFrom: (position: SearchKey) => number,
  cursor: SearchKey | undefined,
): Promise<'placed' | 'exhausted' | 'gave-up'> {
  let at: SearchKey = { last: Number.MAX_SAFE_INTEGER, jobId: Number.MAX_SAFE_INTEGER };
  let jobs = walkJobsPerRead(wanted);
  let idle = 0;
  let earlier = 0;
  for (;;) {
    const batch = await walk(at, jobs);
    for (const r of batch) {
      const key = { last: Number(r.last), jobId: Number(r.jobId) };
      if (r.last === null) idle++;
      else if (cursor && !after(key, cursor)) earlier++;
      else keys.set(key.jobId, key.last);
    }
    if (batch.length < jobs) return 'exhausted';
    at = { last: Number(batch.at(-1)!.jobLast), jobId: Number(batch.at(-1)!.jobId) };
    if (placedFrom(at) >= wanted) return 'placed';
    if (idle >= walkIdleJobs(wanted) || earlier >= WALK_EARLIER_JOBS) return 'gave-up';
    jobs = Math.min(jobs * 2, 2048);
  }
}

/** One job's sighting: the sums of its rows (inside the window, or recounted within it). */
function sightingOf(rows: readonly DestinationRow[], job: string, hostText: (id: number) => string): JobSighting {
  const s = { first: Infinity, last: -Infinity, decisions: 0, allowed: 0, blocked: 0, wouldBlock: 0, bytesOut: 0, hosts: new Set<number>() };
  for (const r of rows) {
    s.first = Math.min(s.first, r.first);
    s.last = Math.max(s.last, r.last);
    s.decisions += r.count;
    s.bytesOut += r.bytesOut;
    if (r.decision === OUTCOME_CODES.allowed) s.allowed += r.count;
    else if (r.decision === OUTCOME_CODES.blocked) s.blocked += r.count;
    else s.wouldBlock += r.count;
    s.hosts.add(r.hostId);
  }
  return {
    job,
    first: iso(s.first),
    last: iso(s.last),
    decisions: s.decisions,
    allowed: s.allowed,
    blocked: s.blocked,
    wouldBlock: s.wouldBlock,
    bytesOut: s.bytesOut,
    hosts: [...s.hosts].map(hostText).sort(),
  };
}
