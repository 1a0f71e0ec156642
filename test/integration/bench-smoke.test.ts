import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { expectedBodyDigest } from '../../bench/body.js';
import { parseDnsperf, runDnsBench } from '../../bench/dns-bench.js';
import { idleTunnels, startHoldServer } from '../../bench/idle-tunnels.js';
import { rssMiB, RssSampler } from '../../bench/procfs.js';
import { benchRoutes, bulkDownload, keepAliveRate, tunnelTlsRate, type LoadSettings, type ProxyBenchSettings } from '../../bench/proxy-bench.js';
import { startEgressGuard, type RunningProxy } from '../../bench/proxies.js';
import { computeRatios, verdicts, type BenchResults } from '../../bench/report.js';
import { startBenchServers, type BenchServers } from '../../bench/servers.js';
import { measureStartToReady } from '../../bench/startup.js';

/**
 * The bench's own code, run tiny through a real egress-guard: every request must succeed with the right
 * bytes, and the proxy's events must show the traffic really went through it. Correctness only, no timing.
 */
const SMALL: LoadSettings = { count: 20, timeCapMs: 30_000, concurrency: 5, warmup: 0 };
const MIB = 1024 * 1024;

let servers: BenchServers;
let proxy: RunningProxy;
let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
  servers = await startBenchServers();
  proxy = await startEgressGuard({ eventsFile: join(dir, 'events.ndjson') });
});

after(async () => {
  await proxy?.stop();
  await servers?.close();
  rmSync(dir, { recursive: true, force: true });
});

