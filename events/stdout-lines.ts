import { writeSync } from 'node:fs';
import pino from 'pino';

/** Bytes gathered before a write is started; and how long a line may wait for the others. */
const MIN_WRITE_BYTES = 12 * 1024;
const FLUSH_EVERY_MS = 100;
const STAGING_BYTES = 64 * 1024;
/**
 * The most one write(2) may take. sonic-boom starts the next write when the previous one's callback runs, so at
 * most one write completes per event-loop turn; with its default (16 KiB) a turn that produces more (a DNS batch:
 * up to 256 events, ~90 KB of lines) left the rest queued, and the queue grew for as long as the load lasted: that,
 * not the consumer of the pipe, was most of the RSS growth under the DNS bench. A write now takes what is queued.
 */
const MAX_WRITE_BYTES = 4 * 1024 * 1024;

type Destination = ReturnType<typeof pino.destination>;

/**
 * egress-guard's stdout: lines gathered as bytes in one reusable buffer and handed to pino's asynchronous
 * destination (sonic-boom, which does the writes: partial writes, EAGAIN, EPIPE, the flush at exit) as one chunk
 * of 12 KiB or more, or every 100 ms, whichever comes first (one write per line was 15% of a tunnel's busy CPU).
 *
 * Why not the destination alone: in its text mode each line appended re-flattened the whole pending string to
 * measure it (Buffer.byteLength of a growing concatenation), about 8 KB of garbage per line under a DNS load, and
 * in its buffer mode it would keep a Buffer object per line until written. Here a line costs a copy into
 * `staging`, and a write one Buffer (docs/benchmark.md, "DNS events without per-line garbage").
 */
export class StdoutLines {
  private staging = Buffer.allocUnsafeSlow(STAGING_BYTES);
  private filled = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly destination: Destination;

  constructor(private readonly fd = 1) {
    this.destination = pino.destination({ dest: fd, sync: false, contentMode: 'buffer', maxWrite: MAX_WRITE_BYTES });
    // pino's own exit hook writes what the destination holds; the lines staged here are handed over and written
    // by this one (a weak reference: an EventLog dropped, in tests, is not kept alive by the hook).
    if (openStdouts.size === 0) process.once('exit', flushAllOnExit);
    openStdouts.add(new WeakRef(this));
  }

  /** pino's stream interface (its operational lines come as text). */
  write(line: string): boolean {
    const bytes = Buffer.from(line);
    this.writeBytes(bytes, bytes.length);
    return true;
  }

  /** The first `length` bytes of `bytes`, copied (the caller may reuse them). */
  writeBytes(bytes: Buffer, length: number): void {
    if (this.filled + length > this.staging.length) this.grow(this.filled + length);
    // copy(), not set(subarray()): no view object per line.
    bytes.copy(this.staging, this.filled, 0, length);
    this.filled += length;
    if (this.filled >= MIN_WRITE_BYTES) this.handOver();
    // Not unref'd: staged lines keep the process alive until they are handed over, as the destination's pending
    // writes do (a sidecar that stops lets its loop run dry; its last lines must still be written).
    else this.timer ??= setTimeout(() => this.handOver(), FLUSH_EVERY_MS);
  }

  /** Start writing what is staged now (it is otherwise written at 12 KiB or after 100 ms). */
  flush(): void {
    this.handOver();
    try {
      this.destination.flush();
    } catch {
      // stdout already closed (EPIPE): nothing to flush it to.
    }
  }

  /** Write everything, staged and queued, synchronously (at exit). */
  flushSync(): void {
    if (this.filled > 0 && (this.destination as { destroyed?: boolean }).destroyed) {
      // pino ended the destination already (its beforeExit hook, when the loop ran dry): it wrote what it held,
      // and what is staged here follows it, written directly.
      try {
        for (let written = 0; written < this.filled;) written += writeSync(this.fd, this.staging, written, this.filled - written);
      } catch {
        // stdout closed or full at exit: nothing more can be done.
      }
      this.filled = 0;
      return;
    }
    this.handOver();
    try {
      this.destination.flushSync();
    } catch {
      // Closed, or not open yet: nothing more can be done at exit.
    }
  }

  /** The staged bytes, as one Buffer of their own, to the destination (which writes it when the previous write is done). */
  private handOver(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.filled === 0) return;
    const chunk = Buffer.allocUnsafeSlow(this.filled);
    this.staging.copy(chunk, 0, 0, this.filled);
    this.filled = 0;
    if (this.staging.length > STAGING_BYTES) this.staging = Buffer.allocUnsafeSlow(STAGING_BYTES);
    try {
      // `write` is looked up each time: on EPIPE pino replaces it with a no-op. In buffer mode it takes a Buffer.
      this.destination.write(chunk as unknown as string);
    } catch {
      // Destroyed (stdout closed): the log a human reads is gone; the events file is the record.
    }
  }

  private grow(needed: number): void {
    let size = this.staging.length * 2;
    while (size < needed) size *= 2;
    const larger = Buffer.allocUnsafeSlow(size);
    this.staging.copy(larger, 0, 0, this.filled);
    this.staging = larger;
  }
}

/** One exit hook for all (tests make many EventLogs). */
const openStdouts = new Set<WeakRef<StdoutLines>>();
function flushAllOnExit(): void {
  for (const ref of openStdouts) ref.deref()?.flushSync();
}
