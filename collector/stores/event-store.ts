import type { DecisionCounts } from '../../report/host-sightings.js';
import type { EgressEvent } from '../../events/schema.js';
import { jobKey } from '../../events/job-key.js';

export interface JobInfo extends DecisionCounts {
  job: string;
}

/** One job's decisions for one host, as the host search reads them (collector/host-search.ts). */
export interface HostSighting extends DecisionCounts {
  job: string;
  host: string;
  /** Bytes the job sent there (close events of those decisions). */
  bytesOut: number;
}

export interface SightingFilter {
  /** SQL LIKE patterns (escape `\`), any of which the host matches. */
  likes: readonly string[];
  since?: string;
  until?: string;
  decision?: string;
}

export interface InsertResult {
  stored: number;
  duplicates: number;
}

/**
 * Where the collector keeps events. Each event is stored once per (id, event): a decision by its id, a
 * close by its id and "close". A batch is stored in one transaction: all of it or nothing.
 */
export interface EventStore {
  insert(events: readonly EgressEvent[]): Promise<InsertResult>;
  /** Jobs with decision counts, most recently active first. */
  jobs(): Promise<JobInfo[]>;
  /** A job's decision events and the close events of those decisions, in time order. */
  jobEvents(job: string, limit: number): Promise<EgressEvent[]>;
  /** Per (job, host): decisions whose host matches one of the LIKE patterns, in the time window. */
  sightings(filter: SightingFilter): Promise<HostSighting[]>;
  /** Stored events (decision and close) in total. */
  count(): Promise<number>;
  close(): Promise<void>;
}

/** A row as both stores write it. Close events carry no CI context: their job is that of their decision. */
export interface EventRow {
  id: string;
  event: string;
  job: string | null;
  /** The decision's host (close events: null), for the host search. */
  host: string | null;
  time: string;
  decision: string | null;
  body: string;
}

export function toRow(event: EgressEvent): EventRow {
  return {
    id: event.id,
    event: event.event,
    job: event.event === 'decision' ? jobKey(event) : null,
    host: event.event === 'decision' ? event.host : null,
    time: new Date(event.time).toISOString(),
    decision: event.event === 'decision' ? event.decision : null,
    body: JSON.stringify(event),
  };
}

export function isPostgresUrl(db: string): boolean {
  return /^postgres(ql)?:\/\//i.test(db);
}
