import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { EventLog } from '../../events/event-log.js';
import { startEventStream } from '../../events/delivery/stream-client.js';
import { registerEventStreamMetrics, registerProcessMetrics, registerSidecarMetrics } from '../../sidecar/metrics.js';
import { startAdminServer } from '../../sidecar/admin-server.js';
import type { DnsStats } from '../../dns/server.js';
import { createTrafficCounters } from '../../proxy/relay/traffic-counters.js';
import { startCollector } from '../../collector/server.js';
import { emitConnections } from '../helpers/emit-events.js';
import { waitFor } from '../helpers/wait-for.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('sidecar metrics and admin server', () => {
  it('counts decisions, bytes and failures from the event log and reads live values at each scrape', async () => {
    const events = new EventLog({ stdout: false });
    const counters = createTrafficCounters();
    const dnsStats = { cacheHits: 2, cacheMisses: 1, cacheEntries: 1 };
    let dns: DnsStats | undefined;
    const registry = new Registry();
    const unsubscribe = registerSidecarMetrics(registry, { events, counters, dnsStats: () => dns });
    const decide = (kind: 'connect' | 'dns', decision: 'allowed' | 'blocked', host: string) =>
      events.decision({
        kind,
        client: '127.0.0.1:40000',
        host,
        port: 443,
        decision,
        reason: decision === 'allowed' ? 'allowed-endpoint' : 'not-allowed-endpoint',
        rule: null,
        message: '',
        mode: 'block',
      });
    const a = decide('connect', 'allowed', 'a.example.test');
    const b = decide('connect', 'allowed', 'b.example.test');
    decide('dns', 'blocked', 'exfil.attacker.test');
    events.close({ id: a.id, kind: 'connect', client: a.client, host: a.host, port: 443, bytes_in: 1000, bytes_out: 20, duration_ms: 5 });
    events.close({ id: b.id, kind: 'connect', client: b.client, host: b.host, port: 443, bytes_in: 500, bytes_out: 0, duration_ms: 5, error: 'upstream-odd"\\\nerror' });
    // Handed over to the per-request HTTP server: bytes count, but it is no upstream failure.
    events.close({ id: b.id, kind: 'connect', client: b.client, host: b.host, port: 443, bytes_in: 0, bytes_out: 0, duration_ms: 5, error: 'handed-over' });
    counters.open = 3;

    assert.equal(
      await registry.metrics(),
      [
        '# HELP egress_decisions_total Decisions by request kind and result.',
        '# TYPE egress_decisions_total counter',
        'egress_decisions_total{kind="connect",decision="allowed"} 2',
        'egress_decisions_total{kind="dns",decision="blocked"} 1',
        '',
        '# HELP egress_bytes_total Bytes relayed, by direction (in: upstream to client).',
        '# TYPE egress_bytes_total counter',
        'egress_bytes_total{direction="in"} 1500',
        'egress_bytes_total{direction="out"} 20',
        '',
        '# HELP egress_upstream_failures_total Forwarded requests and tunnels that ended with an error.',
        '# TYPE egress_upstream_failures_total counter',
        'egress_upstream_failures_total{error="upstream-odd\\"\\\\\\nerror"} 1',
        '',
        '# HELP egress_connections_open Open proxied requests and tunnels (explicit and transparent).',
        '# TYPE egress_connections_open gauge',
        'egress_connections_open 3',
        '',
        '# HELP egress_dns_cache_hits_total DNS answers served from the cache.',
        '# TYPE egress_dns_cache_hits_total counter',
        'egress_dns_cache_hits_total 0',
        '',
        '# HELP egress_dns_cache_misses_total DNS questions that needed an upstream exchange.',
        '# TYPE egress_dns_cache_misses_total counter',
        'egress_dns_cache_misses_total 0',
        '',
        '# HELP egress_netfilter_reports_total Packets the redirect rules reported that became events (one per flow and minute).',
        '# TYPE egress_netfilter_reports_total counter',
        'egress_netfilter_reports_total 0',
        '',
        '# HELP egress_netfilter_suppressed_total Reported packets of flows already reported within the minute (no event).',
        '# TYPE egress_netfilter_suppressed_total counter',
        'egress_netfilter_suppressed_total 0',
        '',
        "# HELP egress_netfilter_lost_total NFLOG reports the kernel dropped because the built-in reader fell behind, from the gaps in their sequence numbers (an overflow of its queue no later report measured counts 1): those packets' flows may have no event.",
        '# TYPE egress_netfilter_lost_total counter',
        'egress_netfilter_lost_total 0',
        '',
        '# HELP egress_dns_cache_entries Answers in the DNS cache.',
        '# TYPE egress_dns_cache_entries gauge',
        'egress_dns_cache_entries 0',
        '',
      ].join('\n'),
    );

    // Values kept elsewhere are read at each scrape: they replace the previous reading, they do not add to it.
    dns = dnsStats;
    counters.open = 0;
    assert.match(await registry.metrics(), /^egress_dns_cache_hits_total 2$/m);
    dnsStats.cacheHits = 5;
    const text = await registry.metrics();
    assert.match(text, /^egress_dns_cache_hits_total 5$/m);
    assert.match(text, /^egress_dns_cache_misses_total 1$/m);
    assert.match(text, /^egress_dns_cache_entries 1$/m);
    assert.match(text, /^egress_connections_open 0$/m);

    unsubscribe();
    decide('dns', 'blocked', 'exfil.attacker.test');
    assert.match(await registry.metrics(), /^egress_decisions_total\{kind="dns",decision="blocked"\} 1$/m);
    // One registry per sidecar: registering the same names again on it is refused.
    assert.throws(() => registerSidecarMetrics(registry, { events, counters, dnsStats: () => dns }), /already been registered/);
  });

  it('adds the process metrics (RSS, CPU, event loop lag) to the registry', async () => {
    const registry = new Registry();
    registerProcessMetrics(registry);
    const text = await registry.metrics();
    assert.match(text, /^# TYPE process_resident_memory_bytes gauge$/m);
    assert.match(text, /^process_resident_memory_bytes [1-9]\d*$/m);
    assert.match(text, /^process_cpu_seconds_total \d/m);
    assert.match(text, /^nodejs_eventloop_lag_seconds \d/m);
  });

  it('serves /metrics with the event stream counters and /healthz following health()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-metrics-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'm.db') });
    cleanups.push(() => collector.close());
    const events = new EventLog({ stdout: false });
    const stream = startEventStream({ url: `http://127.0.0.1:${collector.port}`, events, spoolDir: join(dir, 'spool'), flushIntervalMs: 10 });
    cleanups.push(() => stream.stop());
    const registry = new Registry();
    registerEventStreamMetrics(registry, stream.stats);
    let healthy = true;
    const admin = await startAdminServer({ listen: { host: '127.0.0.1', port: 0 }, metrics: registry, health: () => healthy });
    cleanups.push(() => admin.close());

    emitConnections(events, 5);
    await waitFor('delivery', () => stream.stats().sent === 10);
    const res = await fetch(`http://127.0.0.1:${admin.port}/metrics`);
    assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    assert.equal(res.headers.get('cache-control'), 'no-store');
    const text = await res.text();
    assert.match(text, /^egress_events_sent_total 10$/m);
    assert.match(text, /^egress_events_spooled_total 10$/m);
    assert.match(text, /^egress_events_queued 0$/m);
    assert.match(text, /^egress_events_dropped_total 0$/m);
    assert.match(text, /^# TYPE egress_events_queued gauge$/m);

    const ok = await fetch(`http://127.0.0.1:${admin.port}/healthz`);
    assert.equal(ok.status, 200);
    healthy = false;
    assert.equal((await fetch(`http://127.0.0.1:${admin.port}/healthz`)).status, 503);
    assert.equal((await fetch(`http://127.0.0.1:${admin.port}/other`)).status, 404);
    const head = await fetch(`http://127.0.0.1:${admin.port}/metrics`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    const post = await fetch(`http://127.0.0.1:${admin.port}/metrics`, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get('allow'), 'GET, HEAD');

    await assert.rejects(
      startAdminServer({ listen: { host: '127.0.0.1', port: admin.port }, metrics: registry, health: () => true }),
      /^Error: admin-listen: cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE$/,
    );
  });
});
