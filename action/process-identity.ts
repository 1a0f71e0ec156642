import { readdirSync, readFileSync } from 'node:fs';
import type { Privileged } from './privileged.js';

/**
 * One process, told apart from every later process that gets its pid: the pid, its start time (clock ticks since
 * boot) and the boot it started in. A pid is reused once its process is gone, and start times restart at each boot
 * (a record kept on disk, /var/lib/egress-guard, outlives a reboot of a self-hosted runner).
 */
export interface ProcessIdentity {
  pid: number;
  start: string;
  /** /proc/sys/kernel/random/boot_id when it was taken (absent in a state written before it was recorded). */
  boot?: string;
}

type ReadText = (file: string) => string;
const readText: ReadText = (file) => readFileSync(file, 'utf8');

/** /proc/PID/stat's fields after the command name (field 2, in parentheses, may hold spaces and parentheses). */
function statFields(pid: number, read: ReadText): string[] | undefined {
  let stat: string;
  try {
    stat = read(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  const close = stat.lastIndexOf(')');
  return close < 0 ? undefined : stat.slice(close + 2).split(' ');
}

/**
 * When process `pid` started (/proc/PID/stat's 22nd field, readable for any process), or undefined when there is no
 * such process, or it has exited and only waits to be reaped (a zombie: it runs no more).
 */
export function processStartTime(pid: number, read: ReadText = readText): string | undefined {
  const fields = statFields(pid, read);
  if (!fields || fields[0] === 'Z' || fields[0] === 'X') return undefined;
  const start = fields[19];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

/** The parent's pid (/proc/PID/stat's 4th field), undefined when there is no such process. */
function parentPid(pid: number, read: ReadText): number | undefined {
  const ppid = statFields(pid, read)?.[1];
  return ppid !== undefined && /^\d+$/.test(ppid) ? Number(ppid) : undefined;
}

export function bootId(read: ReadText = readText): string | undefined {
  try {
    return read('/proc/sys/kernel/random/boot_id').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The identity of the process that has `pid` now, undefined when none runs. */
export function identifyProcess(pid: number, read: ReadText = readText): ProcessIdentity | undefined {
  const start = processStartTime(pid, read);
  if (start === undefined) return undefined;
  const boot = bootId(read);
  return { pid, start, ...(boot !== undefined && { boot }) };
}

/**
 * Whether `identity` still runs: the process that has its pid now started when it did, in the same boot. The one
 * check before root signals a process main started, or that an earlier job left.
 */
export function isSameProcess(identity: ProcessIdentity, read: ReadText = readText): boolean {
  if (!Number.isSafeInteger(identity.pid) || identity.pid <= 0) return false;
  if (processStartTime(identity.pid, read) !== identity.start) return false;
  return identity.boot === undefined || identity.boot === bootId(read);
}

/** Process `pid`'s argv (/proc/PID/cmdline), undefined when there is no such process. */
export function processCommandLine(pid: number, read: (file: string) => Buffer = (file) => readFileSync(file)): string[] | undefined {
  try {
    const argv = read(`/proc/${pid}/cmdline`).toString('utf8').split('\0');
    if (argv.at(-1) === '') argv.pop();
    return argv;
  } catch {
    return undefined;
  }
}

/** Process `pid`'s real uid (/proc/PID/status), undefined when there is no such process. */
export function processUid(pid: number, read: ReadText = readText): number | undefined {
  try {
    const uid = /^Uid:\s+(\d+)/m.exec(read(`/proc/${pid}/status`))?.[1];
    return uid === undefined ? undefined : Number(uid);
  } catch {
    return undefined;
  }
}

/** How many processes /proc is read for at most when looking for a descendant (a runner has a few hundred). */
const PROCESS_SCAN_LIMIT = 100_000;

/**
 * The process in `ancestor`'s tree (itself included) whose argv is exactly `argv`: egress-guard itself under sudo,
 * the audit supervisor and setpriv (which execs it). Undefined when there is none, or more than one.
 */
export function findDescendant(ancestor: number, argv: readonly string[]): ProcessIdentity | undefined {
  let pids: number[];
  try {
    pids = readdirSync('/proc')
      .filter((name) => /^\d+$/.test(name))
      .slice(0, PROCESS_SCAN_LIMIT)
      .map(Number);
  } catch {
    return undefined;
  }
  const inTree = (pid: number): boolean => {
    // Bounded: a loop in what /proc said (pids reused while it was read) must not hang main.
    for (let hop = 0, at: number | undefined = pid; at !== undefined && at > 0 && hop < 64; hop++, at = parentPid(at, readText)) if (at === ancestor) return true;
    return false;
  };
  const matches = pids.filter((pid) => {
    const cmdline = processCommandLine(pid);
    return cmdline !== undefined && cmdline.length === argv.length && cmdline.every((arg, i) => arg === argv[i]) && inTree(pid);
  });
  return matches.length === 1 ? identifyProcess(matches[0]!) : undefined;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Until `identity` no longer runs, or `timeoutMs`; whether it is gone. */
export async function waitUntilGone(identity: ProcessIdentity, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isSameProcess(identity)) {
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
  return true;
}

/**
 * SIGTERM, then SIGKILL if it still runs after `timeoutMs`; each signal only while `identity` is still that process
 * (a pid now another process's is not ours to signal). 'gone': it was not running when asked. (What is left between
 * the check and `kill`, a pid freed and reused within it, would take a pidfd, which `sudo kill` cannot pass.)
 */
export async function stopProcess(root: Privileged, identity: ProcessIdentity, timeoutMs: number): Promise<'stopped' | 'killed' | 'gone'> {
  if (!isSameProcess(identity)) return 'gone';
  await root.run('kill', ['-TERM', String(identity.pid)]);
  if (await waitUntilGone(identity, timeoutMs)) return 'stopped';
  if (isSameProcess(identity)) await root.run('kill', ['-KILL', String(identity.pid)]);
  return 'killed';
}
