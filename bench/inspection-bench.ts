import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { stateCaPaths } from '../certs/ca-store.js';
import { createCertificateAuthority, LEAF_KEY_TYPES, type LeafKeyType } from '../certs/certificates.js';
import { SMALL_BODY } from './body.js';
import { openTunnel, REQUEST_TIMEOUT_MS, type Route } from './clients.js';
import { runLoad, type LoadResult } from './load.js';
import { tunnelTlsTask, type LoadSettings } from './proxy-bench.js';
import { ProxyUnavailable, startEgressGuard, startSquidSslBump, type RunningProxy } from './proxies.js';
import { BENCH_HOST, startBenchServers, type BenchServers } from './servers.js';
import { percentile, ratio, round } from './stats.js';

/**
 * TLS inspection against Squid ssl-bump (issue 13), in `npm run bench` unless BENCH_SKIP_INSPECTION=1:
 * egress-guard with a path rule for bench.test (so every CONNECT to it is inspected: a leaf of its own CA,
 * each request decided and forwarded over TLS verified with the bench CA) and squid with `ssl_bump bump all`,
 * same run, interleaved rounds. Scenarios: keep-alive HTTPS GET 1 KiB (c=50) and a new connection per request
 * (CONNECT + TLS + GET 1 KiB); proxy CPU per request from /proc; cold-leaf latency from bench/cold-leaf.
 * BENCH_INSPECTION_LEAF_KEYS=ecdsa,rsa runs one egress-guard per leaf key type in the same interleaved rounds (an
 * A/B of leaf-key-type); the first is the one compared with squid.
 */

export interface InspectionSettings {
  rounds: number;
  keepAlive: LoadSettings;
  newConnection: LoadSettings;
  /** Leaves issued by bench/cold-leaf for the cold-leaf p99 (0: not measured). */
  coldLeaves: number;
  /** One inspecting egress-guard per leaf key type (setting leaf-key-type); default the setting's default, ecdsa. */
  leafKeyTypes?: readonly LeafKeyType[];
}

function leafKeyTypesFromEnv(): LeafKeyType[] {
  const listed = (process.env.BENCH_INSPECTION_LEAF_KEYS ?? 'ecdsa').split(',').map((k) => k.trim());
  const unknown = listed.filter((k) => !LEAF_KEY_TYPES.includes(k as LeafKeyType));
  if (unknown.length > 0 || listed.length === 0) throw new Error(`BENCH_INSPECTION_LEAF_KEYS: ${unknown.join(',')} is not ${LEAF_KEY_TYPES.join(' or ')}`);
  return listed as LeafKeyType[];
}

export const INSPECTION_SETTINGS: InspectionSettings = {
  rounds: 3,
  keepAlive: { count: 5_000, timeCapMs: 2_000, concurrency: 50, warmup: 300 },
  newConnection: { count: 600, timeCapMs: 3_000, concurrency: 50, warmup: 50 },
  coldLeaves: 100,
  leafKeyTypes: leafKeyTypesFromEnv(),
};

export interface InspectionRate {
  route: string;
  rounds: number;
  completed: number;
  failed: number;
  req_per_s: number;
  round_req_per_s: number[];
  p50_ms: number;
  p99_ms: number;
  /** Proxy process CPU (user + system) per 1000 completed requests, ms; absent for direct. */
  proxy_cpu_ms_per_1000?: number;
  errors: Record<string, number>;
}

export interface InspectionReport {
  routes: Array<{ route: string; version?: string; keep_alive: InspectionRate; new_connection: InspectionRate }>;
  /** egress-guard / squid ssl-bump: above 1 is better for req/s, below 1 better for CPU. */
  vs_squid: { keep_alive_req_per_s: number | null; new_connection_req_per_s: number | null; keep_alive_cpu: number | null; new_connection_cpu: number | null } | null;
  /** Each egress-guard route's leaf key type, by route name. */
  leaf_key_types: Record<string, LeafKeyType>;
  /** Of the first leaf key type. */
  cold_leaf?: { key_type: LeafKeyType; count: number; p50_ms: number; p99_ms: number; loop_p99_ms: number } | { failed: string };
  verdict: 'MET' | 'MISS' | 'n/a';
  skipped: Record<string, string>;
}

