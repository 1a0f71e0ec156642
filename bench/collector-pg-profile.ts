import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import type { EgressEvent } from '../events/schema.js';
import type { EventStore } from '../collector/stores/event-store.js';
import { startPostgresCluster, type PostgresCluster } from '../test/helpers/postgres-cluster.js';
import { jobEvents } from './collector-events.js';
import { clusterCpuMicros, parentPid } from './procfs.js';
import { round } from './stats.js';

/**
 * Where a PostgreSQL batch's cost goes (issue 16), in-process: `node dist/bench/collector-pg-profile.js [STORE_MODULE...]`.
 * Each STORE_MODULE is a built `collector/stores/postgres-store.js` (default: this build's), so that two builds can be
 * compared in one run: rounds alternate between them (A, B, A, B, ...), each into a fresh database of one throwaway
 * cluster. Per round: BENCH_PROFILE_EVENTS events (default 100,000) through `store.insert` in batches of 500 (the
 * HTTP batch size), one batch at a time; measured per event: the collector's CPU (process.cpuUsage), PostgreSQL's CPU
 * (all the cluster's processes, from /proc), WAL bytes, statements sent per batch, and at the end the bytes on disk
 * per relation kind (tables, each index, TOAST; partitions summed). BENCH_PROFILE_ROUNDS rounds per module (3).
 * Run the collector with --cpu-prof for the JavaScript side; this gives the split between the two processes.
 * BENCH_PROFILE_WARM: batches stored before a round is measured (default 4; a fresh process runs its first ~100,000
 * events partly unoptimised). Under valgrind --tool=callgrind with BENCH_PROFILE_CALLGRIND=1 (one module, one round),
 * the counters are zeroed before the measured batches and dumped after them, and Math.random is a seeded generator, so
 * that two builds' runs store the same mix of events (their ids still differ, in shape alike).
 */

const EVENTS = Number(process.env.BENCH_PROFILE_EVENTS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_PROFILE_ROUNDS ?? 3);
const BATCH = 500;
const WARM = Number(process.env.BENCH_PROFILE_WARM ?? 4);
const CALLGRIND = process.env.BENCH_PROFILE_CALLGRIND === '1';

if (CALLGRIND) {
  // mulberry32: the bench events' hosts, kinds and bytes (bench/collector-events.ts) the same in every run.
  let seed = 0x6567_7264;
  Math.random = () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** Statements sent through any pg client of this process. */
let statements = 0;
const query = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  statements++;
  return (query as (...a: unknown[]) => unknown).apply(this, args);
} as typeof pg.Client.prototype.query;

/** The warm-up's batches, then EVENTS events' (batches of BATCH). */
function makeEvents(tag: string, warm: number): EgressEvent[][] {
  const events: EgressEvent[] = [];
  for (let j = 0; events.length < EVENTS + warm * BATCH; j++)
    events.push(...jobEvents(`${tag}-${j}`, Math.min(1000, EVENTS + warm * BATCH - events.length), Date.now() - 3_600_000, 300));
  const batches: EgressEvent[][] = [];
  for (let i = 0; i < events.length; i += BATCH) batches.push(events.slice(i, i + BATCH));
  return batches;
}

/** Bytes on disk per relation: day partitions and their indexes summed under one name (eg_events_p20261129_x -> eg_events_x). */
async function relationSizes(admin: pg.Client): Promise<Record<string, number>> {
  const res = await admin.query(`
    SELECT c.relname, c.relkind, pg_relation_size(c.oid) AS main, COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0) AS toast
    FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'eg\\_%' AND c.relkind IN ('r', 'i')`);
  const out: Record<string, number> = {};
  const add = (name: string, n: number) => {
    if (n > 0) out[name] = (out[name] ?? 0) + n;
  };
  for (const r of res.rows as Array<{ relname: string; relkind: string; main: string; toast: string }>) {
    const name = `${r.relkind === 'i' ? 'index' : 'table'} ${r.relname.replace(/^eg_events_[pd]\d+/, 'eg_events')}`;
    add(name, Number(r.main));
    add(`${name} (TOAST)`, Number(r.toast));
  }
  return out;
}

