import { execFileSync } from 'node:child_process';
import { closeSync, constants, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from './temp-dir.js';

const READ_BUFFER = Buffer.alloc(1024 * 1024);

/**
 * An events file that is a FIFO this test process reads, and can stop reading: stall() fills the pipe, so the
 * proxy's next write of the events file blocks (the whole proxy with it: the write is synchronous) until release().
 * A decision's line (< PIPE_BUF, written whole by one write(2)) is then in the pipe before anything the proxy does
 * after that write. lines() at the moment a byte the decision allowed (or its refusal) arrives tells whether the
 * line was written before it: in a stalled pipe, a line written after it is not there yet.
 */
export class StalledEventsFile {
  readonly path: string;
  private readonly readFd: number;
  private readonly writeFd: number;
  private text = '';
  private stalled = false;
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.path = join(tempDir('eg-events-fifo-'), 'events.fifo');
    execFileSync('mkfifo', [this.path]);
    // The reader first (a non-blocking open of a FIFO's read end needs no writer); then the proxy's open for writing
    // does not block, and the pipe never reads as ended while this writer is open.
    this.readFd = openSync(this.path, constants.O_RDONLY | constants.O_NONBLOCK);
    this.writeFd = openSync(this.path, constants.O_WRONLY | constants.O_NONBLOCK);
    this.timer = setInterval(() => {
      if (!this.stalled) this.readOnce();
    }, 2);
  }

  /** Fill the pipe: the proxy's next write to its events file blocks until release(). */
  stall(): void {
    this.stalled = true;
    this.readOnce();
    for (const size of [4096, 1]) {
      const filler = Buffer.alloc(size, 0x20);
      for (;;) {
        try {
          writeSync(this.writeFd, filler);
        } catch {
          break; // EAGAIN: full
        }
      }
    }
  }

  /** Read the pipe again (after release(), this lets the proxy's blocked write through). */
  release(): void {
    this.stalled = false;
    this.readOnce();
  }

  /** Every line the proxy has written to the events file so far, read now (one read(2): what the pipe holds). */
  lines(): string[] {
    this.readOnce();
    return this.text.split('\n').map((line) => line.trim());
  }

  close(): void {
    clearInterval(this.timer);
    closeSync(this.readFd);
    closeSync(this.writeFd);
  }

  private readOnce(): void {
    try {
      const n = readSync(this.readFd, READ_BUFFER, 0, READ_BUFFER.length, null);
      this.text += READ_BUFFER.toString('utf8', 0, n);
    } catch {
      // EAGAIN: nothing in the pipe
    }
  }
}
