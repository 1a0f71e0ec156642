import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Labels = Record<string, string>;

type MetricType = 'counter' | 'gauge';

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/** A counter or gauge family: one value per label set. */
class Metric {
  private readonly values = new Map<string, { labels: Labels; value: number }>();
  /** Gauges read at scrape time (queue depth, open tunnels). */
  collect?: () => void;

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: MetricType,
    private readonly labelNames: readonly string[],
  ) {
    if (!NAME.test(name)) throw new Error(`invalid metric name "${name}"`);
    for (const l of labelNames) if (!LABEL.test(l) || l.startsWith('__')) throw new Error(`invalid label name "${l}" on ${name}`);
  }

  private key(labels: Labels): string {
    const names = Object.keys(labels);
    if (names.length !== this.labelNames.length || !this.labelNames.every((n) => n in labels)) {
      throw new Error(`${this.name} takes labels ${this.labelNames.join(', ') || '(none)'}, got ${names.join(', ') || '(none)'}`);
    }
    return this.labelNames.map((n) => labels[n]).join('\u0000');
  }

  add(labels: Labels, delta: number): void {
    const key = this.key(labels);
    const entry = this.values.get(key);
    if (entry) entry.value += delta;
    else this.values.set(key, { labels: { ...labels }, value: delta });
  }

  set(labels: Labels, value: number): void {
    this.values.set(this.key(labels), { labels: { ...labels }, value });
  }

  get(labels: Labels = {}): number {
    return this.values.get(this.key(labels))?.value ?? 0;
  }

  render(): string {
    this.collect?.();
    const lines = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
    for (const { labels, value } of this.values.values()) {
      const text = this.labelNames.map((n) => `${n}="${escapeLabelValue(labels[n]!)}"`).join(',');
      lines.push(`${this.name}${text ? `{${text}}` : ''} ${formatValue(value)}`);
    }
    return lines.join('\n');
  }
}

export class Counter {
  constructor(private readonly metric: Metric) {}
  inc(labels: Labels = {}, by = 1): void {
    if (by < 0) throw new Error(`${this.metric.name}: a counter only goes up`);
    this.metric.add(labels, by);
  }
  get(labels: Labels = {}): number {
    return this.metric.get(labels);
  }
}

export class Gauge {
  constructor(private readonly metric: Metric) {}
  set(labels: Labels, value: number): void {
    this.metric.set(labels, value);
  }
  inc(labels: Labels = {}, by = 1): void {
    this.metric.add(labels, by);
  }
  dec(labels: Labels = {}, by = 1): void {
    this.metric.add(labels, -by);
  }
  get(labels: Labels = {}): number {
    return this.metric.get(labels);
  }
}

/** A small Prometheus registry: counters and gauges with labels, text exposition format 0.0.4. */
export class MetricsRegistry {
  private readonly metrics = new Map<string, Metric>();

  private register(name: string, help: string, type: MetricType, labelNames: readonly string[]): Metric {
    if (this.metrics.has(name)) throw new Error(`metric ${name} is already registered`);
    const metric = new Metric(name, help, type, labelNames);
    this.metrics.set(name, metric);
    return metric;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return new Counter(this.register(name, help, 'counter', labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return new Gauge(this.register(name, help, 'gauge', labelNames));
  }

  /** A gauge (or a counter kept elsewhere) whose values are read from `collect` at each scrape. */
  collected(name: string, help: string, type: MetricType, collect: () => Array<{ labels?: Labels; value: number }>, labelNames: readonly string[] = []): void {
    const metric = this.register(name, help, type, labelNames);
    metric.collect = () => {
      for (const { labels, value } of collect()) metric.set(labels ?? {}, value);
    };
  }

  render(): string {
    return `${[...this.metrics.values()].map((m) => m.render()).join('\n')}\n`;
  }
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Expose an event stream's counters (see collector/event-stream-client.ts) on a registry. */
export function registerEventStreamMetrics(registry: MetricsRegistry, stats: () => { queued: number; sent: number; dropped: number; spooled: number; failures: number }): void {
  registry.collected('egress_events_queued', 'Events waiting for delivery to the collector (memory queue or spool).', 'gauge', () => [{ value: stats().queued }]);
  registry.collected('egress_events_sent_total', 'Events the collector acknowledged.', 'counter', () => [{ value: stats().sent }]);
  registry.collected('egress_events_dropped_total', 'Events lost: queue or spool full, rejected as invalid, or unsent at stop without a spool.', 'counter', () => [{ value: stats().dropped }]);
  registry.collected('egress_events_spooled_total', 'Events written to the on-disk spool.', 'counter', () => [{ value: stats().spooled }]);
  registry.collected('egress_event_delivery_failures_total', 'Failed deliveries to the collector (retried).', 'counter', () => [{ value: stats().failures }]);
}

export interface AdminServer {
  port: number;
  close(): Promise<void>;
}

/** Serve `/metrics` (Prometheus text) and `/healthz` (200 ok, 503 when `health()` is false). */
export async function startAdminServer(options: { listen: { host: string; port: number }; metrics: MetricsRegistry; health: () => boolean }): Promise<AdminServer> {
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    try {
      if (path === '/metrics') {
        res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'cache-control': 'no-store' }).end(options.metrics.render());
      } else if (path === '/healthz') {
        const healthy = options.health();
        res.writeHead(healthy ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }).end(healthy ? 'ok\n' : 'unhealthy\n');
      } else {
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: try /metrics or /healthz\n');
      }
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`error: ${(err as Error).message}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.listen.port, options.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