interface RoundResult {
  module: string;
  collectorMicrosPerEvent: number;
  /** Of which in the kernel (system time: mostly the socket writes to PostgreSQL on loopback). */
  collectorSystemMicrosPerEvent: number;
  postgresMicrosPerEvent: number;
  walBytesPerEvent: number;
  statementsPerBatch: number;
  eventsPerSecondOneAtATime: number;
  bytesPerEvent: number;
  sizes: Record<string, number>;
}

async function runRound(cluster: PostgresCluster, modulePath: string, db: string, postmaster: number): Promise<RoundResult> {
  const admin = new pg.Client({ connectionString: cluster.url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${db}`);
  await admin.end();
  const url = cluster.url.replace(/\/egress$/, `/${db}`);
  const { PostgresStore } = (await import(pathToFileURL(modulePath).href)) as { PostgresStore: { open(url: string): Promise<EventStore> } };
  const store = await PostgresStore.open(url);
  const batches = makeEvents(db, WARM);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    // Warm: the first batches fill the dictionary cache, make the partitions and let V8 optimise the hot code.
    for (const b of batches.slice(0, WARM)) await store.insert(b);
    const measured = batches.slice(WARM);
    const events = measured.reduce((n, b) => n + b.length, 0);
    const wal0 = (await client.query('SELECT pg_current_wal_lsn() AS l')).rows[0].l as string;
    const pg0 = clusterCpuMicros(postmaster);
    const cpu0 = process.cpuUsage();
    const st0 = statements;
    const t0 = performance.now();
    if (CALLGRIND) execFileSync('callgrind_control', ['-z', String(process.pid)]);
    for (const b of measured) await store.insert(b);
    if (CALLGRIND) execFileSync('callgrind_control', ['-d', String(process.pid)]);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const st = statements - st0;
    const pgMicros = clusterCpuMicros(postmaster) - pg0;
    const wal = Number((await client.query('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1) AS d', [wal0])).rows[0].d);
    await client.query('VACUUM ANALYZE');
    const sizes = await relationSizes(client);
    const total = Object.values(sizes).reduce((a, b) => a + b, 0);
    const count = await store.count();
    if (count !== EVENTS + WARM * BATCH) throw new Error(`${modulePath}: ${count} events stored of ${EVENTS + WARM * BATCH}`);
    return {
      module: modulePath,
      collectorMicrosPerEvent: round((cpu.user + cpu.system) / events, 1),
      collectorSystemMicrosPerEvent: round(cpu.system / events, 1),
      postgresMicrosPerEvent: round(pgMicros / events, 1),
      walBytesPerEvent: round(wal / events, 0),
      statementsPerBatch: round(st / measured.length, 2),
      eventsPerSecondOneAtATime: Math.round(events / seconds),
      bytesPerEvent: round(total / count, 1),
      sizes: Object.fromEntries(Object.entries(sizes).map(([k, v]) => [k, round(v / count, 1)])),
    };
  } finally {
    await client.end();
    await store.close();
  }
}

async function main(): Promise<void> {
  const modules = process.argv.slice(2).map((p) => resolve(p));
  if (modules.length === 0) modules.push(new URL('../collector/stores/postgres-store.js', import.meta.url).pathname);
  const cluster = await startPostgresCluster();
  try {
    const admin = new pg.Client({ connectionString: cluster.url });
    await admin.connect();
    const postmaster = Number((await admin.query(`SELECT pg_backend_pid() AS p`)).rows[0].p);
    const parent = parentPid(postmaster);
    await admin.end();
    const results: RoundResult[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      for (const [i, m] of modules.entries()) {
        const result = await runRound(cluster, m, `profile_${r}_${i}`, parent);
        results.push(result);
        process.stdout.write(`${JSON.stringify(result)}\n`);
      }
    }
  } finally {
    cluster.stop();
  }
}

await main();
