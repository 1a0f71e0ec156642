import { getDomain } from 'tldts';
import { canonicalHost, classifyAddress, compileHostPattern, type HostPattern, matchHost, normalisePath, parseAddress, parseEndpoint } from '../policy/index.js';
import type { EgressEvent } from '../events/schema.js';
import { destinationKey, isDecision } from './summary.js';

/**
 * Decisions no allowlist changes: the request itself was unusable (ambiguous-host: it could name two hosts, and is
 * decided on none), or (encrypted-client-hello) its host is allowed already and what it hides is not in the event, or
 * (at-capacity) egress-guard's own limit of open connections refused it, or (unsupported-query) it was a DNS query of
 * another class than IN or a zone transfer, which egress-guard never forwards, or (not-redirected) it was made to the
 * transparent listener itself, with no destination to allow, or (established-before-rules) it was a connection open
 * before the rules, which the rules let through whatever the policy says.
 */
export const NOT_POLICY_REASONS = new Set([
  'invalid-host',
  'ambiguous-host',
  'malformed-request',
  'at-capacity',
  'not-redirected',
  'unsupported-query',
  'established-before-rules',
  'sni-mismatch',
  'encrypted-client-hello',
]);
/** Traffic the redirect rules refuse whatever the policy says (netlog/): UDP but DNS, ICMP, answers to outside hosts. */
export const RULES_ONLY_REASONS = new Set(['not-proxied', 'inbound-reply', 'own-connection']);

export interface PolicyEntry {
  value: string;
  count: number;
  comment: string;
}

export interface SuggestedPolicy {
  endpoints: PolicyEntry[];
  allowedIps: PolicyEntry[];
  trustedRanges: PolicyEntry[];
  /** Decisions left out because no policy entry would change them. */
  ignored: number;
  /**
   * Traffic the redirect rules refuse in block mode whatever the policy says (UDP but DNS, ICMP, answers to
   * outside hosts): no entry can allow it, so it is listed for the reader, not suggested.
   */
  aroundProxy: PolicyEntry[];
  decisions: number;
  first?: string;
  last?: string;
}

export interface SuggestOptions {
  /** Replace N or more exact subdomains of one parent (same port) by `*.parent:port`. */
  collapse?: number;
  /** Where requests' paths were seen (plain HTTP, inspected TLS), suggest path entries instead of the host. */
  paths?: boolean;
}

interface Tally {
  count: number;
  kinds: Set<string>;
  names?: Set<string>;
  ports?: Set<number>;
  /** Requests seen with a path: path prefix -> count and methods. */
  paths?: Map<string, { count: number; methods: Set<string> }>;
}

/**
 * How many leading segments name an owner, never to be widened over: `/my-org/**` on github.com, not `/**`;
 * `/repos/my-org/**` on api.github.com. Elsewhere one segment.
 */
function ownerDepth(host: string, segments: readonly string[]): number {
  if (host === 'api.github.com' && ['repos', 'orgs', 'users'].includes(segments[0] ?? '')) return 2;
  return 1;
}

/** The shortest prefix entry that covers a path without widening past its owner: `/a/**`, or the path itself. */
function pathGroup(host: string, path: string): string {
  const segments = path.slice(1).split('/');
  const depth = ownerDepth(host, segments);
  return segments.length > depth ? `/${segments.slice(0, depth).join('/')}/**` : path;
}

/** `f` with its answers kept per argument (for one call of suggestPolicy). */
function memo<A, R>(f: (a: A) => R): (a: A) => R {
  const answers = new Map<A, R>();
  return (a) => {
    if (answers.has(a)) return answers.get(a)!;
    const r = f(a);
    answers.set(a, r);
    return r;
  };
}

function tally(map: Map<string, Tally>, key: string): Tally {
  let t = map.get(key);
  if (!t) map.set(key, (t = { count: 0, kinds: new Set() }));
  return t;
}

export function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function times(n: number): string {
  return n === 1 ? 'once' : `${n} times`;
}

function list(values: Iterable<string | number>, max = 5): string {
  const all = [...values].map(String).sort();
  return all.length > max ? `${all.slice(0, max).join(', ')}, +${all.length - max} more` : all.join(', ');
}

/** A wildcard over `parent` is acceptable: parent is a registrable domain or below one, never a public suffix. */
function canWildcard(parent: string): boolean {
  return parent.includes('.') && getDomain(parent, { allowPrivateDomains: true }) !== null && getDomain(parent) !== null;
}

/**
 * The smallest allowlist under which every policy decision of the recorded run is allowed: exact
 * host:port entries for names, allowed-ips for raw-IP destinations, trusted-ranges for names that
 * resolved to non-public addresses, and names seen only as DNS queries on port 443 (a DNS answer needs
 * some endpoint entry for the name).
 */
