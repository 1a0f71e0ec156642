import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/**
 * Never blocks (a FIFO opened for reading without O_NONBLOCK waits for a writer, holding one of libuv's four threads and
 * the follower with it, for good) and never follows a symlink (it could point anywhere: a device, a file of another
 * user's). O_NONBLOCK changes nothing for a regular file's reads.
 */
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW;

export interface RegularFile {
  file: FileHandle;
  ino: number;
}

export type OpenedRegular = RegularFile | { missing: true } | { skipped: string };

/**
 * Opens `path` to read it, when it is a regular file. Nothing there: `missing`. Something else (a FIFO, a directory, a
 * symlink, a device): `skipped`, saying what it is, and nothing left open. Other errors (EACCES) are thrown.
 */
export async function openRegular(path: string): Promise<OpenedRegular> {
  let file: FileHandle;
  try {
    file = await open(path, READ_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { missing: true };
    if (code === 'ELOOP') return { skipped: 'a symbolic link' };
    throw err;
  }
  try {
    const stats = await file.stat();
    if (stats.isFile()) return { file, ino: stats.ino };
    await file.close();
    return { skipped: stats.isFIFO() ? 'a FIFO' : stats.isDirectory() ? 'a directory' : 'not a regular file' };
  } catch (err) {
    await file.close().catch(() => undefined);
    throw err;
  }
}