/** A route's view of the TLS it meets: the roots that verify it (the bench CA direct, the proxy's CA inspected). */
interface InspectedRoute {
  route: Route;
  servers: BenchServers;
}

const EGRESS_INSPECTING = 'egress-guard inspecting';
/** The route of egress-guard with that leaf key type: the default's keeps the plain name. */
const inspectingRouteName = (keyType: LeafKeyType) => (keyType === 'ecdsa' ? EGRESS_INSPECTING : `${EGRESS_INSPECTING}, ${keyType} leaves`);

/** Keep-alive HTTPS through a CONNECT tunnel per pooled connection (or straight to the server): node's agent. */
function keepAliveAgent({ route, servers }: InspectedRoute, maxSockets: number): https.Agent {
  const agent = new https.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets, ca: servers.caPem, servername: servers.serverName });
  if (route === 'direct') return agent;
  // The agent asks for a connection; it comes once the tunnel is open (node's callback form of createConnection).
  (agent as unknown as { createConnection: (o: unknown, cb: (err: Error | null, s?: net.Socket) => void) => void }).createConnection = (_options, callback) => {
    openTunnel(route, `${route.targetHost}:${servers.httpsPort}`).then(
      (socket) => callback(null, tls.connect({ socket, servername: servers.serverName, ca: servers.caPem, ALPNProtocols: ['http/1.1'] })),
      (err: Error) => callback(err),
    );
  };
  return agent;
}

function keepAliveHttpsTask(agent: https.Agent, servers: BenchServers): () => Promise<void> {
  return () =>
    new Promise((resolve, reject) => {
      const req = https.request({
        host: '127.0.0.1',
        port: servers.httpsPort,
        servername: servers.serverName,
        path: '/1k',
        agent,
        headers: { host: `${BENCH_HOST}:${servers.httpsPort}` },
      });
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error('GET /1k timed out')));
      // 'on': a request that timed out waiting for its tunnel gets the tunnel's error too, later (a second 'error').
      req.on('error', reject);
      req.once('response', (res) => {
        let bytes = 0;
        res.on('data', (chunk: Buffer) => (bytes += chunk.length));
        res.once('error', reject);
        res.once('end', () => (res.statusCode === 200 && bytes === SMALL_BODY.length ? resolve() : reject(new Error(`bad response: status ${res.statusCode}, ${bytes} bytes`))));
      });
      req.end();
    });
}

/**
 * Keep-alive HTTPS GET 1 KiB through `route` with `servers.caPem` trusted (the proxy's CA when it inspects), one
 * pooled connection per concurrent request, kept across `run`s (a warm-up's connections serve the counted
 * requests): the inspection bench's keep-alive scenario, for bench/instruction-count and bench/profile-scenario.
 */
export function inspectedKeepAlive(route: Route, servers: BenchServers, concurrency: number): { run: (settings: LoadSettings) => Promise<LoadResult>; close: () => void } {
  const agent = keepAliveAgent({ route, servers }, concurrency);
  const task = keepAliveHttpsTask(agent, servers);
  return {
    run: (settings) => runLoad({ count: settings.count, timeCapMs: settings.timeCapMs, concurrency: Math.min(concurrency, settings.concurrency), task }),
    close: () => agent.destroy(),
  };
}

/** The rounds of one scenario on one route, pooled: rates over the summed time, latencies merged, CPU summed. */
class Rounds {
  private readonly loads: LoadResult[] = [];
  private cpuMs = 0;
  constructor(private readonly route: Route) {}

  async measure(settings: LoadSettings, task: () => Promise<void>, warmup: boolean): Promise<void> {
    if (warmup && settings.warmup > 0) await runLoad({ count: settings.warmup, timeCapMs: 5_000, concurrency: settings.concurrency, task });
    const cpu = this.route === 'direct' ? () => NaN : (this.route as RunningProxy).cpuMs;
    const before = cpu();
    this.loads.push(await runLoad({ count: settings.count, timeCapMs: settings.timeCapMs, concurrency: settings.concurrency, task }));
    this.cpuMs += cpu() - before;
  }

