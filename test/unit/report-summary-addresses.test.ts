import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { summarize } from '../../report/summary.js';

test("a destination's addresses: each once, first seen first, apart from another destination's", () => {
  const events = new EventLog({ stdout: false, ci: { job_id: 'addresses' } });
  const seen: EgressEvent[] = [];
  events.subscribe((e) => seen.push(e));
  const decide = (host: string, ip: string | undefined) =>
    events.decision({
      kind: 'connect',
      client: '127.0.0.1:1',
      host,
      port: 443,
      decision: 'allowed',
      reason: 'allowed-endpoint',
      rule: host,
      message: '',
      mode: 'audit',
      ...(ip && { ip }),
    });
  for (const ip of ['198.51.100.2', '198.51.100.1', '198.51.100.2', undefined, '203.0.113.9', '198.51.100.1']) decide('cdn.example.test', ip);
  decide('other.example.test', '198.51.100.1');
  const byHost = new Map(summarize(seen).destinations.map((d) => [d.host, d]));
  assert.deepEqual(byHost.get('cdn.example.test')!.ips, ['198.51.100.2', '198.51.100.1', '203.0.113.9']);
  assert.equal(byHost.get('cdn.example.test')!.count, 6);
  assert.deepEqual(byHost.get('other.example.test')!.ips, ['198.51.100.1']);
});
