import pg from 'pg';
import { PostgresStore } from '../collector/stores/postgres-store.js';
import { startPostgresCluster } from '../test/helpers/postgres-cluster.js';
import { addDayPartitions, toEarlierJobIndexLayout } from '../test/helpers/postgres-earlier-layout.js';

/**
 * The time to open a database of the layout before eg_events_job_linked and eg_events_unlinked (the job index (job_id)
 * with its nulls) with many day partitions: `node dist/bench/collector-pg-open-partitions.js PARTITIONS [SETTINGS]`,
 * SETTINGS a JSON object of server settings (default none: the test cluster's 50 connections, PostgreSQL's defaults
 * otherwise). A fresh cluster; the store's schema made, turned into that layout, PARTITIONS empty day partitions from
 * 2010-01-01 added (20 a transaction); then the store opened (the client's wall time), and opened again. Prints the
 * times, or the error, and what became of the old index. docs/collector.md, "Opening a database of thousands of day
 * partitions".
 */

const partitions = Number(process.argv[2] ?? 4000);
const settings = JSON.parse(process.argv[3] ?? '{}') as Record<string, string | number>;
const cluster = await startPostgresCluster(settings);
const client = new pg.Client({ connectionString: cluster.url });
try {
  await (await PostgresStore.open(cluster.url)).close();
  await client.connect();
  await toEarlierJobIndexLayout(client);
  await addDayPartitions(client, Date.UTC(2010, 0, 1), partitions);
  for (const open of ['first open', 'second open']) {
    const started = performance.now();
    try {
      const store = await PostgresStore.open(cluster.url);
      console.log(`${partitions} partitions, ${open}: ${((performance.now() - started) / 1000).toFixed(2)} s`);
      await store.close();
    } catch (err) {
      console.log(`${partitions} partitions, ${open}: failed after ${((performance.now() - started) / 1000).toFixed(2)} s: ${(err as Error).message}`);
      break;
    }
  }
  const indexes = await client.query(`SELECT c.relname, x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = 'eg_events'::regclass ORDER BY 1`);
  console.log(`indexes of eg_events: ${indexes.rows.map((r) => `${r.relname}${r.indisvalid ? '' : ' (not valid)'}`).join(', ')}`);
} finally {
  await client.end().catch(() => undefined);
  cluster.stop();
}
