import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { openStore } from '../collector/stores/open-store.js';
import type { EgressEvent } from '../events/schema.js';
import { postEvents, startCollectorProcess, type CollectorProcess } from '../test/helpers/collector-process.js';
import { startPostgresCluster, type PostgresCluster } from '../test/helpers/postgres-cluster.js';
import { host, jobEvents } from './collector-events.js';
import { clusterCpuMicros, parentPid, processCpuMicros } from './procfs.js';
import { percentile, round } from './stats.js';

/**
 * `npm run bench:collector` (issue 16). Per engine (SQLite, PostgreSQL):
 * 1. builds a history of BENCH_COLLECTOR_EVENTS events in bulk, directly through the store (`store.insert` in batches
 *    of 5,000: the same code path as ingest, aggregates included, without HTTP);
 * 2. measures bytes/event on disk (tables and indexes);
 * 3. starts a real collector process on it and measures p50/p95 over HTTP of the job list, a job's page, its summary,
 *    its suggested policy and the host search (BENCH_COLLECTOR_SAMPLES requests each, one at a time);
 * 4. measures ingest over HTTP: NDJSON batches of 500 from 8 connections, with 1 collector process on SQLite and 1, 2
 *    and 4 processes on one PostgreSQL database (BENCH_COLLECTOR_INGEST events each run), checking that every event
 *    was stored once, and the CPU per event of the collector processes and (its own cluster) of PostgreSQL.
 * Environment: BENCH_COLLECTOR_EVENTS (default 1,000,000), BENCH_COLLECTOR_PG_EVENTS (default the same),
 * BENCH_COLLECTOR_JOBS (2,000), BENCH_COLLECTOR_HOSTS (300), BENCH_COLLECTOR_INGEST (200,000), BENCH_COLLECTOR_SAMPLES
 * (60), BENCH_COLLECTOR_ENGINES ("sqlite,postgres"), BENCH_COLLECTOR_PROCESSES ("1,2,4"; BENCH_COLLECTOR_INGEST=0: no ingest
 * run), BENCH_COLLECTOR_SQLITE_FILE (keep the SQLite history in this file; when it exists it is reused, not rebuilt: a
 * 10-million-event history takes ~16 minutes to build; reuse it with BENCH_COLLECTOR_INGEST=0 so that it stays the
 * same), BENCH_COLLECTOR_PG_URL (a PostgreSQL database to use instead of a throwaway cluster: built when empty, else
 * reused, and kept), BENCH_COLLECTOR_CLI (the egress-guard.js to measure: another build on the same history),
 * BENCH_COLLECTOR_QUERIES (only the queries whose name holds this text), BENCH_COLLECTOR_WARMUP (events per collector process
 * ingested before each ingest run is measured, default 0: the CPU per event of a warm process). Results: stdout and
 * test-artifacts/collector-bench.json. The PostgreSQL server is a throwaway cluster (test/helpers/postgres-cluster.ts,
 * fsync off) on the same machine as the collectors and the load generator.
 */

const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const log = (line: string) => process.stdout.write(`${line}\n`);
const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);

