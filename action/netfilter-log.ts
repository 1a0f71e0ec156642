import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { ActionLayout } from './layout.js';
import { execCommand, type Privileged } from './privileged.js';
import { NFLOG_GROUP_REFUSED_EXIT } from '../netlog/reader-exit.js';
import { identifyProcess, stopProcess, type ProcessIdentity } from './process-identity.js';

export interface NetfilterLog {
  jsonFile: string;
  pidFile: string;
  /** Who reads the NFLOG group: egress-guard's own `rules log-reader`, or ulogd. */
  reader: 'built-in' | 'ulogd';
  /** The reader's process once its pid file appeared: post stops only that process. */
  process?: ProcessIdentity;
}

/** What main leaves in netlog/ (root's) for a later job's main: which reader it started, as that process. */
export interface ReaderRecord {
  reader: NetfilterLog['reader'];
  process: ProcessIdentity;
}

/** The files of netlog/ (root's, remade at each start): the reader's JSON lines, the pid files, main's record. */
export function netlogFiles(layout: ActionLayout) {
  return {
    jsonFile: path.join(layout.netlogDir, 'nflog.json'),
    readerPidFile: path.join(layout.netlogDir, 'reader.pid'),
    ulogdPidFile: path.join(layout.netlogDir, 'ulogd.pid'),
    record: path.join(layout.netlogDir, 'reader.json'),
  };
}

/** The built-in reader's argv, as main starts it (a later main recognises an earlier one by it when there is no record). */
export function builtInReaderArgv(layout: ActionLayout): string[] {
  const files = netlogFiles(layout);
  return [layout.node, layout.entry, 'rules', 'log-reader', '--json-file', files.jsonFile, '--pid-file', files.readerPidFile];
}

function ulogdBinary(): string | undefined {
  return ['/usr/sbin/ulogd', '/usr/bin/ulogd', '/sbin/ulogd'].find((file) => existsSync(file));
}

/** How long the built-in reader may take to bind its group (load the addon, netlink set-up). */
const READER_READY_MS = 10_000;
/** How long a reader has to end after SIGTERM (the built-in one ends within its read's wait). */
export const READER_STOP_MS = 5_000;

/**
 * `egress-guard rules log-reader` as root, left running when this step ends (its pid file is written once the NFLOG
 * group is bound): the packets the rules refuse or report, as ulogd's JSON lines, without ulogd. The reason, when
 * it does not come up (no prebuilt addon for this machine, no netlink, another reader on the group).
 */
async function startBuiltInReader(root: Privileged, layout: ActionLayout): Promise<{ log: NetfilterLog } | { reason: string; groupRefused?: boolean }> {
  const { jsonFile, readerPidFile: pidFile } = netlogFiles(layout);
  // The runner's own scratch space: this step (not root) opens it for the reader's output.
  const logFile = path.join(layout.workDir, 'nflog-reader.log');
  const output = openSync(logFile, 'a');
  const [reader, ...readerArgs] = builtInReaderArgv(layout);
  const [command, ...args] = root.argv(reader!, readerArgs);
  const child = spawn(command!, args, { detached: true, stdio: ['ignore', output, output] });
  closeSync(output);
  let exited = false;
  let exitCode: number | null = null;
  child.on('exit', (code) => {
    exited = true;
    exitCode = code;
  });
  child.on('error', () => (exited = true));
  child.unref();
  // The pid, not the file: the reader creates it (exclusively) and then writes its pid into it.
  await waitForPid(pidFile, () => exited);
  if (existsSync(pidFile)) return { log: await recorded(root, layout, { jsonFile, pidFile, reader: 'built-in' }) };
  if (!exited && child.pid !== undefined) await root.run('kill', ['-TERM', String(child.pid)]);
  let tail = '';
  try {
    tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-3).join(' ');
  } catch {
    // no output
  }
  if (exited && exitCode === NFLOG_GROUP_REFUSED_EXIT) return { reason: `the kernel refused the built-in reader the NFLOG group: ${tail || 'no output'}`, groupRefused: true };
  return { reason: exited ? `the built-in reader exited: ${tail || 'no output'}` : `the built-in reader was not ready after ${READER_READY_MS} ms` };
}

