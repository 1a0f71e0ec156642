import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { it } from 'node:test';
import fc from 'fast-check';
import { CLOSE, DECISION, encodeId } from '../../collector/stores/codec.js';
import { closeKeyOf, decisionKeyOf, keepsIdInBody, pgKey } from '../../collector/stores/pg-key.js';

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const ids = fc.oneof(
  fc.uuid(),
  fc.constant(null).map(() => randomUUID()),
  fc.string({ maxLength: 40 }),
  fc.uuid().map((u) => u.toUpperCase()),
);

it("PostgreSQL keys: one per (id, event), a decision's and its close's keys turn into each other, an RFC UUID is its own key", () => {
  fc.assert(
    fc.property(ids, ids, (a, b) => {
      const [da, ca, db, cb] = [pgKey(encodeId(a), DECISION), pgKey(encodeId(a), CLOSE), pgKey(encodeId(b), DECISION), pgKey(encodeId(b), CLOSE)];
      for (const k of [da, ca, db, cb]) assert.match(k, UUID_TEXT);
      // Given the id the key was made from (ingest's path), the same keys without reading the key's bytes.
      assert.equal(pgKey(encodeId(a), DECISION, a), da);
      assert.equal(pgKey(encodeId(a), CLOSE, a), ca);
      assert.notEqual(da, ca);
      assert.equal(closeKeyOf(da), ca);
      assert.equal(decisionKeyOf(ca), da);
      assert.equal(decisionKeyOf(da), da);
      assert.equal(closeKeyOf(ca), ca);
      // Distinct ids, distinct keys (also across events).
      assert.equal(da === db, a === b);
      assert.equal(ca === cb, a === b);
      assert.notEqual(da, cb);
      assert.notEqual(ca, db);
    }),
    { numRuns: 2000 },
  );
});

it('an RFC UUID id is given back by its key; any other id (text, another variant, upper case) is kept in the body', () => {
  const id = randomUUID();
  assert.equal(pgKey(encodeId(id), DECISION), id);
  assert.equal(keepsIdInBody(encodeId(id)), false);
  assert.equal(decisionKeyOf(pgKey(encodeId(id), CLOSE)), id);
  for (const other of ['not-a-uuid', id.toUpperCase(), '00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '0b0e8f1c-6a57-4c9e-cd1e-2f4a1b3c5d7e']) {
    assert.equal(keepsIdInBody(encodeId(other)), true, other);
    // A hashed key has variant bits 00 (decision) or 01 (close): never an RFC UUID's 10 or a close's 11.
    assert.equal(parseInt(pgKey(encodeId(other), DECISION)[19]!, 16) >> 2, 0, other);
    assert.equal(parseInt(pgKey(encodeId(other), CLOSE)[19]!, 16) >> 2, 1, other);
  }
});
