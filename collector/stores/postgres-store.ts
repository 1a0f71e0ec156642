import pg from 'pg';
import type { EgressEvent } from '../../events/schema.js';
import { toRow, type EventStore, type InsertResult, type JobInfo } from './event-store.js';

const SCHEMA_LOCK = 0x6567_7264; // any constant: serialises CREATE ... IF NOT EXISTS across collectors

const SCHEMA = `
CREATE TABLE IF NOT EXISTS egress_events (
  seq BIGSERIAL PRIMARY KEY,
  id TEXT NOT NULL,
  event TEXT NOT NULL,
  job TEXT,
  time TEXT NOT NULL,
  decision TEXT,
  body TEXT NOT NULL,
  received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (id, event)
);
CREATE INDEX IF NOT EXISTS egress_events_job ON egress_events (job, time);
`;

/** PostgreSQL store for fleets: several collectors may write to one database at once. */
export class PostgresStore implements EventStore {
  private constructor(private readonly pool: pg.Pool) {}

  static async open(url: string): Promise<PostgresStore> {
    const pool = new pg.Pool({ connectionString: url, max: 8 });
    pool.on('error', () => {
      // An idle client lost its connection; the pool replaces it on next use.
    });
    const store = new PostgresStore(pool);
    try {
      await store.transaction(async (client) => {
        await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK]);
        await client.query(SCHEMA);
      });
    } catch (err) {
      await pool.end();
      throw err;
    }
    return store;
  }

  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async insert(events: readonly EgressEvent[]): Promise<InsertResult> {
    // One statement per batch; rows in key order so concurrent batches lock keys in the same order.
    const rows = events.map(toRow);
    for (let attempt = 1; ; attempt++) {
      try {
        const stored = await this.transaction(async (client) => {
          const res = await client.query(
            `INSERT INTO egress_events (id, event, job, time, decision, body)
             SELECT id, event, job, time, decision, body
             FROM jsonb_to_recordset($1::jsonb) AS x(id text, event text, job text, time text, decision text, body text)
             ORDER BY id, event
             ON CONFLICT (id, event) DO NOTHING`,
            [JSON.stringify(rows)],
          );
          return res.rowCount ?? 0;
        });
        return { stored, duplicates: events.length - stored };
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt < 3 && (code === '40P01' || code === '40001')) continue; // deadlock / serialization: retry
        throw err;
      }
    }
  }

  async jobs(): Promise<JobInfo[]> {
    const res = await this.pool.query(
      `SELECT job, MIN(time) AS first, MAX(time) AS last, COUNT(*) AS decisions,
         COUNT(*) FILTER (WHERE decision = 'allowed') AS allowed, COUNT(*) FILTER (WHERE decision = 'blocked') AS blocked,
         COUNT(*) FILTER (WHERE decision = 'would-block') AS would_block
       FROM egress_events WHERE event = 'decision' GROUP BY job ORDER BY last DESC, job`,
    );
    return res.rows.map((r) => ({
      job: r.job,
      first: r.first,
      last: r.last,
      decisions: Number(r.decisions),
      allowed: Number(r.allowed),
      blocked: Number(r.blocked),
      wouldBlock: Number(r.would_block),
    }));
  }

  async jobEvents(job: string, limit: number): Promise<EgressEvent[]> {
    const res = await this.pool.query(
      `SELECT body, time, seq FROM egress_events WHERE event = 'decision' AND job = $1
       UNION ALL
       SELECT c.body, c.time, c.seq FROM egress_events c JOIN egress_events d ON d.id = c.id AND d.event = 'decision'
       WHERE c.event = 'close' AND d.job = $1
       ORDER BY time, seq LIMIT $2`,
      [job, limit],
    );
    return res.rows.map((r) => JSON.parse(r.body) as EgressEvent);
  }

  async count(): Promise<number> {
    const res = await this.pool.query('SELECT COUNT(*) AS n FROM egress_events');
    return Number(res.rows[0].n);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
