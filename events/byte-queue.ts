/**
 * Bytes queued in one reusable off-heap buffer, doubled when what is appended does not fit (the events file's and
 * stdout's queue of lines: no string or Buffer object per line outlives its append; docs/benchmark.md, "DNS events
 * without per-line garbage").
 */
export class ByteQueue {
  /** The queued bytes are the first `length` of it (a view for a write; valid until the queue changes). */
  buffer: Buffer;
  length = 0;

  constructor(private readonly initialBytes: number) {
    this.buffer = Buffer.allocUnsafeSlow(initialBytes);
  }

  /** `text` as UTF-8, encoded straight into the queue. */
  appendText(text: string): void {
    // At most 3 bytes per UTF-16 unit: room for that is made, then only the bytes written are counted.
    this.reserve(text.length * 3);
    this.length += this.buffer.write(text, this.length, 'utf8');
  }

  /** Drop the first `bytes` (written); what follows moves to the front. */
  consume(bytes: number): void {
    this.buffer.copyWithin(0, bytes, this.length);
    this.length = Math.max(0, this.length - bytes);
  }

  /** Empty the queue; a buffer grown past `keepBytes` is given back for one of the first size. */
  clear(keepBytes = this.initialBytes): void {
    this.length = 0;
    if (this.buffer.length > keepBytes) this.buffer = Buffer.allocUnsafeSlow(this.initialBytes);
  }

  /** Room for `bytes` more after what is queued (the buffer doubles until it fits, keeping what it holds). */
  private reserve(bytes: number): void {
    const needed = this.length + bytes;
    if (needed <= this.buffer.length) return;
    let size = this.buffer.length * 2;
    while (size < needed) size *= 2;
    const larger = Buffer.allocUnsafeSlow(size);
    this.buffer.copy(larger, 0, 0, this.length);
    this.buffer = larger;
  }
}
