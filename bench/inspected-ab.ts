import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stateCaPaths } from '../certs/ca-store.js';
import { inspectedKeepAlive } from './inspection-bench.js';
import { runLoad } from './load.js';
import { plainKeepAlive, tunnelTlsTask } from './proxy-bench.js';
import { startEgressGuard } from './proxies.js';
import { BENCH_HOST, startBenchServers } from './servers.js';
import { processWriteCalls } from './procfs.js';
import { median, round } from './stats.js';

/**
 * CPU per inspected keep-alive request of two (or more) builds, in interleaved rounds (an A/B on a busy machine,
 * where a round of one build and the next round of the other see about the same load):
 *
 *   node dist/bench/inspected-ab.js <rounds> <requests per round> <path/to/egress-guard.js> <path/to/egress-guard.js> ...
 *
 * BENCH_AB_PLAIN=1: plain keep-alive HTTP instead (the bench's (c): absolute-URI GET 1 KiB at c=50, nothing inspected).
 * BENCH_AB_TUNNEL=1: new CONNECT tunnels instead (the bench's (a): a tunnel, a TLS handshake and GET 1 KiB per request,
 * c=50, nothing inspected).
 *
 * Each build runs as its own egress-guard with bench.test inspected (a path rule, as in the bench's inspection
 * part); keep-alive HTTPS GET 1 KiB at c=50 over pooled client connections opened in a warm-up; proxy CPU
 * (user + system, /proc) per completed request in each round; the median and range per build; and the proxy's
 * write-type system calls per request (/proc/PID/io `syscw`: the socket writes and the events file's).
 */
const [roundsArg = '6', countArg = '3000', ...clis] = process.argv.slice(2);
const rounds = Number(roundsArg);
const count = Number(countArg);
if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(count) || count < 100 || clis.length === 0) {
  throw new Error('usage: inspected-ab.js <rounds >= 1> <requests >= 100> <cli> [<cli> ...]');
}
const CONCURRENCY = 50;
const tunnels = process.env.BENCH_AB_TUNNEL === '1';
const plain = tunnels || process.env.BENCH_AB_PLAIN === '1';
const work = mkdtempSync(join(tmpdir(), 'egress-guard-inspected-ab-'));
const servers = await startBenchServers();
const upstreamCa = join(work, 'bench-ca.pem');
writeFileSync(upstreamCa, servers.caPem);
const builds: Array<{
  cli: string;
  stop: () => Promise<void>;
  cpuMs: () => number;
  writeCalls: () => number;
  run: ReturnType<typeof inspectedKeepAlive>;
  cpu: number[];
  writes: number[];
  rate: number[];
  failed: number;
}> = [];
try {
  for (const [i, cli] of clis.entries()) {
    const stateDir = join(work, `state-${i}`);
    const proxy = await startEgressGuard({
      eventsFile: join(work, `events-${i}.ndjson`),
      cli,
      ...(!plain && { env: { EGRESS_ALLOWED_ENDPOINTS: `${BENCH_HOST}:*/**`, EGRESS_STATE_DIR: stateDir, EGRESS_UPSTREAM_CA: upstreamCa } }),
    });
    const run = tunnels
      ? { run: (settings: { count: number; timeCapMs: number; concurrency: number }) => runLoad({ ...settings, task: tunnelTlsTask(proxy, servers) }), close: () => undefined }
      : plain
        ? plainKeepAlive(proxy, servers, CONCURRENCY)
        : inspectedKeepAlive(proxy, { ...servers, caPem: readFileSync(stateCaPaths(stateDir).cert, 'utf8') }, CONCURRENCY);
    builds.push({ cli, stop: proxy.stop, cpuMs: proxy.cpuMs, writeCalls: () => processWriteCalls(proxy.pid), run, cpu: [], writes: [], rate: [], failed: 0 });
    await run.run({ count: 1000, timeCapMs: 20_000, concurrency: CONCURRENCY, warmup: 0 }); // connections, JIT
  }
  for (let r = 0; r < rounds; r++) {
    // Alternate which build goes first, so neither always runs after the same neighbour.
    const order = r % 2 === 0 ? builds : [...builds].reverse();
    for (const build of order) {
      const before = build.cpuMs();
      const writesBefore = build.writeCalls();
      const load = await build.run.run({ count, timeCapMs: 60_000, concurrency: CONCURRENCY, warmup: 0 });
      build.cpu.push(((build.cpuMs() - before) * 1000) / Math.max(1, load.completed));
      build.writes.push((build.writeCalls() - writesBefore) / Math.max(1, load.completed));
      build.rate.push((load.completed * 1000) / load.elapsedMs);
      build.failed += load.failed;
    }
  }
  for (const b of builds) {
    process.stdout.write(
      `${JSON.stringify({
        cli: b.cli,
        rounds,
        requests_per_round: count,
        failed: b.failed,
        cpu_us_per_request_median: round(median(b.cpu), 1),
        cpu_us_per_request: b.cpu.map((v) => round(v, 1)),
        req_per_s_median: round(median(b.rate), 1),
        req_per_s: b.rate.map((v) => round(v, 0)),
        write_calls_per_request_median: round(median(b.writes), 3),
        write_calls_per_request: b.writes.map((v) => round(v, 3)),
      })}\n`,
    );
  }
} finally {
  for (const b of builds) {
    b.run.close();
    await b.stop();
  }
  await servers.close();
  rmSync(work, { recursive: true, force: true });
}
