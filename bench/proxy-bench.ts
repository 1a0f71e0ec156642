import { freshGet, KeepAliveClient, type Route } from './clients.js';
import { SMALL_BODY } from './body.js';
import { runLoad, type LoadResult } from './load.js';
import type { RunningProxy } from './proxies.js';
import type { BenchServers } from './servers.js';
import { rssMiB, withRssMax } from './procfs.js';
import { median, percentile, round } from './stats.js';

export interface RateResult {
  route: string;
  concurrency: number;
  rounds: number;
  started: number;
  completed: number;
  failed: number;
  elapsed_ms: number;
  /** Completed requests over the summed measuring time of all rounds. */
  req_per_s: number;
  round_req_per_s: number[];
  /** Over the latencies of all rounds. */
  p50_ms: number;
  p99_ms: number;
  errors: Record<string, number>;
  /** CPU the proxy process used per 1000 completed requests, ms (absent for direct). */
  proxy_cpu_ms_per_1000?: number;
  /** Keep-alive only: requests retried once because the proxy had closed the reused connection. */
  retried?: number;
}

export interface ThroughputResult {
  route: string;
  bytes: number;
  runs: Array<{ ok: boolean; bytes: number; ms: number; mb_per_s: number; error?: string }>;
  /** Median MB/s (10^6 bytes) over the successful runs. */
  mb_per_s: number;
  /** CPU the proxy process used per GB relayed, ms (absent for direct). */
  proxy_cpu_ms_per_gb?: number;
}

export interface LoadSettings {
  count: number;
  timeCapMs: number;
  concurrency: number;
  /** Requests run (and discarded) before measuring, to warm up JIT, pools and caches. */
  warmup: number;
}

function routeName(route: Route): string {
  return route === 'direct' ? 'direct' : route.name;
}

function cpuOf(route: Route): () => number {
  const proxy = route as Route & Partial<RunningProxy>;
  return route !== 'direct' && typeof proxy.cpuMs === 'function' ? proxy.cpuMs.bind(proxy) : () => NaN;
}

/** Accumulates the rounds of one rate scenario for one route: rates pooled, latencies merged. */
class RateAccumulator {
  private readonly loads: LoadResult[] = [];
  private cpuMs = 0;
  retried = 0;

  constructor(
    private readonly route: Route,
    private readonly concurrency: number,
  ) {}

  add(load: LoadResult, cpuMs: number): void {
    this.loads.push(load);
    this.cpuMs += cpuMs;
  }

  result(): RateResult {
    const sum = (f: (l: LoadResult) => number) => this.loads.reduce((acc, l) => acc + f(l), 0);
    const completed = sum((l) => l.completed);
    const elapsedMs = sum((l) => l.elapsedMs);
    const latencies = this.loads.flatMap((l) => l.latenciesMs);
    const errors: Record<string, number> = {};
    for (const l of this.loads) for (const [k, v] of Object.entries(l.errors)) errors[k] = (errors[k] ?? 0) + v;
    const result: RateResult = {
      route: routeName(this.route),
      concurrency: this.concurrency,
      rounds: this.loads.length,
      started: sum((l) => l.started),
      completed,
      failed: sum((l) => l.failed),
      elapsed_ms: round(elapsedMs, 1),
      req_per_s: round((completed * 1000) / elapsedMs, 1),
      round_req_per_s: this.loads.map((l) => round((l.completed * 1000) / l.elapsedMs, 1)),
      p50_ms: round(percentile(latencies, 50)),
      p99_ms: round(percentile(latencies, 99)),
      errors,
    };
    if (Number.isFinite(this.cpuMs) && completed > 0) result.proxy_cpu_ms_per_1000 = round((this.cpuMs * 1000) / completed, 1);
    return result;
  }
}

/** One measured round (after an optional warm-up) of a rate scenario on one route. */
async function measureRound(route: Route, settings: LoadSettings, task: () => Promise<void>, acc: RateAccumulator, warmup: boolean): Promise<void> {
  if (warmup && settings.warmup > 0) await runLoad({ count: settings.warmup, timeCapMs: Math.min(5000, settings.timeCapMs), concurrency: settings.concurrency, task });
  const cpu = cpuOf(route);
  const cpuBefore = cpu();
  const load = await runLoad({ count: settings.count, timeCapMs: settings.timeCapMs, concurrency: settings.concurrency, task });
  acc.add(load, cpu() - cpuBefore);
}

