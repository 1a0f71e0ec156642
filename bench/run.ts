import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { DEFAULT_DNS_SETTINGS, formatDns, runDnsBench } from './dns-bench.js';
import { DEFAULT_IDLE_SETTINGS, idleTunnels, startHoldServer, tunnelCapacity, type IdleTunnelsResult } from './idle-tunnels.js';
import { raiseOwnNofile } from './procfs.js';
import { inspectionBenchSection } from './inspection-bench.js';
import { benchRoutes, DEFAULT_SETTINGS, type RouteResults } from './proxy-bench.js';
import { ProxyUnavailable, startEgressGuard, startSquid, startTinyproxy, type RunningProxy } from './proxies.js';
import { computeRatios, formatIdleTunnels, formatResults, formatVerdicts, verdicts, type BenchResults } from './report.js';
import { DEFAULT_STARTUP_SETTINGS, measureStartToReady } from './startup.js';
import { startBenchServers } from './servers.js';

/**
 * `npm run bench`: issue 14's measuring side. On one run: start to ready; the proxy scenarios direct, through
 * egress-guard, tinyproxy and squid (with proxy CPU per operation and RSS); idle tunnels held; DNS under dnsperf
 * beside dnsmasq. Prints tables and one MET/MISS/n/a line per goal, writes test-artifacts/bench.json.
 *
 * Environment (docs/benchmark.md): BENCH_PROXIES (comma list, default "egress-guard,tinyproxy,squid"),
 * BENCH_SKIP_STARTUP=1, BENCH_SKIP_PROXY=1, BENCH_SKIP_IDLE=1, BENCH_SKIP_DNS=1, BENCH_SKIP_INSPECTION=1, BENCH_IDLE_TUNNELS=<count>, BENCH_IDLE_DECIDED=0 (idle tunnels left undecided),
 * BENCH_DNS_SECONDS=<s>, BENCH_RELAY=kernel|js, BENCH_RELAY_HAND_OVER_AFTER=<bytes> and BENCH_RELAY_THREAD_AFTER=<bytes> (egress-guard's relay settings), BENCH_DNS_UDP=batch|dgram (the DNS server's UDP path; bench/dns-udp-ab.ts measures both interleaved), BENCH_CPU_PROF=<dir> (run egress-guard under `node --cpu-prof`, profiles written on exit).
 */
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const log = (line: string) => process.stdout.write(`${line}\n`);
const skip = (part: string) => process.env[`BENCH_SKIP_${part}`] === '1';

type ProxyStarter = () => Promise<RunningProxy>;

async function startProxy(name: string, start: ProxyStarter, skipped: Record<string, string>): Promise<RunningProxy | undefined> {
  try {
    const proxy = await start();
    log(`[${name}] pid ${proxy.pid} on ${proxy.host}:${proxy.port} (${proxy.version})`);
    return proxy;
  } catch (err) {
    const reason = err instanceof ProxyUnavailable ? err.message : `could not start: ${(err as Error).message}`;
    skipped[name] = reason;
    log(`[${name}] SKIPPED: ${reason}`);
    return undefined;
  }
}

/**
 * Runs one part of the bench unless BENCH_SKIP_<knob>=1; a part that throws is recorded in `skipped` and the
 * rest goes on, so every other result is still printed and saved.
 */
async function part<T>(name: string, knob: string, skipped: Record<string, string>, task: () => Promise<T>): Promise<T | undefined> {
  if (skip(knob)) {
    skipped[name] = `BENCH_SKIP_${knob}=1`;
    return undefined;
  }
  try {
    return await task();
  } catch (err) {
    skipped[name] = `failed: ${(err as Error).stack ?? String(err)}`;
    log(`[${name}] FAILED: ${(err as Error).message}`);
    return undefined;
  }
}

/** The proxy scenarios on every route; the proxies are stopped by PID before it returns. */
async function proxyScenarios(wanted: string[], workDir: string, skipped: Record<string, string>): Promise<RouteResults[]> {
  const servers = await startBenchServers();
  const proxies: RunningProxy[] = [];
  try {
    const cpuProfDir = process.env.BENCH_CPU_PROF;
    const starters: Record<string, ProxyStarter> = {
      'egress-guard': () => startEgressGuard({ eventsFile: join(workDir, 'events.ndjson'), ...(cpuProfDir && { nodeFlags: ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] }) }),
      tinyproxy: () => startTinyproxy([servers.httpsPort, servers.httpPort]),
      squid: () => startSquid(),
    };
    for (const name of wanted) {
      const start = starters[name];
      if (!start) {
        skipped[name] = 'unknown proxy name in BENCH_PROXIES';
        continue;
      }
      const proxy = await startProxy(name, start, skipped);
      if (proxy) proxies.push(proxy);
    }
    await sleep(IDLE_SETTLE_MS); // "idle after start": what the proxies hold once started, before any load
    return await benchRoutes(['direct', ...proxies], servers, DEFAULT_SETTINGS, log);
  } finally {
    // Stopped one by one, by PID.
    for (const proxy of proxies) await proxy.stop();
    await servers.close();
  }
}

const IDLE_SETTLE_MS = 1000;