/**
 * What the rules refuse or report (UDP other than DNS, ICMP, answers to outside hosts) made into JSON lines that
 * egress-guard reads as events: by the built-in reader (`rules log-reader`, GitHub's images ship no ulogd), else by
 * ulogd as root, as the container's entrypoint starts it. Without either, those packets are still refused in block
 * mode, but they are not events; `reason` says why.
 */
export async function startNetfilterLog(root: Privileged, layout: ActionLayout, ulogd = ulogdBinary()): Promise<NetfilterLog | { reason: string }> {
  const { jsonFile, ulogdPidFile: pidFile } = netlogFiles(layout);
  // Root's: the reader (root) writes here. What an earlier job left (a pid file above all) goes: a reader it left
  // running is stopped before this (earlier-reader.ts), which reads its pid from here.
  await root.must('rm', ['-rf', layout.netlogDir]);
  await root.must('install', ['-d', '-m', '0755', '-o', '0', '-g', '0', layout.netlogDir]);
  await root.must('install', ['-m', '0644', '/dev/null', jsonFile]);
  const builtIn = await startBuiltInReader(root, layout);
  if ('log' in builtIn) return builtIn.log;
  // ulogd would be refused the same way, but only after writing its pid file and forking: main took it for the reader,
  // and the job's refused UDP and ICMP went unreported with no warning.
  if (builtIn.groupRefused) return { reason: `${builtIn.reason}; another process holds the group (ulogd not tried: it would be refused too)` };
  if (!ulogd) return { reason: `${builtIn.reason}; ulogd is not installed` };
  const config = await execCommand(layout.node, [layout.entry, 'rules', 'log-config', '--json-file', jsonFile, '--log-file', path.join(layout.netlogDir, 'ulogd.log')]);
  if (config.code !== 0) throw new Error(`egress-guard rules log-config failed: ${config.stderr.trim()}`);
  const configFile = path.join(layout.workDir, 'ulogd.conf');
  writeFileSync(configFile, config.stdout);
  await root.must(ulogd, ['-d', '-c', configFile, '-p', pidFile]);
  // ulogd -d creates its pid file, forks and returns: the daemon writes its pid into the file a moment later (until
  // then the file is there, empty: waiting for the file alone recorded no process, and post never stopped ulogd).
  await waitForPid(pidFile);
  return recorded(root, layout, { jsonFile, pidFile, reader: 'ulogd' });
}

/** Until `pidFile` holds a pid, `gaveUp()` says the reader is gone, or READER_READY_MS have passed. */
async function waitForPid(pidFile: string, gaveUp: () => boolean = () => false): Promise<void> {
  const deadline = Date.now() + READER_READY_MS;
  while (readPidFile(pidFile) === undefined && !gaveUp() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25));
}

/** The pid in a pid file, undefined when there is none (no file, not a number). */
export function readPidFile(file: string): number | undefined {
  try {
    const text = readFileSync(file, 'utf8').trim();
    return /^\d{1,10}$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The reader as a process (pid file, then its start time), in the state for post and in netlog/reader.json for a
 * later job's main (a reader this job leaves running: disable-sudo, a post that never ran). Without a pid, or with the
 * process gone already, the log has no process, and nothing will ever be signalled for it.
 */
async function recorded(root: Privileged, layout: ActionLayout, log: NetfilterLog): Promise<NetfilterLog> {
  const pid = readPidFile(log.pidFile);
  const identity = pid === undefined ? undefined : identifyProcess(pid);
  if (!identity) return log;
  const record: ReaderRecord = { reader: log.reader, process: identity };
  await root.must('tee', [netlogFiles(layout).record], { input: `${JSON.stringify(record)}\n` });
  await root.must('chmod', ['0644', netlogFiles(layout).record]);
  return { ...log, process: identity };
}

/**
 * Post: SIGTERM to the reader (SIGKILL if it is still there after a few seconds), only while its pid is still that
 * process (pid and start time). A log without the process (a state of an earlier version, which had only the pid
 * file; a pid file that never appeared) is not signalled: nothing proves who has that pid now. What it did, to log.
 */
export async function stopNetfilterLog(root: Privileged, log: NetfilterLog): Promise<string> {
  if (!log.process) return `the NFLOG reader (${log.reader}) is not stopped: the state does not name its process (pid and start time)`;
  const outcome = await stopProcess(root, log.process, READER_STOP_MS);
  return `the NFLOG reader (${log.reader}, pid ${log.process.pid}): ${outcome}`;
}
