import type { EgressEvent } from '../../events/schema.js';
import { jobKey } from '../../events/job-key.js';
import { CLOSE, DECISION, encodeId, OUTCOME_CODES, packBody } from './codec.js';
import type { JobSighting } from '../../report/host-sightings.js';
import { iso } from './event-store.js';

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

/** The aggregate rows of one job wholly inside a search window, summed by the database (queries.ts searchSql). */
export interface JobGroupRow {
  jobId: number;
  first: number;
  last: number;
  decisions: number;
  allowed: number;
  blocked: number;
  wouldBlock: number;
  bytesOut: number;
  /** The matching hosts' ids. */
  hosts: number[];
}

/** A `groups` row of searchSql as a driver answers it (PostgreSQL: sums as text; hosts as "id,id,...", with repeats). */
export function jobGroupRow(r: Record<string, unknown>): JobGroupRow {
  const n = (k: string) => Number(r[k]);
  return {
    jobId: n('jobId'),
    first: n('first'),
    last: n('last'),
    decisions: n('decisions'),
    allowed: n('allowed'),
    blocked: n('blocked'),
    wouldBlock: n('wouldBlock'),
    bytesOut: n('bytesOut'),
    hosts: [...new Set(String(r.hosts).split(',').map(Number))],
  };
}

/**
 * Per job sightings: the per-job sums of the rows inside the window plus the recounted rows that straddle an end of
 * it (`edges`, per (job, host, port, outcome), count > 0).
 */
export function jobSightings(groups: readonly JobGroupRow[], edges: readonly DestinationRow[], text: (id: number) => string): JobSighting[] {
  const jobs = new Map<number, JobGroupRow>(groups.map((g) => [g.jobId, { ...g, hosts: [...g.hosts] }]));
  for (const r of edges) {
    let g = jobs.get(r.jobId);
    if (!g) {
      g = { jobId: r.jobId, first: r.first, last: r.last, decisions: 0, allowed: 0, blocked: 0, wouldBlock: 0, bytesOut: 0, hosts: [] };
      jobs.set(r.jobId, g);
    }
    g.first = Math.min(g.first, r.first);
    g.last = Math.max(g.last, r.last);
    g.decisions += r.count;
    g.bytesOut += r.bytesOut;
    if (r.decision === OUTCOME_CODES.allowed) g.allowed += r.count;
    else if (r.decision === OUTCOME_CODES.blocked) g.blocked += r.count;
    else g.wouldBlock += r.count;
    if (!g.hosts.includes(r.hostId)) g.hosts.push(r.hostId);
  }
  return [...jobs.values()].map((g) => ({
    job: text(g.jobId),
    first: iso(g.first),
    last: iso(g.last),
    decisions: g.decisions,
    allowed: g.allowed,
    blocked: g.blocked,
    wouldBlock: g.wouldBlock,
    bytesOut: g.bytesOut,
    hosts: [...new Set(g.hosts)].map(text).sort(),
  }));
}
