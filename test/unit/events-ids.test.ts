import assert from 'node:assert/strict';
import { test } from 'node:test';
import { randomEventId } from '../../events/event-ids.js';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test('event ids: random RFC 9562 version 4 UUIDs, as crypto.randomUUID() writes them, none repeated', () => {
  const ids = Array.from({ length: 20_000 }, () => randomEventId());
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
