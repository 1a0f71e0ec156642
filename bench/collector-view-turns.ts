import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { startCollector as StartCollector } from '../collector/server.js';
import { startPostgresCluster, type PostgresCluster } from '../test/helpers/postgres-cluster.js';
import { jobEvents } from './collector-events.js';
import { percentile, round } from './stats.js';

/**
 * How long a large job's views hold the collector's event loop (issue 16: "the read API and page keep working").
 * Stores one job of BENCH_VIEW_EVENTS events (default 200,000, the API's cap) from the collector bench's generator,
 * starts a collector in this process on it, and asks each view of the job with curl (another process)
 * BENCH_VIEW_REPEATS times (default 3). Meanwhile it measures, in the collector's process, the gaps of a 1 ms timer
 * (the longest is the longest turn a view held the loop) and the time `GET /healthz` takes when asked every 10 ms
 * (what another request waits for), and the CPU time of the main thread (the collector's loop) and of all threads (the
 * view thread, V8's and libuv's helpers too). BENCH_VIEW_ENGINES: "sqlite" (default) and/or "postgres" (a throwaway
 * cluster). BENCH_VIEW_DIST: another build's dist/ to measure on the same run (its collector/server.js).
 *
 *   node dist/bench/collector-view-turns.js
 */

const EVENTS = Number(process.env.BENCH_VIEW_EVENTS ?? 200_000);
const REPEATS = Number(process.env.BENCH_VIEW_REPEATS ?? 3);
const ENGINES = (process.env.BENCH_VIEW_ENGINES ?? 'sqlite').split(',').filter(Boolean);
const VIEWS = ['/jobs/J', '/api/v1/jobs/J/summary', '/api/v1/jobs/J/policy', '/api/v1/jobs/J/events', '/api/v1/jobs/J/events?format=ndjson'];

function curl(url: string): Promise<string> {
  return new Promise((done, fail) =>
    execFile('curl', ['-sS', '--max-time', '120', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', url], (err, out) => (err ? fail(err) : done(out))),
  );
}

/** One GET's time in ms (the collector answers in this process: the time includes waiting for its loop). */
function timedGet(port: number, path: string): Promise<number> {
  const start = performance.now();
  return new Promise((done, fail) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => done(performance.now() - start));
    });
    req.setTimeout(30_000, () => req.destroy(new Error('healthz: no answer in 30 s')));
    req.on('error', fail);
    req.end();
  });
}

/** CPU ms the main thread (the collector's event loop) has used so far: /proc's schedstat, in ns. */
function mainThreadCpuMs(): number {
  return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'latin1').split(' ')[0]) / 1e6;
}

async function measure(port: number, path: string) {
  const gaps: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    gaps.push(now - last);
    last = now;
  }, 1);
  const health: number[] = [];
  let asking = true;
  const healthLoop = (async () => {
    while (asking) {
      health.push(await timedGet(port, '/healthz'));
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const start = performance.now();
  const mainBefore = mainThreadCpuMs();
  const processBefore = process.cpuUsage();
  let answer: string;
  try {
    answer = await curl(`http://127.0.0.1:${port}${path}`);
  } finally {
    clearInterval(timer);
    asking = false;
    await healthLoop;
  }
  const ms = performance.now() - start;
  // This process's other work (the 1 ms timer, the /healthz client) is in both, and small.
  const mainCpu = mainThreadCpuMs() - mainBefore;
  const cpu = process.cpuUsage(processBefore);
  const processCpu = (cpu.user + cpu.system) / 1000;
  return { answer, ms, mainCpu, processCpu, longestGap: Math.max(...gaps), gapP99: percentile(gaps, 99), healthMax: Math.max(...health), healthP99: percentile(health, 99) };
}

async function main(): Promise<void> {
  const dist = process.env.BENCH_VIEW_DIST ? resolve(process.env.BENCH_VIEW_DIST) : resolve(import.meta.dirname, '..');
  const { startCollector } = (await import(pathToFileURL(join(dist, 'collector/server.js')).href)) as { startCollector: typeof StartCollector };
  process.stdout.write(`collector from ${dist}; one job of ${EVENTS} events; ${REPEATS} requests per view\n`);
  for (const engine of ENGINES) {
    const dir = mkdtempSync(join(tmpdir(), 'eg-view-turns-'));
    let cluster: PostgresCluster | undefined;
    try {
      if (engine === 'postgres') cluster = await startPostgresCluster();
      const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: cluster?.url ?? join(dir, 'collector.db') });
      try {
        // Built, stored, dropped: the generator's copy is not in the heap the views' collections go through.
        {
          const events = jobEvents('view-turns-job', EVENTS, Date.parse('2026-12-01T10:00:00Z'), 300);
          for (let at = 0; at < events.length; at += 5_000) await collector.store.insert(events.slice(at, at + 5_000));
        }
        const job = (await collector.store.jobs()).jobs[0]!.job;
        process.stdout.write(`\n${engine}: ${await collector.store.count()} events stored\n`);
        process.stdout.write(
          'view | answer (status bytes) | total ms | main thread CPU ms | all threads CPU ms | longest loop turn ms | p99 turn ms | /healthz max ms | /healthz p99 ms\n',
        );
        for (const view of VIEWS) {
          const path = view.replace('J', encodeURIComponent(job));
          for (let r = 0; r < REPEATS; r++) {
            const m = await measure(collector.port, path);
            process.stdout.write(
              `${view} | ${m.answer} | ${round(m.ms, 0)} | ${round(m.mainCpu, 0)} | ${round(m.processCpu, 0)} | ${round(m.longestGap, 0)} | ${round(m.gapP99, 1)} | ${round(m.healthMax, 0)} | ${round(m.healthP99, 1)}\n`,
            );
          }
        }
      } finally {
        await collector.close();
      }
    } finally {
      cluster?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

await main();
