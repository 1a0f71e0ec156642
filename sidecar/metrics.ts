import type { MetricsRegistry } from './metrics-registry.js';
import type { EventLog } from '../events/event-log.js';
import type { DnsServer } from '../dns/server.js';
import type { TrafficCounters } from '../proxy/relay/traffic-counters.js';

/** Register the sidecar's Prometheus metrics: decisions and bytes from the event log, live gauges at scrape time. */
export function registerSidecarMetrics(registry: MetricsRegistry, sources: { events: EventLog; counters: TrafficCounters; dns: () => DnsServer | undefined }): () => void {
  const decisions = registry.counter('egress_decisions_total', 'Decisions by request kind and result.', ['kind', 'decision']);
  const bytes = registry.counter('egress_bytes_total', 'Bytes relayed, by direction (in: upstream to client).', ['direction']);
  const failures = registry.counter('egress_upstream_failures_total', 'Forwarded requests and tunnels that ended with an error.', ['error']);
  registry.collected('egress_connections_open', 'Open proxied requests and tunnels (explicit and transparent).', 'gauge', () => [{ value: sources.counters.open }]);
  registry.collected('egress_dns_cache_hits_total', 'DNS answers served from the cache.', 'counter', () => [{ value: sources.dns()?.stats().cacheHits ?? 0 }]);
  registry.collected('egress_dns_cache_misses_total', 'DNS questions that needed an upstream exchange.', 'counter', () => [{ value: sources.dns()?.stats().cacheMisses ?? 0 }]);
  registry.collected('egress_dns_cache_entries', 'Answers in the DNS cache.', 'gauge', () => [{ value: sources.dns()?.stats().cacheEntries ?? 0 }]);
  return sources.events.subscribe((event) => {
    if (event.event === 'decision') {
      decisions.inc({ kind: event.kind, decision: event.decision });
      return;
    }
    bytes.inc({ direction: 'in' }, event.bytes_in);
    bytes.inc({ direction: 'out' }, event.bytes_out);
    if (event.error) failures.inc({ error: event.error });
  });
}
