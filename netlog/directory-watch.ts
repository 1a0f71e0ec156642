import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';

/** While the directory cannot be watched, how often the follower looks anyway (and tries to watch it again). */
export const POLL_MS = 1000;

export interface DirectoryWatch {
  /** Settles once the first try to watch is over (watching, or polling): what changes after it is heard. */
  ready: Promise<void>;
  close(): void;
}

export interface DirectoryWatchOptions {
  /** A name in the directory changed (null: inotify did not say which), or it is time to look (polling). */
  onChange: (name: string | null) => void;
  /** The watch was lost (the directory removed or replaced, or fs.watch failed): polling from now on, until it can watch again. */
  onLost: (reason: string) => void;
  /** Watching again after a loss. */
  onWatching: () => void;
}

/**
 * Watches `dir` (inotify through fs.watch) and never throws nor crashes the process: fs.watch's 'error' event, unheard,
 * would have been thrown. A watch follows the directory's inode, so once the directory is removed or renamed it hears
 * nothing more, without an error (Linux tells it by an event named after the directory itself, or not at all while an
 * open file keeps it: see `check`); then, as when the
 * directory is not there at the start or fs.watch fails, it looks every POLL_MS (onChange(null)) and watches again as
 * soon as it can, then looks once more.
 */
export function watchDirectory(dir: string, options: DirectoryWatchOptions): DirectoryWatch {
  let watcher: FSWatcher | undefined;
  let watchedIno: number | undefined;
  let poll: NodeJS.Timeout | undefined;
  let closed = false;
  const own = basename(dir);

  const lose = (reason: string) => {
    watcher?.close();
    watcher = undefined;
    if (closed || poll) return;
    options.onLost(reason);
    poll = setInterval(() => {
      void start().then((watching) => {
        if (closed) return;
        if (watching && poll) {
          clearInterval(poll);
          poll = undefined;
          options.onWatching();
        }
        options.onChange(null);
      });
    }, POLL_MS);
    poll.unref();
  };

  /** Is what is at `dir` still the directory watched? */
  const check = async () => {
    const ino = await stat(dir).then(
      (s) => s.ino,
      () => undefined,
    );
    if (!closed && watcher && ino !== watchedIno) lose(ino === undefined ? 'the directory is gone' : 'the directory was replaced');
  };

  /** Watches the directory; false when it cannot be (not there, not a directory, fs.watch failed). */
  const start = async (): Promise<boolean> => {
    if (closed) return false;
    let ino: number;
    try {
      const s = await stat(dir);
      if (!s.isDirectory()) return false;
      ino = s.ino;
    } catch {
      return false;
    }
    if (closed || watcher) return !closed;
    try {
      watcher = watch(dir, (type, name) => {
        // A name made, removed or renamed: the directory itself may be gone. Its own event (named after it) comes only
        // once nothing holds it: an open file removed with it (the follower's) keeps it until closed, so each 'rename'
        // is a reason to look. Writes ('change') are not.
        if (type === 'rename' || name === own || name === null) void check();
        options.onChange(name);
      });
    } catch {
      return false;
    }
    watchedIno = ino;
    watcher.on('error', (err: Error) => lose(`fs.watch failed: ${err.message}`));
    // Replaced between the stat and the watch: the watch is on the one before.
    void check();
    return true;
  };

  const ready = start().then((watching) => {
    if (!watching) lose('the directory cannot be watched (not there yet?)');
  });
  return {
    ready,
    close() {
      closed = true;
      if (poll) clearInterval(poll);
      poll = undefined;
      watcher?.close();
      watcher = undefined;
    },
  };
}
