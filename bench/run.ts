import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspectionBenchSection } from './inspection-bench.js';
import { benchRoutes, DEFAULT_SETTINGS, type RouteResults } from './proxy-bench.js';
import type { Route } from './clients.js';
import { ProxyUnavailable, startEgressGuard, startSquid, startTinyproxy, type RunningProxy } from './proxies.js';
import { computeRatios, formatResults, verdicts } from './report.js';
import { startBenchServers } from './servers.js';

/**
 * `npm run bench`: the proxy scenarios direct, through egress-guard and through tinyproxy/squid on the
 * same run, then the DNS bench; prints tables and writes test-artifacts/bench.json.
 *
 * Environment: BENCH_PROXIES (comma list, default "egress-guard,tinyproxy,squid"), BENCH_SKIP_DNS=1, BENCH_SKIP_INSPECTION=1,
 * BENCH_CPU_PROF=<dir> (run egress-guard under `node --cpu-prof`, profiles written to <dir> on exit).
 */
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));
const log = (line: string) => process.stdout.write(`${line}\n`);

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

async function runDns(): Promise<Record<string, unknown>> {
  // Imported lazily so the proxy results are still printed and saved (with the reason) if the DNS bench fails to load.
  let runDnsBench: () => Promise<Record<string, unknown>>;
  try {
    ({ runDnsBench } = await import('./dns-bench.js'));
  } catch (err) {
    return { skipped: `bench/dns-bench could not be loaded: ${(err as Error).message}` };
  }
  try {
    return await runDnsBench();
  } catch (err) {
    return { failed: (err as Error).stack ?? String(err) };
  }
}

async function main(): Promise<number> {
  const began = Date.now();
  const wanted = (process.env.BENCH_PROXIES ?? 'egress-guard,tinyproxy,squid')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const settings = DEFAULT_SETTINGS;
  mkdirSync(ARTIFACTS, { recursive: true });
  const workDir = join(tmpdir(), `egress-guard-bench-${process.pid}`);
  mkdirSync(workDir, { recursive: true });
  log(`egress-guard bench: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), node ${process.version}`);

  const servers = await startBenchServers();
  const proxies: RunningProxy[] = [];
  const skipped: Record<string, string> = {};
  const loadBefore = loadavg();
  let routes: RouteResults[];
  try {
    const cpuProfDir = process.env.BENCH_CPU_PROF;
    const starters: Record<string, ProxyStarter> = {
      'egress-guard': () => startEgressGuard({ eventsFile: join(workDir, 'events.ndjson'), ...(cpuProfDir && { nodeFlags: ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] }) }),
      tinyproxy: () => startTinyproxy([servers.httpsPort]),
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
    const targets: Route[] = ['direct', ...proxies];
    routes = await benchRoutes(targets, servers, settings, log);
  } finally {
    // Stopped one by one, by PID.
    for (const proxy of proxies) await proxy.stop();
    await servers.close();
    rmSync(workDir, { recursive: true, force: true });
  }
  const loadAfter = loadavg();

  const ratios = computeRatios(routes);
  log('');
  log(formatResults(routes, ratios));
  for (const [name, reason] of Object.entries(skipped)) log(`NOTE: ${name} not measured: ${reason}`);
  log('');
  const targets = verdicts(ratios);
  for (const v of targets) log(`target ${v.met === null ? 'n/a ' : v.met ? 'MET ' : 'MISS'}  ${v.target.padEnd(36)} ${v.detail}`);
  log(
    `load average before/after: ${loadBefore.map((x) => x.toFixed(1)).join(' ')} / ${loadAfter.map((x) => x.toFixed(1)).join(' ')} on ${cpus().length} CPUs${loadAfter[0]! > cpus().length ? ' (other work was running: numbers are noisy; ratios within the interleaved run are what to compare)' : ''}`,
  );
  log('note: egress-guard runs with events on (JSON to a stdout pipe and to an events file); C proxies log one line per request/connection to a file.');

  // TLS inspection against Squid ssl-bump (bench/inspection-bench.ts).
  const inspection = process.env.BENCH_SKIP_INSPECTION === '1' ? { skipped: 'BENCH_SKIP_INSPECTION=1' } : await inspectionBenchSection(log);

  let dns: Record<string, unknown> = { skipped: 'BENCH_SKIP_DNS=1' };
  if (process.env.BENCH_SKIP_DNS !== '1') {
    log('\n[dns] running bench/dns-bench');
    dns = await runDns();
    log(`[dns] ${JSON.stringify(dns, null, 2)}`);
  }

  const report = {
    schema: 1,
    time: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model, node: process.version, platform: process.platform, loadavg_before: loadBefore, loadavg_after: loadAfter },
    settings,
    proxy: { routes, ratios, targets, skipped },
    inspection,
    dns,
    duration_s: Math.round((Date.now() - began) / 1000),
  };
  const out = join(ARTIFACTS, 'bench.json');
  writeFileSync(out, `${JSON.stringify(report, null, 2)}\n`);
  log(`\nwrote ${out} (${report.duration_s} s)`);
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: Error) => {
    process.stderr.write(`bench failed: ${err.stack ?? err.message}\n`);
    process.exitCode = 1;
  },
);