/**
 * (a) task: a new connection per request: CONNECT tunnel (or direct TCP), full TLS handshake, GET 1 KiB,
 * close. Checks every response is 200 with exactly 1 KiB.
 */
export function tunnelTlsTask(route: Route, servers: BenchServers): () => Promise<void> {
  return async () => {
    const res = await freshGet(route, servers, '/1k');
    if (res.status !== 200 || res.bytes !== SMALL_BODY.length) throw new Error(`bad response: status ${res.status}, ${res.bytes} bytes`);
  };
}

/**
 * (c) task: plain-HTTP GET 1 KiB over a keep-alive agent: absolute-URI requests to the proxy, or
 * origin-form requests straight to the server. Checks every response is 200 with exactly 1 KiB.
 */
export function keepAliveTask(client: KeepAliveClient): () => Promise<void> {
  return async () => {
    const res = await client.get('/1k');
    if (res.status !== 200 || res.bytes !== SMALL_BODY.length) throw new Error(`bad response: status ${res.status}, ${res.bytes} bytes`);
  };
}

/** (c) as a load that keeps its client connections between runs (an A/B of two builds in interleaved rounds). */
export function plainKeepAlive(route: Route, servers: BenchServers, concurrency: number): { run: (settings: LoadSettings) => Promise<LoadResult>; close: () => void } {
  const client = new KeepAliveClient(route, servers, concurrency);
  const task = keepAliveTask(client);
  return {
    run: (settings) => runLoad({ count: settings.count, timeCapMs: settings.timeCapMs, concurrency: Math.min(concurrency, settings.concurrency), task }),
    close: () => client.close(),
  };
}

/** (a) alone, for one route: `rounds` rounds of settings.count requests. */
export async function tunnelTlsRate(route: Route, servers: BenchServers, settings: LoadSettings, rounds = 1): Promise<RateResult> {
  const acc = new RateAccumulator(route, settings.concurrency);
  for (let i = 0; i < rounds; i++) await measureRound(route, settings, tunnelTlsTask(route, servers), acc, i === 0);
  return acc.result();
}

/** (c) alone, for one route. */
export async function keepAliveRate(route: Route, servers: BenchServers, settings: LoadSettings, rounds = 1): Promise<RateResult> {
  const client = new KeepAliveClient(route, servers, settings.concurrency);
  const acc = new RateAccumulator(route, settings.concurrency);
  try {
    for (let i = 0; i < rounds; i++) {
      await measureRound(route, settings, keepAliveTask(client), acc, i === 0);
      if (i === 0) client.retries = 0; // retries of the warm-up do not count
    }
    return { ...acc.result(), retried: client.retries };
  } finally {
    client.close();
  }
}

export interface DownloadOptions {
  bytes: number;
  timeoutMs: number;
  expectDigest?: string;
  /** false: plain HTTP inside the CONNECT tunnel (b'); default true: TLS (b). */
  tls?: boolean;
}

/** One download of `bytes` through the route, checked (byte count; sha256 when expectDigest is given). */
export async function downloadOnce(route: Route, servers: BenchServers, options: DownloadOptions): Promise<ThroughputResult['runs'][number]> {
  const t0 = performance.now();
  try {
    const res = await freshGet(route, servers, `/bytes/${options.bytes}`, { tls: options.tls ?? true, hash: options.expectDigest !== undefined, timeoutMs: options.timeoutMs });
    const ms = performance.now() - t0;
    let error: string | undefined;
    if (res.status !== 200) error = `status ${res.status}`;
    else if (res.bytes !== options.bytes) error = `received ${res.bytes} of ${options.bytes} bytes`;
    else if (options.expectDigest !== undefined && res.digest !== options.expectDigest) error = 'body differs from what the server sent (sha256)';
    return { ok: !error, bytes: res.bytes, ms: round(ms, 1), mb_per_s: round(res.bytes / 1e6 / (ms / 1000), 1), ...(error && { error }) };
  } catch (err) {
    return { ok: false, bytes: 0, ms: round(performance.now() - t0, 1), mb_per_s: 0, error: (err as Error).message };
  }
}

