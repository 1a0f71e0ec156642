import { randomUUID } from 'node:crypto';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../events/schema.js';

/** The collector benches' synthetic events (bench/collector-bench.ts, bench/collector-pg-profile.ts). */

export function host(i: number): string {
  return `svc${i}.example${i % 17}.com`;
}

/** A skewed pick: low host numbers far more often (a few registries and CDNs take most connections). */
function pickHost(hosts: number): number {
  return Math.min(hosts - 1, Math.floor(hosts * Math.random() ** 3));
}

/**
 * The events of one job: `count` events (decisions, and a close after each allowed or would-block one), over a few
 * minutes from `start`.
 */
export function jobEvents(job: string, count: number, start: number, hosts: number): EgressEvent[] {
  const out: EgressEvent[] = [];
  const ci = { repository: `org/repo-${job.length % 40}-${job.slice(-2)}`, run_id: String(9_000_000 + job.length), job: job, job_id: job };
  for (let i = 0; out.length < count; i++) {
    const h = host(pickHost(hosts));
    const time = start + i * 250;
    const r = Math.random();
    const decision = r < 0.85 ? 'allowed' : r < 0.95 ? 'would-block' : 'blocked';
    const d: DecisionEvent = {
      schema: 1,
      event: 'decision',
      id: randomUUID(),
      time: new Date(time).toISOString(),
      kind: 'connect',
      client: `127.0.0.1:${40_000 + (i % 20_000)}`,
      host: h,
      port: 443,
      ip: `104.16.${i % 250}.${(i * 7) % 250}`,
      decision,
      reason: decision === 'allowed' ? 'allowed-endpoint' : 'not-allowed-endpoint',
      rule: decision === 'allowed' ? `${h}:443` : null,
      message: decision === 'allowed' ? `allowed by endpoint ${h}:443` : `${h}:443 is not in the allowlist`,
      mode: 'audit',
      ci,
    };
    out.push(d);
    if (decision !== 'blocked' && out.length < count) {
      const c: CloseEvent = {
        schema: 1,
        event: 'close',
        id: d.id,
        time: new Date(time + 120).toISOString(),
        kind: 'connect',
        client: d.client,
        host: h,
        port: 443,
        ip: d.ip!,
        bytes_in: Math.floor(Math.random() * 200_000),
        bytes_out: Math.floor(Math.random() * 5_000),
        duration_ms: 120,
      };
      out.push(c);
    }
  }
  return out;
}
