import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stateCaPaths } from '../certs/ca-store.js';
import { inspectedKeepAlive } from './inspection-bench.js';
import { runLoad } from './load.js';
import { bulkDownload, keepAliveRate, tunnelTlsRate, tunnelTlsTask } from './proxy-bench.js';
import { startEgressGuard } from './proxies.js';
import { summarise } from './profile-summary.js';
import { BENCH_HOST, startBenchServers } from './servers.js';

/**
 * Profile egress-guard under one scenario: `node dist/bench/profile-scenario.js tunnel|bulk|bulk-plain|keepalive|inspected-keepalive|inspected-new [outDir]`
 * (`inspected-keepalive`: bench.test inspected, as in the bench's inspection part; keep-alive HTTPS GET 1 KiB, c=50;
 * `inspected-new`: the same host, a new connection per request: CONNECT, TLS with egress-guard's leaf, GET 1 KiB, c=50).
 * Runs egress-guard under `node --cpu-prof`, drives the scenario (bounded by count and time), stops it
 * with SIGTERM (which writes the profile) and prints a summary. BENCH_EGRESS_GUARD_CLI=<path to another
 * build's dist/bin/egress-guard.js> profiles that build instead (to measure a proposed change).
 */
const scenario = process.argv[2] ?? 'tunnel';
const outDir = process.argv[3] ?? mkdtempSync(join(tmpdir(), 'egress-guard-prof-'));
mkdirSync(outDir, { recursive: true });
const work = mkdtempSync(join(tmpdir(), 'egress-guard-prof-events-'));
const servers = await startBenchServers();
const inspected = scenario === 'inspected-keepalive' || scenario === 'inspected-new';
const upstreamCa = join(work, 'bench-ca.pem');
writeFileSync(upstreamCa, servers.caPem);
const stateDir = join(work, 'state');
const proxy = await startEgressGuard({
  eventsFile: join(work, 'events.ndjson'),
  ...(inspected && { env: { EGRESS_ALLOWED_ENDPOINTS: `${BENCH_HOST}:*/**`, EGRESS_STATE_DIR: stateDir, EGRESS_UPSTREAM_CA: upstreamCa } }),
  nodeFlags: ['--cpu-prof', '--cpu-prof-dir', outDir],
  ...(process.env.BENCH_EGRESS_GUARD_CLI && { cli: process.env.BENCH_EGRESS_GUARD_CLI }),
});
try {
  const cpuBefore = proxy.cpuMs();
  let summary: unknown;
  if (scenario === 'tunnel') summary = await tunnelTlsRate(proxy, servers, { count: 3000, timeCapMs: 15_000, concurrency: 50, warmup: 0 });
  else if (scenario === 'bulk') summary = await bulkDownload(proxy, servers, { bytes: 256 * 1024 * 1024, repeats: 3, timeoutMs: 60_000 });
  else if (scenario === 'bulk-plain') summary = await bulkDownload(proxy, servers, { bytes: 256 * 1024 * 1024, repeats: 3, timeoutMs: 60_000, tls: false });
  else if (scenario === 'keepalive') summary = await keepAliveRate(proxy, servers, { count: 30_000, timeCapMs: 15_000, concurrency: 50, warmup: 0 });
  else if (scenario === 'inspected-new') {
    const task = tunnelTlsTask(proxy, { ...servers, caPem: readFileSync(stateCaPaths(stateDir).cert, 'utf8') });
    const { latenciesMs, ...rest } = await runLoad({ count: 6000, timeCapMs: 15_000, concurrency: 50, task });
    summary = { ...rest, latencies: latenciesMs.length };
  } else if (inspected) {
    const client = inspectedKeepAlive(proxy, { ...servers, caPem: readFileSync(stateCaPaths(stateDir).cert, 'utf8') }, 50);
    try {
      const { latenciesMs, ...rest } = await client.run({ count: 30_000, timeCapMs: 15_000, concurrency: 50, warmup: 0 });
      summary = { ...rest, latencies: latenciesMs.length };
    } finally {
      client.close();
    }
  } else throw new Error(`unknown scenario ${scenario}`);
  process.stdout.write(`${JSON.stringify(summary)}\nproxy CPU during the scenario: ${(proxy.cpuMs() - cpuBefore).toFixed(0)} ms\n`);
} finally {
  await proxy.stop();
  await servers.close();
  rmSync(work, { recursive: true, force: true });
}
const profiles = readdirSync(outDir)
  .filter((f) => f.endsWith('.cpuprofile'))
  .sort();
const latest = profiles.at(-1);
if (!latest) process.stdout.write(`no profile written in ${outDir} (egress-guard did not exit cleanly?)\n`);
else process.stdout.write(`\n${join(outDir, latest)}\n${summarise(JSON.parse(readFileSync(join(outDir, latest), 'utf8')), 30)}`);
