/**
 * How many NFLOG reports the kernel dropped, from the reports' sequence numbers (NFULA_SEQ, which the built-in
 * reader asks for: NFULNL_CFG_F_SEQ, see native/nflog.c for what the kernel guarantees). The kernel numbers every
 * report it builds, delivered or not, so the gap between two consecutive numbers is the exact number dropped between
 * them. An overflow of the socket's queue (ENOBUFS) says only that at least one was: it counts 1 at once, and the
 * gap that follows it replaces that 1 with the exact number (the overflow is reported before the reports still
 * queued, so the gap that holds its dropped reports is always seen after it).
 *
 * Where the numbers cannot be trusted, the count falls back to what ENOBUFS alone says, 1 per overflow (a resync):
 * - a report without a number (one the kernel built before the flag took effect);
 * - a number that goes backwards or repeats (in u32 serial arithmetic, RFC 1982: a distance of 2^31 or more), which
 *   the kernel never does; counting it as a forward gap would add billions.
 * After a resync the next numbered report sets the base again, and what was dropped just before it is unknown.
 */

const SEQUENCE_SPACE = 2 ** 32;
/** Distances from here up are a number going backwards (or repeating), not reports dropped. */
const BACKWARDS = 2 ** 31;

function isSequenceNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < SEQUENCE_SPACE;
}

export class LostReports {
  /** The number the next report should carry; undefined until a numbered report sets it (after a resync). */
  private expected: number | undefined;
  /** Overflows counted 1 each that no gap has accounted for yet. */
  private provisional = 0;
  /** Times the numbers could not be trusted (see the module comment). */
  resyncs = 0;

  /**
   * `firstExpected`: the number the first report will carry, when known (the reader creates the kernel's instance,
   * whose counter starts at 0), or undefined to let the first numbered report set the base.
   */
  constructor(firstExpected?: number) {
    this.expected = isSequenceNumber(firstExpected) ? firstExpected : undefined;
  }

  /** The socket's queue overflowed (ENOBUFS): reports newly counted lost (1, at least one was). */
  overflowed(): number {
    this.provisional++;
    return 1;
  }

  /** A report arrived with this number (undefined: it had none): reports newly counted lost before it. */
  delivered(sequence: number | undefined): number {
    if (!isSequenceNumber(sequence)) return this.resync(undefined);
    if (this.expected === undefined) return this.resync(sequence);
    const gap = (sequence - this.expected + SEQUENCE_SPACE) % SEQUENCE_SPACE;
    if (gap >= BACKWARDS) return this.resync(sequence);
    this.expected = (sequence + 1) % SEQUENCE_SPACE;
    // The overflows already counted were the first of these dropped reports.
    const alreadyCounted = Math.min(gap, this.provisional);
    this.provisional -= alreadyCounted;
    return gap - alreadyCounted;
  }

  /** The gap before `sequence` is unknown: the overflows already counted stay at 1 each. */
  private resync(sequence: number | undefined): number {
    if (this.expected !== undefined || sequence === undefined) this.resyncs++;
    this.expected = sequence === undefined ? undefined : (sequence + 1) % SEQUENCE_SPACE;
    this.provisional = 0;
    return 0;
  }
}

/**
 * Reports lost as one read of native/nflog.c tells it: its packets' numbers in order, and before which packet each
 * overflow came (`overflowsBefore`, an index into the packets; an entry that is not one counts at the end, never
 * thrown on).
 */
export function lostInRead(counter: LostReports, sequences: readonly (number | undefined)[], overflowsBefore: readonly number[]): number {
  const before = overflowsBefore.map((at) => (Number.isInteger(at) && at >= 0 ? at : sequences.length)).sort((a, b) => a - b);
  let lost = 0;
  let next = 0;
  for (let i = 0; i < sequences.length; i++) {
    for (; next < before.length && before[next]! <= i; next++) lost += counter.overflowed();
    lost += counter.delivered(sequences[i]);
  }
  for (; next < before.length; next++) lost += counter.overflowed();
  return lost;
}
