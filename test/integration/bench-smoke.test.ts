import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { expectedBodyDigest } from '../../bench/body.js';
import { bulkDownload, keepAliveRate, tunnelTlsRate, type LoadSettings } from '../../bench/proxy-bench.js';
import { startEgressGuard, type RunningProxy } from '../../bench/proxies.js';
import { startBenchServers, type BenchServers } from '../../bench/servers.js';

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
