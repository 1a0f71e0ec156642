/** Events waiting for delivery, oldest first. `take` peeks; nothing leaves the buffer until `commit`. */
export interface EventBuffer {
  /** Add one serialized event (no newline); false when the buffer is full and the event was dropped. */
  append(line: string): boolean;
  take(maxEvents: number, maxBytes: number): PendingBatch | null;
  /** Events waiting (not yet committed). */
  readonly pending: number;
  close(): void;
}

export interface PendingBatch {
  lines: string[];
  /** Remove these lines from the buffer (delivered, or rejected for good). */
  commit(): void;
}

/** A bounded in-memory FIFO of serialized events. */
export class MemoryBuffer implements EventBuffer {
  private lines: string[] = [];
  private head = 0;

  constructor(private readonly maxEvents: number) {}

  get pending(): number {
    return this.lines.length - this.head;
  }

  append(line: string): boolean {
    if (this.pending >= this.maxEvents) return false;
    this.lines.push(line);
    return true;
  }

  take(maxEvents: number, maxBytes: number): PendingBatch | null {
    if (this.pending === 0) return null;
    const start = this.head;
    let end = start;
    let bytes = 0;
    while (end < this.lines.length && end - start < maxEvents) {
      const size = Buffer.byteLength(this.lines[end]!) + 1;
      if (end > start && bytes + size > maxBytes) break;
      bytes += size;
      end++;
    }
    return {
      lines: this.lines.slice(start, end),
      commit: () => {
        // Batches commit in the order they were taken, one at a time, so the head is `start`.
        this.head = Math.max(this.head, end);
        if (this.head > 1024 && this.head * 2 > this.lines.length) {
          this.lines = this.lines.slice(this.head);
          this.head = 0;
        }
      },
    };
  }

  close(): void {}
}
