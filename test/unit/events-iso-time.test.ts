import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { isoTime } from '../../events/iso-time.js';

/** Date's range: ±8.64e15 ms. */
const DATE_LIMIT = 8.64e15;

describe('isoTime (an event time with its second made once)', () => {
  it('is toISOString in every millisecond of a second, across seconds, minutes, days and years, forwards and back', () => {
    const starts = [0, Date.UTC(2026, 10, 30, 14, 59, 59), Date.UTC(2026, 11, 31, 23, 59, 59), Date.UTC(1969, 11, 31, 23, 59, 58), Date.UTC(9999, 11, 31, 23, 59, 59)];
    for (const start of starts) {
      const times: number[] = [];
      for (let ms = start - 1500; ms <= start + 2500; ms++) times.push(ms);
      // Forwards (the events' order), backwards (a clock set back), and in an order that comes back to a second left.
      for (const order of [times, [...times].reverse(), times.map((_, i) => times[(i * 997) % times.length]!)])
        for (const ms of order) assert.equal(isoTime(ms), new Date(ms).toISOString(), `${ms}`);
    }
  });

  it('is toISOString for any time Date can hold, whole or not, in any order', () => {
    const anyTime = fc.oneof(
      fc.integer({ min: -DATE_LIMIT, max: DATE_LIMIT }),
      fc.integer({ min: 0, max: 4_102_444_800_000 }),
      fc.double({ min: -DATE_LIMIT, max: DATE_LIMIT, noNaN: true }),
    );
    fc.assert(
      fc.property(fc.array(anyTime, { minLength: 1, maxLength: 20 }), (times) => {
        for (const ms of times) {
          assert.equal(isoTime(ms), new Date(ms).toISOString(), `${ms}`);
          // The same second again, one millisecond on or back.
          if (Number.isInteger(ms) && Math.abs(ms) < DATE_LIMIT)
            assert.equal(isoTime(ms + (ms % 1000 === 999 ? -1 : 1)), new Date(ms + (ms % 1000 === 999 ? -1 : 1)).toISOString());
        }
      }),
      { numRuns: 2000, seed: 14 },
    );
  });
});
