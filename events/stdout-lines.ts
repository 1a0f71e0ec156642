import { writeSync } from 'node:fs';
import pino from 'pino';
import { ByteQueue } from './byte-queue.js';

/** Bytes gathered before a write is started; and how long a line may wait for the others. */
const MIN_WRITE_BYTES = 12 * 1024;
const FLUSH_EVERY_MS = 100;
const STAGING_BYTES = 64 * 1024;
/**
 * The size a grown staging buffer may keep after a hand-over. A batched DNS turn stages ~90 KB of lines while the
 * previous chunk is being written; given back at 64 KiB, the buffer grew again (a new one and a copy) every turn.
 */
const STAGING_KEPT_BYTES = 1024 * 1024;
/**
 * The most one write(2) may take. sonic-boom starts the next write when the previous one's callback runs, so at
 * most one write completes per event-loop turn; with its default (16 KiB) a turn that produces more (a DNS batch:
 * up to 256 events, ~90 KB of lines) left the rest queued, and the queue grew for as long as the load lasted: that,
 * not the consumer of the pipe, was most of the RSS growth under the DNS bench. A write now takes what is queued.
 */
const MAX_WRITE_BYTES = 4 * 1024 * 1024;
/**
 * The most event lines staged while stdout's reader does not keep up, where the events file has them (`write`'s
 * `droppable`): past it they are counted, not staged, and one line says how many once stdout takes writes again.
 * Unbounded, a reader slower than the events (a pipe whose reader is starved of CPU, a slow log driver) had the
 * staged bytes grow for as long as the load lasted: 215-384 MiB of RSS and a DNS p99 of 170-330 ms under the DNS
 * bench at 90,000 refused names a second (docs/benchmark.md, "stdout that cannot keep up"). At 8 MiB the DNS bench
 * still peaked at 96-101 MiB; at 4 MiB, 73-96.
 */
const MAX_DROPPABLE_STAGED_BYTES = 4 * 1024 * 1024;

type Destination = ReturnType<typeof pino.destination>;

/**
 * egress-guard's stdout: lines gathered as bytes in one reusable buffer and handed to pino's asynchronous
 * destination (sonic-boom, which does the writes: partial writes, EAGAIN, EPIPE, the flush at exit) as one chunk
 * of 12 KiB or more, or every 100 ms, whichever comes first (one write per line was 15% of a tunnel's busy CPU).
 *
 * Why not the destination alone: in its text mode each line appended re-flattened the whole pending string to
 * measure it (Buffer.byteLength of a growing concatenation), about 8 KB of garbage per line under a DNS load, and
 * in its buffer mode it would keep a Buffer object per line until written. Here a line is encoded straight into
 * the staged bytes (a ByteQueue), and a write one Buffer (docs/benchmark.md, "DNS events without per-line garbage").
 */
export class StdoutLines {
  private readonly staged = new ByteQueue(STAGING_BYTES);
  private timer: NodeJS.Timeout | undefined;
  private readonly destination: Destination;
  /**
   * A chunk handed over and not yet written. Only one is handed over at a time (the next one when the destination
   * drains): sonic-boom's flushSync (pino's exit hook calls it) retries any error but EAGAIN forever, so nothing may be
   * queued in it at exit; what is staged here is written at exit by flushSync below, which gives up on an error.
   */
  private inFlight = false;
  /** stdout failed (EPIPE, ENOSPC, EIO...): its lines are dropped from then on; the events file is the record. */
  private failed = false;
  /** Event lines left out since the last hand-over, stdout being MAX_DROPPABLE_STAGED_BYTES behind (`write`). */
  private dropped = 0;

  constructor(private readonly fd = 1) {
    this.destination = pino.destination({ dest: fd, sync: false, contentMode: 'buffer', maxWrite: MAX_WRITE_BYTES });
    this.destination.on('drain', () => {
      this.inFlight = false;
      // What waited for this write: 12 KiB or more, or lines whose timer went off meanwhile (it left no timer).
      if (this.staged.length >= MIN_WRITE_BYTES || (this.staged.length > 0 && this.timer === undefined)) this.handOver();
    });
    // pino's own listener handles EPIPE only and re-emits anything else, which with no listener was an uncaught
    // exception (a sidecar whose stdout is a file on a full disk crashed), and then a hang in its exit hook.
    this.destination.on('error', (err: NodeJS.ErrnoException) => this.fail(err));
    // pino's own exit hook writes what the destination holds; the lines staged here are written by this one (a weak reference: an EventLog dropped, in tests, is not kept alive by the hook).
    if (openStdouts.size === 0) process.once('exit', flushAllOnExit);
    openStdouts.add(new WeakRef(this));
  }

