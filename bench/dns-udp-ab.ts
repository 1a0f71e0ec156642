import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { queryBytes, udpExchange } from '../test/helpers/dns-fixture.js';
import { dnsBenchEnv, dnsperf, findDnsmasq, freeDnsPort, startDnsmasq, waitForDns, writeQueryFiles, type DnsBenchSettings, type DnsperfResult } from './dns-bench.js';
import { startEgressGuard } from './proxies.js';
import { median, round } from './stats.js';

/**
 * A/B of the DNS server's UDP path (setting dns-udp): two `egress-guard run` processes side by side, one per path,
 * and dnsmasq, measured in interleaved rounds (the order rotates each round) with the DNS bench's dnsperf runs:
 * cached allowed and denied at 100 outstanding, then 2000 q/s for the p99. Prints the medians over the rounds and
 * each path's ratios to dnsmasq within a round (then their medians), so that load from elsewhere hits all three alike.
 *
 *   node dist/bench/dns-udp-ab.js [rounds=5] [seconds=3]
 *
 * With BENCH_DNS_AB_CLIS=a/dist/egress-guard.js,b/dist/egress-guard.js the two processes are those two builds (both on
 * the default path) instead: an A/B of two builds in the same rounds.
 */
const rounds = Number(process.argv[2] ?? 5);
const seconds = Number(process.argv[3] ?? 3);
const settings: DnsBenchSettings = { seconds, outstanding: 100, fixedQps: 2000 };

interface Server {
  name: string;
  pid: number;
  port: number;
  stop(): Promise<void>;
}

interface Round {
  cached: DnsperfResult;
  denied: DnsperfResult;
  fixed: DnsperfResult;
}

const dir = mkdtempSync(join(tmpdir(), 'eg-dns-ab-'));
const zoneWorker = new Worker(new URL('./dns-zone-worker.js', import.meta.url));
const servers: Server[] = [];
try {
  const zonePort = await new Promise<number>((resolve, reject) => {
    zoneWorker.once('message', resolve);
    zoneWorker.once('error', reject);
  });
  const files = writeQueryFiles(dir);
  const clis = (process.env.BENCH_DNS_AB_CLIS ?? '').split(',').filter(Boolean);
  const variants =
    clis.length > 0
      ? clis.map((cli, i) => ({ name: `${i} ${cli}`, cli, env: {} }))
      : ['batch', 'dgram'].map((path) => ({ name: path, cli: undefined, env: { EGRESS_DNS_UDP: path } }));
  for (const [i, variant] of variants.entries()) {
    const port = await freeDnsPort();
    const guard = await startEgressGuard({
      eventsFile: join(dir, `events-${i}.ndjson`),
      env: { ...dnsBenchEnv(port, zonePort), ...variant.env },
      ...(variant.cli && { cli: variant.cli }),
    });
    servers.push({ name: `egress-guard ${variant.name}`, pid: guard.pid, port, stop: () => guard.stop() });
    await waitForDns(port, guard.pid, variant.name);
  }
  const binary = findDnsmasq();
  if (binary) {
    const dnsmasq = await startDnsmasq(binary, zonePort);
    servers.push({ name: 'dnsmasq', ...dnsmasq });
  }
  for (const s of servers) await udpExchange(s.port, queryBytes(2, 'allowed.test'), 1000);
  const results = new Map<string, Round[]>(servers.map((s) => [s.name, []]));
  for (let r = 0; r < rounds; r++) {
    const order = servers.map((_, i) => servers[(i + r) % servers.length]!);
    for (const s of order) {
      results.get(s.name)!.push({
        cached: await dnsperf(s.pid, s.port, files.allowed, settings),
        denied: await dnsperf(s.pid, s.port, files.denied, settings),
        fixed: await dnsperf(s.pid, s.port, files.allowed, settings, settings.fixedQps),
      });
    }
    process.stderr.write(`round ${r + 1}/${rounds} done\n`);
  }
  const med = (values: number[]) => round(median(values), 3);
  const summary: Record<string, unknown> = {};
  const reference = results.get('dnsmasq');
  for (const [name, list] of results) {
    summary[name] = {
      cached_qps: med(list.map((x) => x.cached.qps)),
      denied_qps: med(list.map((x) => x.denied.qps)),
      cpu_ms_per_1000_cached: med(list.map((x) => x.cached.cpu_ms_per_1000)),
      cpu_ms_per_1000_denied: med(list.map((x) => x.denied.cpu_ms_per_1000)),
      cpu_ms_per_1000_fixed: med(list.map((x) => x.fixed.cpu_ms_per_1000)),
      p99_ms_fixed: med(list.map((x) => x.fixed.p99_ms ?? NaN)),
      lost: list.reduce((n, x) => n + x.cached.lost + x.denied.lost + x.fixed.lost, 0),
      ...(reference &&
        name !== 'dnsmasq' && {
          ratio_cached_qps: med(list.map((x, i) => x.cached.qps / reference[i]!.cached.qps)),
          ratio_denied_qps: med(list.map((x, i) => x.denied.qps / reference[i]!.denied.qps)),
          p99_delta_ms: med(list.map((x, i) => (x.fixed.p99_ms ?? NaN) - (reference[i]!.fixed.p99_ms ?? NaN))),
        }),
    };
  }
  console.log(JSON.stringify({ rounds, seconds, summary, raw: Object.fromEntries(results) }, null, 1));
} finally {
  for (const s of servers) await s.stop();
  zoneWorker.postMessage('close');
  await new Promise((r) => zoneWorker.once('exit', r));
  rmSync(dir, { recursive: true, force: true });
}