  result(): InspectionRate {
    const completed = this.loads.reduce((a, l) => a + l.completed, 0);
    const elapsed = this.loads.reduce((a, l) => a + l.elapsedMs, 0);
    const latencies = this.loads.flatMap((l) => l.latenciesMs);
    const errors: Record<string, number> = {};
    for (const l of this.loads) for (const [k, v] of Object.entries(l.errors)) errors[k] = (errors[k] ?? 0) + v;
    return {
      route: this.route === 'direct' ? 'direct' : this.route.name,
      rounds: this.loads.length,
      completed,
      failed: this.loads.reduce((a, l) => a + l.failed, 0),
      req_per_s: round((completed * 1000) / elapsed, 1),
      round_req_per_s: this.loads.map((l) => round((l.completed * 1000) / l.elapsedMs, 1)),
      p50_ms: round(percentile(latencies, 50)),
      p99_ms: round(percentile(latencies, 99)),
      ...(Number.isFinite(this.cpuMs) && completed > 0 && { proxy_cpu_ms_per_1000: round((this.cpuMs * 1000) / completed, 1) }),
      errors,
    };
  }
}

/** bench/cold-leaf's "shared <key type>" line (what the sidecar's LeafIssuer does for a host seen the first time). */
function coldLeaf(count: number, keyType: LeafKeyType): InspectionReport['cold_leaf'] {
  const script = fileURLToPath(new URL('./cold-leaf.js', import.meta.url));
  const run = spawnSync(process.execPath, [script, String(count)], { encoding: 'utf8', timeout: 300_000 });
  const line = run.stdout.split('\n').find((l) => l.startsWith(`shared ${keyType} `));
  const [p50, p99, loopP99] = (line ?? '').trim().split(/\s+/).slice(2).map(Number);
  if (run.status !== 0 || p99 === undefined || !Number.isFinite(p99)) return { failed: `bench/cold-leaf: ${run.error?.message ?? run.stderr.slice(-500)}` };
  return { key_type: keyType, count, p50_ms: p50!, p99_ms: p99, loop_p99_ms: loopP99! };
}

/** egress-guard in block mode with a path rule for bench.test (inspected), leaves of `keyType`, its CA in a state directory of its own. */
async function startInspectingEgressGuard(dir: string, servers: BenchServers, keyType: LeafKeyType): Promise<InspectedRoute & { proxy: RunningProxy }> {
  const stateDir = join(dir, `state-${keyType}`);
  const upstreamCa = join(dir, 'bench-ca.pem');
  writeFileSync(upstreamCa, servers.caPem);
  // startEgressGuard sets the bench's host-level policy; these settings go in through a preload module (the
  // process's environment before the CLI reads it), so the shared starter stays as it is.
  const settings = { EGRESS_ALLOWED_ENDPOINTS: `${BENCH_HOST}:*/**`, EGRESS_STATE_DIR: stateDir, EGRESS_UPSTREAM_CA: upstreamCa, EGRESS_LEAF_KEY_TYPE: keyType };
  const preload = `data:text/javascript,Object.assign(process.env, ${encodeURIComponent(JSON.stringify(settings))});`;
  const proxy = await startEgressGuard({ eventsFile: join(dir, `events-${keyType}.ndjson`), nodeFlags: ['--import', preload] });
  const named = { ...proxy, name: inspectingRouteName(keyType), cpuMs: proxy.cpuMs, stop: proxy.stop };
  return { proxy: named, route: named, servers: { ...servers, caPem: readFileSync(stateCaPaths(stateDir).cert, 'utf8') } };
}

async function startBumpingSquid(servers: BenchServers): Promise<InspectedRoute & { proxy: RunningProxy }> {
  const ca = createCertificateAuthority('egress-guard bench squid CA');
  const proxy = await startSquidSslBump({ caCertPem: ca.certPem, caKeyPem: ca.keyPem, upstreamCaPem: servers.caPem, hosts: { [BENCH_HOST]: '127.0.0.1' } });
  return { proxy, route: proxy, servers: { ...servers, caPem: ca.certPem } };
}