  /** pino's stream interface (its operational lines), and EventLog's (event lines): a line, encoded straight into the staged bytes. */
  write(line: string): boolean {
    if (this.failed) return true;
    this.staged.appendText(line);
    this.afterStaging();
    return true;
  }

  /**
   * An event line the events file has too: left out (counted) while stdout is MAX_DROPPABLE_STAGED_BYTES behind, else
   * as write(). False: left out (the file must then treat it as not shown on stdout). Operational lines, and event
   * lines stdout is the only copy of, go through write() and are never left out.
   */
  writeDroppable(line: string): boolean {
    if (this.failed || this.staged.length < MAX_DROPPABLE_STAGED_BYTES) return this.write(line);
    this.dropped++;
    return false;
  }

  /** Bytes were staged: hand them over at 12 KiB, or start the 100 ms timer. */
  private afterStaging(): void {
    if (this.staged.length >= MIN_WRITE_BYTES && !this.inFlight) this.handOver();
    // Not unref'd: staged lines keep the process alive until they are handed over, as the destination's pending
    // writes do (a sidecar that stops lets its loop run dry; its last lines must still be written).
    else this.timer ??= setTimeout(() => this.handOver(), FLUSH_EVERY_MS);
  }

  /** Start writing what is staged now (it is otherwise written at 12 KiB or after 100 ms). */
  flush(): void {
    this.handOver();
  }

  /**
   * Write what is staged synchronously (at exit). The destination holds at most the chunk being written (its own
   * exit hook has nothing to write but that); staged bytes are written here, given up on the first error but EAGAIN.
   */
  flushSync(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.staged.length > 0 && !this.failed) this.writeDirect();
    this.staged.clear();
  }

  private writeDirect(): void {
    let written = 0;
    let waits = 0;
    const staged = this.staged;
    while (written < staged.length) {
      try {
        written += writeSync(this.fd, staged.buffer, written, staged.length - written);
      } catch (err) {
        // A non-blocking pipe that is full: wait for its reader a little (2 s at most), as sonic-boom does.
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || ++waits > 200) return;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
      }
    }
  }

  /** stdout failed: stop writing to it (as pino does on EPIPE), and say so once unless the reader just went away. */
  private fail(err: NodeJS.ErrnoException): void {
    if (this.failed) return;
    this.failed = true;
    this.staged.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const noop = () => {};
    Object.assign(this.destination, { write: noop, flushSync: noop, flush: noop, end: noop, destroy: noop });
    if (err.code !== 'EPIPE')
      process.stderr.write(`egress-guard: cannot write stdout (${err.code ?? err.message}); its lines are no longer written there (the events file keeps the record)\n`);
  }

  /** The staged bytes, as one Buffer of their own, to the destination (which writes it when the previous write is done). */
  private handOver(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    // While a chunk is being written, the next waits for it (the 'drain' listener hands it over).
    if (this.staged.length === 0 || this.failed || this.inFlight) return;
    if ((this.destination as { destroyed?: boolean }).destroyed) {
      // pino ended the destination (its beforeExit hook, when the loop ran dry) and the process went on: write directly.
      this.writeDirect();
      this.staged.clear();
      return;
    }
    if (this.dropped > 0) {
      // Where the lines left out were: pino's line format, written with the lines staged after them.
      this.staged.appendText(
        `{"level":"warn","time":"${new Date().toISOString()}","dropped":${this.dropped},"msg":"event lines left out of stdout: its reader did not keep up; the events file has them"}\n`,
      );
      this.dropped = 0;
    }
    const chunk = Buffer.allocUnsafeSlow(this.staged.length);
    this.staged.buffer.copy(chunk, 0, 0, this.staged.length);
    this.staged.clear(STAGING_KEPT_BYTES);
    try {
      // `write` is looked up each time: on EPIPE pino replaces it with a no-op. In buffer mode it takes a Buffer.
      this.inFlight = true;
      this.destination.write(chunk as unknown as string);
    } catch {
      this.inFlight = false;
      // Destroyed (stdout closed): the log a human reads is gone; the events file is the record.
    }
  }
}

/** One exit hook for all (tests make many EventLogs). */
const openStdouts = new Set<WeakRef<StdoutLines>>();
function flushAllOnExit(): void {
  for (const ref of openStdouts) ref.deref()?.flushSync();
}