function throughputFrom(route: Route, bytes: number, runs: ThroughputResult['runs'], cpuMs: number): ThroughputResult {
  const good = runs.filter((r) => r.ok).map((r) => r.mb_per_s);
  const result: ThroughputResult = { route: routeName(route), bytes, runs, mb_per_s: good.length ? median(good) : NaN };
  const relayed = runs.reduce((acc, r) => acc + r.bytes, 0);
  if (Number.isFinite(cpuMs) && relayed > 0) result.proxy_cpu_ms_per_gb = round((cpuMs * 1e9) / relayed, 0);
  return result;
}

/** (b) or (b') alone, for one route: `repeats` downloads, median MB/s. */
export async function bulkDownload(route: Route, servers: BenchServers, options: DownloadOptions & { repeats: number }): Promise<ThroughputResult> {
  const cpu = cpuOf(route);
  const cpuBefore = cpu();
  const runs: ThroughputResult['runs'] = [];
  for (let i = 0; i < options.repeats; i++) runs.push(await downloadOnce(route, servers, options));
  return throughputFrom(route, options.bytes, runs, cpu() - cpuBefore);
}

export interface ProxyBenchSettings {
  /** Rounds of (a), (a') and (c); each round visits every route in turn, so load from elsewhere hits all alike. */
  rounds: number;
  tunnel: LoadSettings;
  /** (a'): the tunnel scenario one request at a time, for its latency. */
  tunnelSerial: LoadSettings;
  keepAlive: LoadSettings;
  /** (b) TLS and (b') plain: `repeats` downloads per route, interleaved across routes. */
  bulk: { bytes: number; repeats: number; timeoutMs: number };
}

export const DEFAULT_SETTINGS: ProxyBenchSettings = {
  rounds: 3,
  tunnel: { count: 800, timeCapMs: 3_000, concurrency: 50, warmup: 100 },
  tunnelSerial: { count: 300, timeCapMs: 1_500, concurrency: 1, warmup: 20 },
  keepAlive: { count: 5_000, timeCapMs: 2_000, concurrency: 50, warmup: 300 },
  bulk: { bytes: 64 * 1024 * 1024, repeats: 5, timeoutMs: 30_000 },
};

/** The scenarios, by the key their results and RSS maxima are stored under. */
export const SCENARIOS = {
  tunnel_tls: '(a) new tunnel + TLS + 1 KiB GET',
  tunnel_tls_c1: "(a') new tunnel + TLS + 1 KiB GET, one at a time",
  bulk: '(b) 64 MiB TLS through a tunnel',
  bulk_plain: "(b') 64 MiB plain through a tunnel",
  keep_alive: '(c) keep-alive plain HTTP',
} as const;
export type ScenarioKey = keyof typeof SCENARIOS;

export interface RouteResults {
  route: string;
  version?: string;
  logging?: string;
  tunnel_tls: RateResult;
  tunnel_tls_c1: RateResult;
  bulk: ThroughputResult;
  bulk_plain: ThroughputResult;
  keep_alive: RateResult;
  /** Proxies only: RSS (MiB) idle after start, and the largest sample (every 100 ms) during each scenario. */
  rss_mib?: { idle: number } & Partial<Record<ScenarioKey, number>>;
}

function pidOf(route: Route): number | undefined {
  return route === 'direct' ? undefined : (route as Route & Partial<RunningProxy>).pid;
}

/**
 * Visits every route `rounds` times (scenario-major, interleaved), sampling the proxy's RSS during each visit;
 * answers the largest RSS per route.
 */
async function interleaved(
  routes: Route[],
  rounds: number,
  label: (route: Route, round: number) => string,
  progress: (line: string) => void,
  visit: (route: Route, i: number, round: number) => Promise<void>,
): Promise<number[]> {
  const rss = routes.map(() => NaN);
  for (let round = 0; round < rounds; round++) {
    for (const [i, route] of routes.entries()) {
      progress(label(route, round));
      const { rssMaxMiB } = await withRssMax(pidOf(route), () => visit(route, i, round));
      if (!(rssMaxMiB <= rss[i]!)) rss[i] = rssMaxMiB;
    }
  }
  return rss;
}

