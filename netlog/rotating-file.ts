import { closeSync, constants, fstatSync, openSync, renameSync, writeSync } from 'node:fs';

/** Past this size the built-in reader's file is rotated (netlog/rotating-file.ts): about 300,000 reports. */
export const ROTATE_BYTES = 64 * 1024 * 1024;

/**
 * The built-in NFLOG reader's JSON file, appended to as root and rotated by size: past `rotateBytes` it is renamed to
 * `FILE.1` (replacing the one before) and a new FILE is begun. The volume it lives on then holds about twice that at
 * most: in a Kubernetes pod an emptyDir whose sizeLimit, once passed, has the kubelet evict the pod, job and all, in
 * audit mode too. netlog/reader.ts follows the rename (the old file to its end, then FILE.1 if it never saw it, then
 * the new FILE). `rotateBytes` 0: never rotated.
 *
 * A rotation that fails never fails a write (the reader would end, and audit mode lose every report after): the lines
 * go on to the file being written, `onRotateFailed` says so (one message a try), and the rotation is tried again once
 * another `rotateBytes` have been written, so the file grows past its size only with a warning every `rotateBytes`.
 * - The rename fails (EACCES, a directory at FILE.1): nothing moved; FILE written on.
 * - The rename done, the new FILE cannot be made (it is made with O_EXCL, so a file or symlink put there in between is
 *   never appended to: EEXIST; or a directory is there, or no inode is left): FILE.1 is renamed back to FILE (replacing
 *   what was put there, which a rename never follows), and FILE written on as before: the reader follows FILE.
 * - That too fails (a directory at FILE): the file now named FILE.1 is written on, and netlog/reader.ts, which has it
 *   open, reads what is added to it (it listens for FILE.1's changes too); the next try makes FILE only.
 *
 * A write that fails (ENOSPC: the disk full, EDQUOT, EFBIG) fails no write() either: write() returns the bytes of the
 * text that went in (the caller counts the reports after them as lost), `onWriteFailed` says so once until a write
 * goes in whole again, and the next write goes on. A line cut by the failure (a short write) is ended with a newline
 * before the next one, so it is one unreadable line rather than glued to the report after it.
 */
export class RotatingJsonFile {
  private fd: number;
  private size: number;
  /** Rotated once the file reaches this; after a failed try, another `rotateBytes` on. */
  private rotateAt: number;
  /** The file written is at FILE.1, not FILE (renamed, FILE could not be made, nor the name taken back). */
  private renamedAway = false;
  /** The last write failed after part of a line: it is ended before anything else is written. */
  private cut = false;
  /** A write failed and none has gone in whole since (onWriteFailed said so once). */
  private failing = false;

  constructor(
    readonly file: string,
    private readonly rotateBytes = ROTATE_BYTES,
    private readonly onRotateFailed?: (message: string) => void,
    private readonly onWriteFailed?: (message: string) => void,
  ) {
    this.fd = openJsonFile(file);
    this.size = fstatSync(this.fd).size;
    this.rotateAt = rotateBytes;
  }

  /**
   * Appends whole lines; rotates once the file has reached its size (a line is never cut across two files). Returns
   * the bytes of `text` written: all of them, or those before a write failed (never thrown: the reader would end).
   * A short write is written on from where it stopped (writeSync writes once and says how much went in).
   */
  write(text: string): number {
    const data = Buffer.from(text);
    let done = 0;
    try {
      if (this.cut) {
        writeSome(this.fd, NEWLINE, 0);
        this.size += 1;
        this.cut = false;
      }
      while (done < data.length) done += writeSome(this.fd, data, done);
    } catch (err) {
      this.size += done;
      // Part of `text` went in: cut unless it ended with a line (the newline before it, when it failed, stays owed).
      if (done > 0) this.cut = data[done - 1] !== NEWLINE[0];
      if (!this.failing) {
        this.failing = true;
        this.onWriteFailed?.(`cannot write ${this.file} (${codeOf(err)}): reports not written until it can again (each write is tried)`);
      }
      return done;
    }
    this.failing = false;
    this.size += done;
    if (this.rotateBytes > 0 && this.size >= this.rotateAt) this.rotate();
    return done;
  }

  close(): void {
    closeSync(this.fd);
  }

  private rotate(): void {
    const rotated = `${this.file}.1`;
    const again = `tried again after another ${this.rotateBytes} bytes`;
    this.rotateAt = this.size + this.rotateBytes;
    // Renamed first, then the new file opened: nothing is written to the old one after its rename, so a reader that sees
    // a new file at the path has the old one whole.
    if (!this.renamedAway) {
      try {
        renameSync(this.file, rotated);
      } catch (err) {
        return this.onRotateFailed?.(`cannot rename ${this.file} to ${rotated} (${codeOf(err)}): writing on to ${this.file} (${this.size} bytes), ${again}`);
      }
    }
    let next: number;
    try {
      // Made, never opened: a file or symlink someone put at FILE since the rename is not appended to (EEXIST).
      next = openJsonFile(this.file, constants.O_EXCL);
    } catch (err) {
      const cause = `cannot make a new ${this.file} (${codeOf(err)})`;
      if (!this.renamedAway) {
        try {
          renameSync(rotated, this.file);
          return this.onRotateFailed?.(`${cause}: ${rotated} renamed back, writing on to ${this.file} (${this.size} bytes), ${again}`);
        } catch {
          this.renamedAway = true;
        }
      }
      return this.onRotateFailed?.(`${cause}, nor rename ${rotated} back: writing on to ${rotated} (${this.size} bytes; egress-guard reads it), ${again}`);
    }
    closeSync(this.fd);
    this.fd = next;
    this.size = 0;
    this.rotateAt = this.rotateBytes;
    this.renamedAway = false;
  }
}

const NEWLINE = Buffer.from('\n');

/** One write of `data` from `from` (writeSync writes once: a short write says how much went in); 0 bytes is an error. */
function writeSome(fd: number, data: Buffer, from: number): number {
  const n = writeSync(fd, data, from, data.length - from);
  // Never for a regular file (an error is thrown instead), but a 0 would loop for good.
  if (n <= 0) throw Object.assign(new Error('nothing written'), { code: 'EIO' });
  return n;
}

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/**
 * The JSON file, for appending as root: never through a symlink (O_NOFOLLOW) and only a regular file, since the
 * directory may be writable by a less trusted user (a symlink there would make root append to any file). `exclusive`
 * O_EXCL: made anew or not at all (a rotation's new file).
 */
function openJsonFile(file: string, exclusive = 0): number {
  let fd: number;
  try {
    fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK | exclusive, 0o644);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw Object.assign(new Error(`${file} is a symbolic link: the reader does not follow one`), { code });
    throw err;
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw Object.assign(new Error(`${file} is not a regular file`), { code: 'EINVAL' });
  }
  return fd;
}
