/**
 * netlog/nflog-sequence.ts: reports the kernel dropped, from the gaps in the reports' sequence numbers (u32, wrapping)
 * and the socket's overflows (ENOBUFS, which count 1 until a gap measures them). Resyncs (a number going backwards
 * or repeating, a report without one) fall back to 1 per overflow and never yield a huge count. The property test
 * plays the kernel's side as net/netfilter/nfnetlink_log.c and af_netlink do it: every report built takes the next
 * number; one that does not fit the socket's queue is dropped and sets the socket's error, which the next recv
 * returns before what is still queued.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { LostReports, lostInRead } from '../../netlog/nflog-sequence.js';

const U32 = 2 ** 32;

test('consecutive numbers lose nothing; a gap is the number of reports dropped', () => {
  const lost = new LostReports(0);
  assert.equal(lost.delivered(0), 0);
  assert.equal(lost.delivered(1), 0);
  assert.equal(lost.delivered(5), 3, 'reports 2, 3, 4 were dropped');
  assert.equal(lost.delivered(6), 0);
  assert.equal(lost.resyncs, 0);
});

test('the base known at start (0: the reader made the instance) counts what was dropped before the first report', () => {
  assert.equal(new LostReports(0).delivered(7), 7);
  // Without a known base the first report sets it.
  const unknown = new LostReports();
  assert.equal(unknown.delivered(7), 0);
  assert.equal(unknown.delivered(9), 1);
  assert.equal(unknown.resyncs, 0);
});

test('the u32 counter wraps: a gap across 2^32 is counted as the few reports it is', () => {
  const lost = new LostReports(U32 - 2);
  assert.equal(lost.delivered(U32 - 2), 0);
  assert.equal(lost.delivered(U32 - 1), 0);
  assert.equal(lost.delivered(0), 0, '0 follows 2^32-1');
  const across = new LostReports(U32 - 3);
  assert.equal(across.delivered(2), 5, 'reports 2^32-3 .. 1 dropped');
  assert.equal(across.delivered(3), 0);
});

test('a number going backwards or repeating is a resync, not billions lost; the next numbers count from it', () => {
  const lost = new LostReports(0);
  assert.equal(lost.delivered(100), 100);
  assert.equal(lost.delivered(100), 0, 'a repeat');
  assert.equal(lost.resyncs, 1);
  assert.equal(lost.delivered(50), 0, 'backwards');
  assert.equal(lost.resyncs, 2);
  assert.equal(lost.delivered(53), 2, 'counted from 50 on');
  // A jump of exactly 2^31 past the number expected (54) is taken as backwards too (serial arithmetic cannot order it).
  assert.equal(lost.delivered(54 + 2 ** 31), 0);
  assert.equal(lost.resyncs, 3);
});

test('a report without a number is a resync: the overflow before it stays 1, the next number sets the base', () => {
  const lost = new LostReports(0);
  assert.equal(lost.delivered(0), 0);
  assert.equal(lost.overflowed(), 1);
  assert.equal(lost.delivered(undefined), 0);
  assert.equal(lost.resyncs, 1);
  assert.equal(lost.delivered(40), 0, 'the base again: what was dropped before it is unknown, the overflow counted 1');
  assert.equal(lost.delivered(42), 1);
  for (const odd of [-1, 1.5, U32, Number.NaN, Infinity]) assert.equal(lost.delivered(odd), 0, String(odd));
  assert.equal(lost.delivered(10), 0, 'after the odd values, a valid number sets the base');
  assert.equal(lost.delivered(11), 0);
});

test('an overflow counts 1 at once; the gap that measures it adds only the rest', () => {
  const lost = new LostReports(0);
  assert.equal(lost.delivered(0), 0);
  assert.equal(lost.overflowed(), 1);
  assert.equal(lost.delivered(1), 0, 'a report queued before the drop: no gap yet');
  assert.equal(lost.delivered(1001), 998, '999 dropped, 1 of them counted already');
  // Two overflows before one gap of 1 (the second overflow's drop comes later): the second is matched by the next gap.
  assert.equal(lost.overflowed(), 1);
  assert.equal(lost.overflowed(), 1);
  assert.equal(lost.delivered(1003), 0);
  assert.equal(lost.delivered(1013), 8);
});

test('lostInRead places each overflow before the packet it came before, whatever the order of the entries', () => {
  // The overflow came first, then the reports still queued, then the one after the drop.
  assert.equal(lostInRead(new LostReports(0), [0, 1, 2, 10], [0]), 7);
  // Taken as after the gap it would be counted on top of it.
  assert.equal(lostInRead(new LostReports(0), [0, 1, 2, 10], [4]), 8, 'an overflow after every packet is 1 more, as it should be');
  assert.equal(lostInRead(new LostReports(0), [0, 5, 6, 20], [3, 1]), 4 + 13);
  // Entries that are not indexes still count, at the end.
  assert.equal(lostInRead(new LostReports(0), [0], [-1, 0.5, Number.NaN]), 3);
  assert.equal(lostInRead(new LostReports(0), [], [0, 0]), 2);
});

interface Step {
  /** The kernel builds this many reports before the reader's next recv. */
  built: number;
  /** Recvs the reader makes before the kernel builds more. */
  reads: number;
}