export async function runInspectionBench(settings: InspectionSettings, log: (line: string) => void): Promise<InspectionReport> {
  const dir = join(tmpdir(), `egress-guard-inspection-bench-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const servers = await startBenchServers();
  const started: RunningProxy[] = [];
  const skipped: Record<string, string> = {};
  const routes: InspectedRoute[] = [{ route: 'direct', servers }];
  const keyTypes = settings.leafKeyTypes ?? ['ecdsa'];
  try {
    const starters: Array<readonly [string, () => Promise<InspectedRoute & { proxy: RunningProxy }>]> = [
      ...keyTypes.map((keyType) => [inspectingRouteName(keyType), () => startInspectingEgressGuard(dir, servers, keyType)] as const),
      ['squid ssl-bump', () => startBumpingSquid(servers)],
    ];
    for (const [name, start] of starters) {
      try {
        const { proxy, ...route } = await start();
        started.push(proxy);
        routes.push(route);
        log(`[inspection] ${name}: pid ${proxy.pid} on ${proxy.host}:${proxy.port} (${proxy.version})`);
      } catch (err) {
        skipped[name] = err instanceof ProxyUnavailable ? err.message : `could not start: ${(err as Error).message}`;
        log(`[inspection] ${name} SKIPPED: ${skipped[name]}`);
      }
    }
    const agents = routes.map((r) => keepAliveAgent(r, settings.keepAlive.concurrency));
    const keepAlive = routes.map((r) => new Rounds(r.route));
    const fresh = routes.map((r) => new Rounds(r.route));
    try {
      for (let i = 0; i < settings.rounds; i++) {
        for (const [j, r] of routes.entries()) {
          const name = r.route === 'direct' ? 'direct' : r.route.name;
          log(`[inspection] keep-alive HTTPS GET 1 KiB, c=${settings.keepAlive.concurrency}, round ${i + 1}/${settings.rounds}: ${name}`);
          await keepAlive[j]!.measure(settings.keepAlive, keepAliveHttpsTask(agents[j]!, r.servers), i === 0);
          log(`[inspection] new connection (CONNECT + TLS + GET 1 KiB), c=${settings.newConnection.concurrency}, round ${i + 1}/${settings.rounds}: ${name}`);
          await fresh[j]!.measure(settings.newConnection, tunnelTlsTask(r.route, r.servers), i === 0);
        }
      }
    } finally {
      for (const agent of agents) agent.destroy();
    }
    const results = routes.map((r, j) => ({
      route: r.route === 'direct' ? 'direct' : r.route.name,
      ...(r.route !== 'direct' && { version: (r.route as RunningProxy).version }),
      keep_alive: keepAlive[j]!.result(),
      new_connection: fresh[j]!.result(),
    }));
    log(`[inspection] cold leaves (bench/cold-leaf ${settings.coldLeaves})`);
    const cold = settings.coldLeaves > 0 ? coldLeaf(settings.coldLeaves, keyTypes[0]!) : undefined;
    return summarise(results, Object.fromEntries(keyTypes.map((k) => [inspectingRouteName(k), k])), cold, skipped);
  } finally {
    for (const proxy of started) await proxy.stop();
    await servers.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function summarise(
  routes: InspectionReport['routes'],
  leafKeyTypes: Record<string, LeafKeyType>,
  cold: InspectionReport['cold_leaf'],
  skipped: Record<string, string>,
): InspectionReport {
  const eg = routes.find((r) => r.route in leafKeyTypes); // the first leaf key type's
  const squid = routes.find((r) => r.route === 'squid ssl-bump');
  const vs =
    eg && squid
      ? {
          keep_alive_req_per_s: ratio(eg.keep_alive.req_per_s, squid.keep_alive.req_per_s),
          new_connection_req_per_s: ratio(eg.new_connection.req_per_s, squid.new_connection.req_per_s),
          keep_alive_cpu: ratio(eg.keep_alive.proxy_cpu_ms_per_1000, squid.keep_alive.proxy_cpu_ms_per_1000),
          new_connection_cpu: ratio(eg.new_connection.proxy_cpu_ms_per_1000, squid.new_connection.proxy_cpu_ms_per_1000),
        }
      : null;
  const failed = routes.some((r) => r.keep_alive.failed + r.new_connection.failed > 0);
  // "No worse than Squid per request": both rates at least Squid's, every request answered.
  const verdict =
    !vs || vs.keep_alive_req_per_s === null || vs.new_connection_req_per_s === null
      ? 'n/a'
      : !failed && vs.keep_alive_req_per_s >= 1 && vs.new_connection_req_per_s >= 1
        ? 'MET'
        : 'MISS';
  return { routes, vs_squid: vs, leaf_key_types: leafKeyTypes, ...(cold && { cold_leaf: cold }), verdict, skipped };
}

const fmt = (value: number | null | undefined, digits = 1) => (value === null || value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(digits));

export function formatInspection(report: InspectionReport): string {
  const header = ['route', 'keep-alive req/s', 'p50 ms', 'p99 ms', 'CPU ms/1k req', 'new-conn req/s', 'p50 ms', 'p99 ms', 'CPU ms/1k req', 'failed'];
  const rows = report.routes.map((r) => [
    r.route,
    fmt(r.keep_alive.req_per_s),
    fmt(r.keep_alive.p50_ms, 2),
    fmt(r.keep_alive.p99_ms, 2),
    fmt(r.keep_alive.proxy_cpu_ms_per_1000),
    fmt(r.new_connection.req_per_s),
    fmt(r.new_connection.p50_ms, 2),
    fmt(r.new_connection.p99_ms, 2),
    fmt(r.new_connection.proxy_cpu_ms_per_1000),
    String(r.keep_alive.failed + r.new_connection.failed),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
  const vs = report.vs_squid;
  if (vs) {
    out.push(
      `egress-guard / squid ssl-bump: keep-alive req/s ${fmt(vs.keep_alive_req_per_s, 2)}, new-conn req/s ${fmt(vs.new_connection_req_per_s, 2)}, CPU per request keep-alive ${fmt(vs.keep_alive_cpu, 2)}, new-conn ${fmt(vs.new_connection_cpu, 2)} (CPU: below 1 is better)`,
    );
  }
  // The A/B of leaf-key-type: each other key type's egress-guard against the first's, same rounds.
  const [first, ...others] = report.routes.filter((r) => r.route in report.leaf_key_types);
  for (const other of first ? others : []) {
    const [a, b] = [report.leaf_key_types[other.route], report.leaf_key_types[first!.route]];
    out.push(
      `egress-guard ${a} / ${b} leaves: new-conn CPU per request ${fmt(ratio(other.new_connection.proxy_cpu_ms_per_1000, first!.new_connection.proxy_cpu_ms_per_1000), 2)}, new-conn req/s ${fmt(ratio(other.new_connection.req_per_s, first!.new_connection.req_per_s), 2)}, keep-alive CPU per request ${fmt(ratio(other.keep_alive.proxy_cpu_ms_per_1000, first!.keep_alive.proxy_cpu_ms_per_1000), 2)}`,
    );
  }
  const cold = report.cold_leaf;
  if (cold)
    out.push(
      'failed' in cold
        ? `cold leaf: ${cold.failed}`
        : `cold leaf (${cold.count} new hosts, ${cold.key_type}): p50 ${cold.p50_ms} ms, p99 ${cold.p99_ms} ms, event-loop delay p99 ${cold.loop_p99_ms} ms`,
    );
  for (const [name, reason] of Object.entries(report.skipped)) out.push(`NOTE: ${name} not measured: ${reason}`);
  out.push(`inspected req/s vs squid ssl-bump: ${report.verdict}`);
  return out.join('\n');
}

/** The section of `npm run bench`: never throws (a failure is reported in bench.json, the rest still runs). */
export async function inspectionBenchSection(log: (line: string) => void, settings = INSPECTION_SETTINGS): Promise<InspectionReport | { failed: string }> {
  try {
    const report = await runInspectionBench(settings, log);
    log(`\n${formatInspection(report)}`);
    return report;
  } catch (err) {
    log(`[inspection] FAILED: ${(err as Error).message}`);
    return { failed: (err as Error).stack ?? String(err) };
  }
}