export function suggestPolicy(events: readonly EgressEvent[], options: SuggestOptions = {}): SuggestedPolicy {
  const endpoints = new Map<string, Tally & { host: string; port: number }>();
  const ips = new Map<string, Tally>();
  const trusted = new Map<string, Tally>();
  const dnsNames = new Map<string, Tally>();
  const aroundProxy = new Map<string, Tally>();
  const seen = new Set<string>();
  let ignored = 0;
  let first: string | undefined;
  let last: string | undefined;
  // A job repeats a few destinations thousands of times: each host, endpoint and address is looked at once.
  const hostOf = memo(canonicalHost);
  const isValidEndpoint = memo(validEndpoint);
  const trustedAddress = memo((ip: string) => {
    const address = parseAddress(ip);
    return address && !classifyAddress(address).publicUnicast ? address.toString() : null;
  });

  for (const event of events) {
    if (!isDecision(event) || seen.has(event.id)) continue;
    seen.add(event.id);
    if (!first || event.time < first) first = event.time;
    if (!last || event.time > last) last = event.time;
    if (NOT_POLICY_REASONS.has(event.reason)) {
      ignored++;
      continue;
    }
    if (RULES_ONLY_REASONS.has(event.reason)) {
      const label =
        event.reason === 'inbound-reply' ? `${event.kind} answers to ${event.host}` : `${event.kind} ${event.port ? destinationKey(event.host, event.port) : event.host}`;
      const t = tally(aroundProxy, label);
      t.count++;
      t.kinds.add(event.reason);
      continue;
    }
    const host = hostOf(event.host);
    if (host.type === 'invalid') {
      ignored++;
      continue;
    }
    if (host.type === 'ip') {
      const t = tally(ips, host.text);
      t.count++;
      t.kinds.add(event.kind);
      (t.ports ??= new Set()).add(event.port);
      continue;
    }
    if (event.kind === 'dns') {
      const t = tally(dnsNames, host.name);
      t.count++;
      t.kinds.add(event.qtype ?? 'dns');
      continue;
    }
    const key = destinationKey(host.name, event.port);
    if (!isValidEndpoint(key)) {
      ignored++;
      continue;
    }
    let t = endpoints.get(key);
    if (!t) endpoints.set(key, (t = { count: 0, kinds: new Set(), host: host.name, port: event.port }));
    t.count++;
    t.kinds.add(event.kind);
    const normalised = options.paths && event.path !== undefined ? normalisePath(event.path) : undefined;
    if (normalised?.ok) {
      const group = pathGroup(host.name, normalised.path);
      const p = (t.paths ??= new Map()).get(group) ?? { count: 0, methods: new Set<string>() };
      p.count++;
      if (event.method) p.methods.add(event.method);
      t.paths.set(group, p);
    }
    const address = event.ip ? trustedAddress(event.ip) : null;
    if (address !== null) {
      const r = tally(trusted, address);
      r.count++;
      (r.names ??= new Set()).add(host.name);
    }
  }

  // Split in one pass (a search of the path hosts' list per endpoint was quadratic: 20,000 hosts with paths, ~1 s).
  const withPaths: Array<Tally & { host: string; port: number }> = [];
  const withoutPaths: Array<Tally & { host: string; port: number }> = [];
  for (const t of endpoints.values()) (t.paths && t.paths.size > 0 ? withPaths : withoutPaths).push(t);
  const entries = [...collapseEndpoints(withoutPaths, options.collapse), ...withPaths.flatMap(pathEntries)];
  const covered = coveringPatterns(entries.map((e) => e.value.slice(0, e.value.lastIndexOf(':'))));
  for (const [name, t] of dnsNames) {
    if (covered(name)) continue;
    if (!validEndpoint(`${name}:443`)) {
      ignored += t.count;
      continue;
    }
    entries.push({ value: `${name}:443`, count: t.count, comment: `DNS queries only (${list(t.kinds)}), ${times(t.count)}; no connection seen` });
  }
  entries.sort((a, b) => a.value.localeCompare(b.value));

  return {
    endpoints: entries,
    allowedIps: [...ips]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([ip, t]) => ({
        value: ip,
        count: t.count,
        comment: `seen ${times(t.count)} (${list(t.kinds)}), port ${list(t.ports ?? [])}`,
      })),
    trustedRanges: [...trusted]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([ip, t]) => ({
        value: ip,
        count: t.count,
        comment: `${list(t.names ?? [])} resolved here, ${times(t.count)}`,
      })),
    ignored,
    aroundProxy: [...aroundProxy].sort(([a], [b]) => a.localeCompare(b)).map(([value, t]) => ({ value, count: t.count, comment: `${times(t.count)} (${list(t.kinds)})` })),
    decisions: seen.size,
    ...(first && { first }),
    ...(last && { last }),
  };
}

/**
 * Whether one of these host patterns matches a name (matchHost), looked up by the name's own labels where a pattern
 * is a name (`a.example.com`: the name itself) or `*.` and a name (`*.example.com`: a name ending in `.example.com`),
 * the rest (other globs, rare) matched one by one. Matching every name against every pattern took ~9 s for a job of
 * 100,000 names looked up (a DNS tunnel) beside 500 endpoints, on the collector's loop at each view of its page.
 */
