import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openStore } from '../collector/stores/open-store.js';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../events/schema.js';
import { postEvents, startCollectorProcess, type CollectorProcess } from '../test/helpers/collector-process.js';
import { startPostgresCluster, type PostgresCluster } from '../test/helpers/postgres-cluster.js';
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
 *    was stored once.
 * Environment: BENCH_COLLECTOR_EVENTS (default 1,000,000), BENCH_COLLECTOR_PG_EVENTS (default the same),
 * BENCH_COLLECTOR_JOBS (2,000), BENCH_COLLECTOR_HOSTS (300), BENCH_COLLECTOR_INGEST (200,000), BENCH_COLLECTOR_SAMPLES
 * (60), BENCH_COLLECTOR_ENGINES ("sqlite,postgres"), BENCH_COLLECTOR_PROCESSES ("1,2,4"; BENCH_COLLECTOR_INGEST=0: no ingest
 * run), BENCH_COLLECTOR_SQLITE_FILE (keep the SQLite history in this file; when it exists it is reused, not rebuilt: a
 * 10-million-event history takes ~16 minutes to build; reuse it with BENCH_COLLECTOR_INGEST=0 so that it stays the
 * same). Results: stdout and
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
  samples: num('BENCH_COLLECTOR_SAMPLES', 60),
  engines: (process.env.BENCH_COLLECTOR_ENGINES ?? 'sqlite,postgres').split(',').map((s) => s.trim()),
  processes: (process.env.BENCH_COLLECTOR_PROCESSES ?? '1,2,4').split(',').map(Number),
  /** Keep the SQLite history in this file: built once, reused (only measured) when it exists. */
  sqliteFile: process.env.BENCH_COLLECTOR_SQLITE_FILE,
};
const TOKEN = 'bench-token';
const DAY = 86_400_000;
const HISTORY_DAYS = 20;

function host(i: number): string {
  return `svc${i}.example${i % 17}.com`;
}

/** A skewed pick: low host numbers far more often (a few registries and CDNs take most connections). */
function pickHost(hosts: number): number {
  return Math.min(hosts - 1, Math.floor(hosts * Math.random() ** 3));
}

/**
 * The events of one job: `count` events (decisions, and a close after each allowed or would-block one), over a few
 * minutes from `start`.
 */
function jobEvents(job: string, count: number, start: number, hosts: number): EgressEvent[] {
  const out: EgressEvent[] = [];
  const ci = { repository: `org/repo-${job.length % 40}-${job.slice(-2)}`, run_id: String(9_000_000 + job.length), job: job, job_id: job };
  for (let i = 0; out.length < count; i++) {
    const h = host(pickHost(hosts));
    const time = start + i * 250;
    const r = Math.random();
    const decision = r < 0.85 ? 'allowed' : r < 0.95 ? 'would-block' : 'blocked';
    const d: DecisionEvent = {
      schema: 1,
      event: 'decision',
      id: randomUUID(),
      time: new Date(time).toISOString(),
      kind: 'connect',
      client: `127.0.0.1:${40_000 + (i % 20_000)}`,
      host: h,
      port: 443,
      ip: `104.16.${i % 250}.${(i * 7) % 250}`,
      decision,
      reason: decision === 'allowed' ? 'allowed-endpoint' : 'not-allowed-endpoint',
      rule: decision === 'allowed' ? `${h}:443` : null,
      message: decision === 'allowed' ? `allowed by endpoint ${h}:443` : `${h}:443 is not in the allowlist`,
      mode: 'audit',
      ci,
    };
    out.push(d);
    if (decision !== 'blocked' && out.length < count) {
      const c: CloseEvent = {
        schema: 1,
        event: 'close',
        id: d.id,
        time: new Date(time + 120).toISOString(),
        kind: 'connect',
        client: d.client,
        host: h,
        port: 443,
        ip: d.ip!,
        bytes_in: Math.floor(Math.random() * 200_000),
        bytes_out: Math.floor(Math.random() * 5_000),
        duration_ms: 120,
      };
      out.push(c);
    }
  }
  return out;
}

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

/** A history built by an earlier run (BENCH_COLLECTOR_SQLITE_FILE): its jobs read back from the store. */
async function reuseHistory(db: string): Promise<Built> {
  const store = await openStore(db);
  try {
    const jobs = (await store.jobs()).jobs.map((j) => j.job).filter((j) => j.startsWith('bench-'));
    return { events: await store.count(), jobs: jobs.sort(), seconds: NaN, bytes: await store.storageBytes() };
  } finally {
    await store.close();
  }
}

async function benchEngine(engine: string, db: string, total: number) {
  const reuse = engine === 'sqlite' && SETTINGS.sqliteFile !== undefined && existsSync(db);
  log(`\n[${engine}] ${reuse ? `reusing the history in ${db}` : `building ${total.toLocaleString('en')} events through the store`}`);
  const built = reuse ? await reuseHistory(db) : await buildHistory(db, total);
  const bytesPerEvent = round(built.bytes / built.events, 1);
  log(`  ${built.events.toLocaleString('en')} events in ${round(built.seconds, 1)} s (${Math.round(built.events / built.seconds)}/s); ${bytesPerEvent} bytes/event`);
  const processes: CollectorProcess[] = [];
  try {
    processes.push(await startCollectorProcess(db, { token: TOKEN }));
    const queries = await latencies(processes[0]!.port, built.jobs);
    const ingestRuns: Record<string, { eventsPerSecond: number; stored: number; duplicates: number }> = {};
    const counts = SETTINGS.ingest === 0 ? [] : engine === 'postgres' ? SETTINGS.processes : [1];
    for (const n of counts) {
      while (processes.length < n) processes.push(await startCollectorProcess(db, { token: TOKEN }));
      const result = await ingest(
        processes.slice(0, n).map((p) => p.port),
        SETTINGS.ingest,
        `ingest-${n}`,
      );
      if (result.stored !== SETTINGS.ingest || result.duplicates !== 0) throw new Error(`ingest with ${n} process(es): ${result.stored} stored, ${result.duplicates} duplicates`);
      ingestRuns[`${n} process${n > 1 ? 'es' : ''}`] = result;
      log(`  ingest, ${n} collector process(es): ${result.eventsPerSecond.toLocaleString('en')} events/s (${result.stored.toLocaleString('en')} stored once each)`);
    }
    return { events: built.events, jobs: built.jobs.length, buildSeconds: round(built.seconds, 1), bytesPerEvent, queries, ingest: ingestRuns };
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
      cluster = await startPostgresCluster();
      results.postgres = await benchEngine('postgres', cluster.url, SETTINGS.pgEvents);
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
