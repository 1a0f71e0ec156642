import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { pgKeyOfId } from '../collector/stores/pg-key.js';
import { JOIN_CLOSES_SQL } from '../collector/stores/pg-closes.js';
import { PostgresStore } from '../collector/stores/postgres-store.js';
import { startPostgresCluster } from '../test/helpers/postgres-cluster.js';
import { testDecision } from '../test/helpers/aggregate-model.js';

/**
 * Joining closes into their stored decisions' rows, this build's eg_join_closes against the tenth round's (merged
 * 477eaf5: the same UPDATE with hash and merge joins off, installed beside it as eg_join_closes_merged), in one
 * database: `node dist/bench/join-closes-ab.js ROWS KEYS ROUNDS`. ROWS decisions of one day (1 s apart) stored and
 * analyzed; each round KEYS random ones (once each) joined by both functions, in alternating order, each in a
 * transaction rolled back; the client's wall time of the call, median and least of the rounds after the first two.
 * docs/collector.md, "Review of the tenth round".
 */

const MERGED_JOIN_SQL = `CREATE FUNCTION eg_join_closes_merged(decision_keys uuid[], times bigint[], bodies bytea[], closes_in bigint[], closes_out bigint[], first_time bigint, last_time bigint)
  RETURNS TABLE (joined_key uuid) LANGUAGE plpgsql VOLATILE
  SET enable_seqscan = off SET enable_bitmapscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET plan_cache_mode = force_generic_plan AS $$
BEGIN
  RETURN QUERY WITH joined AS (UPDATE eg_events d SET close_body = x.body, bytes_in = x.bytes_in, bytes_out = x.bytes_out
      FROM unnest(decision_keys, times, bodies, closes_in, closes_out) AS x(key, time, body, bytes_in, bytes_out)
      WHERE d.key = x.key AND d.time = x.time AND d.event = 0 AND d.close_body IS NULL AND d.time >= first_time AND d.time <= last_time
      RETURNING d.key)
    SELECT joined.key FROM joined;
END $$`;

const [ROWS = 20_000, KEYS = 500, ROUNDS = 20] = process.argv.slice(2).map(Number);
const cluster = await startPostgresCluster();
const store = await PostgresStore.open(cluster.url);
const client = new pg.Client({ connectionString: cluster.url });
await client.connect();
try {
  const start = Date.UTC(2026, 10, 20, 1);
  const decisions = Array.from({ length: ROWS }, (_, i) => testDecision(randomUUID(), start + i * 1000, `h${i % 50}.bench.test`, { job_id: `j${i % 20}`, repository: 'o/r' }));
  for (let i = 0; i < decisions.length; i += 5000) await store.insert(decisions.slice(i, i + 5000));
  await client.query('ANALYZE eg_events');
  await client.query(MERGED_JOIN_SQL);
  const variants = { review: JOIN_CLOSES_SQL, merged: JOIN_CLOSES_SQL.replace('eg_join_closes(', 'eg_join_closes_merged(') };
  const times: Record<keyof typeof variants, number[]> = { review: [], merged: [] };
  for (let round = 0; round < ROUNDS; round++) {
    const picked = [...new Set(Array.from({ length: KEYS }, () => decisions[Math.floor(Math.random() * decisions.length)]!))];
    const keys = picked.map((d) => pgKeyOfId(d.id, 0));
    const at = picked.map((d) => Date.parse(d.time));
    const values = [keys, at, keys.map(() => Buffer.alloc(40, 1)), keys.map(() => 5), keys.map(() => 6), Math.min(...at), Math.max(...at)];
    const order: Array<keyof typeof variants> = round % 2 ? ['review', 'merged'] : ['merged', 'review'];
    for (const name of order) {
      await client.query('BEGIN');
      const t = process.hrtime.bigint();
      const res = await client.query({ name, text: variants[name], values });
      const ms = Number(process.hrtime.bigint() - t) / 1e6;
      await client.query('ROLLBACK');
      if (res.rows.length !== keys.length) throw new Error(`${name} joined ${res.rows.length} of ${keys.length}`);
      if (round >= 2) times[name].push(ms);
    }
  }
  const summary = (a: number[]) => {
    const sorted = [...a].sort((x, y) => x - y);
    return { medianMs: sorted[sorted.length >> 1], leastMs: sorted[0] };
  };
  console.log(JSON.stringify({ rows: ROWS, keys: KEYS, rounds: ROUNDS, review: summary(times.review), merged: summary(times.merged) }));
} finally {
  await client.end();
  await store.close();
  cluster.stop();
}
