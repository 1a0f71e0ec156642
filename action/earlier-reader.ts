import { lstatSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { ActionLayout } from './layout.js';
import { builtInReaderArgv, netlogFiles, READER_STOP_MS, readPidFile, type NetfilterLog, type ReaderRecord } from './netfilter-log.js';
import type { Privileged } from './privileged.js';
import { identifyProcess, isSameProcess, processCommandLine, processUid, stopProcess, type ProcessIdentity } from './process-identity.js';

/**
 * An NFLOG reader an earlier job left running keeps the rules' NFLOG group bound (disable-sudo keeps processes until
 * the runner is gone; a self-hosted runner outlives the job; a post that never ran): the new job's reader cannot bind
 * it, and the new job's refused UDP and ICMP would go unreported. Main (root) stops it, but only a process proven to
 * be that reader, from what the earlier main left in netlog/ (read before netlog/ is made anew).
 */

interface EarlierReader {
  reader: NetfilterLog['reader'];
  process: ProcessIdentity;
  /** How it was told: main's record (pid and start time), or, left by a version without it, its pid file and argv. */
  proof: 'record' | 'command line';
}

/** A file or directory only root can have written: owned by root, no write for group or others, not a symlink. */
function rootsOnly(file: string, kind: 'file' | 'directory'): boolean {
  const stat = lstatSync(file, { throwIfNoEntry: false });
  if (!stat || stat.uid !== 0 || (stat.mode & 0o022) !== 0) return false;
  return kind === 'file' ? stat.isFile() : stat.isDirectory();
}

function parseRecord(text: string): ReaderRecord | undefined {
  try {
    const value = JSON.parse(text) as Partial<ReaderRecord> | null;
    const p = value?.process;
    if ((value?.reader !== 'built-in' && value?.reader !== 'ulogd') || !p) return undefined;
    if (!Number.isSafeInteger(p.pid) || p.pid <= 0 || typeof p.start !== 'string' || !/^\d+$/.test(p.start)) return undefined;
    if (p.boot !== undefined && typeof p.boot !== 'string') return undefined;
    return { reader: value.reader, process: { pid: p.pid, start: p.start, ...(p.boot !== undefined && { boot: p.boot }) } };
  } catch {
    return undefined;
  }
}

/**
 * A pid file of the format before main's record (the pid alone): its process is that reader only if it is root's and
 * its argv is exactly the one an earlier main started it with, the paths of this layout included (ulogd: the
 * binary, `-p` and this pid file). The argv is the only proof here, and it is a strong one: no other process runs
 * with that command line, and only root can start one as root.
 */
function legacyReader(pidFile: string, reader: NetfilterLog['reader'], layout: ActionLayout): EarlierReader | undefined {
  if (!rootsOnly(pidFile, 'file')) return undefined;
  const pid = readPidFile(pidFile);
  if (pid === undefined || pid <= 0) return undefined;
  // The identity first, then the checks: a pid reused between them is caught by stopProcess's own check.
  const identity = identifyProcess(pid);
  const argv = processCommandLine(pid);
  if (!identity || !argv || processUid(pid) !== 0) return undefined;
  const matches =
    reader === 'built-in'
      ? JSON.stringify(argv) === JSON.stringify(builtInReaderArgv(layout))
      : path.basename(argv[0] ?? '') === 'ulogd' && argv.some((arg, i) => arg === '-p' && argv[i + 1] === pidFile);
  return matches ? { reader, process: identity, proof: 'command line' } : undefined;
}

/** The reader the earlier job's main left, if it still runs and is proven to be that reader; undefined otherwise. */
export function findEarlierReader(layout: ActionLayout): EarlierReader | undefined {
  // Nothing in a netlog/ someone else could have written is evidence (an earlier version's state directory was the
  // egress-guard user's: installApp removes such a directory whole, so there is nothing to find then).
  if (!rootsOnly(layout.stateDir, 'directory') || !rootsOnly(layout.netlogDir, 'directory')) return undefined;
  const files = netlogFiles(layout);
  if (rootsOnly(files.record, 'file')) {
    let text: string;
    try {
      text = readFileSync(files.record, 'utf8');
    } catch {
      return undefined;
    }
    // A record names the reader the earlier main started: with one, the pid files prove nothing more.
    const record = parseRecord(text);
    return record && isSameProcess(record.process) ? { ...record, proof: 'record' } : undefined;
  }
  return legacyReader(files.readerPidFile, 'built-in', layout) ?? legacyReader(files.ulogdPidFile, 'ulogd', layout);
}

/**
 * Stops the reader an earlier job left (SIGTERM, SIGKILL after a few seconds, each only while it is still that
 * process) before main starts its own. What was done, for main's log; undefined when there was none.
 */
export async function stopEarlierReader(root: Privileged, layout: ActionLayout): Promise<string | undefined> {
  const earlier = findEarlierReader(layout);
  if (!earlier) return undefined;
  const outcome = await stopProcess(root, earlier.process, READER_STOP_MS);
  const how = earlier.proof === 'record' ? "its pid and start time, from that job's record" : 'its pid file and command line (left by an earlier version)';
  return `an earlier job's NFLOG reader (${earlier.reader}, pid ${earlier.process.pid}, told by ${how}) still held the NFLOG group: ${outcome}`;
}
