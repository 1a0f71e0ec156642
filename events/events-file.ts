import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** The staging buffer's size at start, and the size it goes back to after a burst made it larger. */
const STAGING_BYTES = 64 * 1024;
const STAGING_KEPT_BYTES = 1024 * 1024;

/**
 * The events file, the durable record of every decision: a pino destination that queues lines and writes
 * them with one write(2) at the end of the event-loop turn (setImmediate), or at once when flushSync() is
 * called. EventLog calls it for every decision, so a decision's line is in the file before anything acts on
 * it; close events, which decide nothing, ride the end-of-turn write. Before, every line was its own
 * synchronous write: one write per connection is now saved, and the close of one connection and the decision
 * of the next share a write (docs/benchmark.md).
 *
 * Queued lines are bytes in one reusable off-heap buffer (a line given as text is encoded straight into it; one
 * given as bytes, EventLog's, is copied), not strings kept until the end of the turn: under a DNS load a turn
 * answers up to 256 queries, and their lines, kept alive across the scavenges of that turn, were promoted to the
 * old generation and grew the heap (docs/benchmark.md, "DNS events without per-line garbage").
 *
 * A failed write (a full disk) keeps its bytes and tries again on the next write; they are not dropped.
 * Whatever is queued is written synchronously when the process exits.
 */
export class EventsFile {
  private fd: number | undefined;
  private staging = Buffer.allocUnsafeSlow(STAGING_BYTES);
  /** Bytes of `staging` queued: what a failed write left over, then the lines queued since. */
  private filled = 0;
  /** Lines queued since the last write that wrote everything. */
  private lines = 0;
  private scheduled = false;
  private lastError: string | undefined;

  constructor(private readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, 'a');
    if (openFiles.size === 0) process.once('exit', flushAllOnExit);
    openFiles.add(this);
  }

  /** Lines queued and not yet (completely) written. */
  get pending(): number {
    return this.lines;
  }

  /** pino's destination interface: one serialised line, encoded straight into the queue. */
  write(line: string): boolean {
    // At most 3 bytes per UTF-16 unit: room for that is made, then only the bytes written are counted.
    this.reserve(line.length * 3);
    this.filled += this.staging.write(line, this.filled, 'utf8');
    this.lineQueued();
    return true;
  }

  /** A line as the first `length` bytes of `bytes` (EventLog's encoding of it), copied: the caller may reuse them. */
  writeBytes(bytes: Buffer, length: number): void {
    this.reserve(length);
    bytes.copy(this.staging, this.filled, 0, length);
    this.filled += length;
    this.lineQueued();
  }

  private lineQueued(): void {
    this.lines++;
    if (!this.scheduled && this.fd !== undefined) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flushSync();
      });
    }
  }

  /** Write everything queued now (pino calls this on a final flush; the exit hook too). */
  flushSync(): void {
    if (this.fd === undefined || this.filled === 0) return;
    let written = 0;
    try {
      while (written < this.filled) written += writeSync(this.fd, this.staging, written, this.filled - written);
      this.filled = 0;
      this.lines = 0;
      this.lastError = undefined;
      // A burst (lines kept through a failed write) made the buffer large: give that memory back.
      if (this.staging.length > STAGING_KEPT_BYTES) this.staging = Buffer.allocUnsafeSlow(STAGING_BYTES);
    } catch (err) {
      // What was written is not written twice: the unwritten tail is kept, moved to the front.
      this.staging.copyWithin(0, written, this.filled);
      this.filled -= written;
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      if (code !== this.lastError) process.stderr.write(`egress-guard: cannot write the events file ${this.path} (${code}); keeping ${this.lines} line(s) in memory to retry\n`);
      this.lastError = code;
    }
  }

  close(): void {
    this.flushSync();
    openFiles.delete(this);
    if (openFiles.size === 0) process.off('exit', flushAllOnExit);
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** Room for `bytes` more after what is queued (the buffer doubles until it fits, keeping what it holds). */
  private reserve(bytes: number): void {
    const needed = this.filled + bytes;
    if (needed <= this.staging.length) return;
    let size = this.staging.length * 2;
    while (size < needed) size *= 2;
    const larger = Buffer.allocUnsafeSlow(size);
    this.staging.copy(larger, 0, 0, this.filled);
    this.staging = larger;
  }
}

/** One exit hook for all files (a process, a test above all, may open many). */
const openFiles = new Set<EventsFile>();
function flushAllOnExit(): void {
  for (const file of openFiles) file.flushSync();
}
