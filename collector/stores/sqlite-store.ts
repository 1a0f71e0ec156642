import { mkdirSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { EgressEvent } from '../../events/schema.js';
import * as aggregate from './aggregate.js';
import type { DestinationRow, EventRowV2, Link, StoredDecision } from './aggregate.js';
import { CLOSE, DECISION, encodeId, OUTCOME_CODES } from './codec.js';
import { Dictionary } from './dictionary.js';
import { nextTurn, ROWS_PER_TURN } from './in-turns.js';
import { jobUnpacker, JobRowsPageBuilder, type JobRowsPage } from './job-rows.js';
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
  rowsToRead,
  OLD_TABLE,
  RECOMPUTE_SQL,
  reversed,
  SCHEMA_TABLES,
  searchScanSqlite,
  searchSql,
  stringLookupSql,
  type JobRow,
} from './queries.js';

/** Set before the first table is made; a database made without it keeps auto_vacuum off (docs/collector.md). */
// 64 MiB of page cache: the unique index on random event ids is written all over; the default 2 MiB thrashes.
const PRAGMAS = ['journal_mode = WAL', 'busy_timeout = 5000', 'cache_size = -65536'];

/** A batch's row as this store writes it: keyed by codec.ts's encodeId (the id's 16 UUID bytes or its text). */
type SqliteRow = EventRowV2<Buffer>;

const SQLITE_ROW_KEYS: aggregate.RowKeys<Buffer> = { key: encodeId };

/** Events deleted per retention transaction: ingest waits at most one such transaction. */
export const RETENTION_BATCH = 2000;

/** Embedded store: one SQLite file (WAL, so readers do not wait for the writer). Layout: docs/collector.md. */
export class SqliteStore implements EventStore {
  private readonly db: Database.Database;
  private readonly strings: Dictionary;
  private readonly writeBatch: (rows: SqliteRow[]) => number;
  private readonly recomputeJobs: (jobIds: readonly number[]) => void;
  private readonly path: string;

  constructor(path: string) {
    this.path = path;
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    const fresh = (this.db.prepare(`SELECT COUNT(*) AS n FROM sqlite_master`).get() as { n: number }).n === 0;
    if (fresh) this.db.pragma('auto_vacuum = INCREMENTAL');
    for (const p of PRAGMAS) this.db.pragma(p);
    this.db.exec(SCHEMA_TABLES.sqlite);
    const db = this.db;
    this.strings = new Dictionary();

    const insert = db.prepare(
      `INSERT INTO eg_events (key, event, time, job_id, host_id, port, decision, bytes_in, bytes_out, body)
       VALUES (@key, @event, @time, @jobId, @hostId, @port, @decision, @bytesIn, @bytesOut, @body) ON CONFLICT (key, event) DO NOTHING`,
    );
    const storedDecision = db.prepare(`SELECT job_id AS jobId, host_id AS hostId, port, decision FROM eg_events WHERE key = ? AND event = ${DECISION}`);
    const linkClose = db.prepare(`UPDATE eg_events SET job_id = ? WHERE key = ? AND event = ${CLOSE} AND job_id IS NULL RETURNING bytes_in AS bytesIn, bytes_out AS bytesOut`);
    const upsertJob = db.prepare(jobRowSql('sqlite'));
    const upsertDestination = db.prepare(destinationRowSql('sqlite'));
    this.writeBatch = db.transaction((rows: SqliteRow[]) => {
      const stored = new Map<string, StoredDecision>();
      for (const r of rows) {
        if (r.event !== CLOSE || r.jobId !== null) continue;
        const d = storedDecision.get(r.key) as StoredDecision | undefined;
        if (d) stored.set(r.id, d);
      }
      aggregate.linkStoredDecisions(rows, stored);
      const inserted = new Set<SqliteRow>();
      for (const r of rows) if (insert.run(r).changes > 0) inserted.add(r);
      const newDecisions = rows.filter((r) => r.event === DECISION && inserted.has(r));
      const links: Link[] = aggregate.insertLinks(rows, inserted, stored);
      for (const r of newDecisions) {
        const close = linkClose.get(r.jobId, r.key) as { bytesIn: number; bytesOut: number } | undefined;
        if (close) links.push({ decision: aggregate.decisionOf(r), ...close });
      }
      const deltas = aggregate.aggregateDeltas(newDecisions, links);
      for (const j of deltas.jobs) upsertJob.run(j);
      for (const d of deltas.destinations) upsertDestination.run(d);
      return inserted.size;
    });

    const recompute = RECOMPUTE_SQL.sqlite.job.map((sql) => db.prepare(sql));
    this.recomputeJobs = (jobIds) => {
      for (const jobId of jobIds) for (const statement of recompute) statement.run({ job: jobId });
    };
    this.migrateOldTable();
    this.reverseNewStrings();
  }