/** The kernel and the reader's socket, as nfnetlink_log and af_netlink behave; returns [dropped, counted]. */
function simulate(firstSequence: number, capacity: number, steps: Step[], readBatch: number): [number, number] {
  const lost = new LostReports(firstSequence);
  const queue: number[] = [];
  let sequence = firstSequence;
  let socketError = false;
  let dropped = 0;
  let counted = 0;
  let overflowsSeen = 0;
  const build = () => {
    if (queue.length < capacity) queue.push(sequence);
    else {
      dropped++;
      socketError = true;
    }
    sequence = (sequence + 1) % U32;
  };
  /** One read of the addon: recvs until the queue is empty or readBatch reports were taken. */
  const read = () => {
    const sequences: number[] = [];
    const overflowsBefore: number[] = [];
    while (sequences.length < readBatch) {
      if (socketError) {
        socketError = false;
        overflowsBefore.push(sequences.length);
        overflowsSeen++;
        continue;
      }
      const next = queue.shift();
      if (next === undefined) break;
      sequences.push(next);
    }
    counted += lostInRead(lost, sequences, overflowsBefore);
  };
  for (const step of steps) {
    for (let i = 0; i < step.built; i++) build();
    for (let i = 0; i < step.reads; i++) read();
    // Never more than was dropped, and never less than the overflows the reader has been told of.
    assert.ok(counted <= dropped, `counted ${counted} of ${dropped} dropped`);
    assert.ok(counted >= overflowsSeen, `counted ${counted} after ${overflowsSeen} overflows`);
  }
  // A report after everything (a later flow): it measures the last gap.
  while (queue.length > 0 || socketError) read();
  build();
  read();
  return [dropped, counted];
}

test('property: with a report after the last drop, the count is exactly the reports dropped, across the u32 wrap', () => {
  fc.assert(
    fc.property(
      fc.oneof(fc.constant(0), fc.integer({ min: U32 - 500, max: U32 - 1 }), fc.integer({ min: 0, max: U32 - 1 })),
      fc.integer({ min: 1, max: 20 }),
      fc.array(fc.record({ built: fc.integer({ min: 0, max: 60 }), reads: fc.integer({ min: 0, max: 3 }) }), { maxLength: 40 }),
      fc.integer({ min: 1, max: 8 }),
      (first, capacity, steps, readBatch) => {
        const [dropped, counted] = simulate(first, capacity, steps, readBatch);
        assert.equal(counted, dropped);
      },
    ),
    { numRuns: 500 },
  );
});
