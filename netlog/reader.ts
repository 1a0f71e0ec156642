import { lstat, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { EventLog } from '../events/event-log.js';
import type { Mode } from '../policy/index.js';
import { POLL_MS, watchDirectory, type DirectoryWatch } from './directory-watch.js';
import { openRegular, type OpenedRegular, type RegularFile } from './open-regular.js';
import { FlowLimiter, LOST_FIELD, reportedFlow, sentByJob, type NflogRecord } from './report.js';

export interface NetfilterLogStats {
  /** Events written for reported packets. */
  reported: number;
  /** Packets of flows already reported within the minute (FlowLimiter). */
  suppressed: number;
  /** Lines that were not a report of ours. */
  unreadable: number;
  /** Packets the kernel sent on its own (no job process behind them: resets, ICMP errors, late ACKs). */
  kernel: number;
  /** Reports from before this sidecar started (a file ulogd appended to across restarts). */
  stale: number;
  /**
   * Reports the kernel dropped because the reader fell behind (its queue overflowed), as the built-in reader counts
   * them from the gaps in the reports' sequence numbers: exact once a later report reached it; an overflow no later
   * report measured (the last before the reader stopped) or where the numbers could not be trusted counts 1
   * (netlog/nflog-sequence.ts). The flows of those packets may have no event.
   */
  lost: number;
}

export interface NetfilterLog {
  stats(): NetfilterLogStats;
  stop(): Promise<void>;
}

export interface NetfilterLogOptions {
  /** ulogd's JSON file (`rules log-config --json-file`). */
  file: string;
  events: EventLog;
  /** The rules' mode, which is the policy's (a reload cannot change it while transparent listeners run). */
  mode: () => Mode;
  windowMs?: number;
}

const READ_CHUNK = 64 * 1024;
/** Tries at taking FILE and FILE.1 as one pair (netlog/reader.ts openNext) before FILE.1 is left out. */
const PAIR_TRIES = 3;
const MAX_LINE = 16 * 1024;

/** FILE as opened, and FILE.1 when it is a file to read whole before it (openNext). */
interface OpenedPair {
  next: RegularFile;
  before?: RegularFile;
}

/** Closes both files of a pair (one neither read nor kept). */
async function closePair({ next, before }: OpenedPair): Promise<void> {
  await Promise.all([next.file.close(), before?.file.close()]);
}

/**
 * Follow ulogd's JSON file (inotify through fs.watch, no polling) and turn each packet the redirect rules
 * reported into a decision event: UDP but DNS, ICMP, the job answering outside hosts, job packets on
 * egress-guard's own connections. One event per flow and minute; what that holds back is counted and logged.
 * ulogd, a root process, holds the netlink socket; egress-guard only reads the file, with no capability.
 */
export function startNetfilterLog(options: NetfilterLogOptions): NetfilterLog {
  const { events } = options;
  const limiter = new FlowLimiter(options.windowMs);
  const stats = { reported: 0, unreadable: 0, kernel: 0, stale: 0, lost: 0 };
  const startedSec = Math.floor(Date.now() / 1000) - 1;
  let discarding = false;
  let inode: number | undefined;
  let handle: FileHandle | undefined;
  let watcher: DirectoryWatch | undefined;
  let offset = 0;
  let partial = '';
  let reading: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let reportedSuppressed = 0;

  const onRecord = (record: NflogRecord) => {
    const time = record['oob.time.sec'];
    if (Number.isInteger(time) && time! < startedSec) {
      stats.stale++;
      return;
    }
    const lost: unknown = record[LOST_FIELD];
    if (lost !== undefined) {
      if (typeof lost !== 'number' || !Number.isSafeInteger(lost) || lost <= 0) {
        stats.unreadable++;
        return;
      }
      stats.lost += lost;
      // Audit misses nothing it can tell about: these packets were refused (block) or let through (audit) unreported.
      events.log.warn(
        { lost, lostTotal: stats.lost },
        'netfilter log: reports were lost before they reached the file: the kernel dropped reports the reader could not take in time (counted from the gaps in their sequence numbers; 1 for an overflow of its queue no later report measured), or the reader could not write them (a full disk); the flows of those packets (UDP but DNS, ICMP, answers to outside hosts) may have no event',
      );
      return;
    }
    const flow = reportedFlow(record, options.mode());
    if (!flow) {
      stats.unreadable++;
      return;
    }
    if (!sentByJob(record)) {
      stats.kernel++;
      return;
    }
    if (!limiter.admit(flow.key)) return;
    stats.reported++;
    events.decision(flow.fields);
  };

  const onLine = (line: string) => {
    if (line.trim() === '') return;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch {
      stats.unreadable++;
      return;
    }
    if (typeof record !== 'object' || record === null || Array.isArray(record)) {
      stats.unreadable++;
      return;
    }
    // A line is data from a file: whatever is in it, the lines after it are still read.
    try {
      onRecord(record as NflogRecord);
    } catch (err) {
      stats.unreadable++;
      events.log.debug({ err: (err as Error).message }, 'netfilter log: line not understood');
    }
  };

  /** Reads `file` from `offset` to its end, line by line. */
  const readToEnd = async (file: FileHandle) => {
    const buffer = Buffer.alloc(READ_CHUNK);
    for (;;) {
      const { size } = await file.stat();
      // Truncated in place (copytruncate, a restart): read it from its start, and forget a half-read line.
      if (size < offset) {
        offset = 0;
        partial = '';
        discarding = false;
      }
      const { bytesRead } = await file.read(buffer, 0, READ_CHUNK, offset);
      if (bytesRead === 0) return;
      offset += bytesRead;
      const lines = (partial + buffer.toString('utf8', 0, bytesRead)).split('\n');
      partial = lines.pop() ?? '';
      if (discarding) {
        // Inside a line too long to be a report (already counted): skip to its end.
        if (lines.length === 0) {
          partial = '';
          continue;
        }
        lines.shift();
        discarding = false;
      }
      for (const line of lines) onLine(line);
      if (partial.length > MAX_LINE) {
        // No report is this long: drop it, and the rest of it up to its newline, counted once.
        stats.unreadable++;
        partial = '';
        discarding = true;
      }
    }
  };

  /** The inode at `path` (a symlink's own), or undefined when there is nothing there. */
  const inodeAt = async (path: string): Promise<number | undefined> => {
    try {
      return (await lstat(path)).ino;
    } catch {
      return undefined;
    }
  };

  /** What was found instead of a file at each path, told once until something else is there. */
  const skippedTold = new Map<string, string>();
  /**
   * `path` opened to read when it is a regular file (netlog/open-regular.ts: never blocking on a FIFO, never through a
   * symlink); what is there instead is warned of, once, and left alone.
   */
  const openToRead = async (path: string): Promise<OpenedRegular> => {
    const opened = await openRegular(path);
    if ('skipped' in opened) {
      if (skippedTold.get(path) !== opened.skipped) {
        skippedTold.set(path, opened.skipped);
        events.log.warn(
          { file: path, found: opened.skipped },
          'netfilter log: not a regular file, not read (a FIFO would block the reader, a symlink could point anywhere); the reports go on from the file this reader has, or from a file put there',
        );
      }
    } else skippedTold.delete(path);
    return opened;
  };

  /** FILE.1 opened when it is a regular file; undefined otherwise, and when it cannot be opened. */
  const openRotated = async () => {
    const opened = await openToRead(`${options.file}.1`).catch(() => undefined);
    return opened && 'file' in opened ? opened : undefined;
  };

  /** Follow the file open at `next` from its start; a half line the last one ended with is judged as it is. */
  const switchTo = async (next: RegularFile) => {
    await handle?.close();
    if (partial !== '' && !discarding) onLine(partial);
    handle = next.file;
    inode = next.ino;
    offset = 0;
    partial = '';
    discarding = false;
  };

  /**
   * FILE, and FILE.1 when that is FILE's predecessor and a file this reader never had (neither `old` nor FILE itself):
   * the file to follow next and the one to read whole before it. The invariant: FILE.1 is taken only when it was at
   * FILE.1 while the file taken was at FILE, so it is that file's predecessor, never its successor. Hence the order:
   * 1. FILE is opened first: the file to follow next, held from then on (no rename can take it away);
   * 2. then FILE.1;
   * 3. then FILE is looked at again: the same file, so no rotation came between 1 and 2 and FILE.1 was its predecessor.
   *    Another: a rotation came between, and FILE.1 may be the file of 1 or one after it; both are closed and the three
   *    steps taken again (PAIR_TRIES times, then FILE alone, warned of: a writer rotating faster than two opens).
   * Opening FILE.1 first (until 2026-12-03) lost a file to one rotation between the two opens: FILE.1 was the
   * predecessor of the FILE of that moment, FILE was by then the file after that one, and the file between went unread.
   * Reports are lost only when this reader is more than a whole file behind (FILE's predecessor's predecessor is gone).
   */
  const openNext = async (old: number | undefined): Promise<OpenedPair | Exclude<OpenedRegular, RegularFile>> => {
    for (let tries = 1; ; tries++) {
      const next = await openToRead(options.file);
      if (!('file' in next)) return next;
      const before = await openRotated();
      const settled = (await inodeAt(options.file)) === next.ino;
      if (!settled && tries < PAIR_TRIES) {
        await closePair({ next, before });
        continue;
      }
      if (!settled) events.log.warn({ file: options.file }, 'netfilter log: the file rotated faster than it could be followed; a rotated file may be left unread');
      if (before && settled && before.ino !== old && before.ino !== next.ino) return { next, before };
      await before?.file.close();
      return { next };
    }
  };

  /** Reads `before` whole, then follows `next` from its start. On a failure nothing opened is left open, nor kept. */
  const moveTo = async ({ next, before }: OpenedPair) => {
    try {
      if (before) {
        await switchTo(before);
        await readToEnd(before.file);
      }
      await switchTo(next);
    } catch (err) {
      // The next change opens anew (a throw while reading FILE.1 left FILE open and unreferenced, until 2026-12-03).
      await closePair({ next, before }).catch(() => undefined);
      handle = undefined;
      inode = undefined;
      throw err;
    }
  };

  /**
   * A new file at the path (rotated by rename, or made anew): the old one is read to its end, then FILE.1 when that is
   * a file this reader never opened (it fell a whole file behind), then the new file from its start (openNext).
   * Reads the current file to its end; true when it moved on to a new one (read it again).
   */
  const readFollowingRotation = async (): Promise<boolean> => {
    if (!handle) return false;
    await readToEnd(handle);
    const current = await inodeAt(options.file);
    // Renamed away and not yet made anew: the old one was read to its end; the new one comes with its own event.
    if (current === undefined || current === inode) return false;
    // Another file at the path. Its writer (netlog/rotating-file.ts) renamed this one before it made that one, and
    // writes no more to it once that one is made: read to its end now that the new one is seen, it is whole. The read
    // above may have ended just before the last lines and the rename (they went unread until 2026-12-03).
    await readToEnd(handle);
    const found = await openNext(inode);
    // Gone again (the next event finds the next one), or not a regular file (warned of): this file stays the one read.
    if (!('next' in found)) return false;
    if (found.next.ino === inode) {
      await closePair(found);
      return false;
    }
    await moveTo(found);
    return true;
  };

  const readMore = async () => {
    while (await readFollowingRotation());
  };

  /** Read what is new; a change that arrives while reading is read right after (nothing is skipped). */
  const kick = () => {
    if (stopped) return;
    if (reading) {
      again = true;
      return;
    }
    reading = readMore()
      .catch((err: Error) => events.log.error({ err: err.message, file: options.file }, 'netfilter log: read failed'))
      .finally(() => {
        reading = undefined;
        if (again) {
          again = false;
          kick();
        }
      });
  };

  /**
   * Opens the file the first time it is there and reads it, FILE.1 whole before it when that is another file (openNext:
   * reports rotated away before this reader came, counted stale when older than its start, events when a new file
   * filled and was rotated before it opened it). Changes seen meanwhile are read once it is done: a read beside it
   * would share its offset.
   */
  let opening: Promise<void> | undefined;
  let changedWhileOpening = false;
  /** Said once until the file is there (the directory may be polled: netlog/directory-watch.ts). */
  let toldMissing = false;
  const openFirst = (): Promise<void> =>
    (opening ??= (async () => {
      const found = await openNext(undefined);
      // Not written yet (ulogd or the built-in reader creates it when it starts): its directory's event brings it.
      if ('missing' in found && !toldMissing) events.log.warn({ file: options.file }, 'netfilter log: file does not exist yet; waiting for ulogd to create it');
      toldMissing = 'missing' in found;
      // Not a regular file (warned of): a file put there in its place comes with its event.
      if (!('next' in found)) return;
      if (stopped) return void (await closePair(found));
      await moveTo(found);
      toldCannot = undefined;
      events.log.info({ file: options.file }, "netfilter log: following the redirect rules' reports");
      changedWhileOpening = true; // read it now
    })().finally(() => {
      opening = undefined;
      if (!changedWhileOpening) return;
      changedWhileOpening = false;
      onChange();
    }));

  /**
   * Why the file cannot be followed, said once until the reason changes or the file is followed: every change of it
   * (each report its writer adds) and the directory's poll try again, and each try fails the same way (until
   * 2026-12-03 one error a try).
   */
  let toldCannot: string | undefined;
  const cannotFollow = (err: Error) => {
    if (err.message === toldCannot) return;
    toldCannot = err.message;
    events.log.error({ err: err.message, file: options.file }, 'netfilter log: cannot follow');
  };

  const onChange = () => {
    if (stopped) return;
    if (opening) changedWhileOpening = true;
    else if (handle) kick();
    else void openFirst().catch(cannotFollow);
  };

  const follow = async () => {
    // The directory, not the file: a watch on the file follows its inode, so after a rotation by rename the new file's
    // writes went unseen and nothing more was read.
    const name = basename(options.file);
    const dir = dirname(options.file);
    watcher = watchDirectory(dir, {
      onChange: (changed) => {
        if (changed === null || changed === name) onChange();
        // The file this reader has may be written on under its rotated name, when the writer could not make a new FILE
        // (netlog/rotating-file.ts): read what is added to it.
        else if (changed === `${name}.1` && handle) onChange();
      },
      onLost: (reason) =>
        events.log.warn({ dir, reason, pollMs: POLL_MS }, "netfilter log: the file's directory can no longer be watched; looking at it every second until it can again"),
      onWatching: () => events.log.info({ dir }, "netfilter log: watching the file's directory again"),
    });
    await watcher.ready;
    if (!stopped) await openFirst();
  };
  void follow().catch(cannotFollow);

  // The limit reports itself: once a minute, what it held back since the last report.
  const summary = setInterval(() => {
    const held = limiter.suppressed - reportedSuppressed;
    if (held === 0) return;
    reportedSuppressed = limiter.suppressed;
    events.log.info({ suppressed: held }, 'netfilter log: packets of flows already reported this minute were not reported again (one event per flow and minute)');
  }, options.windowMs ?? 60_000);
  summary.unref();

  return {
    stats: () => ({ ...stats, suppressed: limiter.suppressed }),
    async stop() {
      stopped = true;
      clearInterval(summary);
      watcher?.close();
      await opening?.catch(() => undefined);
      await reading;
      // What ulogd wrote just before the stop is still reported.
      await readMore().catch(() => undefined);
      await handle?.close();
    },
  };
}
