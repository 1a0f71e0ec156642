import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freshGet } from './clients.js';
import { startEgressGuard, type RunningEgressGuard } from './proxies.js';
import { startBenchServers } from './servers.js';
import { median, round } from './stats.js';

/**
 * A/B of two builds on the bench's (a') scenario, one tunnel at a time: a fresh CONNECT tunnel, a full TLS handshake
 * and a 1 KiB GET, then close. Both builds run side by side against the same servers and take turns, a round of
 * `ops` sequential tunnels each, so that load from elsewhere hits both alike. Prints p50 and p99 per round and the
 * proxy's CPU per tunnel (user + system from /proc), then the medians over the rounds.
 *
 *   node dist/bench/tunnel-c1-ab.js <a/dist/egress-guard.js> <b/dist/egress-guard.js> [rounds=6] [ops=300]
 */
const [cliA, cliB] = process.argv.slice(2, 4);
if (!cliA || !cliB) {
  console.error('usage: tunnel-c1-ab <cliA> <cliB> [rounds=6] [ops=300]');
  process.exit(2);
}
const rounds = Number(process.argv[4] ?? 6);
const ops = Number(process.argv[5] ?? 300);
const WARM_UP = 200;

interface Series {
  p50: number[];
  p99: number[];
  cpuUs: number[];
}

const dir = mkdtempSync(join(tmpdir(), 'eg-c1-ab-'));
const servers = await startBenchServers();
const proxies: RunningEgressGuard[] = [];
try {
  for (const [i, cli] of [cliA, cliB].entries()) proxies.push(await startEgressGuard({ eventsFile: join(dir, `events-${i}.log`), cli }));
  for (let k = 0; k < WARM_UP; k++) for (const proxy of proxies) await freshGet(proxy, servers, '/1k');
  const series: Series[] = proxies.map(() => ({ p50: [], p99: [], cpuUs: [] }));
  for (let r = 0; r < rounds; r++) {
    for (const [i, proxy] of proxies.entries()) {
      const latencies: number[] = [];
      const cpuBefore = proxy.cpuMs();
      for (let k = 0; k < ops; k++) {
        const started = performance.now();
        const result = await freshGet(proxy, servers, '/1k');
        if (result.status !== 200) throw new Error(`build ${i ? 'B' : 'A'}: status ${result.status}`);
        latencies.push(performance.now() - started);
      }
      const cpuUs = ((proxy.cpuMs() - cpuBefore) * 1000) / ops;
      latencies.sort((x, y) => x - y);
      const p50 = latencies[Math.floor(ops * 0.5)]!;
      const p99 = latencies[Math.min(ops - 1, Math.floor(ops * 0.99))]!;
      series[i]!.p50.push(p50);
      series[i]!.p99.push(p99);
      series[i]!.cpuUs.push(cpuUs);
      console.log(`round ${r + 1}/${rounds} ${i ? 'B' : 'A'}: p50 ${round(p50, 2)} ms, p99 ${round(p99, 2)} ms, CPU ${round(cpuUs, 0)} us/tunnel`);
    }
  }
  for (const [i, s] of series.entries()) {
    console.log(`${i ? 'B' : 'A'} ${i ? cliB : cliA}: median p50 ${round(median(s.p50), 2)} ms, p99 ${round(median(s.p99), 2)} ms, CPU ${round(median(s.cpuUs), 0)} us/tunnel`);
  }
} finally {
  for (const proxy of proxies) await proxy.stop();
  await servers.close();
  rmSync(dir, { recursive: true, force: true });
}
