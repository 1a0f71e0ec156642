import type { InspectionReport } from './inspection-bench.js';
import type { DnsBenchResult } from './dns-bench.js';
import { IDLE_TUNNELS_GOAL, type IdleTunnelsResult } from './idle-tunnels.js';
import { SCENARIOS, type RouteResults, type ScenarioKey } from './proxy-bench.js';
import type { StartupResult } from './startup.js';
import { ratio } from './stats.js';
import { fmt, table } from './table.js';

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
  tunnel_c1_p99: number | null;
  bulk_mb_per_s: number | null;
  bulk_plain_mb_per_s: number | null;
  keep_alive_req_per_s: number | null;
  keep_alive_p99: number | null;
  /** Proxy CPU per operation (a), (b), (b'), (c); between proxies only. */
  tunnel_cpu: number | null;
  bulk_cpu: number | null;
  bulk_plain_cpu: number | null;
  keep_alive_cpu: number | null;
}

function compare(a: RouteResults, b: RouteResults): ScenarioRatios {
  return {
    tunnel_req_per_s: ratio(a.tunnel_tls.req_per_s, b.tunnel_tls.req_per_s),
    tunnel_p50: ratio(a.tunnel_tls.p50_ms, b.tunnel_tls.p50_ms),
    tunnel_p99: ratio(a.tunnel_tls.p99_ms, b.tunnel_tls.p99_ms),
    tunnel_c1_p99: ratio(a.tunnel_tls_c1.p99_ms, b.tunnel_tls_c1.p99_ms),
    bulk_mb_per_s: ratio(a.bulk.mb_per_s, b.bulk.mb_per_s),
    bulk_plain_mb_per_s: ratio(a.bulk_plain.mb_per_s, b.bulk_plain.mb_per_s),
    keep_alive_req_per_s: ratio(a.keep_alive.req_per_s, b.keep_alive.req_per_s),
    keep_alive_p99: ratio(a.keep_alive.p99_ms, b.keep_alive.p99_ms),
    tunnel_cpu: ratio(a.tunnel_tls.proxy_cpu_ms_per_1000, b.tunnel_tls.proxy_cpu_ms_per_1000),
    bulk_cpu: ratio(a.bulk.proxy_cpu_ms_per_gb, b.bulk.proxy_cpu_ms_per_gb),
    bulk_plain_cpu: ratio(a.bulk_plain.proxy_cpu_ms_per_gb, b.bulk_plain.proxy_cpu_ms_per_gb),
    keep_alive_cpu: ratio(a.keep_alive.proxy_cpu_ms_per_1000, b.keep_alive.proxy_cpu_ms_per_1000),
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

/** The largest RSS of a route over every scenario, MiB (NaN for direct). */
export function rssUnderLoad(r: RouteResults): number {
  const values = Object.entries(r.rss_mib ?? {})
    .filter(([k, v]) => k !== 'idle' && Number.isFinite(v))
    .map(([, v]) => v);
  return values.length ? Math.max(...values) : NaN;
}

export function formatResults(routes: RouteResults[], ratios: Ratios): string {
  const failures = (r: RouteResults) => r.tunnel_tls.failed + r.tunnel_tls_c1.failed + r.keep_alive.failed + [...r.bulk.runs, ...r.bulk_plain.runs].filter((x) => !x.ok).length;
  const rates = table(
    [
      'route',
      '(a) tunnel+TLS req/s',
      'p50 ms',
      'p99 ms',
      "(a') c=1 p99 ms",
      '(b) TLS MB/s',
      "(b') plain MB/s",
      '(c) keep-alive req/s',
      'p50 ms',
      'p99 ms',
      'failed',
      'retried (c)',
    ],
    routes.map((r) => [
      r.route,
      fmt(r.tunnel_tls.req_per_s),
      fmt(r.tunnel_tls.p50_ms),
      fmt(r.tunnel_tls.p99_ms),
      fmt(r.tunnel_tls_c1.p99_ms, 2),
      fmt(r.bulk.mb_per_s),
      fmt(r.bulk_plain.mb_per_s),
      fmt(r.keep_alive.req_per_s),
      fmt(r.keep_alive.p50_ms),
      fmt(r.keep_alive.p99_ms),
      String(failures(r)),
      String(r.keep_alive.retried ?? 0),
    ]),
  );
  const proxies = routes.filter((r) => r.route !== 'direct');
  const costs = table(
    [
      'proxy',
      'CPU us/tunnel (a)',
      "us/tunnel (a')",
      'ms/GB (b)',
      "ms/GB (b')",
      'us/request (c)',
      'RSS MiB idle',
      ...Object.keys(SCENARIOS).map((k) => `max ${k.replaceAll('_', ' ')}`),
    ],
    proxies.map((r) => [
      r.route,
      fmt(r.tunnel_tls.proxy_cpu_ms_per_1000, 0),
      fmt(r.tunnel_tls_c1.proxy_cpu_ms_per_1000, 0),
      fmt(r.bulk.proxy_cpu_ms_per_gb, 0),
      fmt(r.bulk_plain.proxy_cpu_ms_per_gb, 0),
      fmt(r.keep_alive.proxy_cpu_ms_per_1000, 0),
      fmt(r.rss_mib?.idle),
      ...Object.keys(SCENARIOS).map((k) => fmt(r.rss_mib?.[k as ScenarioKey])),
    ]),
  );
  const ratioRows = (label: string, set: Record<string, ScenarioRatios>, cpu: boolean) =>
    Object.entries(set).map(([name, x]) => [
      `${label.replace('%', name)}`,
      fmt(x.tunnel_req_per_s, 2),
      fmt(x.tunnel_p99, 2),
      fmt(x.tunnel_c1_p99, 2),
      fmt(x.bulk_mb_per_s, 2),
      fmt(x.bulk_plain_mb_per_s, 2),
      fmt(x.keep_alive_req_per_s, 2),
      fmt(x.keep_alive_p99, 2),
      ...(cpu ? [fmt(x.tunnel_cpu, 2), fmt(x.bulk_cpu, 2), fmt(x.bulk_plain_cpu, 2), fmt(x.keep_alive_cpu, 2)] : ['', '', '', '']),
    ]);
  const ratioTable = table(
    ['ratio', '(a) req/s', 'p99', "(a') p99", '(b) MB/s', "(b') MB/s", '(c) req/s', 'p99', 'CPU (a)', 'CPU (b)', "CPU (b')", 'CPU (c)'],
    [...ratioRows('%/direct', ratios.vs_direct, false), ...ratioRows('egress-guard/%', ratios.egress_guard_vs, true)],
  );
  return `${rates}\n\n(proxy CPU per operation: us of user+system time per tunnel or request, ms per GB relayed; RSS = VmRSS, sampled every 100 ms)\n${costs}\n\n${ratioTable}`;
}

export function formatIdleTunnels(results: IdleTunnelsResult[]): string {
  return table(
    ['idle tunnels', 'target', 'opened', 'failed', 'held', 'open s', 'RSS MiB before', 'held', 'CPU ms idle', 'over ms'],
    results.map((r) => [
      r.route,
      String(r.target),
      String(r.opened),
      String(r.failed),
      String(r.held),
      fmt(r.open_ms / 1000),
      fmt(r.rss_mib_before),
      fmt(r.rss_mib_held),
      fmt(r.idle_cpu_ms, 0),
      fmt(r.hold_ms, 0),
    ]),
  );
}

export interface Verdict {
  goal: string;
  /** null: could not be judged (detail says why). */
  met: boolean | null;
  detail: string;
}

export interface BenchResults {
  routes: RouteResults[];
  ratios: Ratios;
  /** Why a part did not run or a peer is missing (name -> reason). */
  skipped: Record<string, string>;
  idleTunnels?: IdleTunnelsResult[];
  startup?: StartupResult;
  dns?: DnsBenchResult;
  /** Issue 13's bench: inspected requests against Squid ssl-bump. */
  inspection?: InspectionReport | { failed: string };
}

const IDLE_CPU_MS_MAX = 20;

/** One line per goal of issue 14, each MET, MISS or n/a (with the reason). */
export function verdicts(results: BenchResults): Verdict[] {
  const out: Verdict[] = [];
  const eg = results.routes.find((r) => r.route === 'egress-guard');
  const squid = results.routes.find((r) => r.route === 'squid');
  const direct = results.routes.find((r) => r.route === 'direct');
  const whyMissing = (name: string, route: unknown) => {
    const reason = results.skipped[name] ?? results.skipped.proxy;
    return route ? undefined : `${name} not measured${reason ? `: ${reason.split('\n')[0]}` : ''}`;
  };
  /** A goal "value <= limit" (or >=); n/a with the reason when either side is missing. */
  const check = (goal: string, value: number | null | undefined, op: '<=' | '>=', limit: number | null | undefined, detail: string, missing?: string) => {
    const judged = value !== null && value !== undefined && Number.isFinite(value) && limit !== null && limit !== undefined && Number.isFinite(limit);
    if (!judged) return out.push({ goal, met: null, detail: missing ?? `no measurement (${detail})` });
    return out.push({ goal, met: op === '<=' ? value <= limit : value >= limit, detail });
  };
  const f = (v: number | null | undefined, d = 1) => fmt(v, d);
  const vsSquid = whyMissing('egress-guard', eg) ?? whyMissing('squid', squid);
  const vsDirect = whyMissing('egress-guard', eg) ?? (direct ? undefined : 'direct route not measured');

  const cpuA = [eg?.tunnel_tls.proxy_cpu_ms_per_1000, squid?.tunnel_tls.proxy_cpu_ms_per_1000];
  check('proxy CPU per tunnel <= squid', cpuA[0], '<=', cpuA[1], `${f(cpuA[0], 0)} vs ${f(cpuA[1], 0)} us`, vsSquid);
  check('moonshot: CPU per tunnel <= squid / 2', cpuA[0], '<=', cpuA[1] === undefined ? undefined : cpuA[1] / 2, `${f(cpuA[0], 0)} vs ${f(cpuA[1], 0)} / 2 us`, vsSquid);
  const rate = [eg?.tunnel_tls.req_per_s, squid?.tunnel_tls.req_per_s];
  check('tunnel rate (c=50) >= squid', rate[0], '>=', rate[1], `${f(rate[0])} vs ${f(rate[1])} req/s`, vsSquid);
  const p99 = [eg?.tunnel_tls_c1.p99_ms, squid?.tunnel_tls_c1.p99_ms];
  check('tunnel p99 at c=1 <= squid', p99[0], '<=', p99[1], `${f(p99[0], 2)} vs ${f(p99[1], 2)} ms`, vsSquid);
  for (const [key, label, share] of [
    ['bulk', 'TLS', 0.95],
    ['bulk_plain', 'plain', 0.8],
  ] as const) {
    const mb = [eg?.[key].mb_per_s, direct?.[key].mb_per_s];
    const limit = mb[1] === undefined ? undefined : share * mb[1];
    check(`bulk ${label} >= ${share} x direct`, mb[0], '>=', limit, `${f(mb[0])} vs ${f(mb[1])} MB/s = ${f(ratio(mb[0], mb[1]), 2)}`, vsDirect);
  }
  for (const [key, label] of [
    ['bulk', 'TLS'],
    ['bulk_plain', 'plain'],
  ] as const) {
    const gb = [eg?.[key].proxy_cpu_ms_per_gb, squid?.[key].proxy_cpu_ms_per_gb];
    check(`proxy CPU per GB (${label}) <= squid`, gb[0], '<=', gb[1], `${f(gb[0], 0)} vs ${f(gb[1], 0)} ms/GB`, vsSquid);
  }
  const ka = [eg?.keep_alive.req_per_s, squid?.keep_alive.req_per_s];
  check('keep-alive req/s >= squid', ka[0], '>=', ka[1], `${f(ka[0])} vs ${f(ka[1])} req/s`, vsSquid);
  const kaCpu = [eg?.keep_alive.proxy_cpu_ms_per_1000, squid?.keep_alive.proxy_cpu_ms_per_1000];
  check('proxy CPU per request <= squid', kaCpu[0], '<=', kaCpu[1], `${f(kaCpu[0], 0)} vs ${f(kaCpu[1], 0)} us`, vsSquid);

  const dns = results.dns;
  const dnsMissing = !dns
    ? `DNS bench not run${results.skipped.dns ? `: ${results.skipped.dns}` : ''}`
    : !dns.egress_guard || !dns.dnsmasq
      ? `DNS: ${Object.entries(dns.skipped)
          .map(([k, v]) => `${k} ${v}`)
          .join('; ')}`
      : undefined;
  for (const [key, label] of [
    ['cached_allowed', 'cached allowed'],
    ['denied', 'denied'],
  ] as const) {
    const q = [dns?.egress_guard?.[key].qps, dns?.dnsmasq?.[key].qps];
    check(`DNS ${label} q/s >= 0.8 x dnsmasq`, q[0], '>=', q[1] === undefined ? undefined : 0.8 * q[1], `${f(q[0], 0)} vs ${f(q[1], 0)} q/s`, dnsMissing);
  }
  const dp99 = [dns?.egress_guard?.fixed_rate.p99_ms, dns?.dnsmasq?.fixed_rate.p99_ms];
  check(
    `DNS p99 at ${dns?.settings.fixedQps ?? 2000} q/s <= dnsmasq + 0.2 ms`,
    dp99[0],
    '<=',
    dp99[1] === undefined ? undefined : dp99[1] + 0.2,
    `${f(dp99[0], 3)} vs ${f(dp99[1], 3)} ms`,
    dnsMissing,
  );

  const egDns = dns?.egress_guard;
  check('RSS idle <= 60 MiB', eg?.rss_mib?.idle, '<=', 60, `${f(eg?.rss_mib?.idle)} MiB after start`, whyMissing('egress-guard', eg));
  const loads = [
    ...(eg ? Object.entries(eg.rss_mib ?? {}).filter(([k]) => k !== 'idle') : []),
    ...(egDns ? [['dns', Math.max(egDns.cached_allowed.rss_mib_max, egDns.denied.rss_mib_max, egDns.fixed_rate.rss_mib_max)] as const] : []),
  ];
  const worst = loads.reduce<[string, number] | undefined>((acc, [k, v]) => (Number.isFinite(v) && (!acc || v! > acc[1]) ? [k, v!] : acc), undefined);
  check(
    'RSS under every load <= 100 MiB',
    worst?.[1],
    '<=',
    100,
    `max ${f(worst?.[1])} MiB (${worst?.[0]}); ${loads.map(([k, v]) => `${k} ${f(v)}`).join(', ')}${egDns ? '' : '; DNS load not measured'}`,
    whyMissing('egress-guard', eg),
  );

  const idle = results.idleTunnels?.find((r) => r.route === 'egress-guard');
  const idleMissing = idle ? undefined : `idle-tunnel run not done${results.skipped['idle-tunnels'] ? `: ${results.skipped['idle-tunnels']}` : ''}`;
  const fewer = idle && idle.held < IDLE_TUNNELS_GOAL ? `only ${idle.held} of ${IDLE_TUNNELS_GOAL} held${idle.limited_by ? ` (${idle.limited_by})` : ''}` : undefined;
  // Fewer tunnels than the goal: a limit already passed is a MISS (more tunnels cannot need less); otherwise it cannot be judged.
  const idleRss = idle?.rss_mib_held;
  const idleRssDetail = `${f(idleRss)} MiB with ${idle?.held ?? 0} tunnels held`;
  if (fewer && idleRss !== undefined && !(idleRss > 200))
    out.push({ goal: `${IDLE_TUNNELS_GOAL} idle tunnels held, RSS <= 200 MiB`, met: null, detail: `${idleRssDetail}: ${fewer}` });
  else check(`${IDLE_TUNNELS_GOAL} idle tunnels held, RSS <= 200 MiB`, idleRss, '<=', 200, idleRssDetail, idleMissing);
  const idleCpuDetail = `${f(idle?.idle_cpu_ms, 0)} ms CPU over ${f(idle?.hold_ms, 0)} ms idle with ${idle?.held ?? 0} tunnels (limit ${IDLE_CPU_MS_MAX} ms)`;
  if (fewer && idle && !(idle.idle_cpu_ms > IDLE_CPU_MS_MAX)) out.push({ goal: 'no CPU while the tunnels are idle', met: null, detail: `${idleCpuDetail}: ${fewer}` });
  else check('no CPU while the tunnels are idle', idle?.idle_cpu_ms, '<=', IDLE_CPU_MS_MAX, idleCpuDetail, idleMissing);

  const startup = results.startup;
  check(
    'start to ready <= 300 ms',
    startup?.median_ms,
    '<=',
    300,
    `median ${f(startup?.median_ms, 0)} ms of ${startup?.starts_ms.length ?? 0} starts (${startup?.listeners.join(' + ')}); CPU to ready ${f(startup?.median_cpu_ms, 0)} ms`,
    startup ? undefined : `not measured${results.skipped.startup ? `: ${results.skipped.startup}` : ''}`,
  );

  const inspection = results.inspection && 'verdict' in results.inspection ? results.inspection : undefined;
  const vsBump = inspection?.vs_squid;
  out.push({
    goal: 'inspected requests: no worse than squid ssl-bump',
    met: inspection && inspection.verdict !== 'n/a' ? inspection.verdict === 'MET' : null,
    detail: vsBump
      ? `req/s ratio keep-alive ${f(vsBump.keep_alive_req_per_s, 2)}, new connection ${f(vsBump.new_connection_req_per_s, 2)}; CPU ratio ${f(vsBump.keep_alive_cpu, 2)} / ${f(vsBump.new_connection_cpu, 2)}`
      : `not measured${results.skipped.inspection ? `: ${results.skipped.inspection.split('\n')[0]}` : ''}`,
  });
  return out;
}

export function formatVerdicts(list: Verdict[]): string {
  return list.map((v) => `${v.met === null ? 'n/a ' : v.met ? 'MET ' : 'MISS'}  ${v.goal.padEnd(44)} ${v.detail}`).join('\n');
}
