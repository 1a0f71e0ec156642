import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { ByteQueue } from './byte-queue.js';

/** The staging buffer's size at start, and the size it goes back to after a burst made it larger. */
const STAGING_BYTES = 64 * 1024;
const STAGING_KEPT_BYTES = 1024 * 1024;

/**
 * The events file, the durable record of every decision: a pino destination that queues lines and writes
 * them with one write(2) at the end of the event-loop turn (setImmediate), or at once when flushSync() is
 * called. A decision's line is in the file before anything acts on it: the proxy's decisions ride the end-of-turn
 * write and their actions wait for it (written(): one write for all the decisions of a turn, "group commit");
 * a decision emitted with `durable: 'now'` is written at once (flushSync). Close events, which decide nothing,
 * ride the end-of-turn write. Before, every line was its own synchronous write (docs/benchmark.md, "Issue 14,
 * ninth round: decisions written once per turn").
 *
 * Queued lines are bytes in one reusable off-heap buffer (each line is encoded straight into it), not strings kept until the end of the turn: under a DNS load a turn
 * answers up to 256 queries, and their lines, kept alive across the scavenges of that turn, were promoted to the
 * old generation and grew the heap (docs/benchmark.md, "DNS events without per-line garbage").
 *
 * A failed write (a full disk) keeps its bytes and tries again on the next write; they are not dropped.
 * Whatever is queued is written synchronously when the process exits.
 */
export class EventsFile {
  private fd: number | undefined;
  /** What a failed write left over, then the lines queued since. */
  private readonly queue = new ByteQueue(STAGING_BYTES);
  /** Lines queued since the last write that wrote everything. */
  private lines = 0;
  private scheduled = false;
  private lastError: string | undefined;
  /**
   * Where the lines queued with `shownElsewhere: false` are, as start and end byte offsets into the queue: lines the
   * caller showed nowhere else (stdout-events refused leaves allowed events out of stdout). Emptied by a write that
   * writes everything; handed to onUnwritten by the write that fails, so that such a line is not kept in memory only.
   */
  private unshown: number[] = [];
  /**
   * Called when a write fails with the lines queued with `shownElsewhere: false` that are not (completely) on disk,
   * as text, once each; `atExit` when it is the exit hook's write (nothing is written asynchronously any more).
   */
  onUnwritten: ((lines: string, atExit: boolean) => void) | undefined;
  /** Settled right after the next end-of-turn write (see written()); made when first asked for in a turn. */
  private turnWritten: Promise<void> | undefined;
  private settleTurnWritten: (() => void) | undefined;

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

  /** The last write failed (a full disk): what is queued is kept to retry, and nothing is on disk meanwhile. */
  get failing(): boolean {
    return this.lastError !== undefined;
  }

  /**
   * pino's destination interface, and EventLog's: one serialised line, encoded straight into the queue.
   * `shownElsewhere: false` (EventLog, a line it left out of stdout): should a write of it fail, it goes to onUnwritten.
   */
  write(line: string, shownElsewhere = true): boolean {
    const start = this.queue.length;
    this.queue.appendText(line);
    if (!shownElsewhere && this.onUnwritten) this.unshown.push(start, this.queue.length);
    this.lineQueued();
    return true;
  }

  /**
   * Settled right after the end-of-turn write that writes every line queued before this call (group commit): the
   * decisions of one turn share one write(2), and each caller acts on its decision in the continuation, which runs
   * in the same check phase right after that write (promise callbacks run between two setImmediate callbacks).
   * A write that fails settles it too: the lines stay queued to retry, as flushSync does, and the caller goes on
   * (see flushSync). Settled at once when the file is closed.
   */
  written(): Promise<void> {
    if (this.fd === undefined) return SETTLED;
    if (this.turnWritten === undefined) {
      this.turnWritten = new Promise((settle) => (this.settleTurnWritten = settle));
      this.scheduleWrite();
    }
    return this.turnWritten;
  }

  private lineQueued(): void {
    this.lines++;
    this.scheduleWrite();
  }

  private scheduleWrite(): void {
    if (!this.scheduled && this.fd !== undefined) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flushSync();
        this.settleTurn();
      });
    }
  }

  private settleTurn(): void {
    const settle = this.settleTurnWritten;
    this.turnWritten = this.settleTurnWritten = undefined;
    settle?.();
  }

  /** Write everything queued now (pino calls this on a final flush; the exit hook too). */
  flushSync(atExit = false): void {
    const queue = this.queue;
    if (this.fd === undefined || queue.length === 0) return;
    let written = 0;
    try {
      while (written < queue.length) written += writeSync(this.fd, queue.buffer, written, queue.length - written);
      this.lines = 0;
      this.lastError = undefined;
      this.unshown.length = 0;
      // A burst (lines kept through a failed write) made the buffer large: give that memory back.
      queue.clear(STAGING_KEPT_BYTES);
    } catch (err) {
      const unwritten = this.unwrittenUnshown(written);
      // What was written is not written twice: the unwritten tail is kept, moved to the front.
      queue.consume(written);
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      if (code !== this.lastError) process.stderr.write(`egress-guard: cannot write the events file ${this.path} (${code}); keeping ${this.lines} line(s) in memory to retry\n`);
      this.lastError = code;
      if (unwritten) this.onUnwritten?.(unwritten, atExit);
    }
  }

  /** The lines queued with `shownElsewhere: false` that the first `written` bytes do not hold whole; forgotten here. */
  private unwrittenUnshown(written: number): string | undefined {
    const ranges = this.unshown;
    if (ranges.length === 0) return undefined;
    let text = '';
    for (let i = 0; i < ranges.length; i += 2) if (ranges[i + 1]! > written) text += this.queue.buffer.toString('utf8', ranges[i]!, ranges[i + 1]!);
    this.unshown = [];
    return text || undefined;
  }

  close(): void {
    this.flushSync();
    this.settleTurn();
    openFiles.delete(this);
    if (openFiles.size === 0) process.off('exit', flushAllOnExit);
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

const SETTLED: Promise<void> = Promise.resolve();

/** One exit hook for all files (a process, a test above all, may open many). */
const openFiles = new Set<EventsFile>();
function flushAllOnExit(): void {
  for (const file of openFiles) file.flushSync(true);
}