  /** The dictionary strings not yet in eg_strings_reversed (a database made before it, or written by an older version). */
  private reverseNewStrings(): void {
    const read = this.db.prepare('SELECT id, text FROM eg_strings WHERE id > ? ORDER BY id LIMIT 5000');
    const insert = this.db.prepare('INSERT INTO eg_strings_reversed (id, reversed) VALUES (?, ?) ON CONFLICT (id) DO NOTHING');
    const highest = this.db.prepare('SELECT COALESCE(MAX(id), 0) AS id FROM eg_strings_reversed').get() as { id: number };
    for (let after = highest.id; ;) {
      const rows = read.all(after) as Array<{ id: number; text: string }>;
      if (rows.length === 0) break;
      this.db.transaction(() => {
        for (const r of rows) insert.run(r.id, reversed(r.text));
      })();
      after = rows.at(-1)!.id;
    }
  }

  /** A database from before the compact layout: its events go through insert (so into the aggregates), then its table goes. */
  private migrateOldTable(): void {
    if (!this.db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?`).get(OLD_TABLE)) return;
    const read = this.db.prepare(`SELECT seq, body FROM ${OLD_TABLE} WHERE seq > ? ORDER BY seq LIMIT 5000`);
    for (let after = 0; ;) {
      const rows = read.all(after) as Array<{ seq: number; body: string }>;
      if (rows.length === 0) break;
      this.insertSync(rows.map((r) => JSON.parse(r.body) as EgressEvent));
      after = rows.at(-1)!.seq;
    }
    this.db.exec(`DROP TABLE ${OLD_TABLE}`);
    // The one moment a full VACUUM is affordable: the old layout took far more room, and it turns auto_vacuum on.
    if (this.path !== ':memory:') this.db.exec('PRAGMA auto_vacuum = INCREMENTAL; VACUUM');
  }

  private insertSync(events: readonly EgressEvent[]): number {
    const texts = aggregate.batchStrings(events);
    const unknown = this.strings.unknownTexts(texts);
    const fresh = new Map<string, number>();
    if (unknown.length > 0) {
      const insert = this.db.prepare('INSERT INTO eg_strings (text) VALUES (?) ON CONFLICT (text) DO NOTHING');
      const select = this.db.prepare('SELECT id FROM eg_strings WHERE text = ?');
      const insertReversed = this.db.prepare('INSERT INTO eg_strings_reversed (id, reversed) VALUES (?, ?) ON CONFLICT (id) DO NOTHING');
      this.db.transaction(() => {
        for (const t of unknown) {
          insert.run(t);
          fresh.set(t, (select.get(t) as { id: number }).id);
          insertReversed.run(fresh.get(t)!, reversed(t));
          this.strings.remember(fresh.get(t)!, t);
        }
      })();
    }
    return this.writeBatch(aggregate.toRows(events, this.strings.idMap(texts, fresh), SQLITE_ROW_KEYS));
  }

  /** A string's id, without adding it (undefined: no event ever named it). */
  private find(text: string): number | undefined {
    const known = this.strings.id(text);
    if (known !== undefined) return known;
    const row = this.db.prepare('SELECT id FROM eg_strings WHERE text = ?').get(text) as { id: number } | undefined;
    if (row) this.strings.remember(row.id, text);
    return row?.id;
  }

  private texts(ids: readonly number[]): (id: number) => string | undefined {
    const unknown = this.strings.unknownIds(ids);
    const fresh = new Map<number, string>();
    if (unknown.length > 0) {
      const rows = this.db.prepare('SELECT id, text FROM eg_strings WHERE id IN (SELECT value FROM json_each(?))').all(JSON.stringify(unknown)) as Array<{
        id: number;
        text: string;
      }>;
      for (const r of rows) {
        fresh.set(r.id, r.text);
        this.strings.remember(r.id, r.text);
      }
    }
    const map = this.strings.textMap(ids, fresh);
    return (id) => map.get(id);
  }

  async insert(events: readonly EgressEvent[]): Promise<InsertResult> {
    const stored = this.insertSync(events);
    return { stored, duplicates: events.length - stored };
  }

  async jobs(query: JobQuery = {}): Promise<JobPage> {
    const where: string[] = [];
    const params: Record<string, number> = {};
    if (query.repository !== undefined) {
      const repo = this.find(query.repository);
      if (repo === undefined) return { jobs: [], next: null };
      where.push('repo_id = @repo');
      params.repo = repo;
    }
    const after = query.cursor ? decodeCursor(query.cursor) : undefined;
    if (after) {
      where.push('(last, job_id) < (@last, @job)');
      Object.assign(params, { last: after.last, job: after.jobId });
    }
    const rows = this.db
      .prepare(`${JOB_SELECT} ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY last DESC, job_id DESC LIMIT @limit OFFSET @offset`)
      .all({ ...params, limit: rowsToRead(query) ?? -1, offset: after ? 0 : (query.offset ?? 0) }) as JobRow[];
    return jobPage(rows, query, this.texts(rows.flatMap((r) => (r.repoId === null ? [r.jobId] : [r.jobId, r.repoId]))));
  }

  async jobEvents(job: string, limit: number, signal?: AbortSignal): Promise<EgressEvent[]> {
    const unpacker = jobUnpacker('sqlite', job, limit);
    await this.jobRows(job, limit, (page) => unpacker.add(page), signal);
    return unpacker.finish();
  }

  async jobRows(job: string, limit: number, onPage: (page: JobRowsPage) => void, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const jobId = this.find(job);
    if (jobId === undefined) return;
    // A close has a job only while its decision is stored (aggregate.ts), so this is a job's decisions and their closes.
    // Hosts by id from the dictionary (a job names a few hundred at most), not joined per row; rows as arrays, the key
    // as hex text: the fewest objects per row. Read a page of rows per event-loop turn, each after the last row of the
    // one before (time, then seq: unique), so that a large job does not hold the collector's loop (in-turns.ts); rows
    // stored between two pages are in the view when they come later (job-rows.ts: the closes such a read may hold
    // without their decision are left out).
    const page = this.db
      .prepare(
        `SELECT lower(hex(key)), time, body, bytes_in, bytes_out, host_id, seq FROM eg_events
         WHERE job_id = @job AND time >= @time AND (time > @time OR seq > @seq) ORDER BY time, seq LIMIT @rows`,
      )
      .raw();
    type Row = [key: string, time: number, body: Buffer, bytesIn: number | null, bytesOut: number | null, hostId: number, seq: number];
    let after = { time: Number.MIN_SAFE_INTEGER, seq: -1 };
    for (let turn = 0, read = 0; read < limit; turn++) {
      if (turn > 0) {
        await nextTurn();
        signal?.throwIfAborted();
      }
      const asked = Math.min(ROWS_PER_TURN, limit - read);
      const rows = page.all({ job: jobId, time: after.time, seq: after.seq, rows: asked }) as Row[];
      if (rows.length === 0) break;
      const host = this.texts([...new Set(rows.map((r) => r[5]))]);
      const packed = new JobRowsPageBuilder('sqlite');
      // The row's event is in its body; the unpacker reads it from there.
      for (const [key, time, body, bytesIn, bytesOut, hostId] of rows) packed.add(key, -1, time, host(hostId)!, bytesIn, bytesOut, body);
      onPage(packed.page());
      read += rows.length;
      const last = rows.at(-1)!;
      after = { time: last[1], seq: last[6] };
      // A page shorter than asked is the job's last: no turn and query more for an empty one (a job of up to
      // ROWS_PER_TURN rows is read in one query, in the caller's turn).
      if (rows.length < asked) break;
    }
  }

  async searchJobs(filter: SightingFilter, page: SearchQuery): Promise<SearchPage> {
    const lookup = async (likes: readonly string[]) => {
      const sql = stringLookupSql('sqlite', likes, () => '?');
      return this.db.prepare(`SELECT id, text FROM eg_strings WHERE ${sql.where}`).all(...sql.params) as aggregate.SearchHost[];
    };
    return aggregate.searchJobs(filter, page, lookup, (hosts, window, decision) => {
      const params = { hosts: JSON.stringify(hosts.map((h) => h.id)), since: finite(window.since), until: finite(window.until) };
      const sql = searchSql({
        hosts: 'host_id IN (SELECT value FROM json_each(@hosts))',
        since: '@since',
        until: '@until',
        ...(decision !== undefined && { decision: String(decision) }),
        jobs: 'job_id IN (SELECT value FROM json_each(@jobs))',
      });
      const scan = searchScanSqlite(
        hosts.map((h) => h.id),
        decision,
      );
      const scanStatement = this.db.prepare(scan.text);
      const recount = this.db.prepare(RECOMPUTE_SQL.sqlite.windowCount);
      const ofJobs = (jobIds: readonly number[]) => ({ ...params, jobs: JSON.stringify(jobIds) });
      type Seen = { jobId: number; last: number };
      return {
        scan: async (at, rows) => {
          const where = { since: params.since, until: params.until, at: at.last, job: at.jobId, rows };
          if (!scan.perHost) return scanStatement.all(where) as Seen[];
          // Many hosts: each host's rows in order, merged here (in-process: a query per host costs little).
          return hosts
            .flatMap((h) => scanStatement.all({ ...where, host: h.id }) as Seen[])
            .sort((a, b) => b.last - a.last || b.jobId - a.jobId)
            .slice(0, rows);
        },
        count: async () => (this.db.prepare(sql.count).get(params) as { total: number }).total,
        lasts: async (jobIds) => this.db.prepare(sql.lasts).all(ofJobs(jobIds)) as Array<{ jobId: number; last: number }>,
        rows: async (jobIds) => this.db.prepare(sql.rows).all(ofJobs(jobIds)) as DestinationRow[],
        edges: async () => this.db.prepare(sql.edges).all(params) as DestinationRow[],
        recount: async (row) => ({
          ...row,
          ...(recount.get({ ...row, since: params.since, until: params.until }) as { count: number; bytesOut: number; first: number; last: number }),
        }),
        jobText: async (jobIds) => this.texts(jobIds),
      };
    });
  }

  /**
   * Deletes through the (job_id, time) index, job by job (the jobs whose first decision is older than the cutoff, then
   * the closes that never met their decision: job_id null), so no index on time alone is kept (~17 bytes/event). A
   * close linked to a job is deleted with that job's old events: one timestamped before every decision of its job
   * (no proxy makes those) is kept until its job goes.
   */
  async retain(cutoff: Date): Promise<RetentionResult> {
    const before = cutoff.getTime();
    const jobs = (this.db.prepare('SELECT job_id AS jobId FROM eg_jobs WHERE first < ? ORDER BY job_id').all(before) as Array<{ jobId: number }>).map((r) => r.jobId);
    const ofJob = this.db.prepare(`SELECT seq FROM eg_events WHERE job_id = ? AND time < ? LIMIT ${RETENTION_BATCH}`);
    const unlinked = this.db.prepare(`SELECT seq FROM eg_events WHERE job_id IS NULL AND time < ? LIMIT ${RETENTION_BATCH}`);
    const remove = this.db.prepare(`DELETE FROM eg_events WHERE seq IN (SELECT value FROM json_each(?))`);
    const step = this.db.transaction((job: number | null) => {
      const rows = (job === null ? unlinked.all(before) : ofJob.all(job, before)) as Array<{ seq: number }>;
      remove.run(JSON.stringify(rows.map((r) => r.seq)));
      if (job !== null) this.recomputeJobs([job]);
      return rows.length;
    });
    let deleted = 0;
    for (const job of [null, ...jobs]) {
      for (;;) {
        const n = step(job);
        deleted += n;
        // Give the pages back to the file a little at a time, and let requests in between.
        this.db.pragma('incremental_vacuum(2000)');
        await new Promise((resolve) => setImmediate(resolve));
        if (n < RETENTION_BATCH) break;
      }
    }
    return { deleted, jobs: jobs.length };
  }

  async count(): Promise<number> {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM eg_events').get() as { n: number }).n;
  }

  async storageBytes(): Promise<number> {
    if (this.path === ':memory:') return (this.db.pragma('page_count', { simple: true }) as number) * (this.db.pragma('page_size', { simple: true }) as number);
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    return statSync(this.path).size;
  }

  /** Whether the file gives freed pages back (auto_vacuum = INCREMENTAL). */
  incrementalVacuum(): boolean {
    return this.db.pragma('auto_vacuum', { simple: true }) === 2;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
