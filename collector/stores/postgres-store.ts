import pg from 'pg';
import type { EgressEvent } from '../../events/schema.js';
import type { DecisionCounts } from '../../report/host-sightings.js';
import { toRow, type EventStore, type HostSighting, type InsertResult, type JobInfo, type SightingFilter } from './event-store.js';

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
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'egress_events' AND column_name = 'host') THEN
    ALTER TABLE egress_events ADD COLUMN host TEXT;
    UPDATE egress_events SET host = body::json->>'host' WHERE event = 'decision';
  END IF;
END $$;
CREATE INDEX IF NOT EXISTS egress_events_host ON egress_events (host, time);
`;

/** PostgreSQL answers counts as text (bigint): the numbers of a grouped row. */
function countsOf(r: { first: string; last: string; decisions: string; allowed: string; blocked: string; would_block: string }): DecisionCounts {
  return { first: r.first, last: r.last, decisions: Number(r.decisions), allowed: Number(r.allowed), blocked: Number(r.blocked), wouldBlock: Number(r.would_block) };
}

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
            `INSERT INTO egress_events (id, event, job, host, time, decision, body)
             SELECT id, event, job, host, time, decision, body
             FROM jsonb_to_recordset($1::jsonb) AS x(id text, event text, job text, host text, time text, decision text, body text)
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
    return res.rows.map((r) => ({ job: r.job, ...countsOf(r) }));
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

  async sightings(filter: SightingFilter): Promise<HostSighting[]> {
    if (filter.likes.length === 0) return [];
    const params: string[] = [...filter.likes];
    const where = [`d.event = 'decision'`, `(${filter.likes.map((_, i) => `d.host LIKE $${i + 1} ESCAPE '\\'`).join(' OR ')})`];
    for (const [column, op, value] of [
      ['time', '>=', filter.since],
      ['time', '<=', filter.until],
      ['decision', '=', filter.decision],
    ] as const) {
      if (value === undefined) continue;
      params.push(value);
      where.push(`d.${column} ${op} $${params.length}`);
    }
    const res = await this.pool.query(
      `SELECT d.job, d.host, MIN(d.time) AS first, MAX(d.time) AS last, COUNT(*) AS decisions,
         COUNT(*) FILTER (WHERE d.decision = 'allowed') AS allowed, COUNT(*) FILTER (WHERE d.decision = 'blocked') AS blocked,
         COUNT(*) FILTER (WHERE d.decision = 'would-block') AS would_block,
         COALESCE(SUM((c.body::json->>'bytes_out')::bigint), 0) AS bytes_out
       FROM egress_events d LEFT JOIN egress_events c ON c.id = d.id AND c.event = 'close'
       WHERE ${where.join(' AND ')} GROUP BY d.job, d.host`,
      params,
    );
    return res.rows.map((r) => ({ job: r.job, host: r.host, ...countsOf(r), bytesOut: Number(r.bytes_out) }));
  }

  async count(): Promise<number> {
    const res = await this.pool.query('SELECT COUNT(*) AS n FROM egress_events');
    return Number(res.rows[0].n);
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
