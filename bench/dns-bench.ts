import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { EventLog } from '../events/event-log.js';
import { AddressBook } from '../decision/address-book.js';
import { startDnsServer } from '../dns/server.js';
import { makePolicy } from '../test/helpers/dns-fixture.js';

export interface DnsBenchOptions {
  /** Queries per scenario (uncached: a third of it, the authoritative test server is the bottleneck). */
  count?: number;
  concurrency?: number;
  /** Each scenario stops at this time even if `count` is not reached. */
  timeCapMs?: number;
}

export interface ScenarioResult {
  queries: number;
  errors: number;
  qps: number;
  p50_ms: number;
  p99_ms: number;
  duration_ms: number;
}

const round = (n: number, digits = 3) => Number(n.toFixed(digits));

/** Which names a load sends: always the same one, or `${prefix}${i}${suffix}` (all different). */
type NameSpec = { fixed: string } | { prefix: string; suffix: string };

/**
 * Run one load in a worker thread, so the client never shares an event loop with the server under
 * test (dnsmasq is a separate process; egress-guard's server runs in this thread).
 */
function load(port: number, names: NameSpec, count: number, concurrency: number, timeCapMs: number): Promise<ScenarioResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./dns-load-worker.js', import.meta.url), { workerData: { port, names, count, concurrency, timeCapMs } });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`load worker exited with ${code}`));
    });
  });
}

async function freePort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  const port = socket.address().port;
  await new Promise<void>((r) => socket.close(() => r()));
  return port;
}

function findDnsmasq(): string | null {
  return ['/usr/sbin/dnsmasq', '/usr/bin/dnsmasq'].find((p) => existsSync(p)) ?? null;
}

/** dnsmasq as a caching forwarder in front of the test zone; names under attacker.test answered NXDOMAIN locally. */
async function startDnsmasq(binary: string, upstreamPort: number): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(
    binary,
    [
      '--conf-file=/dev/null',
      '--no-resolv',
      '--no-hosts',
      `--server=127.0.0.1#${upstreamPort}`,
      `--port=${port}`,
      '--listen-address=127.0.0.1',
      '--bind-interfaces',
      '--no-daemon',
      '--cache-size=10000',
      '--address=/attacker.test/',
      '--pid-file=',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.on('data', (c) => {
    stderr += c;
  });
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null) throw new Error(`dnsmasq exited: ${stderr.trim()}`);
    const probe = await load(port, { fixed: 'allowed.test' }, 1, 1, 200);
    if (probe.queries === 1) return { port, child };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`dnsmasq did not answer: ${stderr.trim()}`);
}

async function scenarios(port: number, tag: string, options: Required<DnsBenchOptions>): Promise<Record<string, ScenarioResult>> {
  const { count, concurrency, timeCapMs } = options;
  await load(port, { fixed: 'allowed.test' }, 1, 1, 1000);
  const stamp = Date.now().toString(36);
  return {
    cached_allowed: await load(port, { fixed: 'allowed.test' }, count, concurrency, timeCapMs),
    uncached_allowed: await load(port, { prefix: 'u', suffix: `-${tag}-${stamp}.wild.test` }, Math.ceil(count / 3), concurrency, timeCapMs),
    blocked: await load(port, { prefix: 'b', suffix: `-${tag}-${stamp}.attacker.test` }, count, concurrency, timeCapMs),
  };
}

/** Queries/s and p50/p99 latency for cached allowed, uncached allowed and blocked names, egress-guard beside dnsmasq. */
export async function runDnsBench(input: DnsBenchOptions = {}): Promise<Record<string, unknown>> {
  const options = { count: input.count ?? 5000, concurrency: input.concurrency ?? 4, timeCapMs: input.timeCapMs ?? 10_000 };
  const zoneWorker = new Worker(new URL('./dns-zone-worker.js', import.meta.url));
  const zonePort = await new Promise<number>((resolve, reject) => {
    zoneWorker.once('message', resolve);
    zoneWorker.once('error', reject);
  });
  const dir = mkdtempSync(join(tmpdir(), 'eg-dns-bench-'));
  // Events are written to a file, as in a real run, so their cost is part of the numbers.
  const events = new EventLog({ stdout: false, eventsFile: join(dir, 'events.ndjson') });
  const policy = makePolicy({ mode: 'block' });
  const result: Record<string, unknown> = { load: options };
  let dnsmasq: ChildProcess | undefined;
  const server = await startDnsServer({
    listen: { host: '127.0.0.1', port: 0 },
    upstreams: [`127.0.0.1:${zonePort}`],
    policy: () => policy,
    events,
    addressBook: new AddressBook(),
  });
  try {
    const guard = await scenarios(server.udpAddress.port, 'eg', options);
    result.egress_guard = guard;
    const binary = findDnsmasq();
    if (!binary) {
      result.dnsmasq = 'not installed (apt-get install -y dnsmasq-base)';
      return result;
    }
    const started = await startDnsmasq(binary, zonePort);
    dnsmasq = started.child;
    const reference = await scenarios(started.port, 'dm', options);
    result.dnsmasq = reference;
    const ratios: Record<string, unknown> = {};
    for (const name of Object.keys(guard)) {
      const g = guard[name]!;
      const d = reference[name]!;
      ratios[name] = { qps: round(g.qps / d.qps, 2), p50: round(g.p50_ms / d.p50_ms, 2), p99: round(g.p99_ms / d.p99_ms, 2) };
    }
    result.ratio_egress_guard_over_dnsmasq = ratios;
    return result;
  } finally {
    if (dnsmasq && dnsmasq.exitCode === null) {
      const exited = new Promise((r) => dnsmasq!.once('exit', r));
      process.kill(dnsmasq.pid!, 'SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    }
    await server.close();
    zoneWorker.postMessage('close');
    await new Promise((r) => zoneWorker.once('exit', r));
    rmSync(dir, { recursive: true, force: true });
  }
}

function table(result: Record<string, unknown>): string {
  const lines = ['scenario          target        queries  errors      q/s   p50 ms   p99 ms'];
  for (const target of ['egress_guard', 'dnsmasq']) {
    const rows = result[target];
    if (!rows || typeof rows !== 'object') continue;
    for (const [name, r] of Object.entries(rows as Record<string, ScenarioResult>)) {
      lines.push(
        `${name.padEnd(18)}${target.padEnd(14)}${String(r.queries).padStart(7)}${String(r.errors).padStart(8)}${String(r.qps).padStart(9)}${String(r.p50_ms).padStart(9)}${String(r.p99_ms).padStart(9)}`,
      );
    }
  }
  const ratios = result.ratio_egress_guard_over_dnsmasq as Record<string, { qps: number; p50: number; p99: number }> | undefined;
  if (ratios) {
    lines.push('', 'egress-guard / dnsmasq   q/s     p50     p99');
    for (const [name, r] of Object.entries(ratios)) lines.push(`${name.padEnd(22)}${String(r.qps).padStart(6)}${String(r.p50).padStart(8)}${String(r.p99).padStart(8)}`);
  }
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await runDnsBench();
  console.log(JSON.stringify(result, null, 2));
  console.log(table(result));
}