function coveringPatterns(patterns: readonly string[]): (name: string) => boolean {
  const names = new Set<string>();
  const parents = new Set<string>();
  const others: HostPattern[] = [];
  for (const p of patterns) {
    if (!p.includes('*')) names.add(p);
    else if (p.startsWith('*.') && !p.slice(2).includes('*')) parents.add(p.slice(2));
    else others.push(compileHostPattern(p));
  }
  return (name) => {
    if (names.has(name)) return true;
    if (parents.size > 0) {
      for (let dot = name.indexOf('.'); dot !== -1; dot = name.indexOf('.', dot + 1)) if (parents.has(name.slice(dot + 1))) return true;
    }
    return others.some((p) => matchHost(p, name));
  };
}

/** Path entries for a host whose requests were seen: one per group, a `/x` dropped where `/x/**` covers it. */
function pathEntries(t: Tally & { host: string; port: number }): PolicyEntry[] {
  const groups = [...t.paths!];
  // t.paths' keys: a lookup, not a search of every group per group (20,000 groups on one host took ~6 s).
  const covered = (path: string) => t.paths!.has(`${path}/**`);
  return groups
    .filter(([path]) => !covered(path))
    .map(([path, p]) => ({ value: `${destinationKey(t.host, t.port)}${path}`, count: p.count, comment: `${times(p.count)} (${list(p.methods)})` }))
    .filter((entry) => validEndpoint(entry.value));
}

function collapseEndpoints(endpoints: Array<Tally & { host: string; port: number }>, collapse: number | undefined): PolicyEntry[] {
  const exact = (t: Tally & { host: string; port: number }): PolicyEntry => ({
    value: destinationKey(t.host, t.port),
    count: t.count,
    comment: `seen ${times(t.count)} (${list(t.kinds)})`,
  });
  if (!collapse || collapse < 2) return endpoints.map(exact);
  const groups = new Map<string, Array<Tally & { host: string; port: number }>>();
  for (const t of endpoints) {
    const parent = t.host.slice(t.host.indexOf('.') + 1);
    if (!t.host.includes('.') || !canWildcard(parent)) continue;
    const key = `${parent}:${t.port}`;
    // Pushed, not copied ([...group, t]): a copy per subdomain made 5,000 subdomains of one parent 12.5 million copies.
    const group = groups.get(key);
    if (group) group.push(t);
    else groups.set(key, [t]);
  }
  const collapsed = new Set<Tally>();
  const out: PolicyEntry[] = [];
  for (const [key, members] of groups) {
    if (members.length < collapse) continue;
    const value = `*.${key}`;
    if (!validEndpoint(value)) continue;
    const count = members.reduce((n, m) => n + m.count, 0);
    const kinds = new Set(members.flatMap((m) => [...m.kinds]));
    out.push({ value, count, comment: `${members.length} subdomains seen ${times(count)} (${list(kinds)}): ${list(members.map((m) => m.host.split('.')[0]!))}` });
    for (const m of members) collapsed.add(m);
  }
  return [...out, ...endpoints.filter((t) => !collapsed.has(t)).map(exact)];
}

function validEndpoint(entry: string): boolean {
  try {
    return !parseEndpoint(entry, { file: 'suggest', line: 0 }).warning;
  } catch {
    return false;
  }
}

function yamlList(key: string, entries: readonly PolicyEntry[]): string {
  if (entries.length === 0) return `${key}: []\n`;
  // A loop, not Math.max(...): a spread of more than ~120,000 values overflows the stack.
  const width = entries.reduce((w, e) => Math.max(w, JSON.stringify(e.value).length), 0);
  return `${key}:\n${entries.map((e) => `  - ${JSON.stringify(e.value).padEnd(width)}  # ${oneLine(e.comment)}\n`).join('')}`;
}

function oneLine(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

/** The suggestion as a policy file that `egress-guard run --policy` reads. */
export function renderPolicyYaml(suggestion: SuggestedPolicy, source: string): string {
  const span = suggestion.first ? `, ${suggestion.first} to ${suggestion.last}` : '';
  return [
    `# egress-guard policy suggested from ${oneLine(source)}: ${plural(suggestion.decisions, 'decision')}${span}.`,
    '# Every entry was used by the recorded run; review it before switching to block mode.',
    ...(suggestion.ignored > 0 ? [`# Left out: ${plural(suggestion.ignored, 'decision')} on malformed requests, which no policy entry allows.`] : []),
    ...(suggestion.aroundProxy.length > 0
      ? [
          '# Not allowed by any entry: traffic that goes around the proxy (UDP but DNS, such as QUIC; ICMP; the job',
          '# answering hosts outside). The redirect rules refuse it in block mode whatever this file says; a job that',
          '# needs it must do without it (curl and browsers fall back from QUIC to TCP), or name its port with',
          '# `rules apply --inbound-ports` when it is a service reached from outside:',
          ...suggestion.aroundProxy.map((e) => `#   ${oneLine(e.value)}  ${e.comment ?? ''}`.trimEnd()),
        ]
      : []),
    'mode: block',
    'dns: policy',
    yamlList('allowed-endpoints', suggestion.endpoints).trimEnd(),
    yamlList('allowed-ips', suggestion.allowedIps).trimEnd(),
    yamlList('trusted-ranges', suggestion.trustedRanges).trimEnd(),
    '',
  ].join('\n');
}
