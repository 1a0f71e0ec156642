import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { queryBytes, udpExchange } from '../test/helpers/dns-fixture.js';
import { processCpuMs, RssSampler, rssMiB } from './procfs.js';
import { startEgressGuard, stopChild } from './proxies.js';
import { percentile, ratio, round } from './stats.js';
import { fmt, table } from './table.js';

/**
 * DNS under dnsperf: egress-guard's DNS server (`egress-guard run` as its own process, EGRESS_DNS_LISTEN on
 * loopback, upstream the bench's zone server) beside dnsmasq as a filtering forwarder with its cache on. Each
 * measures cached allowed names and denied names at 100 queries outstanding, then the latency at a fixed 2000 q/s.
 */
export interface DnsBenchSettings {
  /** Seconds per dnsperf run (dnsperf -l); each run is also bounded by -n. */
  seconds: number;
  /** Queries outstanding (dnsperf -q). */
  outstanding: number;
  /** The fixed rate of the latency run (dnsperf -Q). */
  fixedQps: number;
}

export const DEFAULT_DNS_SETTINGS: DnsBenchSettings = { seconds: 4, outstanding: 100, fixedQps: 2000 };

export interface DnsperfResult {
  sent: number;
  completed: number;
  lost: number;
  qps: number;
  avg_ms: number;
  /** Only for the fixed-rate run (per-query latencies from dnsperf -v). */
  p99_ms?: number;
  rcodes: Record<string, number>;
  /** CPU the server process used per 1000 completed queries, ms. */
  cpu_ms_per_1000: number;
  /** Largest RSS of the server process sampled during the run, MiB. */
  rss_mib_max: number;
}

export interface DnsServerResult {
  server: string;
  version: string;
  rss_mib_idle: number;
  cached_allowed: DnsperfResult;
  denied: DnsperfResult;
  fixed_rate: DnsperfResult;
}

export interface DnsBenchResult {
  settings: DnsBenchSettings;
  egress_guard?: DnsServerResult;
  dnsmasq?: DnsServerResult;
  /** Why a server was not measured. */
  skipped: Record<string, string>;
  ratios?: { cached_allowed_qps: number | null; denied_qps: number | null; p99_delta_ms: number | null };
}

const DENIED_NAMES = 1000;

export interface QueryFiles {
  allowed: QueryFile;
  denied: QueryFile;
}
const ALLOWED_NAME = 'allowed.test';

/**
 * A loopback port free for both UDP and TCP: a DNS server (egress-guard's, dnsmasq) binds both, and a port the
 * kernel picks for UDP can be taken on TCP (a run failed so: dnsmasq "Address already in use").
 */
