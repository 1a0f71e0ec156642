import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { EventLog } from '../../events/event-log.js';
import { startEventStream } from '../../events/delivery/stream-client.js';
import { MetricsRegistry, registerEventStreamMetrics, startAdminServer } from '../../sidecar/metrics-registry.js';
import { startCollector } from '../../collector/server.js';
import { emitConnections } from '../helpers/emit-events.js';
import { waitFor } from '../helpers/wait-for.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('metrics registry and admin server', () => {
  it('renders counters and gauges with labels in the Prometheus text format, escaping label values', () => {
    const registry = new MetricsRegistry();
    const decisions = registry.counter('egress_decisions_total', 'Decisions by kind and result.', ['kind', 'decision']);
    const tunnels = registry.gauge('egress_tunnels_open', 'Open tunnels.');
    decisions.inc({ kind: 'connect', decision: 'allowed' });
    decisions.inc({ kind: 'connect', decision: 'allowed' }, 2);
    decisions.inc({ kind: 'dns', decision: 'would-block' });
    decisions.inc({ kind: 'weird"\\\nkind', decision: 'blocked' });
    tunnels.inc();
    tunnels.inc();
    tunnels.dec();
    assert.equal(registry.render(), [
      '# HELP egress_decisions_total Decisions by kind and result.',
      '# TYPE egress_decisions_total counter',
      'egress_decisions_total{kind="connect",decision="allowed"} 3',
      'egress_decisions_total{kind="dns",decision="would-block"} 1',
      'egress_decisions_total{kind="weird\\"\\\\\\nkind",decision="blocked"} 1',
      '# HELP egress_tunnels_open Open tunnels.',
      '# TYPE egress_tunnels_open gauge',
      'egress_tunnels_open 1',
      '',
    ].join('\n'));
    assert.throws(() => decisions.inc({ kind: 'x' }), /takes labels kind, decision/);
    assert.throws(() => decisions.inc({ kind: 'x', decision: 'y' }, -1), /only goes up/);
    assert.throws(() => registry.counter('egress_tunnels_open', 'again'), /already registered/);
    assert.throws(() => registry.gauge('bad-name', 'x'), /invalid metric name/);
  });

  it('serves /metrics with the event stream counters and /healthz following health()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'egress-metrics-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const collector = await startCollector({ listen: { host: '127.0.0.1', port: 0 }, db: join(dir, 'm.db') });
    cleanups.push(() => collector.close());
    const events = new EventLog({ stdout: false });
    const stream = startEventStream({ url: `http://127.0.0.1:${collector.port}`, events, spoolDir: join(dir, 'spool'), flushIntervalMs: 10 });
    cleanups.push(() => stream.stop());
    const registry = new MetricsRegistry();
    registerEventStreamMetrics(registry, stream.stats);
    let healthy = true;
    const admin = await startAdminServer({ listen: { host: '127.0.0.1', port: 0 }, metrics: registry, health: () => healthy });
    cleanups.push(() => admin.close());

    emitConnections(events, 5);
    await waitFor('delivery', () => stream.stats().sent === 10);
    const res = await fetch(`http://127.0.0.1:${admin.port}/metrics`);
    assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
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
  });
});
