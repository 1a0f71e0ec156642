import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { bigintArray, byteaArray, int2Array, int4Array, int8Array, int8SumArray, uuidArray } from '../../collector/stores/pg-binary-array.js';
import { scratchDatabases } from '../helpers/postgres-scratch-databases.js';

/**
 * The binary arrays ingest sends (pg-binary-array.ts) are read by a real PostgreSQL as the same values the driver's
 * text literal of the same JavaScript array gives: both sent in one statement and compared as text by the server.
 */
describe('pg-binary-array against PostgreSQL', { timeout: 240_000 }, () => {
  const databases = scratchDatabases('binary_array');

  const nullable = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: null, freq: 4 });
  const sameAsText = async (client: pg.Client, type: string, binary: Buffer, values: unknown[]) => {
    const res = await client.query(`SELECT $1::${type}[]::text AS binary, $2::${type}[]::text AS text, cardinality($1::${type}[]) AS n`, [binary, values]);
    assert.equal(res.rows[0].binary, res.rows[0].text, `${type}[] of ${values.length}`);
    assert.equal(res.rows[0].n, values.length);
  };

  it('gives the values of the driver text literal for every element type ingest sends', async () => {
    const db = await databases.create();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const ints = (min: number, max: number) => fc.array(nullable(fc.integer({ min, max })), { maxLength: 40 });
      // Sums (aggregate deltas) anywhere in bigint's range: past 2^53 the integer a double holds.
      const sums = fc.oneof(
        fc.constantFrom(-(2 ** 63), 2 ** 63 - 1024, 2 ** 53 + 2, 2 ** 60, -(2 ** 60) - 4096),
        fc.double({ min: -(2 ** 63), max: 2 ** 63 - 1024, noNaN: true }).map(Math.trunc),
      );
      const safe = fc.oneof(fc.integer(), fc.constantFrom(0, -1, 2 ** 32, -(2 ** 32), 2 ** 32 - 1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER), fc.maxSafeInteger());
      await fc.assert(
        fc.asyncProperty(
          ints(-0x8000, 0x7fff),
          ints(-0x8000_0000, 0x7fff_ffff),
          fc.array(nullable(safe), { maxLength: 40 }),
          fc.array(nullable(fc.uint8Array({ maxLength: 300 })), { maxLength: 20 }),
          fc.array(fc.uuid(), { maxLength: 20 }),
          fc.array(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { maxLength: 20 }),
          fc.array(nullable(sums), { maxLength: 40 }),
          async (i2, i4, i8, bytes, uuids, bigs, i8sums) => {
            await sameAsText(client, 'int2', int2Array(i2), i2);
            // Past 2^53 String() gives the shortest digits, not the value: the reference is the double's exact integer.
            await sameAsText(
              client,
              'int8',
              int8SumArray(i8sums),
              i8sums.map((v) => (v === null ? null : BigInt(v).toString())),
            );
            await sameAsText(client, 'int4', int4Array(i4), i4);
            await sameAsText(client, 'int8', int8Array(i8), i8);
            const buffers = bytes.map((b) => (b === null ? null : Buffer.from(b)));
            await sameAsText(client, 'bytea', byteaArray(buffers), buffers);
            await sameAsText(client, 'uuid', uuidArray(uuids), uuids);
            await sameAsText(client, 'uuid', uuidArray(uuids.map((u) => u.toUpperCase())), uuids);
            await sameAsText(
              client,
              'int8',
              bigintArray(bigs),
              bigs.map((b) => b.toString()),
            );
          },
        ),
        { numRuns: 60 },
      );
    } finally {
      await client.end();
    }
  });

  it('refuses what the text literal would have failed on, instead of sending another value', () => {
    assert.throws(() => int2Array([0x8000]), RangeError);
    assert.throws(() => int4Array([2 ** 31]), RangeError);
    assert.throws(() => int8Array([1.5]), RangeError);
    assert.throws(() => int8Array([Number.NaN]), RangeError);
    assert.throws(() => int8Array([2 ** 53]), RangeError);
    assert.throws(() => int8SumArray([2 ** 63]), RangeError);
    assert.throws(() => int8SumArray([-(2 ** 63) - 2048]), RangeError);
    assert.throws(() => int8SumArray([1.5]), RangeError);
    assert.throws(() => uuidArray(['0b0e8f1c-6a57-4c9e-9d1e-2f4a1b3c5d7']), RangeError);
    assert.throws(() => uuidArray(['0b0e8f1c-6a57-4c9e-9d1e-2f4a1b3c5d7g']), RangeError);
    assert.throws(() => uuidArray(['0b0e8f1c06a57-4c9e-9d1e-2f4a1b3c5d7e']), RangeError);
  });
});
