import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { EgressEvent } from '../../events/schema.js';
import { toRow, type EventRow, type EventStore, type HostSighting, type InsertResult, type JobInfo, type SightingFilter } from './event-store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS egress_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL,
  event TEXT NOT NULL,
  job TEXT,
  time TEXT NOT NULL,
  decision TEXT,
  body TEXT NOT NULL,
  received_at TEXT NOT NULL,
  host TEXT,
  UNIQUE (id, event)
);
CREATE INDEX IF NOT EXISTS egress_events_job ON egress_events (job, time);
`;
/** After the host column exists (a database from before it gets it, filled from the stored bodies). */
const HOST_INDEX = `CREATE INDEX IF NOT EXISTS egress_events_host ON egress_events (host, time);`;

/** Embedded store: one SQLite file (WAL, so readers do not wait for the writer). */
export class SqliteStore implements EventStore {
  private readonly db: Database.Database;
  private readonly insertMany: (rows: EventRow[]) => number;

  constructor(path: string) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    const columns = this.db.prepare('PRAGMA table_info(egress_events)').all() as Array<{ name: string }>;
    if (!columns.some((c) => c.name === 'host')) {
      this.db.exec(`ALTER TABLE egress_events ADD COLUMN host TEXT; UPDATE egress_events SET host = json_extract(body, '$.host') WHERE event = 'decision';`);
    }
    this.db.exec(HOST_INDEX);
    const insert = this.db.prepare(
      `INSERT INTO egress_events (id, event, job, host, time, decision, body, received_at)
       VALUES (@id, @event, @job, @host, @time, @decision, @body, @received_at) ON CONFLICT (id, event) DO NOTHING`,
    );
    this.insertMany = this.db.transaction((rows: EventRow[]) => {
      const receivedAt = new Date().toISOString();
      let stored = 0;
      for (const row of rows) stored += insert.run({ ...row, received_at: receivedAt }).changes;
      return stored;
    });
  }

  async insert(events: readonly EgressEvent[]): Promise<InsertResult> {
    const stored = this.insertMany(events.map(toRow));
    return { stored, duplicates: events.length - stored };
  }

  async jobs(): Promise<JobInfo[]> {
    const rows = this.db
      .prepare(
        `SELECT job, MIN(time) AS first, MAX(time) AS last, COUNT(*) AS decisions,
         SUM(decision = 'allowed') AS allowed, SUM(decision = 'blocked') AS blocked, SUM(decision = 'would-block') AS wouldBlock
       FROM egress_events WHERE event = 'decision' GROUP BY job ORDER BY last DESC, job`,
      )
      .all() as JobInfo[];
    return rows.map((r) => ({ ...r }));
  }

  async jobEvents(job: string, limit: number): Promise<EgressEvent[]> {
    const rows = this.db
      .prepare(
        `SELECT body, time, seq FROM egress_events WHERE event = 'decision' AND job = @job
       UNION ALL
       SELECT c.body, c.time, c.seq FROM egress_events c JOIN egress_events d ON d.id = c.id AND d.event = 'decision'
       WHERE c.event = 'close' AND d.job = @job
       ORDER BY time, seq LIMIT @limit`,
      )
      .all({ job, limit }) as Array<{ body: string }>;
    return rows.map((r) => JSON.parse(r.body) as EgressEvent);
  }

  async sightings(filter: SightingFilter): Promise<HostSighting[]> {
    const params: Record<string, string> = {};
    const likes = filter.likes.map((pattern, i) => {
      params[`like${i}`] = pattern;
      return `d.host LIKE @like${i} ESCAPE '\\'`;
    });
    if (likes.length === 0) return [];
    const where = [`d.event = 'decision'`, `(${likes.join(' OR ')})`];
    if (filter.since) (where.push('d.time >= @since'), (params.since = filter.since));
    if (filter.until) (where.push('d.time <= @until'), (params.until = filter.until));
    if (filter.decision) (where.push('d.decision = @decision'), (params.decision = filter.decision));
    return this.db
      .prepare(
        `SELECT d.job AS job, d.host AS host, MIN(d.time) AS first, MAX(d.time) AS last, COUNT(*) AS decisions,
           SUM(d.decision = 'allowed') AS allowed, SUM(d.decision = 'blocked') AS blocked, SUM(d.decision = 'would-block') AS wouldBlock,
           COALESCE(SUM(json_extract(c.body, '$.bytes_out')), 0) AS bytesOut
         FROM egress_events d LEFT JOIN egress_events c ON c.id = d.id AND c.event = 'close'
         WHERE ${where.join(' AND ')} GROUP BY d.job, d.host`,
      )
      .all(params) as HostSighting[];
  }

  async count(): Promise<number> {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM egress_events').get() as { n: number }).n;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
