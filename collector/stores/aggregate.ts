import type { EgressEvent } from '../../events/schema.js';
import { jobKey } from '../../events/job-key.js';
import { CLOSE, DECISION, encodeId, OUTCOME_CODES, packBody } from './codec.js';
import type { JobSighting } from '../../report/host-sightings.js';
import { iso, type SearchPage } from './event-store.js';

/**
 * What both stores do with a batch, apart from SQL: the rows to insert and the aggregate deltas of what was stored.
 * Aggregates: per (job, host, port, outcome) and per job, updated in the transaction that stores the events. The
 * rules, which make them equal to a recount from the raw events:
 * - a decision counts once, in the transaction that stores it (a duplicate is not stored, so not counted);
 * - a close's bytes count once its decision is stored, in the transaction that sets the close's `job_id`: at its
 *   insert when its decision is stored already (or in the same batch), else when the decision arrives (an UPDATE
 *   ... WHERE job_id IS NULL, so exactly one transaction links it). A close row has a job iff its bytes are counted.
 */
export interface EventRowV2 {
  key: Buffer;
  /** key as hex: the map key of a batch. */
  ref: string;
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

/**
 * The rows of a batch (one per (id, event): a repeat within the batch is dropped here), closes linked to batch decisions.
 * `keepsId(key)`: whether an event with this key keeps its id in its body (PostgreSQL's hashed keys: pg-key.ts).
 */
export function toRows(events: readonly EgressEvent[], ids: ReadonlyMap<string, number>, keepsId: (key: Buffer) => boolean = () => false): EventRowV2[] {
  const rows = new Map<string, EventRowV2>();
  const id = (text: string) => {
    const n = ids.get(text);
    if (n === undefined) throw new Error(`no dictionary id for "${text}"`);
    return n;
  };
  for (const e of events) {
    const key = encodeId(e.id);
    const event = e.event === 'decision' ? DECISION : CLOSE;
    const ref = `${event}${key.toString('hex')}`;
    if (rows.has(ref)) continue;
    const time = Date.parse(e.time);
    rows.set(ref, {
      key,
      ref,
      event,
      time,
      jobId: e.event === 'decision' ? id(jobKey(e)) : null,
      repoId: e.event === 'decision' && e.ci?.repository ? id(e.ci.repository) : null,
      hostId: id(e.host),
      port: e.port,
      decision: e.event === 'decision' ? OUTCOME_CODES[e.decision] : null,
      bytesIn: e.event === 'close' ? e.bytes_in : null,
      bytesOut: e.event === 'close' ? e.bytes_out : null,
      body: packBody(e, time, keepsId(key)),
    });
  }
  const all = [...rows.values()];
  const decisions = new Map(all.filter((r) => r.event === DECISION).map((r) => [r.key.toString('hex'), r]));
  for (const r of all) if (r.event === CLOSE) r.jobId = decisions.get(r.key.toString('hex'))?.jobId ?? null;
  return all;
}

/** Closes of the batch whose decision is stored already (`stored`: by key hex) get its job before they are inserted. */
export function linkStoredDecisions(rows: readonly EventRowV2[], stored: ReadonlyMap<string, StoredDecision>): void {
  for (const r of rows) if (r.event === CLOSE && r.jobId === null) r.jobId = stored.get(r.key.toString('hex'))?.jobId ?? null;
}

export function decisionOf(row: EventRowV2): StoredDecision {
  return { jobId: row.jobId!, hostId: row.hostId, port: row.port, decision: row.decision! };
}

/** The links made by inserting `inserted` rows: closes inserted with a job (their decision in the batch or stored). */
export function insertLinks(rows: readonly EventRowV2[], inserted: ReadonlySet<string>, stored: ReadonlyMap<string, StoredDecision>): Link[] {
  const batchDecisions = new Map(rows.filter((r) => r.event === DECISION).map((r) => [r.key.toString('hex'), r]));
  const links: Link[] = [];
  for (const r of rows) {
    if (r.event !== CLOSE || r.jobId === null || !inserted.has(r.ref)) continue;
    const hex = r.key.toString('hex');
    const batch = batchDecisions.get(hex);
    const decision = batch ? decisionOf(batch) : stored.get(hex);
    if (decision) links.push({ decision, bytesIn: r.bytesIn ?? 0, bytesOut: r.bytesOut ?? 0 });
  }
  return links;
}

/**
 * Whether `inserted` (refs of the rows one transaction stored) holds both this row's decision and its close: such a
 * pair was linked at insert and counted by that transaction, so nothing about it is left to re-check after commit.
 */
export function pairStored(row: EventRowV2, inserted: ReadonlySet<string>): boolean {
  const hex = row.key.toString('hex');
  return inserted.has(`${DECISION}${hex}`) && inserted.has(`${CLOSE}${hex}`);
}

/** Aggregate changes: newly stored decisions count, links add bytes. */
export function aggregateDeltas(newDecisions: readonly EventRowV2[], links: readonly Link[]): Deltas {
  const jobs = new Map<number, JobDelta>();
  const destinations = new Map<string, DestinationDelta>();

  const add = (d: StoredDecision, time: number | null, bytesIn: number, bytesOut: number) => {
    let job = jobs.get(d.jobId);
    if (!job) {
      job = { jobId: d.jobId, repoId: null, first: Infinity, last: -Infinity, decisions: 0, allowed: 0, blocked: 0, wouldBlock: 0, bytesIn: 0, bytesOut: 0 };
      jobs.set(d.jobId, job);
    }
    const destKey = `${d.jobId}:${d.hostId}:${d.port}:${d.decision}`;
    let dest = destinations.get(destKey);
    if (!dest) {
      dest = { jobId: d.jobId, hostId: d.hostId, port: d.port, decision: d.decision, count: 0, bytesIn: 0, bytesOut: 0, first: Infinity, last: -Infinity };
      destinations.set(destKey, dest);
    }
    job.bytesIn += bytesIn;
    job.bytesOut += bytesOut;
    dest.bytesIn += bytesIn;
    dest.bytesOut += bytesOut;
    if (time === null) return;
    job.decisions++;
    if (d.decision === OUTCOME_CODES.allowed) job.allowed++;
    else if (d.decision === OUTCOME_CODES.blocked) job.blocked++;
    else job.wouldBlock++;
    dest.count++;
    for (const t of [job, dest]) {
      t.first = Math.min(t.first!, time);
      t.last = Math.max(t.last!, time);
    }
  };

  for (const r of newDecisions) {
    add(decisionOf(r), r.time, 0, 0);
    if (r.repoId !== null) jobs.get(r.jobId!)!.repoId ??= r.repoId;
  }
  for (const link of links) add(link.decision, null, link.bytesIn, link.bytesOut);
  const byKey = (a: DestinationDelta, b: DestinationDelta) => a.jobId - b.jobId || a.hostId - b.hostId || a.port - b.port || a.decision - b.decision;
  // Bytes-only deltas have no time: null first/last leave the row's own. Key order: concurrent batches lock the same
  // aggregate rows in the same order (no deadlock).
  const times = <T extends { first: number | null; last: number | null }>(t: T): T => (t.first === Infinity ? { ...t, first: null, last: null } : t);
  return {
    jobs: [...jobs.values()].sort((a, b) => a.jobId - b.jobId).map(times),
    destinations: [...destinations.values()].sort(byKey).map(times),
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

/** What a store reads for one page of a host search (queries.ts searchSql: the rows wholly inside the window). */
export interface SearchReads {
  /**
   * Jobs with rows inside the window by their last sighting there, newest first (ties: job id descending), `limit`
   * of them after `offset`, each with the number of all such jobs (`total`; drivers may answer numbers as text).
   */
  page(limit: number, offset: number): Promise<Array<{ jobId: unknown; last: unknown; total: unknown }>>;
  /** The number of jobs with rows inside the window (asked only when an empty page cannot tell: past the end, or `limit` 0). */
  count(): Promise<number>;
  /** The last sighting inside the window of each of these jobs that has one. */
  lasts(jobIds: readonly number[]): Promise<Array<{ jobId: unknown; last: unknown }>>;
  /** The rows inside the window of these jobs. */
  rows(jobIds: readonly number[]): Promise<DestinationRow[]>;
  /** The text of these jobs' ids. */
  jobText(jobIds: readonly number[]): Promise<(id: number) => string | undefined>;
}

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

/**
 * One page of a host search, done where the rows are: the database orders the matching jobs by last sighting and
 * cuts the page (counting them all as it goes), and only the page's jobs are summed and named. `readEdges`: the rows
 * that straddle an end of the window, recounted (windowedRows; a few jobs running at `since` or `until`). Their
 * jobs may move up the order, so with edges the database is asked for the first `offset + limit` jobs and the edge
 * jobs are merged in before the page is cut: a job not among those and without edges is behind all of them.
 */
export async function searchPage(
  reads: SearchReads,
  readEdges: () => Promise<DestinationRow[]>,
  page: { limit: number; offset: number },
  hostText: (id: number) => string,
): Promise<SearchPage> {
  // The page as if no row straddled, asked beside the straddling rows (PostgreSQL: on two connections at once); it is
  // the right one when none does, or when the page is the first.
  const [edges, guess] = await Promise.all([readEdges(), reads.page(page.limit, page.offset)]);
  const edgeLast = new Map<number, number>();
  for (const r of edges) edgeLast.set(r.jobId, Math.max(edgeLast.get(r.jobId) ?? -Infinity, r.last));
  const direct = edgeLast.size === 0;
  const headFromStart = !direct && page.offset > 0;
  const head = headFromStart ? await reads.page(page.offset + page.limit, 0) : guess;
  // An empty head says there is no job inside the window only when it was asked from the start for at least one;
  // past the end, or with `limit` 0 (only the total asked), the count is asked for.
  const headSaysNone = headFromStart || (page.offset === 0 && page.limit > 0);
  let total = head.length > 0 ? Number(head[0]!.total) : headSaysNone ? 0 : await reads.count();
  const lasts = new Map(head.map((r) => [Number(r.jobId), Number(r.last)]));
  if (!direct) {
    const inside = new Map((await reads.lasts([...edgeLast.keys()])).map((r) => [Number(r.jobId), Number(r.last)]));
    for (const [job, last] of edgeLast) {
      if (!inside.has(job)) total++;
      lasts.set(job, Math.max(last, inside.get(job) ?? -Infinity));
    }
  }
  const order = [...lasts].sort(([jobA, lastA], [jobB, lastB]) => lastB - lastA || jobB - jobA).map(([job]) => job);
  const ids = direct ? order : order.slice(page.offset, page.offset + page.limit);
  if (ids.length === 0) return { jobs: [], total };
  const byJob = new Map<number, DestinationRow[]>(ids.map((id) => [id, []]));
  for (const r of [...(await reads.rows(ids)), ...edges]) byJob.get(r.jobId)?.push(r);
  const jobText = await reads.jobText(ids);
  return { jobs: ids.map((id) => sightingOf(byJob.get(id)!, jobText(id) ?? `#${id}`, hostText)), total };
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
