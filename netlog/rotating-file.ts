import { closeSync, constants, fstatSync, openSync, renameSync, writeSync } from 'node:fs';

/** Past this size the built-in reader's file is rotated (netlog/rotating-file.ts): about 300,000 reports. */
export const ROTATE_BYTES = 64 * 1024 * 1024;

/**
 * The built-in NFLOG reader's JSON file, appended to as root and rotated by size: past `rotateBytes` it is renamed to
 * `FILE.1` (replacing the one before) and a new FILE is begun. The volume it lives on then holds about twice that at
 * most: in a Kubernetes pod an emptyDir whose sizeLimit, once passed, has the kubelet evict the pod, job and all, in
 * audit mode too. netlog/reader.ts follows the rename (the old file to its end, then FILE.1 if it never saw it, then
 * the new FILE). `rotateBytes` 0: never rotated.
 */
export class RotatingJsonFile {
  private fd: number;
  private size: number;

  constructor(
    readonly file: string,
    private readonly rotateBytes = ROTATE_BYTES,
  ) {
    this.fd = openJsonFile(file);
    this.size = fstatSync(this.fd).size;
  }

  /** Appends whole lines; rotates once the file has reached its size (a line is never cut across two files). */
  write(text: string): void {
    writeSync(this.fd, text);
    this.size += Buffer.byteLength(text);
    if (this.rotateBytes > 0 && this.size >= this.rotateBytes) this.rotate();
  }

  close(): void {
    closeSync(this.fd);
  }

  private rotate(): void {
    // Renamed first, then the new file opened: nothing is written to the old one after its rename, so a reader that sees
    // a new file at the path has the old one whole.
    renameSync(this.file, `${this.file}.1`);
    const next = openJsonFile(this.file);
    closeSync(this.fd);
    this.fd = next;
    this.size = 0;
  }
}

/**
 * The JSON file, for appending as root: never through a symlink (O_NOFOLLOW) and only a regular file, since the
 * directory may be writable by a less trusted user (a symlink there would make root append to any file).
 */
function openJsonFile(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o644);
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
