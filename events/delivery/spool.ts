import { closeSync, fstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, unlinkSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { EventBuffer, PendingBatch } from './event-buffer.js';

const SEGMENT = /^segment-(\d{12})\.ndjson$/;

interface Segment {
  seq: number;
  path: string;
  ackPath: string;
  /** Bytes of the file already delivered. */
  acked: number;
  size: number;
  fd?: number;
}

export interface SpoolOptions {
  /** Spool size beyond which new events are dropped. */
  maxBytes: number;
  /** Start a new segment file once the current one is this large. */
  segmentBytes?: number;
}

/**
 * An on-disk FIFO of NDJSON events: a directory of append-only segment files, each with an `.ack`
 * file holding the byte offset delivered so far (written by rename, so it is either old or new after
 * a crash). A segment is deleted once fully delivered. Events are appended before any delivery
 * attempt, so a collector outage or a proxy restart loses nothing; a crash between delivery and ack
 * re-sends one batch, which the collector de-duplicates by event id. One process per directory.
 */
export class SpoolBuffer implements EventBuffer {
  private readonly segments: Segment[] = [];
  private active!: Segment;
  private count = 0;
  private bytes = 0;
  /** Events found unreadable (a line cut short by a crash); reported by the client as dropped. */
  discarded = 0;

  constructor(
    private readonly dir: string,
    private readonly options: SpoolOptions,
  ) {
    mkdirSync(dir, { recursive: true });
    const names = readdirSync(dir);
    const seqs = names
      .flatMap((n) => {
        const m = SEGMENT.exec(n);
        return m ? [Number(m[1])] : [];
      })
      .sort((a, b) => a - b);
    for (const seq of seqs) {
      const segment = this.segment(seq);
      segment.size = statSync(segment.path).size;
      segment.acked = readAck(segment.ackPath, segment.size);
      this.count += countLines(segment.path, segment.acked);
      this.bytes += segment.size;
      this.segments.push(segment);
    }
    for (const name of names) {
      // Ack files whose segment is gone (crash between the two unlinks).
      const m = /^segment-(\d{12})\.ack$/.exec(name);
      if (m && !seqs.includes(Number(m[1]))) unlinkQuietly(join(dir, name));
    }
    this.openActive((seqs.at(-1) ?? 0) + 1);
  }

  get pending(): number {
    return this.count;
  }

  /** Bytes on disk in segment files. */
  get diskBytes(): number {
    return this.bytes;
  }

  append(line: string): boolean {
    const data = Buffer.from(`${line}\n`);
    if (this.bytes + data.length > this.options.maxBytes) return false;
    writeSync(this.active.fd!, data);
    this.active.size += data.length;
    this.bytes += data.length;
    this.count++;
    if (this.active.size >= (this.options.segmentBytes ?? 4 * 1024 * 1024)) {
      closeSync(this.active.fd!);
      delete this.active.fd;
      this.openActive(this.active.seq + 1);
    }
    return true;
  }

  take(maxEvents: number, maxBytes: number): PendingBatch | null {
    for (;;) {
      const segment = this.segments[0];
      if (!segment) return null;
      const remaining = segment.size - segment.acked;
      if (remaining === 0) {
        if (segment === this.active) return null;
        this.remove(segment);
        continue;
      }
      const { lines, consumed } = readLines(segment, Math.min(remaining, maxBytes), maxEvents);
      if (lines.length === 0) {
        if (segment === this.active) return null;
        // A last line without newline in a closed segment: written by a crashed process, unusable.
        this.discarded++;
        this.remove(segment);
        continue;
      }
      return {
        lines,
        commit: () => {
          segment.acked += consumed;
          this.count -= lines.length;
          if (segment.acked >= segment.size) {
            this.remove(segment);
            if (segment === this.active) this.openActive(segment.seq + 1);
          } else {
            writeAck(segment.ackPath, segment.acked);
          }
        },
      };
    }
  }

  close(): void {
    for (const segment of this.segments) {
      if (segment.fd !== undefined) closeSync(segment.fd);
      delete segment.fd;
    }
  }

  private segment(seq: number): Segment {
    const base = `segment-${String(seq).padStart(12, '0')}`;
    return { seq, path: join(this.dir, `${base}.ndjson`), ackPath: join(this.dir, `${base}.ack`), acked: 0, size: 0 };
  }

  private openActive(seq: number): void {
    const segment = this.segment(seq);
    segment.fd = openSync(segment.path, 'a');
    segment.size = fstatSync(segment.fd).size;
    this.segments.push(segment);
    this.active = segment;
  }

  private remove(segment: Segment): void {
    if (segment.fd !== undefined) closeSync(segment.fd);
    delete segment.fd;
    unlinkQuietly(segment.path);
    unlinkQuietly(segment.ackPath);
    this.bytes -= segment.size;
    this.segments.splice(this.segments.indexOf(segment), 1);
  }
}

function readAck(path: string, size: number): number {
  try {
    const value = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(value) && value >= 0 && value <= size ? value : 0;
  } catch {
    return 0;
  }
}

function writeAck(path: string, offset: number): void {
  writeFileSync(`${path}.tmp`, String(offset));
  renameSync(`${path}.tmp`, path);
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}

function countLines(path: string, from: number): number {
  const data = readFileSync(path).subarray(from);
  let n = 0;
  for (let i = data.indexOf(10); i !== -1; i = data.indexOf(10, i + 1)) n++;
  return n;
}

/** Whole lines from the segment's ack offset: at most maxEvents, about `want` bytes (at least one line). */
function readLines(segment: Segment, want: number, maxEvents: number): { lines: string[]; consumed: number } {
  const remaining = segment.size - segment.acked;
  let size = Math.max(1, want);
  const fd = openSync(segment.path, 'r');
  try {
    for (;;) {
      const buf = Buffer.alloc(size);
      const read = readSync(fd, buf, 0, size, segment.acked);
      const data = buf.subarray(0, read);
      const lines: string[] = [];
      let start = 0;
      for (let nl = data.indexOf(10); nl !== -1 && lines.length < maxEvents; nl = data.indexOf(10, start)) {
        lines.push(data.subarray(start, nl).toString('utf8'));
        start = nl + 1;
      }
      // One line longer than `want`: read further until it ends (or the segment does).
      if (lines.length === 0 && size < remaining) {
        size = Math.min(remaining, size * 2);
        continue;
      }
      return { lines, consumed: start };
    }
  } finally {
    closeSync(fd);
  }
}