/** Idle tunnels through a fresh egress-guard (and a fresh squid, for reference), one after the other. */
async function idleTunnelRuns(wanted: string[], workDir: string, skipped: Record<string, string>): Promise<IdleTunnelsResult[]> {
  const settings = { ...DEFAULT_IDLE_SETTINGS, count: Number(process.env.BENCH_IDLE_TUNNELS ?? DEFAULT_IDLE_SETTINGS.count), decided: process.env.BENCH_IDLE_DECIDED !== '0' };
  const { target } = tunnelCapacity(settings.count);
  const hold = await startHoldServer();
  const results: IdleTunnelsResult[] = [];
  try {
    const starters: Array<[string, ProxyStarter]> = [
      ['egress-guard', () => startEgressGuard({ eventsFile: join(workDir, 'idle-events.ndjson'), env: { EGRESS_MAX_TUNNELS: String(target + 100) } })],
      ['squid', () => startSquid({ maxFileDescriptors: 2 * target + 200 })],
    ];
    for (const [name, start] of starters.filter(([n]) => wanted.includes(n))) {
      const proxy = await startProxy(`${name} (idle tunnels)`, start, skipped);
      if (!proxy) continue;
      try {
        await sleep(IDLE_SETTLE_MS);
        results.push(await idleTunnels(proxy, hold.port, settings, log));
      } finally {
        await proxy.stop();
      }
    }
    return results;
  } finally {
    await hold.stop();
  }
}

async function main(): Promise<number> {
  const began = Date.now();
  const wanted = (process.env.BENCH_PROXIES ?? 'egress-guard,tinyproxy,squid')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  mkdirSync(ARTIFACTS, { recursive: true });
  const workDir = mkdtempSync(join(tmpdir(), 'egress-guard-bench-'));
  const nofile = raiseOwnNofile();
  log(`egress-guard bench: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), node ${process.version}, RLIMIT_NOFILE ${nofile}`);
  const skipped: Record<string, string> = {};
  const loadBefore = loadavg();
  let results: BenchResults;
  try {
    const startup = await part('startup', 'STARTUP', skipped, () => measureStartToReady(workDir, DEFAULT_STARTUP_SETTINGS, log));
    const routes = (await part('proxy', 'PROXY', skipped, () => proxyScenarios(wanted, workDir, skipped))) ?? [];
    const idle = await part('idle-tunnels', 'IDLE', skipped, () => idleTunnelRuns(wanted, workDir, skipped));
    const dnsSettings = { ...DEFAULT_DNS_SETTINGS, seconds: Number(process.env.BENCH_DNS_SECONDS ?? DEFAULT_DNS_SETTINGS.seconds) };
    const dns = await part('dns', 'DNS', skipped, () => runDnsBench(dnsSettings, log));
    // TLS inspection against Squid ssl-bump (bench/inspection-bench.ts): its own table and goal line.
    const inspection = await part('inspection', 'INSPECTION', skipped, () => inspectionBenchSection(log));
    results = {
      routes,
      ratios: computeRatios(routes),
      skipped,
      ...(idle && { idleTunnels: idle }),
      ...(startup && { startup }),
      ...(dns && { dns }),
      ...(inspection && { inspection }),
    };
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
  const loadAfter = loadavg();

  log('');
  if (results.routes.length) log(formatResults(results.routes, results.ratios));
  if (results.idleTunnels?.length) log(`\n${formatIdleTunnels(results.idleTunnels)}`);
  if (results.dns) log(`\n${formatDns(results.dns)}`);
  if (results.startup)
    log(
      `\nstart to ready (${results.startup.listeners.join(' + ')}): ${results.startup.starts_ms.join(', ')} ms; median ${results.startup.median_ms} ms (CPU to ready: median ${results.startup.median_cpu_ms} ms)`,
    );
  for (const [name, reason] of Object.entries(skipped)) log(`NOTE: ${name} not measured: ${reason.split('\n')[0]}`);
  log(
    `load average before/after: ${loadBefore.map((x) => x.toFixed(1)).join(' ')} / ${loadAfter.map((x) => x.toFixed(1)).join(' ')} on ${cpus().length} CPUs${loadAfter[0]! > cpus().length ? ' (other work was running: numbers are noisy; ratios within the interleaved run are what to compare)' : ''}`,
  );
  log('note: egress-guard runs with events on (JSON to a stdout pipe and to an events file); C proxies log one line per request/connection to a file.');
  const goals = verdicts(results);
  log(`\ngoals of issue 14 (egress-guard against squid, direct, dnsmasq on this run):\n${formatVerdicts(goals)}`);

  const report = {
    schema: 2,
    time: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model, node: process.version, platform: process.platform, loadavg_before: loadBefore, loadavg_after: loadAfter, nofile },
    settings: DEFAULT_SETTINGS,
    proxy: { routes: results.routes, ratios: results.ratios },
    idle_tunnels: results.idleTunnels,
    startup: results.startup,
    dns: results.dns,
    inspection: results.inspection,
    goals,
    skipped,
    duration_s: Math.round((Date.now() - began) / 1000),
  };
  const out = join(ARTIFACTS, 'bench.json');
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  log(`\nwrote ${out} (${report.duration_s} s)`);
  return 0;
}

let settled = false;
main().then(
  (code) => {
    settled = true;
    process.exitCode = code;
  },
  (err: Error) => {
    settled = true;
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  },
);
// A part that waits on something no handle will ever settle lets node exit with code 0 and no result (seen once,
// in the DNS part): say so and fail instead.
process.once('beforeExit', () => {
  if (settled) return;
  process.stderr.write('bench failed: a part was left waiting with nothing running to finish it (no result written)\n');
  process.exitCode = 1;
});
