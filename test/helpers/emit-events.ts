import type { EventLog } from '../../events/event-log.js';
import type { DecisionEvent } from '../../events/schema.js';

/** Emit `count` allowed CONNECT decisions, each followed by its close event, to a real EventLog. Tests only. */
export function emitConnections(log: EventLog, count: number, host = (i: number) => `host${i % 7}.example.test`): DecisionEvent[] {
  const out: DecisionEvent[] = [];
  for (let i = 0; i < count; i++) {
    const d = log.decision({
      kind: 'connect',
      client: `127.0.0.1:${40000 + (i % 20000)}`,
      host: host(i),
      port: 443,
      ip: '198.51.100.10',
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: '*.example.test',
      message: 'allowed by "*.example.test"',
      mode: 'audit',
    });
    log.close({ id: d.id, kind: 'connect', client: d.client, host: d.host, port: 443, ip: d.ip, bytes_in: 1000 + i, bytes_out: 200, duration_ms: 5 });
    out.push(d);
  }
  return out;
}
