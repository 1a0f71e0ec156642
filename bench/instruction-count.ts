import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { stateCaPaths } from '../certs/ca-store.js';
import { createCertificateAuthority, LEAF_KEY_TYPES, type LeafKeyType } from '../certs/certificates.js';
import { inspectedKeepAlive } from './inspection-bench.js';
import { dnsBenchEnv, freeDnsPort, waitForDns } from './dns-bench.js';
import { EGRESS_GUARD_CLI, startEgressGuard } from './proxies.js';
import { keepAliveRate, tunnelTlsRate, type LoadSettings } from './proxy-bench.js';
import { BENCH_HOST, startBenchServers, type BenchServers } from './servers.js';

/**
 * Instructions egress-guard executes per operation, counted by valgrind's callgrind: a figure that does not
 * move with the load on the machine (CPU time does, by 25% and more on a shared 2-core runner), so two builds
 * can be compared on a busy machine. User space only: system calls count as the instructions that make them,
 * not the kernel's work (CPU time in `npm run bench` has both).
 *
 *   node dist/bench/instruction-count.js tunnel|keepalive|inspected|inspected-keepalive|dns-cached|dns-denied [operations] [path/to/dist/bin/egress-guard.js ...]
 *
 * `inspected-keepalive`: the same inspected host, keep-alive HTTPS GET 1 KiB over 10 pooled client connections
 * (opened in the warm-up): the per-request cost of an inspected request.
 *
 * `inspected`: new connections (CONNECT + TLS + GET 1 KiB) to bench.test with a path rule, so egress-guard
 * terminates each with its leaf (one host: one cold leaf, in the warm-up); BENCH_LEAF_KEY_TYPES=ecdsa,rsa counts
 * each build once per leaf key type (setting leaf-key-type), alternating.
 *
 * BENCH_CALLGRIND_KEEP=DIR keeps the callgrind files in DIR.
 *
 * For each build: egress-guard under callgrind, a warm-up of half the operations (JIT), counters zeroed
 * (callgrind_control -z), the operations at concurrency 10, counters dumped; instructions / operations, all threads
 * (`per_operation`) and the main thread's alone (`main_thread_per_operation`: the steadier figure, without V8's
 * compiler threads; docs/benchmark.md, "Issue 14, seventh round: CPU per DNS query"). The DNS
 * scenarios are the DNS bench's (dns-bench.ts: its zone as upstream, dnsperf with 10 queries outstanding): one
 * cached allowed name, or 1000 denied names; an operation is a query.
 */
const [scenario = 'tunnel', countArg = '400', ...clis] = process.argv.slice(2);
const operations = Number(countArg);
const SCENARIOS = ['tunnel', 'keepalive', 'inspected', 'inspected-keepalive', 'dns-cached', 'dns-denied'];
const inspects = scenario.startsWith('inspected');
if (!SCENARIOS.includes(scenario)) throw new Error(`scenario is one of ${SCENARIOS.join(', ')}, not ${scenario}`);
const dns = scenario.startsWith('dns-');
const keyTypes = (process.env.BENCH_LEAF_KEY_TYPES ?? 'ecdsa').split(',') as LeafKeyType[];
if (!keyTypes.every((k) => LEAF_KEY_TYPES.includes(k))) throw new Error(`BENCH_LEAF_KEY_TYPES: ${keyTypes.join(',')} is not a list of ${LEAF_KEY_TYPES.join(', ')}`);
if (!Number.isInteger(operations) || operations < 10) throw new Error(`operations must be an integer >= 10, not ${countArg}`);
if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is not installed (apt-get install -y valgrind)');

const CONCURRENCY = 10;
const run = (route: Parameters<typeof tunnelTlsRate>[0], servers: BenchServers, count: number) => {
  const settings: LoadSettings = { count, timeCapMs: 20 * 60_000, concurrency: CONCURRENCY, warmup: 0 };
  return scenario === 'keepalive' ? keepAliveRate(route, servers, settings) : tunnelTlsRate(route, servers, settings);
};