const SETTINGS = {
  events: num('BENCH_COLLECTOR_EVENTS', 1_000_000),
  pgEvents: num('BENCH_COLLECTOR_PG_EVENTS', num('BENCH_COLLECTOR_EVENTS', 1_000_000)),
  jobs: num('BENCH_COLLECTOR_JOBS', 2_000),
  hosts: num('BENCH_COLLECTOR_HOSTS', 300),
  ingest: num('BENCH_COLLECTOR_INGEST', 200_000),
  /**
   * Events each collector process ingests over HTTP before an ingest run is measured (checked stored once each, not
   * counted): a fresh process spends a share of its first 100,000 events' CPU compiling its hot code (V8's optimising
   * compiler, on helper threads), which a long-running collector does not (docs/collector.md, "Eighth round").
   */
  warmup: num('BENCH_COLLECTOR_WARMUP', 0),
  samples: num('BENCH_COLLECTOR_SAMPLES', 60),
  engines: (process.env.BENCH_COLLECTOR_ENGINES ?? 'sqlite,postgres').split(',').map((s) => s.trim()),
  processes: (process.env.BENCH_COLLECTOR_PROCESSES ?? '1,2,4').split(',').map(Number),
  /** PostgreSQL: the built history copied this many times in all, inside the database (replicateHistory). */
  pgCopies: num('BENCH_COLLECTOR_PG_COPIES', 1),
  /** Keep the SQLite history in this file: built once, reused (only measured) when it exists. */
  sqliteFile: process.env.BENCH_COLLECTOR_SQLITE_FILE,
  /** PostgreSQL: this database instead of a throwaway cluster; its history is reused (only measured) when it has one. */
  pgUrl: process.env.BENCH_COLLECTOR_PG_URL,
  /** The egress-guard.js to start as the collector (default: this build's): old and new builds on one history. */
  cli: process.env.BENCH_COLLECTOR_CLI,
  /** Only the queries whose name contains this text (e.g. "search"). */
  queries: process.env.BENCH_COLLECTOR_QUERIES ?? '',
};
const TOKEN = 'bench-token';
const DAY = 86_400_000;
const HISTORY_DAYS = 20;

interface Built {
  events: number;
  jobs: string[];
  seconds: number;
  bytes: number;
}

/** The history, through the store in batches of 5,000 (jobs spread over HISTORY_DAYS, the newest ending now). */
async function buildHistory(db: string, total: number): Promise<Built> {
  const store = await openStore(db);
  const perJob = Math.max(2, Math.round(total / SETTINGS.jobs));
  const jobs: string[] = [];
  const started = Date.now();
  let pending: EgressEvent[] = [];
  let stored = 0;
  try {
    for (let j = 0; stored + pending.length < total; j++) {
      const job = `bench-${String(j).padStart(5, '0')}`;
      jobs.push(job);
      const start = Date.now() - HISTORY_DAYS * DAY + Math.floor((j / SETTINGS.jobs) * HISTORY_DAYS * DAY);
      pending.push(...jobEvents(job, Math.min(perJob, total - stored - pending.length), start, SETTINGS.hosts));
      while (pending.length >= 5000) {
        stored += (await store.insert(pending.slice(0, 5000))).stored;
        pending = pending.slice(5000);
      }
      if (j % 200 === 0) log(`  built ${stored.toLocaleString('en')} events (${Math.round(stored / ((Date.now() - started) / 1000))}/s)`);
    }
    if (pending.length > 0) stored += (await store.insert(pending)).stored;
    const seconds = (Date.now() - started) / 1000;
    return { events: await store.count(), jobs, seconds, bytes: await store.storageBytes() };
  } finally {
    await store.close();
  }
}

/**
 * A larger PostgreSQL history without going through the store: the built history copied `copies - 1` more times by
 * INSERT ... SELECT inside the database, each copy as other jobs (`<job>~c<N>`, other event keys) N minutes later, with
 * its aggregates copied the same way (they are the copied events' aggregates: same rows, other job and times). A
 * bigger fleet over the same 20 days, not a longer history. The built events are copied from a temporary table (not
 * from eg_events, whose scan grows with every copy), and eg_events' indexes are dropped while copying and made
 * again by openStore after (one sort per partition instead of ~200 random index insertions per copied event: at 100
 * million events, ~35 s per copy of 1,000,000 with the indexes kept against ~15 s without, on a loaded machine).
 */
