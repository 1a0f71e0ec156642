import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readQuery, readQueryByParse } from '../../dns/wire.js';
import { queryBytes } from '../helpers/dns-fixture.js';

/**
 * readQuery reads the common query in one pass (readPlainQuery) and anything else through parseMessage
 * (readQueryByParse): both must read the same query, or refuse it for the same reason, from the same bytes.
 */

/** Label bytes: mostly what a name holds (either case), sometimes what no plain label may (a dot, a space, 0, 0xff). */
const labelByte = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom(...Buffer.from('abcxyzABCXYZ0189-_')) },
  { weight: 1, arbitrary: fc.constantFrom(0x2e, 0x20, 0x00, 0xff, 0x40, 0x5b, 0x60, 0x7b, 0x2f, 0x3a) },
);
/** A label as written: its length byte (64 and more are reserved label types), then that many bytes. */
const label = fc
  .oneof(
    { weight: 10, arbitrary: fc.array(labelByte, { minLength: 1, maxLength: 12 }) },
    { weight: 1, arbitrary: fc.integer({ min: 60, max: 66 }).map((n) => Array.from({ length: n }, () => 0x62)) },
  )
  .map((bytes) => [bytes.length, ...bytes]);
/** 3 labels of 63 bytes then one of 58 to 63: a name of 252 to 257 octets (255 at most are allowed). */
const longName = fc.integer({ min: 58, max: 63 }).map((last) => [...[63, 63, 63, last].flatMap((n) => [n, ...Array.from({ length: n }, () => 0x61)])]);
/** A name as written on the wire: labels, then the root, or a pointer or a reserved label type instead of the root. */
const wireName = fc
  .tuple(
    fc.oneof({ weight: 8, arbitrary: fc.array(label, { minLength: 0, maxLength: 5 }).map((labels) => labels.flat()) }, { weight: 1, arbitrary: longName }),
    fc.integer({ min: 0, max: 9 }),
    fc.integer({ min: 0, max: 255 }),
  )
  .map(([labels, ending, byte]) => {
    if (ending === 0) return [...labels, 0xc0, 12];
    if (ending === 1) return [...labels, 0x40 | (byte & 0x3f)];
    return [...labels, 0];
  });
/** What follows the question: nothing, an OPT record (root-owned or not, its length right or not), other records, trailing bytes. */
const tail = fc.oneof(
  fc.constant({ records: 0, bytes: [] as number[] }),
  fc.tuple(fc.integer({ min: 0, max: 4096 }), fc.uint8Array({ maxLength: 8 }), fc.integer({ min: -2, max: 2 })).map(([size, data, skew]) => ({
    records: 1,
    bytes: [0, 0, 41, size >> 8, size & 0xff, 0, 0, 0, 0, 0, Math.max(0, data.length + skew), ...data],
  })),
  fc.constant({ records: 1, bytes: [1, 0x61, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0] }),
  fc.constant({ records: 1, bytes: [0xc0, 12, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0] }),
  fc.constant({ records: 1, bytes: [0xc0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0] }),
  fc.constant({ records: 1, bytes: [0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4] }),
  fc.constant({ records: 2, bytes: [0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0, 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0] }),
  fc.uint8Array({ minLength: 1, maxLength: 6 }).map((extra) => ({ records: 0, bytes: [...extra] })),
  fc.uint8Array({ minLength: 1, maxLength: 3 }).map((extra) => ({ records: 1, bytes: [0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0, ...extra] })),
);
/** A query header that passes readQuery's checks (QUERY, one question, no answer/authority), then name, type, class, tail; sometimes cut short. */
const query = fc
  .tuple(
    fc.integer({ min: 0, max: 0xffff }),
    fc.integer({ min: 0, max: 0xffff }),
    wireName,
    fc.integer({ min: 0, max: 0xffff }),
    fc.constantFrom(1, 3, 255),
    tail,
    fc.option(fc.nat(), { nil: undefined }),
  )
  .map(([id, flagBits, name, type, klass, after, cut]) => {
    const header = Buffer.alloc(12);
    header.writeUInt16BE(id, 0);
    header.writeUInt16BE(flagBits & 0x07ff, 2); // QR 0, opcode 0: RD, CD and the rest as they come
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(after.records, 10);
    const bytes = Buffer.concat([header, Buffer.from(name), Buffer.from([type >> 8, type & 0xff, 0, klass]), Buffer.from(after.bytes)]);
    return cut === undefined ? bytes : bytes.subarray(0, 12 + (cut % (bytes.length - 11)));
  });

function both(bytes: Buffer): { fast: unknown; parsed: unknown } {
  const flags = bytes.readUInt16BE(2);
  return { fast: readQuery(bytes), parsed: readQueryByParse(bytes, bytes.readUInt16BE(0), (flags >> 8) & 1, (flags >> 4) & 1) };
}

test('readQuery reads the same query as parseMessage, or refuses it the same way', () => {
  fc.assert(
    fc.property(query, (bytes) => {
      const { fast, parsed } = both(bytes);
      assert.deepEqual(fast, parsed);
    }),
    { numRuns: 20_000 },
  );
});

test('readQuery: the common forms, as parseMessage reads them', () => {
  for (const bytes of [
    queryBytes(1, 'allowed.test'),
    queryBytes(2, 'Mixed-Case_1.Example.TEST', 28, true),
    queryBytes(3, `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`, 1, true),
    queryBytes(4, 'a.b', 65),
  ]) {
    const { fast, parsed } = both(bytes);
    assert.equal((fast as { ok: boolean }).ok, true);
    assert.deepEqual(fast, parsed);
  }
  const reading = readQuery(queryBytes(9, 'Mixed-Case_1.Example.TEST', 28, true));
  assert.ok(reading.ok);
  assert.equal(reading.query.question.name, 'mixed-case_1.example.test');
  assert.equal(reading.query.question.plain, true);
  assert.deepEqual(reading.query.edns, { udpSize: 1232 });
});