/** The settings that make bench.test inspected, its CA generated in `dir`; the client then trusts that CA. */
function inspecting(dir: string, servers: BenchServers, keyType: LeafKeyType): Record<string, string> {
  const upstreamCa = join(dir, 'bench-ca.pem');
  writeFileSync(upstreamCa, servers.caPem);
  // The CA made here, at native speed: an RSA 2048 key generated under valgrind took minutes on a busy machine.
  const ca = createCertificateAuthority('egress-guard instruction-count CA');
  const paths = stateCaPaths(join(dir, 'state'));
  mkdirSync(dirname(paths.cert), { recursive: true, mode: 0o700 });
  writeFileSync(paths.cert, ca.certPem);
  writeFileSync(paths.key, ca.keyPem, { mode: 0o600 });
  return { EGRESS_ALLOWED_ENDPOINTS: `${BENCH_HOST}:*/**`, EGRESS_STATE_DIR: join(dir, 'state'), EGRESS_UPSTREAM_CA: upstreamCa, EGRESS_LEAF_KEY_TYPE: keyType };
}

/** `count` queries from `file` (one pass is its line count) through dnsperf, 10 outstanding; bounded by -l and a kill. */
async function dnsQueries(port: number, file: { path: string; lines: number }, count: number): Promise<{ completed: number; failed: number }> {
  const args = ['-s', '127.0.0.1', '-p', String(port), '-d', file.path, '-q', '10', '-n', String(Math.ceil(count / file.lines)), '-l', '600', '-t', '5'];
  const child = spawn('dnsperf', args, { stdio: ['ignore', 'pipe', 'ignore'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 660_000);
  await new Promise((resolve) => child.once('exit', resolve));
  clearTimeout(killer);
  const completed = Number(/Queries completed:\s+(\d+)/.exec(output)?.[1] ?? 0);
  const sent = Number(/Queries sent:\s+(\d+)/.exec(output)?.[1] ?? 0);
  return { completed, failed: sent - completed };
}

/** What the DNS scenarios need: the zone (a worker thread), a query file, the port egress-guard's DNS listens on. */
async function dnsSetup(dir: string): Promise<{ zonePort: number; file: { path: string; lines: number }; close: () => Promise<void> }> {
  const zone = new Worker(new URL('./dns-zone-worker.js', import.meta.url));
  const zonePort = await new Promise<number>((resolve, reject) => {
    zone.once('message', resolve);
    zone.once('error', reject);
  });
  const lines = scenario === 'dns-cached' ? ['allowed.test A'] : Array.from({ length: 1000 }, (_, i) => `d${i}.attacker.test A`);
  const path = join(dir, 'queries.txt');
  writeFileSync(path, `${lines.join('\n')}\n`);
  const close = async () => {
    zone.postMessage('close');
    await new Promise((r) => zone.once('exit', r));
  };
  return { zonePort, file: { path, lines: lines.length }, close };
}

async function count(cli: string, origin: BenchServers | undefined, keyType: LeafKeyType): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'egress-guard-icount-'));
  const zone = dns ? await dnsSetup(dir) : undefined;
  const dnsPort = zone ? await freeDnsPort() : 0;
  const env = zone ? dnsBenchEnv(dnsPort, zone.zonePort) : inspects ? inspecting(dir, origin!, keyType) : {};
  const proxy = await startEgressGuard({
    eventsFile: join(dir, 'events.ndjson'),
    cli,
    env,
    // V8 writes and patches its own code: valgrind must look for that everywhere but in files.
    // One count per thread: the main thread's is the work per operation; V8's compiler threads, counted in the total,
    // still compile while the operations run and moved the total of one build by up to 30% between runs.
    wrapper: ['valgrind', '--tool=callgrind', '--separate-threads=yes', '--smc-check=all-non-file', `--callgrind-out-file=${join(dir, 'callgrind.%p')}`],
    startupTimeoutMs: 900_000,
  });
  const cleanups: Array<() => void> = [];
  try {
    const servers = origin && env.EGRESS_STATE_DIR ? { ...origin, caPem: readFileSync(stateCaPaths(env.EGRESS_STATE_DIR).cert, 'utf8') } : origin;
    const pooled = scenario === 'inspected-keepalive' ? inspectedKeepAlive(proxy, servers!, CONCURRENCY) : undefined;
    cleanups.push(() => pooled?.close());
    const load = (n: number): Promise<{ completed: number; failed: number; errors?: unknown }> =>
      zone ? dnsQueries(dnsPort, zone.file, n) : pooled ? pooled.run({ count: n, timeCapMs: 20 * 60_000, concurrency: CONCURRENCY, warmup: 0 }) : run(proxy, servers!, n);
    // Under valgrind on a busy machine the first answer can take longer than waitForDns's 10 s: a few more tries.
    for (let attempt = 1; zone; attempt++) {
      try {
        await waitForDns(dnsPort, proxy.pid, 'egress-guard');
        break;
      } catch (err) {
        if (attempt >= 6) throw err;
      }
    }
    // Inspected keep-alive: the pooled connections opened one at a time (the first with the host's cold leaf), each
    // handshake alone: ten at once under valgrind outlast the clients' 15 s timeouts, and the measured requests then
    // pay for connections the warm-up abandoned.
    for (let open = 1; pooled && open <= CONCURRENCY; open++) await pooled.run({ count: open, timeCapMs: 300_000, concurrency: open, warmup: 0 });
    const warm = await load(Math.max(50, Math.round(operations / 2)));
    execFileSync('callgrind_control', ['-z', String(proxy.pid)], { stdio: 'ignore' });
    const measured = await load(operations);
    execFileSync('callgrind_control', ['-d', String(proxy.pid)], { stdio: 'ignore' });
    // The dump is written by the process itself, at its next scheduling point.
    // A file per thread (callgrind.PID.DUMP-THREAD); thread 01 is the main thread.
    const threads = new Map<string, number>();
    for (let i = 0; i < 300 && !threads.has('01'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      for (const file of readdirSync(dir).filter((f) => /^callgrind\.\d+(?:\.\d+)?-\d+$/.test(f))) {
        const total = /^(?:summary|totals): (\d+)/m.exec(readFileSync(join(dir, file), 'utf8'));
        if (total) threads.set(file.slice(file.lastIndexOf('-') + 1), Number(total[1]));
      }
    }
    if (!threads.has('01')) throw new Error('callgrind wrote no counts');
    const instructions = [...threads.values()].reduce((a, b) => a + b, 0);
    const failed = warm.failed + measured.failed;
    return {
      cli,
      scenario,
      ...(inspects && { leaf_key_type: keyType }),
      operations: measured.completed,
      failed,
      ...(failed > 0 && !zone && { errors: { warm_up: warm.errors, measured: measured.errors } }),
      instructions,
      per_operation: Math.round(instructions / measured.completed),
      main_thread_per_operation: Math.round(threads.get('01')! / measured.completed),
    };
  } finally {
    for (const cleanup of cleanups) cleanup();
    await proxy.stop();
    await zone?.close();
    // BENCH_CALLGRIND_KEEP=DIR keeps the callgrind files (per-function profiles: callgrind_annotate; with node's
    // --perf-basic-prof in BENCH_EGRESS_GUARD_NODE_FLAGS, /tmp/perf-PID.map names the JIT code's addresses).
    const keep = process.env.BENCH_CALLGRIND_KEEP;
    if (keep) {
      mkdirSync(keep, { recursive: true });
      for (const file of readdirSync(dir).filter((f) => f.startsWith('callgrind.'))) cpSync(join(dir, file), join(keep, file));
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

const servers = dns ? undefined : await startBenchServers();
try {
  for (const cli of clis.length > 0 ? clis : [EGRESS_GUARD_CLI])
    for (const keyType of inspects ? keyTypes : ['ecdsa' as const]) process.stdout.write(`${JSON.stringify(await count(cli, servers, keyType))}\n`);
} finally {
  await servers?.close();
}
