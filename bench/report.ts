import type { RouteResults } from './proxy-bench.js';
import { ratio } from './stats.js';

export interface Ratios {
  /** proxied / direct, per proxy. */
  vs_direct: Record<string, ScenarioRatios>;
  /** egress-guard / other proxy, per other proxy. */
  egress_guard_vs: Record<string, ScenarioRatios>;
}

export interface ScenarioRatios {
  tunnel_req_per_s: number | null;
  tunnel_p50: number | null;
  tunnel_p99: number | null;
  bulk_mb_per_s: number | null;
  keep_alive_req_per_s: number | null;
  keep_alive_p99: number | null;
}

function compare(a: RouteResults, b: RouteResults): ScenarioRatios {
  return {
    tunnel_req_per_s: ratio(a.tunnel_tls.req_per_s, b.tunnel_tls.req_per_s),
    tunnel_p50: ratio(a.tunnel_tls.p50_ms, b.tunnel_tls.p50_ms),
    tunnel_p99: ratio(a.tunnel_tls.p99_ms, b.tunnel_tls.p99_ms),
    bulk_mb_per_s: ratio(a.bulk.mb_per_s, b.bulk.mb_per_s),
    keep_alive_req_per_s: ratio(a.keep_alive.req_per_s, b.keep_alive.req_per_s),
    keep_alive_p99: ratio(a.keep_alive.p99_ms, b.keep_alive.p99_ms),
  };
}

export function computeRatios(routes: RouteResults[]): Ratios {
  const direct = routes.find((r) => r.route === 'direct');
  const eg = routes.find((r) => r.route === 'egress-guard');
  const out: Ratios = { vs_direct: {}, egress_guard_vs: {} };
  for (const r of routes) {
    if (r.route === 'direct') continue;
    if (direct) out.vs_direct[r.route] = compare(r, direct);
    if (eg && r !== eg) out.egress_guard_vs[r.route] = compare(eg, r);
  }
  return out;
}

function fmt(value: number | null | undefined, digits = 1): string {
  return value === null || value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(digits);
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function formatResults(routes: RouteResults[], ratios: Ratios): string {
  const failures = (r: RouteResults) => r.tunnel_tls.failed + r.keep_alive.failed + r.bulk.runs.filter((x) => !x.ok).length;
  const main = table(
    [
      'route',
      '(a) tunnel+TLS req/s',
      'p50 ms',
      'p99 ms',
      '(b) 64MiB MB/s',
      '(c) keep-alive req/s',
      'p50 ms',
      'p99 ms',
      'failed',
      'retried (c)',
      'proxy CPU ms/1k (a)',
      'ms/GB (b)',
      'ms/1k (c)',
    ],
    routes.map((r) => [
      r.route,
      fmt(r.tunnel_tls.req_per_s),
      fmt(r.tunnel_tls.p50_ms),
      fmt(r.tunnel_tls.p99_ms),
      fmt(r.bulk.mb_per_s),
      fmt(r.keep_alive.req_per_s),
      fmt(r.keep_alive.p50_ms),
      fmt(r.keep_alive.p99_ms),
      String(failures(r)),
      String(r.keep_alive.retried ?? 0),
      fmt(r.tunnel_tls.proxy_cpu_ms_per_1000, 0),
      fmt(r.bulk.proxy_cpu_ms_per_gb, 0),
      fmt(r.keep_alive.proxy_cpu_ms_per_1000, 0),
    ]),
  );
  const ratioRows = (label: string, set: Record<string, ScenarioRatios>) =>
    Object.entries(set).map(([name, x]) => [
      `${label.replace('%', name)}`,
      fmt(x.tunnel_req_per_s, 2),
      fmt(x.tunnel_p50, 2),
      fmt(x.tunnel_p99, 2),
      fmt(x.bulk_mb_per_s, 2),
      fmt(x.keep_alive_req_per_s, 2),
      fmt(x.keep_alive_p99, 2),
    ]);
  const ratioTable = table(
    ['ratio', '(a) req/s', 'p50', 'p99', '(b) MB/s', '(c) req/s', 'p99'],
    [...ratioRows('%/direct', ratios.vs_direct), ...ratioRows('egress-guard/%', ratios.egress_guard_vs)],
  );
  return `${main}\n\n${ratioTable}`;
}

export interface Verdict {
  target: string;
  met: boolean | null;
  detail: string;
}

/** The targets: bulk >= 0.9 of direct; tunnel rate and p99 no worse than the C proxies. */
export function verdicts(ratios: Ratios): Verdict[] {
  const out: Verdict[] = [];
  const bulk = ratios.vs_direct['egress-guard']?.bulk_mb_per_s ?? null;
  out.push({ target: 'bulk throughput >= 0.9 x direct', met: bulk === null ? null : bulk >= 0.9, detail: `egress-guard/direct = ${fmt(bulk, 2)}` });
  for (const [name, r] of Object.entries(ratios.egress_guard_vs)) {
    out.push({
      target: `tunnel req/s >= ${name}`,
      met: r.tunnel_req_per_s === null ? null : r.tunnel_req_per_s >= 1,
      detail: `egress-guard/${name} = ${fmt(r.tunnel_req_per_s, 2)}`,
    });
    out.push({ target: `tunnel p99 <= ${name}`, met: r.tunnel_p99 === null ? null : r.tunnel_p99 <= 1, detail: `egress-guard/${name} = ${fmt(r.tunnel_p99, 2)}` });
  }
  return out;
}
