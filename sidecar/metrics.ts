import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { EventLog } from '../events/event-log.js';
import type { DnsStats } from '../dns/server.js';
import type { NetfilterLogStats } from '../netlog/reader.js';
import type { TrafficCounters } from '../proxy/relay/traffic-counters.js';

// Each sidecar gets a Registry of its own (never prom-client's global one): tests start several in one process.

/** A sidecar's own registry. Made here, where prom-client is imported statically (the sidecar imports this module only when metrics are served). */
export function newMetricsRegistry(): Registry {
  return new Registry();
}

/** A counter kept elsewhere (DNS cache, event stream), read at scrape time. */
function collectedCounter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A gauge read at scrape time. */
function collectedGauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** Register the sidecar's Prometheus metrics: decisions and bytes from the event log, live gauges at scrape time. */
export function registerSidecarMetrics(
  registry: Registry,
  sources: { events: EventLog; counters: TrafficCounters; dnsStats: () => DnsStats | undefined; netfilterStats?: () => NetfilterLogStats | undefined },
): () => void {
  const decisions = new Counter({
    name: 'egress_decisions_total',
    help: 'Decisions by request kind and result.',
    labelNames: ['kind', 'decision'] as const,
    registers: [registry],
  });
  const bytes = new Counter({
    name: 'egress_bytes_total',
    help: 'Bytes relayed, by direction (in: upstream to client).',
    labelNames: ['direction'] as const,
    registers: [registry],
  });
  const failures = new Counter({
    name: 'egress_upstream_failures_total',
    help: 'Forwarded requests and tunnels that ended with an error.',
    labelNames: ['error'] as const,
    registers: [registry],
  });
  collectedGauge(registry, 'egress_connections_open', 'Open proxied requests and tunnels (explicit and transparent).', () => sources.counters.open);
  collectedCounter(registry, 'egress_dns_cache_hits_total', 'DNS answers served from the cache.', () => sources.dnsStats()?.cacheHits ?? 0);
  collectedCounter(registry, 'egress_dns_cache_misses_total', 'DNS questions that needed an upstream exchange.', () => sources.dnsStats()?.cacheMisses ?? 0);
  collectedCounter(
    registry,
    'egress_netfilter_reports_total',
    'Packets the redirect rules reported that became events (one per flow and minute).',
    () => sources.netfilterStats?.()?.reported ?? 0,
  );
  collectedCounter(
    registry,
    'egress_netfilter_suppressed_total',
    'Reported packets of flows already reported within the minute (no event).',
    () => sources.netfilterStats?.()?.suppressed ?? 0,
  );
  collectedCounter(
    registry,
    'egress_netfilter_lost_total',
    "NFLOG reports the kernel dropped because the built-in reader fell behind, from the gaps in their sequence numbers (an overflow of its queue no later report measured counts 1): those packets' flows may have no event.",
    () => sources.netfilterStats?.()?.lost ?? 0,
  );
  collectedGauge(registry, 'egress_dns_cache_entries', 'Answers in the DNS cache.', () => sources.dnsStats()?.cacheEntries ?? 0);
  return sources.events.subscribe((event) => {
    if (event.event === 'decision') {
      decisions.inc({ kind: event.kind, decision: event.decision });
      return;
    }
    bytes.inc({ direction: 'in' }, event.bytes_in);
    bytes.inc({ direction: 'out' }, event.bytes_out);
    // handed-over is no failure: the connection went on under a later decision (docs/events.md).
    if (event.error && event.error !== 'handed-over') failures.inc({ error: event.error });
  });
}

/** Expose an event stream's counters (see events/delivery/stream-client.ts) on a registry. */
export function registerEventStreamMetrics(
  registry: Registry,
  stats: () => { queued: number; sent: number; dropped: number; rejected: number; spooled: number; failures: number },
): void {
  collectedGauge(registry, 'egress_events_queued', 'Events waiting for delivery to the collector (memory queue or spool).', () => stats().queued);
  collectedCounter(registry, 'egress_events_sent_total', 'Events the collector acknowledged.', () => stats().sent);
  collectedCounter(registry, 'egress_events_dropped_total', 'Events lost: queue or spool full, a batch refused whole, or unsent at stop without a spool.', () => stats().dropped);
  collectedCounter(registry, 'egress_events_rejected_total', 'Events the collector refused one by one as invalid (the rest of their batch was stored).', () => stats().rejected);
  collectedCounter(registry, 'egress_events_spooled_total', 'Events written to the on-disk spool.', () => stats().spooled);
  collectedCounter(registry, 'egress_event_delivery_failures_total', 'Failed deliveries to the collector (retried).', () => stats().failures);
}

/**
 * prom-client's process metrics (process_resident_memory_bytes, process_cpu_seconds_total, nodejs_eventloop_lag_*,
 * nodejs_gc_duration_seconds, ...), unprefixed so stock Node.js dashboards and alerts apply as they are.
 */
export function registerProcessMetrics(registry: Registry): void {
  collectDefaultMetrics({ register: registry });
}
