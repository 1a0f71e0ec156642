import { watch, type FSWatcher } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { EventLog } from '../events/event-log.js';
import type { Mode } from '../policy/index.js';
import { FlowLimiter, reportedFlow, type NflogRecord } from './report.js';

export interface NetfilterLogStats {
  /** Events written for reported packets. */
  reported: number;
  /** Packets of flows already reported within the minute (FlowLimiter). */
  suppressed: number;
  /** Lines that were not a report of ours. */
  unreadable: number;
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
const MAX_LINE = 16 * 1024;

/**
 * Follow ulogd's JSON file (inotify through fs.watch, no polling) and turn each packet the redirect rules
 * reported into a decision event: UDP but DNS, ICMP, the job answering outside hosts, job packets on
 * egress-guard's own connections. One event per flow and minute; what that holds back is counted and logged.
 * ulogd, a root process, holds the netlink socket; egress-guard only reads the file, with no capability.
 */
export function startNetfilterLog(options: NetfilterLogOptions): NetfilterLog {
  const { events } = options;
  const limiter = new FlowLimiter(options.windowMs);
  const stats = { reported: 0, unreadable: 0 };
  let handle: FileHandle | undefined;
  let watcher: FSWatcher | undefined;
  let offset = 0;
  let partial = '';
  let reading: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  let reportedSuppressed = 0;

  const onLine = (line: string) => {
    if (line.trim() === '') return;
    let record: NflogRecord;
    try {
      record = JSON.parse(line) as NflogRecord;
    } catch {
      stats.unreadable++;
      return;
    }
    const flow = typeof record === 'object' && record !== null ? reportedFlow(record, options.mode()) : undefined;
    if (!flow) {
      stats.unreadable++;
      return;
    }
    if (!limiter.admit(flow.key)) return;
    stats.reported++;
    events.decision(flow.fields);
  };

  const readMore = async () => {
    if (!handle) return;
    const buffer = Buffer.alloc(READ_CHUNK);
    for (;;) {
      const { size } = await handle.stat();
      // ulogd started a new file (log rotation, a restart that truncated it): read it from its start.
      if (size < offset) offset = 0;
      const { bytesRead } = await handle.read(buffer, 0, READ_CHUNK, offset);
      if (bytesRead === 0) return;
      offset += bytesRead;
      const text = partial + buffer.toString('utf8', 0, bytesRead);
      const lines = text.split('\n');
      partial = lines.pop() ?? '';
      if (partial.length > MAX_LINE) {
        stats.unreadable++;
        partial = '';
      }
      for (const line of lines) onLine(line);
    }
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

  const follow = async () => {
    try {
      handle = await open(options.file, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      // Not written yet (ulogd creates it when it starts): wait for it to appear in its directory.
      events.log.warn({ file: options.file }, 'netfilter log: file does not exist yet; waiting for ulogd to create it');
      const dirWatcher = watch(dirname(options.file), (_, name) => {
        if (name !== basename(options.file) || stopped) return;
        dirWatcher.close();
        void follow().catch((e: Error) => events.log.error({ err: e.message }, 'netfilter log: cannot follow'));
      });
      watcher = dirWatcher;
      return;
    }
    if (stopped) return void handle.close();
    watcher = watch(options.file, () => kick());
    events.log.info({ file: options.file }, "netfilter log: following the redirect rules' reports");
    kick();
  };
  void follow().catch((err: Error) => events.log.error({ err: err.message, file: options.file }, 'netfilter log: cannot follow'));

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
      await reading;
      // What ulogd wrote just before the stop is still reported.
      await readMore().catch(() => undefined);
      await handle?.close();
    },
  };
}
