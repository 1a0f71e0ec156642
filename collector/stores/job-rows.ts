import type { EgressEvent } from '../../events/schema.js';
import { CLOSE, decodeIdHex, unpackEvent } from './codec.js';
import { closeKeyOf, decisionKeyOf } from './pg-key.js';

/**
 * A job's rows as a store read them, a page at a time, before they are unpacked into events (EventStore.jobRows).
 * A `JobUnpacker` makes the events: in the store's own turns for the events answer (jobEvents), or in the collector's
 * view thread for a view (collector/view-thread.ts). The bodies travel in one buffer per page: sending a page of rows
 * to the thread costs ~0.45 µs a row on the loop, the unpacked events ~1.8 µs an event, and unpacking is about half
 * of a read's work.
 */
export interface JobRowsPage {
  engine: 'sqlite' | 'postgres';
  /** The rows' bodies one after the other: a row's body, then (PostgreSQL) the close body joined into its row. */
  bodies: Uint8Array;
  rows: PackedRow[];
}

/**
 * key: SQLite the key's hex text, PostgreSQL the UUID key; event: the row's (DECISION or CLOSE); bodyLength and
 * closeLength (-1: none) measure the row's part of `bodies`.
 */
export type PackedRow = [key: string, event: number, time: number, host: string, bytesIn: number | null, bytesOut: number | null, bodyLength: number, closeLength: number];

/** Gathers one page of rows. */
export class JobRowsPageBuilder {
  private readonly rows: PackedRow[] = [];
  private readonly bodies: Buffer[] = [];

  constructor(private readonly engine: JobRowsPage['engine']) {}

  add(key: string, event: number, time: number, host: string, bytesIn: number | null, bytesOut: number | null, body: Buffer, closeBody: Buffer | null = null): void {
    this.rows.push([key, event, time, host, bytesIn, bytesOut, body.length, closeBody ? closeBody.length : -1]);
    this.bodies.push(body);
    if (closeBody) this.bodies.push(closeBody);
  }

  get size(): number {
    return this.rows.length;
  }

  page(): JobRowsPage {
    return { engine: this.engine, bodies: Buffer.concat(this.bodies), rows: this.rows };
  }
}

/** Makes a job's events of its pages of rows, in the order the store gives them. */
export interface JobUnpacker {
  add(page: JobRowsPage): void;
  /** The job's events, at most the read's limit, in time order. */
  finish(): EgressEvent[];
}

export function jobUnpacker(engine: JobRowsPage['engine'], job: string, limit: number): JobUnpacker {
  return engine === 'sqlite' ? new SqliteUnpacker(job) : new PostgresUnpacker(job, limit);
}

/** Each row's body and close body, as Buffers (a page sent to a thread arrives as a plain Uint8Array). */
function* bodiesOf(page: JobRowsPage): Generator<[row: PackedRow, body: Buffer, closeBody: Buffer | null]> {
  const bodies = Buffer.from(page.bodies.buffer, page.bodies.byteOffset, page.bodies.byteLength);
  let at = 0;
  for (const row of page.rows) {
    const body = bodies.subarray(at, (at += row[6]));
    const closeBody = row[7] < 0 ? null : bodies.subarray(at, (at += row[7]));
    yield [row, body, closeBody];
  }
}

const bytesOf = (bytesIn: number | null, bytesOut: number | null) => (bytesIn === null ? null : { in: bytesIn, out: bytesOut ?? 0 });

/** SQLite: a row per event, in (time, seq) order; pages read by separate statements (sqlite-store.ts jobEvents). */
class SqliteUnpacker implements JobUnpacker {
  private readonly events: EgressEvent[] = [];
  /** The decisions' ids, gathered page by page (a set of 100,000 ids made at the end took ~0.2 s in one turn). */
  private readonly decided = new Set<string>();
  private pages = 0;

  constructor(private readonly job: string) {}

  add(page: JobRowsPage): void {
    for (const [[key, , time, host, bytesIn, bytesOut], body] of bodiesOf(page)) {
      const event = unpackEvent(body, decodeIdHex(key), host, time, this.job, bytesOf(bytesIn, bytesOut));
      this.events.push(event);
      if (event.event === 'decision') this.decided.add(event.id);
    }
    this.pages++;
  }

  finish(): EgressEvent[] {
    if (this.pages < 2) return this.events;
    // Read in more than one statement, the view may hold a close without its decision: a close stored before its
    // decision has no job; the decision, timed in a page already read, stored between two pages, gives the close this
    // job, which a later page then reads. One query never saw one without the other; nor does this read.
    return this.events.filter((e) => e.event === 'decision' || this.decided.has(e.id));
  }
}

/**
 * PostgreSQL: a row per decision with its close joined in (or a close's own row), in (time, event, key) order from one
 * query. A close in its decision's row is never before it (joinsDecision), so the first `limit` rows hold the first
 * `limit` events in that order: the joined closes are sorted in, then the list cut at `limit`.
 */
class PostgresUnpacker implements JobUnpacker {
  private readonly events: Array<{ time: number; event: number; key: string; e: EgressEvent }> = [];
  private joined = false;

  constructor(
    private readonly job: string,
    private readonly limit: number,
  ) {}

  add(page: JobRowsPage): void {
    for (const [[key, event, time, host, bytesIn, bytesOut], body, closeBody] of bodiesOf(page)) {
      const id = decisionKeyOf(key);
      const bytes = bytesOf(bytesIn, bytesOut);
      this.events.push({ time, event, key, e: unpackEvent(body, id, host, time, this.job, bytes) });
      if (closeBody === null) continue;
      this.joined = true;
      const close = unpackEvent(closeBody, id, host, time, this.job, bytes);
      this.events.push({ time: Date.parse(close.time), event: CLOSE, key: closeKeyOf(key), e: close });
    }
  }

  finish(): EgressEvent[] {
    if (this.joined) this.events.sort((a, b) => a.time - b.time || a.event - b.event || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return this.events.slice(0, this.limit).map((x) => x.e);
  }
}
