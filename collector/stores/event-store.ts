import type { DecisionCounts, JobSighting } from '../../report/host-sightings.js';
import type { EgressEvent } from '../../events/schema.js';
import type { JobRowsPage } from './job-rows.js';

export interface JobInfo extends DecisionCounts {
  job: string;
  /** ci.repository of the job's decisions, when they carry one. */
  repository?: string;
  /** Bytes the job received and sent (close events of its decisions). */
  bytesIn: number;
  bytesOut: number;
}

/** One page of the job list: `limit` jobs after `cursor` (or `offset`), most recently active first. */
export interface JobQuery {
  limit?: number;
  /** The `next` of the previous page. */
  cursor?: string;
  offset?: number;
  repository?: string;
}

export interface JobPage {
  jobs: JobInfo[];
  /** The cursor of the next page; null on the last one. */
  next: string | null;
}

export interface RetentionResult {
  /** Events deleted (PostgreSQL: in the day partitions dropped). */
  deleted: number;
  /** Jobs whose aggregates were recomputed from what remains. */
  jobs: number;
}

export interface SightingFilter {
  /** SQL LIKE patterns (escape `\`), any of which the host matches: they find a superset of the hosts... */
  likes: readonly string[];
  /** ...of which this keeps the ones the search means (collector/host-search.ts). */
  matches: (host: string) => boolean;
  since?: string;
  until?: string;
  decision?: string;
}

/** Which page of a host search: `limit` jobs after `cursor` (the `next` of the page before) or after the first `offset`. */
export interface SearchQuery {
  limit: number;
  offset?: number;
  cursor?: string;
  /**
   * Rows per read of the ordered scan (aggregate.searchPage), fixed; by default it starts near eight per job wanted and
   * doubles. Tests set it small to make pages that end mid-scan.
   */
  scanRows?: number;
  /**
   * Whether a first page may be read, and a count made, by jobs (aggregate.searchPage's walk; PostgreSQL): by default
   * when the pattern matches many hosts (the count: when the search index holds many entries per job). Tests set it
   * to compare both ways on one history.
   */
  byJobs?: boolean;
}

/** One page of a host search. */
export interface SearchPage {
  /** Newest first by last sighting in the window; ties: the job added last first. */
  jobs: JobSighting[];
  /**
   * Jobs that match in all, when known exactly without extra work: the scan reached the last matching row on a page
   * asked without a cursor, or the page is of none and asked without a cursor (`limit` 0: then counted on purpose). Otherwise absent.
   */
  total?: number;
  /** Whether jobs follow this page. */
  more: boolean;
  /** The cursor of the next page (the last job's (last sighting, id)); null when none follows or the page is of none. */
  next: string | null;
}

export interface InsertResult {
  stored: number;
  duplicates: number;
}

/**
 * Where the collector keeps events. Each event is stored once per (id, event): a decision by its id, a
 * close by its id and "close". A batch is stored in one transaction with its aggregates: all of it or nothing.
 */
export interface EventStore {
  insert(events: readonly EgressEvent[]): Promise<InsertResult>;
  /** Jobs with decision counts, most recently active first (from the per-job aggregates). */
  jobs(query?: JobQuery): Promise<JobPage>;
  /**
   * A job's decision events and the close events of those decisions, in time order. Read in turns (in-turns.ts):
   * once `signal` is aborted (the client went away) the read stops at its next turn and rejects with its reason.
   */
  jobEvents(job: string, limit: number, signal?: AbortSignal): Promise<EgressEvent[]>;
  /**
   * The same read, its rows packed, not unpacked: `onPage` gets a page of rows per turn, for a job-rows.ts unpacker
   * (the collector's view thread unpacks them off the loop). Nothing for a job without events.
   */
  jobRows(job: string, limit: number, onPage: (page: JobRowsPage) => void, signal?: AbortSignal): Promise<void>;
  /**
   * One page of the jobs with decisions whose host matches, in the time window: per job, those decisions summed,
   * newest first by last sighting (ties: the job added last first), `limit` after `cursor` or `offset`, with how many
   * jobs match in all when that is cheap to know (SearchPage). From the per (job, host, port, outcome) aggregates read
   * in last-seen order per host (aggregate.searchPage); the few rows that straddle an end of the window are recounted
   * from their raw events, so the answer is exact.
   */
  searchJobs(filter: SightingFilter, page: SearchQuery): Promise<SearchPage>;
  /**
   * Delete the events older than `cutoff` and recompute the aggregates of the jobs they belonged to. SQLite: every
   * event with time < cutoff, in small transactions; PostgreSQL: the day partitions that end at or before cutoff.
   */
  retain(cutoff: Date): Promise<RetentionResult>;
  /** Stored events (decision and close) in total. */
  count(): Promise<number>;
  /** Bytes the store takes on disk (tables and indexes). */
  storageBytes(): Promise<number>;
  close(): Promise<void>;
}

/** The job-list cursor: the last row's (last seen, job id), opaque to clients. */
export function encodeCursor(last: number, jobId: number): string {
  return Buffer.from(`${last}.${jobId}`).toString('base64url');
}

export function decodeCursor(cursor: string): { last: number; jobId: number } | undefined {
  const m = /^(-?\d+)\.(\d+)$/.exec(Buffer.from(cursor, 'base64url').toString());
  return m ? { last: Number(m[1]), jobId: Number(m[2]) } : undefined;
}

export function isPostgresUrl(db: string): boolean {
  return /^postgres(ql)?:\/\//i.test(db);
}

/** Milliseconds as the ISO time the API answers. */
export function iso(ms: number | string): string {
  return new Date(Number(ms)).toISOString();
}
