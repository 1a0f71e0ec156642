import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { formatInspection, runInspectionBench, type InspectionSettings } from '../../bench/inspection-bench.js';

/**
 * bench/inspection-bench run tiny: correctness only, no timing. Each inspecting proxy's clients trust only that
 * proxy's CA, while the origin's certificate is from the bench CA: a request succeeds only if the proxy really
 * terminated TLS with its own leaf and verified the origin itself (a spliced tunnel would fail verification).
 */
const TINY: InspectionSettings = {
  rounds: 1,
  keepAlive: { count: 40, timeCapMs: 30_000, concurrency: 5, warmup: 0 },
  newConnection: { count: 10, timeCapMs: 30_000, concurrency: 5, warmup: 0 },
  coldLeaves: 5,
  leafKeyTypes: ['ecdsa', 'rsa'],
};
const squidBumps = spawnSync('/usr/sbin/squid', ['-v'], { encoding: 'utf8' }).stdout?.includes('--with-openssl') ?? false;

test('inspection bench: egress-guard inspecting (ECDSA and RSA leaves) and squid ssl-bump answer every request, verdict and cold leaf reported', { timeout: 180_000 }, async () => {
  const lines: string[] = [];
  const report = await runInspectionBench(TINY, (line) => lines.push(line));
  const routes = Object.fromEntries(report.routes.map((r) => [r.route, r]));
  const expected = ['direct', 'egress-guard inspecting', 'egress-guard inspecting, rsa leaves', ...(squidBumps ? ['squid ssl-bump'] : [])];
  assert.deepEqual(Object.keys(routes), expected, JSON.stringify(report.skipped));
  for (const name of expected) {
    const route = routes[name]!;
    assert.equal(route.keep_alive.completed, 40, `${name} keep-alive: ${JSON.stringify(route.keep_alive.errors)}`);
    assert.equal(route.new_connection.completed, 10, `${name} new connections: ${JSON.stringify(route.new_connection.errors)}`);
    if (name !== 'direct') assert.ok(route.keep_alive.proxy_cpu_ms_per_1000! >= 0, `${name}: CPU measured`);
  }
  if (squidBumps) {
    assert.ok(report.vs_squid?.keep_alive_req_per_s, 'a ratio against squid');
    assert.match(report.verdict, /^(MET|MISS)$/);
  } else assert.match(report.skipped['squid ssl-bump'] ?? '', /squid/);
  assert.ok(report.cold_leaf && 'p99_ms' in report.cold_leaf && report.cold_leaf.p99_ms > 0, JSON.stringify(report.cold_leaf));
  assert.deepEqual(report.leaf_key_types, { 'egress-guard inspecting': 'ecdsa', 'egress-guard inspecting, rsa leaves': 'rsa' });
  assert.match(formatInspection(report), /inspected req\/s vs squid ssl-bump: (MET|MISS|n\/a)/);
  assert.match(formatInspection(report), /egress-guard rsa \/ ecdsa leaves: new-conn CPU per request \d/);
});