async function replicateHistory(url: string, built: Built, copies: number): Promise<Built> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const started = Date.now();
  try {
    await client.query(`CREATE TEMP TABLE base_jobs AS SELECT job_id FROM eg_jobs`);
    await client.query(`CREATE TEMP TABLE base_events AS SELECT * FROM eg_events WHERE job_id IS NOT NULL`);
    await client.query(`DROP INDEX eg_events_id, eg_events_job_linked, eg_events_unlinked`);
    const jobs = [...built.jobs];
    for (let c = 1; c < copies; c++) {
      const shift = c * 60_000;
      await client.query('BEGIN');
      await client.query(`INSERT INTO eg_strings (text) SELECT s.text || '~c' || $1 FROM base_jobs b JOIN eg_strings s ON s.id = b.job_id ON CONFLICT DO NOTHING`, [c]);
      await client.query(
        `CREATE TEMP TABLE job_map ON COMMIT DROP AS SELECT b.job_id AS old, n.id AS new FROM base_jobs b JOIN eg_strings s ON s.id = b.job_id JOIN eg_strings n ON n.text = s.text || '~c' || $1`,
        [c],
      );
      await client.query(
        `INSERT INTO eg_events (time, bytes_in, bytes_out, job_id, host_id, port, event, decision, key, body, close_body)
         SELECT e.time + $1, e.bytes_in, e.bytes_out, m.new, e.host_id, e.port, e.event, e.decision, encode(overlay(uuid_send(e.key) PLACING int4send($2) FROM 1 FOR 4), 'hex')::uuid, e.body, e.close_body
         FROM base_events e JOIN job_map m ON m.old = e.job_id`,
        [shift, c],
      );
      await client.query(
        `INSERT INTO eg_job_destinations (job_id, host_id, port, decision, count, bytes_in, bytes_out, first, last)
         SELECT m.new, d.host_id, d.port, d.decision, d.count, d.bytes_in, d.bytes_out, d.first + $1, d.last + $1 FROM eg_job_destinations d JOIN job_map m ON m.old = d.job_id`,
        [shift],
      );
      await client.query(
        `INSERT INTO eg_jobs (job_id, repo_id, first, last, decisions, allowed, blocked, would_block, bytes_in, bytes_out)
         SELECT m.new, j.repo_id, j.first + $1, j.last + $1, j.decisions, j.allowed, j.blocked, j.would_block, j.bytes_in, j.bytes_out FROM eg_jobs j JOIN job_map m ON m.old = j.job_id`,
        [shift],
      );
      await client.query('COMMIT');
      jobs.push(...built.jobs.map((j) => `${j}~c${c}`));
      log(`  copy ${c + 1} of ${copies}: ${Math.round((Date.now() - started) / 1000)} s`);
    }
    const store = await openStore(url); // makes eg_events' indexes again
    try {
      await client.query('ANALYZE');
      const seconds = (Date.now() - started) / 1000;
      return { events: await store.count(), jobs, seconds, bytes: await store.storageBytes() };
    } finally {
      await store.close();
    }
  } finally {
    await client.end();
  }
}