/** A rate scenario ((a), (a')) on every route, interleaved. */
async function rateScenario(
  routes: Route[],
  rounds: number,
  name: string,
  settings: LoadSettings,
  progress: (line: string) => void,
  task: (route: Route, i: number) => () => Promise<void>,
  afterRound: (i: number, round: number) => void = () => undefined,
): Promise<{ results: RateAccumulator[]; rss: number[] }> {
  const results = routes.map((r) => new RateAccumulator(r, settings.concurrency));
  const rss = await interleaved(
    routes,
    rounds,
    (route, round) => `${name}, c=${settings.concurrency}, round ${round + 1}/${rounds}: ${routeName(route)}`,
    progress,
    async (route, i, round) => {
      await measureRound(route, settings, task(route, i), results[i]!, round === 0);
      afterRound(i, round);
    },
  );
  return { results, rss };
}

/** A bulk scenario ((b), (b')) on every route, interleaved. */
async function bulkScenario(
  routes: Route[],
  servers: BenchServers,
  settings: ProxyBenchSettings['bulk'],
  tls: boolean,
  progress: (line: string) => void,
): Promise<{ results: ThroughputResult[]; rss: number[] }> {
  const runs = routes.map(() => [] as ThroughputResult['runs']);
  const cpuMs = routes.map(() => 0);
  const rss = await interleaved(
    routes,
    settings.repeats,
    (route, repeat) => `(b${tls ? '' : "'"}) ${settings.bytes / 1024 / 1024} MiB ${tls ? 'TLS' : 'plain'} download ${repeat + 1}/${settings.repeats}: ${routeName(route)}`,
    progress,
    async (route, i) => {
      const cpu = cpuOf(route);
      const before = cpu();
      runs[i]!.push(await downloadOnce(route, servers, { ...settings, tls }));
      cpuMs[i]! += cpu() - before;
    },
  );
  return { results: routes.map((route, i) => throughputFrom(route, settings.bytes, runs[i]!, cpuMs[i]!)), rss };
}

/**
 * All scenarios for every route. Scenario-major and interleaved: each round of a scenario visits every route in
 * turn, so that a burst of load from elsewhere on the machine does not land on one route only.
 */
export async function benchRoutes(routes: Route[], servers: BenchServers, settings: ProxyBenchSettings, progress: (line: string) => void): Promise<RouteResults[]> {
  const idleRss = routes.map((route) => {
    const pid = pidOf(route);
    return pid === undefined ? NaN : rssMiB(pid);
  });
  const tunnel = await rateScenario(routes, settings.rounds, SCENARIOS.tunnel_tls, settings.tunnel, progress, (route) => tunnelTlsTask(route, servers));
  const serial = await rateScenario(routes, settings.rounds, SCENARIOS.tunnel_tls_c1, settings.tunnelSerial, progress, (route) => tunnelTlsTask(route, servers));
  const bulk = await bulkScenario(routes, servers, settings.bulk, true, progress);
  const bulkPlain = await bulkScenario(routes, servers, settings.bulk, false, progress);
  const clients = routes.map((r) => new KeepAliveClient(r, servers, settings.keepAlive.concurrency));
  let keepAlive: Awaited<ReturnType<typeof rateScenario>>;
  try {
    keepAlive = await rateScenario(
      routes,
      settings.rounds,
      SCENARIOS.keep_alive,
      settings.keepAlive,
      progress,
      (_route, i) => keepAliveTask(clients[i]!),
      (i, round) => {
        if (round === 0) clients[i]!.retries = 0; // retries of the warm-up do not count
      },
    );
  } finally {
    for (const c of clients) c.close();
  }

  return routes.map((route, i) => {
    const proxy = route === 'direct' ? undefined : (route as Route & Partial<RunningProxy>);
    return {
      route: routeName(route),
      ...(proxy?.version && { version: proxy.version }),
      ...(proxy?.logging && { logging: proxy.logging }),
      tunnel_tls: tunnel.results[i]!.result(),
      tunnel_tls_c1: serial.results[i]!.result(),
      bulk: bulk.results[i]!,
      bulk_plain: bulkPlain.results[i]!,
      keep_alive: { ...keepAlive.results[i]!.result(), retried: clients[i]!.retries },
      ...(proxy && {
        rss_mib: {
          idle: idleRss[i]!,
          tunnel_tls: tunnel.rss[i]!,
          tunnel_tls_c1: serial.rss[i]!,
          bulk: bulk.rss[i]!,
          bulk_plain: bulkPlain.rss[i]!,
          keep_alive: keepAlive.rss[i]!,
        },
      }),
    };
  });
}
