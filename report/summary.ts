import { formatHostPort, type Outcome } from '../policy/index.js';
import type { CloseEvent, DecisionEvent, EgressEvent, RequestKind } from '../events/schema.js';
import { jobKey } from '../events/job-key.js';

/** One host:port a job talked to (or tried to), with every decision about it folded together. */
export interface Destination {
  host: string;
  port: number;
  kinds: RequestKind[];
  count: number;
  first: string;
  last: string;
  /** The strictest outcome seen: blocked, else would-block, else allowed. */
  decision: Outcome;
  outcomes: Record<Outcome, number>;
  reasons: string[];
  ips: string[];
  bytesIn: number;
  bytesOut: number;
}

/** A decision and, when the connection was forwarded and has ended, its close event. */
export interface Connection {
  id: string;
  time: string;
  kind: RequestKind;
  host: string;
  port: number;
  decision: Outcome;
  reason: string;
  ip?: string;
  durationMs?: number;
  bytesIn?: number;
  bytesOut?: number;
  status?: number;
  error?: string;
}

export interface Summary {
  jobs: string[];
  decisions: number;
  first?: string;
  last?: string;
  totals: Record<Outcome, number>;
  destinations: Destination[];
  connections: Connection[];
}

/** How strict an outcome is: a row takes the strictest of its decisions, and stricter rows come first. */
export const SEVERITY: Record<Outcome, number> = { blocked: 2, 'would-block': 1, allowed: 0 };

export function isDecision(event: EgressEvent): event is DecisionEvent {
  return event.event === 'decision';
}

/** The events of one job: its decisions and the close events that share their ids. */
export function eventsOfJob(events: readonly EgressEvent[], job: string): EgressEvent[] {
  const ids = new Set(events.filter((e) => isDecision(e) && jobKey(e) === job).map((e) => e.id));
  return events.filter((e) => ids.has(e.id) && (isDecision(e) ? jobKey(e) === job : true));
}

/** A destination's row key in reports: its host:port (policy/host-port.ts). */
export const destinationKey = formatHostPort;

/** In time order (a stable sort: equal times keep their order); each time parsed once. */
function sortedByTime<T extends { time: string }>(items: readonly T[]): T[] {
  return items
    .map((item) => ({ item, t: Date.parse(item.time) }))
    .sort((a, b) => a.t - b.t)
    .map((x) => x.item);
}

export function summarize(events: readonly EgressEvent[]): Summary {
  const closes = new Map<string, CloseEvent>();
  for (const e of events) if (e.event === 'close') closes.set(e.id, e);
  const decisions = sortedByTime(events.filter(isDecision));
  const seenIds = new Set<string>();
  const destinations = new Map<string, Destination>();
  // Each destination's addresses as a set beside its list (first seen first): a CDN name seen on thousands of
  // addresses made the list's own lookup quadratic (a job of 200,000 events took over a second here).
  const addressesSeen = new Map<Destination, Set<string>>();
  const connections: Connection[] = [];
  const totals: Record<Outcome, number> = { allowed: 0, blocked: 0, 'would-block': 0 };
  const jobs = new Set<string>();

  for (const d of decisions) {
    if (seenIds.has(d.id)) continue; // the same event delivered twice (file concatenations)
    seenIds.add(d.id);
    jobs.add(jobKey(d));
    totals[d.decision]++;
    const close = closes.get(d.id);
    const key = destinationKey(d.host, d.port);
    let dest = destinations.get(key);
    if (!dest) {
      dest = {
        host: d.host,
        port: d.port,
        kinds: [],
        count: 0,
        first: d.time,
        last: d.time,
        decision: d.decision,
        outcomes: { allowed: 0, blocked: 0, 'would-block': 0 },
        reasons: [],
        ips: [],
        bytesIn: 0,
        bytesOut: 0,
      };
      destinations.set(key, dest);
    }
    dest.count++;
    dest.last = d.time;
    dest.outcomes[d.decision]++;
    if (SEVERITY[d.decision] > SEVERITY[dest.decision]) dest.decision = d.decision;
    if (!dest.kinds.includes(d.kind)) dest.kinds.push(d.kind);
    if (!dest.reasons.includes(d.reason)) dest.reasons.push(d.reason);
    if (d.ip) {
      let seen = addressesSeen.get(dest);
      if (!seen) addressesSeen.set(dest, (seen = new Set()));
      if (!seen.has(d.ip)) {
        seen.add(d.ip);
        dest.ips.push(d.ip);
      }
    }
    if (close) {
      dest.bytesIn += close.bytes_in;
      dest.bytesOut += close.bytes_out;
    }
    connections.push({
      id: d.id,
      time: d.time,
      kind: d.kind,
      host: d.host,
      port: d.port,
      decision: d.decision,
      reason: d.reason,
      ...(d.ip !== undefined && { ip: d.ip }),
      ...(close && { durationMs: close.duration_ms, bytesIn: close.bytes_in, bytesOut: close.bytes_out }),
      ...(close?.status !== undefined && { status: close.status }),
      ...(close?.error !== undefined && { error: close.error }),
    });
  }
  const sorted = [...destinations.values()].sort((a, b) => SEVERITY[b.decision] - SEVERITY[a.decision] || b.count - a.count || a.host.localeCompare(b.host) || a.port - b.port);
  return {
    jobs: [...jobs].sort(),
    decisions: connections.length,
    ...(connections.length > 0 && { first: connections[0]!.time, last: connections.at(-1)!.time }),
    totals,
    destinations: sorted,
    connections,
  };
}
