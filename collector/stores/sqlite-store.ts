import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { EgressEvent } from '../../events/schema.js';
import { toRow, type EventRow, type EventStore, type InsertResult, type JobInfo } from './event-store.js';

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
  UNIQUE (id, event)
);
CREATE INDEX IF NOT EXISTS egress_events_job ON egress_events (job, time);
`;

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
    const insert = this.db.prepare(
      `INSERT INTO egress_events (id, event, job, time, decision, body, received_at)
       VALUES (@id, @event, @job, @time, @decision, @body, @received_at) ON CONFLICT (id, event) DO NOTHING`,
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

  async count(): Promise<number> {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM egress_events').get() as { n: number }).n;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