export async function freeDnsPort(): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
    const port = udp.address().port;
    const tcp = net.createServer();
    const tcpFree = await new Promise<boolean>((resolve) => {
      tcp.once('error', () => resolve(false));
      tcp.listen(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((r) => (tcpFree ? tcp.close(() => r()) : r()));
    await new Promise<void>((r) => udp.close(() => r()));
    if (tcpFree) return port;
    if (attempt >= 20) throw new Error('no loopback port free for both UDP and TCP after 20 tries');
  }
}

/** Parses dnsperf's summary (and, from -v, one "> RCODE name type seconds" line per query). */
export function parseDnsperf(output: string): Omit<DnsperfResult, 'cpu_ms_per_1000' | 'rss_mib_max'> {
  const num = (re: RegExp) => Number(re.exec(output)?.[1] ?? NaN);
  const rcodes: Record<string, number> = {};
  const codes = /Response codes:\s+(.*)$/m.exec(output)?.[1] ?? '';
  for (const m of codes.matchAll(/([A-Z]+) (\d+)/g)) rcodes[m[1]!] = Number(m[2]);
  const latencies = [...output.matchAll(/^> \S+ \S+ \S+ ([\d.]+)$/gm)].map((m) => Number(m[1]) * 1000);
  return {
    sent: num(/Queries sent:\s+(\d+)/),
    completed: num(/Queries completed:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    qps: round(num(/Queries per second:\s+([\d.]+)/), 0),
    avg_ms: round(num(/Average Latency \(s\):\s+([\d.]+)/) * 1000, 3),
    ...(latencies.length > 0 && { p99_ms: round(percentile(latencies, 99), 3) }),
    rcodes,
  };
}

/** A query file and its line count (dnsperf -n counts passes through the file). */
interface QueryFile {
  path: string;
  lines: number;
}

/** An upper bound on any server's rate here, for dnsperf -n: the time limit (-l) is what normally ends a run. */
const MAX_QPS = 250_000;

/** One dnsperf run against 127.0.0.1:port, bounded by -l and -n, and killed by PID if it overstays. */
export async function dnsperf(pid: number, port: number, file: QueryFile, settings: DnsBenchSettings, fixedQps?: number): Promise<DnsperfResult> {
  const passes = Math.max(1, Math.ceil((MAX_QPS * settings.seconds) / file.lines));
  const args = ['-s', '127.0.0.1', '-p', String(port), '-d', file.path, '-q', String(settings.outstanding), '-l', String(settings.seconds), '-n', String(passes), '-t', '2'];
  if (fixedQps !== undefined) args.push('-Q', String(fixedQps), '-v');
  const sampler = new RssSampler(pid);
  const cpuBefore = processCpuMs(pid);
  const child = spawn('dnsperf', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), (settings.seconds + 10) * 1000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(killer);
  const cpuMs = processCpuMs(pid) - cpuBefore;
  const rss = sampler.stop();
  if (code !== 0) throw new Error(`dnsperf exited ${code}: ${output.slice(-500)}`);
  const parsed = parseDnsperf(output);
  return { ...parsed, cpu_ms_per_1000: round((cpuMs * 1000) / parsed.completed, 1), rss_mib_max: rss };
}

/** Waits until the server at `port` (process `pid`) answers a query (bounded: 100 tries of 100 ms). */
export async function waitForDns(port: number, pid: number, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (!Number.isFinite(processCpuMs(pid))) throw new Error(`${what} exited before answering`);
    if (await udpExchange(port, queryBytes(1, ALLOWED_NAME), 100)) return;
  }
  throw new Error(`${what} did not answer on ${port}`);
}

async function measure(server: string, version: string, pid: number, port: number, files: QueryFiles, settings: DnsBenchSettings): Promise<DnsServerResult> {
  await udpExchange(port, queryBytes(2, ALLOWED_NAME), 1000); // in the cache from now on
  const rssIdle = rssMiB(pid);
  return {
    server,
    version,
    rss_mib_idle: rssIdle,
    cached_allowed: await dnsperf(pid, port, files.allowed, settings),
    denied: await dnsperf(pid, port, files.denied, settings),
    fixed_rate: await dnsperf(pid, port, files.allowed, settings, settings.fixedQps),
  };
}

export function findDnsmasq(): string | undefined {
  return ['/usr/sbin/dnsmasq', '/usr/bin/dnsmasq'].find((p) => existsSync(p));
}

function hasDnsperf(): boolean {
  return spawnSync('dnsperf', ['-h']).error === undefined;
}

/** dnsmasq as a caching forwarder in front of the test zone; names under attacker.test answered NXDOMAIN locally. */
async function measureDnsmasq(binary: string, zonePort: number, files: QueryFiles, settings: DnsBenchSettings): Promise<DnsServerResult> {
  const dnsmasq = await startDnsmasq(binary, zonePort);
  try {
    const version = spawnSync(binary, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? 'dnsmasq';
    return await measure('dnsmasq', version, dnsmasq.pid, dnsmasq.port, files, settings);
  } finally {
    await dnsmasq.stop();
  }
}

/** dnsmasq started and answering (see measureDnsmasq), for the bench and for dns-udp-ab.ts. */
export async function startDnsmasq(binary: string, zonePort: number): Promise<{ port: number; pid: number; stop(): Promise<void> }> {
  const port = await freeDnsPort();
  const args = [
    '--conf-file=/dev/null',
    '--no-resolv',
    '--no-hosts',
    `--server=127.0.0.1#${zonePort}`,
    `--port=${port}`,
    '--listen-address=127.0.0.1',
    '--bind-interfaces',
    '--no-daemon',
    '--cache-size=10000',
    '--address=/attacker.test/',
    '--pid-file=',
  ];
  const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr = `${stderr}${c.toString()}`.slice(-2000)));
  try {
    await waitForDns(port, child.pid!, 'dnsmasq').catch((err: Error) => {
      throw new Error(`${err.message}: ${stderr.trim()}`);
    });
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return { port, pid: child.pid!, stop: () => stopChild(child) };
}

/** The environment of `egress-guard run` as the DNS bench runs it: DNS on `port`, upstream the zone, names by policy. */
export function dnsBenchEnv(port: number, zonePort: number): Record<string, string> {
  return {
    EGRESS_DNS_LISTEN: `127.0.0.1:${port}`,
    EGRESS_DNS_UPSTREAM: `127.0.0.1:${zonePort}`,
    EGRESS_DNS: 'policy',
    EGRESS_ALLOWED_ENDPOINTS: 'allowed.test *.allowed.test *.wild.test',
  };
}

/** `egress-guard run` with its DNS server on a loopback port, block mode, names resolved by policy. */
async function measureEgressGuard(dir: string, zonePort: number, files: QueryFiles, settings: DnsBenchSettings): Promise<DnsServerResult> {
  const port = await freeDnsPort();
  const cpuProfDir = process.env.BENCH_CPU_PROF;
  const guard = await startEgressGuard({
    eventsFile: join(dir, 'events.ndjson'),
    ...(cpuProfDir && { nodeFlags: ['--cpu-prof', '--cpu-prof-dir', cpuProfDir] }),
    env: dnsBenchEnv(port, zonePort),
  });
  try {
    await waitForDns(port, guard.pid, 'egress-guard');
    return await measure('egress-guard', guard.version, guard.pid, port, files, settings);
  } finally {
    await guard.stop();
  }
}

/** The bench's query files in `dir`: one cached allowed name, and DENIED_NAMES denied ones. */
export function writeQueryFiles(dir: string): QueryFiles {
  const files: QueryFiles = { allowed: { path: join(dir, 'allowed.txt'), lines: 1 }, denied: { path: join(dir, 'denied.txt'), lines: DENIED_NAMES } };
  writeFileSync(files.allowed.path, `${ALLOWED_NAME} A\n`);
  writeFileSync(files.denied.path, Array.from({ length: DENIED_NAMES }, (_, i) => `d${i}.attacker.test A\n`).join(''));
  return files;
}

/** Starts the zone server (a worker thread), measures both servers, stops everything it started. */
export async function runDnsBench(settings: DnsBenchSettings = DEFAULT_DNS_SETTINGS, progress: (line: string) => void = () => undefined): Promise<DnsBenchResult> {
  const result: DnsBenchResult = { settings, skipped: {} };
  if (!hasDnsperf()) {
    result.skipped = { 'egress-guard': 'dnsperf is not installed (apt-get install dnsperf)', dnsmasq: 'dnsperf is not installed' };
    return result;
  }
  const dir = mkdtempSync(join(tmpdir(), 'eg-dns-bench-'));
  const zoneWorker = new Worker(new URL('./dns-zone-worker.js', import.meta.url));
  try {
    const zonePort = await new Promise<number>((resolve, reject) => {
      zoneWorker.once('message', resolve);
      zoneWorker.once('error', reject);
      // A worker that ends without a port or an error (its listen never settled) would leave this waiting with
      // nothing else alive: node would then exit 0 in the middle of the bench, without a result.
      zoneWorker.once('exit', (code) => reject(new Error(`the DNS zone server's worker exited (code ${code}) before it listened`)));
    });
    const files = writeQueryFiles(dir);
    const run = async (name: string, task: () => Promise<DnsServerResult>) => {
      progress(`[dns] dnsperf against ${name}: cached allowed, denied (${settings.outstanding} outstanding), then ${settings.fixedQps} q/s, ${settings.seconds} s each`);
      try {
        return await task();
      } catch (err) {
        result.skipped[name] = `failed: ${(err as Error).message}`;
        return undefined;
      }
    };
    const guard = await run('egress-guard', () => measureEgressGuard(dir, zonePort, files, settings));
    if (guard) result.egress_guard = guard;
    const binary = findDnsmasq();
    const dnsmasq = binary ? await run('dnsmasq', () => measureDnsmasq(binary, zonePort, files, settings)) : undefined;
    if (!binary) result.skipped.dnsmasq = 'dnsmasq is not installed (apt-get install dnsmasq-base)';
    if (dnsmasq) result.dnsmasq = dnsmasq;
    if (guard && dnsmasq) {
      const p99 = (r: DnsServerResult) => r.fixed_rate.p99_ms ?? NaN;
      const delta = p99(guard) - p99(dnsmasq);
      result.ratios = {
        cached_allowed_qps: ratio(guard.cached_allowed.qps, dnsmasq.cached_allowed.qps),
        denied_qps: ratio(guard.denied.qps, dnsmasq.denied.qps),
        p99_delta_ms: Number.isFinite(delta) ? round(delta, 3) : null,
      };
    }
    return result;
  } finally {
    zoneWorker.postMessage('close');
    await new Promise((r) => zoneWorker.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

export function formatDns(dns: DnsBenchResult): string {
  const servers = [dns.egress_guard, dns.dnsmasq].filter((s): s is DnsServerResult => s !== undefined);
  const lines = [
    table(
      ['DNS (dnsperf)', 'cached allowed q/s', 'lost', 'denied q/s', 'lost', `p99 ms @${dns.settings.fixedQps} q/s`, 'CPU ms/1k (cached)', '(denied)', 'RSS MiB idle', 'max'],
      servers.map((s) => [
        s.server,
        fmt(s.cached_allowed.qps, 0),
        String(s.cached_allowed.lost),
        fmt(s.denied.qps, 0),
        String(s.denied.lost),
        fmt(s.fixed_rate.p99_ms, 3),
        fmt(s.cached_allowed.cpu_ms_per_1000),
        fmt(s.denied.cpu_ms_per_1000),
        fmt(s.rss_mib_idle),
        fmt(Math.max(s.cached_allowed.rss_mib_max, s.denied.rss_mib_max, s.fixed_rate.rss_mib_max)),
      ]),
    ),
  ];
  if (dns.ratios)
    lines.push(
      `egress-guard/dnsmasq: cached q/s ${fmt(dns.ratios.cached_allowed_qps, 2)}, denied q/s ${fmt(dns.ratios.denied_qps, 2)}, p99 delta ${fmt(dns.ratios.p99_delta_ms, 3)} ms`,
    );
  for (const [name, reason] of Object.entries(dns.skipped)) lines.push(`NOTE: DNS ${name} not measured: ${reason}`);
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await runDnsBench(DEFAULT_DNS_SETTINGS, (line) => console.log(line));
  console.log(formatDns(result));
}