function decisions(kind: string): Array<Record<string, unknown>> {
  return readFileSync(join(dir, 'events.ndjson'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((e) => e.event === 'decision' && e.kind === kind);
}

test('(a) tunnel + TLS scenario: 20 fresh tunnels through egress-guard, all 200 with 1 KiB', async () => {
  const before = decisions('connect').length;
  const result = await tunnelTlsRate(proxy, servers, SMALL);
  assert.deepEqual(result.errors, {});
  assert.equal(result.failed, 0);
  assert.equal(result.completed, 20);
  assert.ok(result.p99_ms >= result.p50_ms);
  // One allowed CONNECT decision per request: the bench opened a new tunnel each time.
  const seen = decisions('connect').slice(before);
  assert.equal(seen.length, 20);
  assert.ok(seen.every((e) => e.decision === 'allowed' && e.host === 'bench.test' && e.port === servers.httpsPort));
});

test('(b) bulk scenario: a 1 MiB download through a tunnel arrives byte for byte', async () => {
  const result = await bulkDownload(proxy, servers, { bytes: MIB, repeats: 2, timeoutMs: 30_000, expectDigest: expectedBodyDigest(MIB) });
  assert.equal(result.runs.length, 2);
  for (const run of result.runs) {
    assert.equal(run.error, undefined);
    assert.equal(run.ok, true);
    assert.equal(run.bytes, MIB);
  }
  assert.ok(result.mb_per_s > 0);
});

test('(b) the bulk check fails a download whose content differs', async () => {
  const result = await bulkDownload(proxy, servers, { bytes: MIB, repeats: 1, timeoutMs: 30_000, expectDigest: expectedBodyDigest(MIB - 1) });
  assert.equal(result.runs[0]!.ok, false);
  assert.match(result.runs[0]!.error ?? '', /sha256/);
  assert.ok(Number.isNaN(result.mb_per_s));
});

test('(c) keep-alive scenario: 20 absolute-URI requests through egress-guard, all 200 with 1 KiB', async () => {
  const before = decisions('http').length;
  const result = await keepAliveRate(proxy, servers, SMALL);
  assert.deepEqual(result.errors, {});
  assert.equal(result.failed, 0);
  assert.equal(result.completed, 20);
  const seen = decisions('http').slice(before);
  assert.equal(seen.length, 20);
  assert.ok(seen.every((e) => e.decision === 'allowed' && e.host === 'bench.test' && e.port === servers.httpPort));
});

test('direct route: the same scenarios reach the servers without a proxy', async () => {
  const tunnel = await tunnelTlsRate('direct', servers, { ...SMALL, count: 5 });
  assert.equal(tunnel.completed, 5);
  const bulk = await bulkDownload('direct', servers, { bytes: MIB, repeats: 1, timeoutMs: 30_000, expectDigest: expectedBodyDigest(MIB) });
  assert.equal(bulk.runs[0]!.ok, true);
  const keepAlive = await keepAliveRate('direct', servers, { ...SMALL, count: 5 });
  assert.equal(keepAlive.completed, 5);
});

test("(b') plain bulk: 1 MiB of plain HTTP inside a CONNECT tunnel arrives byte for byte, and the tunnel went to the plain port", async () => {
  const before = decisions('connect').length;
  const result = await bulkDownload(proxy, servers, { bytes: MIB, repeats: 1, timeoutMs: 30_000, expectDigest: expectedBodyDigest(MIB), tls: false });
  assert.equal(result.runs[0]!.error, undefined);
  assert.equal(result.runs[0]!.bytes, MIB);
  // The CONNECT's decision, and its GET's: plain HTTP inside a tunnel is decided request by request.
  const seen = decisions('connect').slice(before);
  assert.equal(seen.length, 2);
  assert.deepEqual(
    seen.map((d) => [d.port, d.method]),
    [
      [servers.httpPort, undefined],
      [servers.httpPort, 'GET'],
    ],
  );
  const direct = await bulkDownload('direct', servers, { bytes: MIB, repeats: 1, timeoutMs: 30_000, expectDigest: expectedBodyDigest(MIB), tls: false });
  assert.equal(direct.runs[0]!.ok, true);
});

test('RSS: read from /proc for the proxy, sampled while it works; NaN for a process that is gone', async () => {
  const idle = rssMiB(proxy.pid);
  assert.ok(idle > 1, `VmRSS ${idle}`);
  const sampler = new RssSampler(proxy.pid);
  await tunnelTlsRate(proxy, servers, { ...SMALL, count: 5 });
  assert.ok(sampler.stop() > 1);
  assert.ok(Number.isNaN(rssMiB(2 ** 22 + 1)));
});

test("benchRoutes: every scenario, (a) at c=1 and (b') included, on direct and egress-guard, with RSS per scenario; the verdicts judge what was measured", async () => {
  const tiny: ProxyBenchSettings = {
    rounds: 1,
    tunnel: { ...SMALL, count: 4 },
    tunnelSerial: { ...SMALL, count: 3, concurrency: 1 },
    keepAlive: { ...SMALL, count: 4 },
    bulk: { bytes: 64 * 1024, repeats: 1, timeoutMs: 30_000 },
  };
  const routes = await benchRoutes(['direct', proxy], servers, tiny, () => undefined);
  const eg = routes.find((r) => r.route === 'egress-guard')!;
  assert.equal(eg.tunnel_tls_c1.completed, 3);
  assert.equal(eg.tunnel_tls_c1.concurrency, 1);
  assert.equal(eg.bulk_plain.runs[0]!.ok, true);
  for (const key of ['idle', 'tunnel_tls', 'tunnel_tls_c1', 'bulk', 'bulk_plain', 'keep_alive'] as const) assert.ok(eg.rss_mib![key]! > 1, key);
  assert.equal(routes.find((r) => r.route === 'direct')!.rss_mib, undefined);
  const results: BenchResults = { routes, ratios: computeRatios(routes), skipped: { squid: 'not started in this test' } };
  const lines = verdicts(results);
  const line = (goal: RegExp) => lines.find((v) => goal.test(v.goal))!;
  // Against direct the bulk goals are judged; against squid (not measured) they are n/a with the reason.
  assert.equal(typeof line(/^bulk TLS/).met, 'boolean');
  assert.equal(typeof line(/^RSS idle/).met, 'boolean');
  assert.equal(line(/^proxy CPU per tunnel/).met, null);
  assert.match(line(/^proxy CPU per tunnel/).detail, /squid not measured: not started in this test/);
  assert.match(line(/^DNS cached/).detail, /DNS bench not run/);
  assert.ok(lines.length >= 17);
});

test('verdicts: MET and MISS follow the numbers (a squid that spends more or less CPU than egress-guard)', () => {
  const eg = { route: 'egress-guard', tunnel_tls: { proxy_cpu_ms_per_1000: 500 } };
  const verdictFor = (squidCpu: number) => {
    const routes = [eg, { route: 'squid', tunnel_tls: { proxy_cpu_ms_per_1000: squidCpu } }].map((r) => ({
      tunnel_tls_c1: {},
      bulk: {},
      bulk_plain: {},
      keep_alive: {},
      ...r,
    })) as unknown as BenchResults['routes'];
    const all = verdicts({ routes, ratios: { vs_direct: {}, egress_guard_vs: {} }, skipped: {} });
    return [all.find((v) => v.goal === 'proxy CPU per tunnel <= squid')!.met, all.find((v) => v.goal.startsWith('moonshot'))!.met];
  };
  assert.deepEqual(verdictFor(400), [false, false]);
  assert.deepEqual(verdictFor(600), [true, false]);
  assert.deepEqual(verdictFor(1000), [true, true]);
});

test('idle tunnels: 30 CONNECT tunnels to the hold server opened through egress-guard and held; CPU and RSS read', async () => {
  const hold = await startHoldServer();
  try {
    const result = await idleTunnels(proxy, hold.port, { count: 30, openCapMs: 20_000, concurrency: 10, holdMs: 300 }, () => undefined);
    assert.deepEqual(result.errors, {});
    assert.equal(result.opened, 30);
    assert.equal(result.held, 30);
    assert.ok(result.rss_mib_held > 1);
    assert.ok(Number.isFinite(result.idle_cpu_ms));
  } finally {
    await hold.stop();
  }
});

test('start to ready: egress-guard with proxy, DNS and transparent listeners becomes ready, twice', async () => {
  const result = await measureStartToReady(dir, { starts: 2, timeoutMs: 20_000 }, () => undefined);
  assert.deepEqual(result.errors, []);
  assert.equal(result.starts_ms.length, 2);
  assert.ok(result.median_ms > 0);
  // Starting a node process costs CPU: 0 would mean /proc was not read.
  assert.equal(result.cpu_ms.length, 2);
  assert.ok(result.median_cpu_ms > 0);
});

test('dnsperf output is parsed: rates, losses, response codes, per-query latencies', () => {
  const out = [
    '  Queries sent:         100',
    '  Queries completed:    98 (98.00%)',
    '  Queries lost:         2 (2.00%)',
    '  Response codes:       NOERROR 90 (91.84%), NXDOMAIN 8 (8.16%)',
    '  Queries per second:   1234.5678',
    '  Average Latency (s):  0.000250 (min 0.000034, max 0.021318)',
    ...Array.from({ length: 100 }, (_, i) => `> NOERROR allowed.test A ${((i + 1) / 100000).toFixed(6)}`),
  ].join('\n');
  assert.deepEqual(parseDnsperf(out), { sent: 100, completed: 98, lost: 2, qps: 1235, avg_ms: 0.25, p99_ms: 0.99, rcodes: { NOERROR: 90, NXDOMAIN: 8 } });
});

test('DNS bench: dnsperf for 1 s against egress-guard and dnsmasq (skipped with the reason when either tool is missing)', async (t) => {
  const result = await runDnsBench({ seconds: 1, outstanding: 10, fixedQps: 200 });
  if (result.skipped['egress-guard']?.includes('not installed')) return t.skip(result.skipped['egress-guard']);
  assert.ok(result.egress_guard, JSON.stringify(result.skipped));
  for (const run of [result.egress_guard.cached_allowed, result.egress_guard.denied, result.egress_guard.fixed_rate]) assert.ok(run.completed > 0);
  assert.ok((result.egress_guard.cached_allowed.rcodes.NOERROR ?? 0) > 0);
  // Denied names are refused by policy, never answered NOERROR.
  assert.equal(result.egress_guard.denied.rcodes.NOERROR, undefined);
  assert.ok(result.egress_guard.fixed_rate.p99_ms! > 0);
  if (result.dnsmasq) assert.equal(result.dnsmasq.denied.rcodes.NOERROR, undefined);
});
