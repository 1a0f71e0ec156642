import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * The events file, the durable record of every decision: a pino destination that queues lines and writes
 * them with one write(2) at the end of the event-loop turn (setImmediate), or at once when flushSync() is
 * called. EventLog calls it for every decision, so a decision's line is in the file before anything acts on
 * it; close events, which decide nothing, ride the end-of-turn write. Before, every line was its own
 * synchronous write: one write per connection is now saved, and the close of one connection and the decision
 * of the next share a write (docs/benchmark.md).
 *
 * A failed write (a full disk) keeps its lines and tries again on the next write; they are not dropped.
 * Whatever is queued is written synchronously when the process exits.
 */
export class EventsFile {
  private fd: number | undefined;
  private queued: string[] = [];
  private scheduled = false;
  /** Bytes a failed write left over, written first next time. */
  private unwritten: Buffer | undefined;
  private lastError: string | undefined;

  constructor(private readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, 'a');
    if (openFiles.size === 0) process.once('exit', flushAllOnExit);
    openFiles.add(this);
  }

  /** Lines queued and not yet written. */
  get pending(): number {
    return this.queued.length + (this.unwritten ? 1 : 0);
  }

  /** pino's destination interface: one serialised line. */
  write(line: string): boolean {
    this.queued.push(line);
    if (!this.scheduled && this.fd !== undefined) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flushSync();
      });
    }
    return true;
  }

  /** Write everything queued now (pino calls this on a final flush; the exit hook too). */
  flushSync(): void {
    if (this.fd === undefined || (this.queued.length === 0 && !this.unwritten)) return;
    const lines = this.queued.length;
    let bytes = Buffer.from(this.queued.join(''));
    if (this.unwritten) bytes = Buffer.concat([this.unwritten, bytes]);
    this.queued = [];
    try {
      while (bytes.length > 0) bytes = bytes.subarray(writeSync(this.fd, bytes));
      this.unwritten = undefined;
      this.lastError = undefined;
    } catch (err) {
      // What was written is not written twice: the unwritten tail is kept as bytes.
      this.unwritten = bytes;
      const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      if (code !== this.lastError) process.stderr.write(`egress-guard: cannot write the events file ${this.path} (${code}); keeping ${lines} line(s) in memory to retry\n`);
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
}

/** One exit hook for all files (a process, a test above all, may open many). */
const openFiles = new Set<EventsFile>();
function flushAllOnExit(): void {
  for (const file of openFiles) file.flushSync();
}
