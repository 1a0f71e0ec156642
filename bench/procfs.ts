import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { round } from './stats.js';

/** Resident set size of a process (VmRSS in /proc/<pid>/status), MiB; NaN if it is gone. */
export function rssMiB(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? round(Number(match[1]) / 1024, 1) : NaN;
  } catch {
    return NaN;
  }
}

export const RSS_SAMPLE_MS = 100;

let tickMicros: number | undefined;
/** Microseconds per clock tick of /proc's CPU times (asked once, when first needed). */
const tickUs = () => (tickMicros ??= 1e6 / Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()));

/** Fields of /proc/<pid>/stat after the command (the command may hold spaces and parentheses); undefined if it is gone. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/**
 * CPU microseconds (utime + stime: user and system, all threads) a process has used so far, with `exitedChildren` its
 * waited-for children's too (cutime + cstime); undefined if it is gone.
 */
function cpuMicros(pid: number, exitedChildren = false): number | undefined {
  const fields = statFields(pid);
  if (!fields) return undefined;
  const ticks = Number(fields[11]) + Number(fields[12]) + (exitedChildren ? Number(fields[13]) + Number(fields[14]) : 0);
  return ticks * tickUs();
}

/** CPU milliseconds (user and system, all threads) a process has used so far; NaN if it is gone. */
export function processCpuMs(pid: number): number {
  const micros = cpuMicros(pid);
  return micros === undefined ? NaN : micros / 1000;
}

/**
 * The write-type system calls (write, writev, pwrite...; not send/sendmsg) a process's threads have made so far
 * (`syscw` in /proc/PID/io); NaN if it is gone or the file cannot be read.
 */
export function processWriteCalls(pid: number): number {
  try {
    return Number(/^syscw: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'latin1'))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

/** CPU microseconds (user and system) a process has used so far; 0 if it is gone. */
export function processCpuMicros(pid: number): number {
  return cpuMicros(pid) ?? 0;
}

/**
 * CPU microseconds used so far by a process and all its children (a PostgreSQL postmaster and its backends): its own,
 * its children's now running, and those of its children that have exited (cutime, cstime), so that a backend ending
 * between two readings (a pool's idle connection closed) does not take its CPU out of the difference.
 */
export function clusterCpuMicros(postmaster: number): number {
  let micros = cpuMicros(postmaster, true) ?? 0;
  for (const line of execFileSync('ps', ['-o', 'pid=', '--ppid', String(postmaster)])
    .toString()
    .split('\n')) {
    const pid = Number(line.trim());
    if (pid) micros += processCpuMicros(pid);
  }
  return micros;
}

export function parentPid(pid: number): number {
  return Number(statFields(pid)?.[1]);
}

/** Samples a process's RSS every RSS_SAMPLE_MS until stopped; stop() answers the largest sample (MiB). */
export class RssSampler {
  private maxMiB = NaN;
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly pid: number) {
    this.sample();
    this.timer = setInterval(() => this.sample(), RSS_SAMPLE_MS);
  }

  private sample(): void {
    const now = rssMiB(this.pid);
    if (Number.isFinite(now) && !(now <= this.maxMiB)) this.maxMiB = now;
  }

  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.maxMiB;
  }
}

/** Runs `task` while sampling the RSS of `pid` (no sampling when pid is undefined: the direct route). */
export async function withRssMax<T>(pid: number | undefined, task: () => Promise<T>): Promise<{ value: T; rssMaxMiB: number }> {
  const sampler = pid === undefined ? undefined : new RssSampler(pid);
  try {
    const value = await task();
    return { value, rssMaxMiB: sampler?.stop() ?? NaN };
  } finally {
    sampler?.stop();
  }
}

/** The RLIMIT_NOFILE of this process: soft and hard (Infinity for unlimited). */
export function nofileLimit(): { soft: number; hard: number } {
  const line = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const parse = (s: string | undefined) => (s === undefined || s === 'unlimited' ? Infinity : Number(s));
  return { soft: parse(line?.[1]), hard: parse(line?.[2]) };
}

let prlimitFound: boolean | undefined;
function hasPrlimit(): boolean {
  prlimitFound ??= spawnSync('prlimit', ['--version']).status === 0;
  return prlimitFound;
}

/**
 * Command and arguments that run `command` with RLIMIT_NOFILE raised to the hard limit (at most `wanted`), via
 * `prlimit`: node cannot setrlimit itself. Unchanged when the soft limit is already high enough or prlimit is missing.
 */
export function withNofile(command: string, args: string[], wanted = 65_536): [string, string[]] {
  const { soft, hard } = nofileLimit();
  const target = Math.min(wanted, hard);
  if (soft >= target || !hasPrlimit()) return [command, args];
  return ['prlimit', [`--nofile=${target}:${target}`, '--', command, ...args]];
}

/**
 * Raises this process's RLIMIT_NOFILE to `wanted` with `prlimit --pid` (children spawned later inherit it): soft and hard
 * when the process may raise its hard limit (root, CAP_SYS_RESOURCE; a container's default hard limit of 20,000 or
 * less would cap the idle-tunnel scenario below 10,000 tunnels), else the soft limit up to the hard one. Answers the
 * soft limit now.
 */
export function raiseOwnNofile(wanted = 65_536): number {
  const { soft, hard } = nofileLimit();
  if (soft >= wanted || !hasPrlimit()) return soft;
  const pid = String(process.pid);
  if (hard < wanted) spawnSync('prlimit', ['--pid', pid, `--nofile=${wanted}:${wanted}`]); // refused (EPERM) without the capability
  const now = nofileLimit();
  const target = Math.min(wanted, now.hard);
  if (now.soft < target) spawnSync('prlimit', ['--pid', pid, `--nofile=${target}:${target}`]);
  return nofileLimit().soft;
}