async function timed(port: number, path: string): Promise<number> {
  const t = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status}`);
  return performance.now() - t;
}

async function latencies(port: number, jobs: readonly string[]): Promise<Record<string, { p50: number; p95: number }>> {
  const pick = () => encodeURIComponent(jobs[Math.floor(Math.random() * jobs.length)]!);
  const queries: Record<string, () => string> = {
    'job list (API, 50 per page)': () => '/api/v1/jobs?limit=50',
    'job list (page /)': () => '/',
    "job's page": () => `/jobs/${pick()}`,
    'job summary': () => `/api/v1/jobs/${pick()}/summary`,
    'suggested policy': () => `/api/v1/jobs/${pick()}/policy`,
    'search (rare host, 30 days)': () => `/api/v1/search?host=${host(SETTINGS.hosts - 1 - Math.floor(Math.random() * 100))}&since=${new Date(Date.now() - 30 * DAY).toISOString()}`,
    'search (registrable domain, 7 days)': () => `/api/v1/search?host=example${Math.floor(Math.random() * 17)}.com&since=${new Date(Date.now() - 7 * DAY).toISOString()}`,
  };
  const out: Record<string, { p50: number; p95: number }> = {};
  for (const [name, path] of Object.entries(queries)) {
    if (!name.includes(SETTINGS.queries)) continue;
    await timed(port, path()); // warm
    const samples: number[] = [];
    for (let i = 0; i < SETTINGS.samples; i++) samples.push(await timed(port, path()));
    out[name] = { p50: round(percentile(samples, 50), 1), p95: round(percentile(samples, 95), 1) };
    log(`  ${name}: p50 ${out[name]!.p50} ms, p95 ${out[name]!.p95} ms`);
  }
  return out;
}

/** NDJSON batches of 500 from 8 connections spread over the processes; events/s and whether each was stored once. */
async function ingest(ports: readonly number[], count: number, tag: string): Promise<{ eventsPerSecond: number; stored: number; duplicates: number }> {
  const events: EgressEvent[] = [];
  for (let j = 0; events.length < count; j++) events.push(...jobEvents(`${tag}-${j}`, Math.min(1000, count - events.length), Date.now() - 3_600_000, SETTINGS.hosts));
  const bodies: string[] = [];
  for (let i = 0; i < events.length; i += 500)
    bodies.push(
      events
        .slice(i, i + 500)
        .map((e) => JSON.stringify(e))
        .join('\n'),
    );
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });
  let next = 0;
  let stored = 0;
  let duplicates = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = next++; i < bodies.length; i = next++) {
        const answer = await postEvents(ports[w % ports.length]!, bodies[i]!, TOKEN, agent);
        if (answer.status !== 200) throw new Error(`ingest batch ${i}: ${answer.status}`);
        stored += answer.body.stored ?? 0;
        duplicates += answer.body.duplicates ?? 0;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  return { eventsPerSecond: Math.round(count / seconds), stored, duplicates };
}

/** A history built by an earlier run (BENCH_COLLECTOR_SQLITE_FILE, BENCH_COLLECTOR_PG_URL): its jobs read back from the store. */
async function reuseHistory(db: string): Promise<Built> {
  const store = await openStore(db);
  try {
    if ((await store.count()) === 0) return { events: 0, jobs: [], seconds: NaN, bytes: 0 };
    const jobs = (await store.jobs()).jobs.map((j) => j.job).filter((j) => j.startsWith('bench-'));
    return { events: await store.count(), jobs: jobs.sort(), seconds: NaN, bytes: await store.storageBytes() };
  } finally {
    await store.close();
  }
}

interface IngestRun {
  eventsPerSecond: number;
  stored: number;
  duplicates: number;
  /** CPU of the collector processes (all of them, user and system) per event ingested. */
  collectorMicrosPerEvent: number;
  /** CPU of the PostgreSQL server per event, when it is the bench's own cluster (its postmaster known). */
  postgresMicrosPerEvent?: number;
}

/** The PostgreSQL server's postmaster, for its CPU time: the parent of a backend of this database. */
async function postmasterOf(db: string): Promise<number> {
  const client = new pg.Client({ connectionString: db });
  await client.connect();
  try {
    return parentPid(Number((await client.query('SELECT pg_backend_pid() AS p')).rows[0].p));
  } finally {
    await client.end();
  }
}

/** An ingest run (ingest) with the CPU the collector processes and, when given, the PostgreSQL server used for it. */
async function measuredIngest(processes: readonly CollectorProcess[], tag: string, postmaster: number | undefined): Promise<IngestRun> {
  if (SETTINGS.warmup > 0) {
    const warm = await ingest(
      processes.map((p) => p.port),
      SETTINGS.warmup * processes.length,
      `${tag}-warmup`,
    );
    if (warm.stored !== SETTINGS.warmup * processes.length || warm.duplicates !== 0) throw new Error(`warm-up of ${tag}: ${warm.stored} stored, ${warm.duplicates} duplicates`);
  }
  const collectorsCpu = () => processes.reduce((sum, p) => sum + processCpuMicros(p.pid), 0);
  const c0 = collectorsCpu();
  const p0 = postmaster === undefined ? 0 : clusterCpuMicros(postmaster);
  const result = await ingest(
    processes.map((p) => p.port),
    SETTINGS.ingest,
    tag,
  );
  const perEvent = (micros: number) => round(micros / SETTINGS.ingest, 1);
  return {
    ...result,
    collectorMicrosPerEvent: perEvent(collectorsCpu() - c0),
    ...(postmaster !== undefined && { postgresMicrosPerEvent: perEvent(clusterCpuMicros(postmaster) - p0) }),
  };
}

async function benchEngine(engine: string, db: string, total: number) {
  const kept = engine === 'sqlite' ? SETTINGS.sqliteFile !== undefined && existsSync(db) : SETTINGS.pgUrl !== undefined;
  const earlier = kept ? await reuseHistory(db) : undefined;
  const reuse = earlier !== undefined && earlier.events > 0;
  log(`\n[${engine}] ${reuse ? `reusing the history in ${db}` : `building ${total.toLocaleString('en')} events through the store`}`);
  let built = reuse ? earlier : await buildHistory(db, total);
  let replicated: { events: number; seconds: number } | undefined;
  if (engine === 'postgres' && SETTINGS.pgCopies > 1 && !reuse) {
    log(`  ${built.events.toLocaleString('en')} events built in ${round(built.seconds, 1)} s; copying them ${SETTINGS.pgCopies - 1} times inside the database`);
    const copied = await replicateHistory(db, built, SETTINGS.pgCopies);
    replicated = { events: copied.events, seconds: round(copied.seconds, 1) };
    log(`  ${copied.events.toLocaleString('en')} events after ${round(copied.seconds, 1)} s of copying`);
    built = { ...copied, seconds: built.seconds + copied.seconds };
  }
  const bytesPerEvent = round(built.bytes / built.events, 1);
  log(`  ${built.events.toLocaleString('en')} events in ${round(built.seconds, 1)} s (${Math.round(built.events / built.seconds)}/s); ${bytesPerEvent} bytes/event`);
  const processes: CollectorProcess[] = [];
  // Every collector process of the run is the build measured (BENCH_COLLECTOR_CLI), not only the first.
  const start = () => startCollectorProcess(db, { token: TOKEN, ...(SETTINGS.cli && { cli: SETTINGS.cli }) });
  try {
    processes.push(await start());
    const queries = await latencies(processes[0]!.port, built.jobs);
    const ingestRuns: Record<string, IngestRun> = {};
    const counts = SETTINGS.ingest === 0 ? [] : engine === 'postgres' ? SETTINGS.processes : [1];
    const postmaster = engine === 'postgres' && SETTINGS.pgUrl === undefined && counts.length > 0 ? await postmasterOf(db) : undefined;
    for (const n of counts) {
      while (processes.length < n) processes.push(await start());
      const result = await measuredIngest(processes.slice(0, n), `ingest-${n}`, postmaster);
      if (result.stored !== SETTINGS.ingest || result.duplicates !== 0) throw new Error(`ingest with ${n} process(es): ${result.stored} stored, ${result.duplicates} duplicates`);
      ingestRuns[`${n} process${n > 1 ? 'es' : ''}`] = result;
      const cpu = `collector CPU ${result.collectorMicrosPerEvent} µs/event${result.postgresMicrosPerEvent === undefined ? '' : `, PostgreSQL CPU ${result.postgresMicrosPerEvent} µs/event`}`;
      log(`  ingest, ${n} collector process(es): ${result.eventsPerSecond.toLocaleString('en')} events/s (${result.stored.toLocaleString('en')} stored once each; ${cpu})`);
    }
    return { events: built.events, jobs: built.jobs.length, buildSeconds: round(built.seconds, 1), replicated, bytesPerEvent, queries, ingest: ingestRuns };
  } finally {
    for (const p of processes) await p.stop();
  }
}

async function main(): Promise<void> {
  log(`collector bench: ${cpus().length} CPUs; ${JSON.stringify(SETTINGS)}`);
  const dir = mkdtempSync(join(tmpdir(), 'collector-bench-'));
  let cluster: PostgresCluster | undefined;
  const results: Record<string, unknown> = { settings: SETTINGS, cpus: cpus().length };
  try {
    if (SETTINGS.engines.includes('sqlite')) results.sqlite = await benchEngine('sqlite', SETTINGS.sqliteFile ?? join(dir, 'bench.db'), SETTINGS.events);
    if (SETTINGS.engines.includes('postgres')) {
      if (SETTINGS.pgUrl === undefined) cluster = await startPostgresCluster();
      results.postgres = await benchEngine('postgres', SETTINGS.pgUrl ?? cluster!.url, SETTINGS.pgEvents);
    }
  } finally {
    cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  writeFileSync(join(ARTIFACTS, 'collector-bench.json'), `${JSON.stringify(results, null, 2)}\n`);
  log(`\nwritten test-artifacts/collector-bench.json`);
}

await main();
