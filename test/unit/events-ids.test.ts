import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { EventLog } from '../../events/event-log.js';
import type { DecisionEvent, DecisionFields } from '../../events/schema.js';
import { randomEventId, randomLineEventId } from '../../events/event-ids.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('event ids: random RFC 9562 version 4 UUIDs, as crypto.randomUUID() writes them, none repeated', () => {
  // Both kinds, interleaved: they hand out ids from the same fills.
  const ids = Array.from({ length: 20_000 }, (_, i) => (i % 3 === 0 ? randomLineEventId() : randomEventId()));
  for (const id of ids) assert.match(id, UUID_V4);
  assert.equal(new Set(ids).size, ids.length);
  // Every random hex digit (not the version nibble, not the variant's two bits) is about as frequent as any other:
  // 20,000 ids x 30 digits, 37,500 expected per digit; a digit stuck or skipped (a wrong table, an unfilled byte) is
  // far outside 10%.
  const counts = new Map<string, number>();
  for (const id of ids) {
    const hex = id.replaceAll('-', '');
    for (let i = 0; i < 32; i++) if (i !== 12 && i !== 16) counts.set(hex[i]!, (counts.get(hex[i]!) ?? 0) + 1);
  }
  assert.equal(counts.size, 16);
  for (const [digit, count] of counts) assert.ok(Math.abs(count - 37_500) < 3_750, `digit ${digit}: ${count}`);
  // The variant digit takes all four of 8, 9, a, b.
  assert.equal(new Set(ids.map((id) => id[19])).size, 4);
});

test('a decision event kept by whoever holds it (the proxy, per connection) keeps its id, not the text of the ids made with it', () => {
  // Heap in use, measured after a full collection (gc exposed now: the test runner starts node without --expose-gc).
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const log = new EventLog({ stdout: false });
  const fields: DecisionFields = {
    kind: 'connect',
    client: '127.0.0.1:40000',
    host: 'kept.test',
    port: 443,
    decision: 'allowed',
    reason: 'allowed-endpoint',
    rule: 'kept.test',
    message: 'kept.test is allowed',
    mode: 'block',
  };
  const kept: DecisionEvent[] = [];
  gc();
  const before = process.memoryUsage().heapUsed;
  // One event kept from every 128 ids (the others go to decisions whose events are dropped, as DNS answers' are): an
  // id that is a slice of the text of its 128 keeps all 4.6 KB of it alive, about 9 MB for 2000 events.
  for (let i = 0; i < 2000; i++) {
    kept.push(log.decision(fields));
    for (let j = 0; j < 127; j++) randomEventId();
  }
  gc();
  const grown = process.memoryUsage().heapUsed - before;
  assert.equal(new Set(kept.map((e) => e.id)).size, kept.length);
  // The events themselves, a few hundred bytes each: well under 3 MB.
  assert.ok(grown < 3 * 1024 * 1024, `${kept.length} kept events hold ${Math.round(grown / 1024)} KiB`);
});
