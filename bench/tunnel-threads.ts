import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLoad } from './load.js';
import { startEgressGuard, startSquid, stopChild, type RunningProxy } from './proxies.js';
import { tunnelTlsTask } from './proxy-bench.js';
import { startBenchServers } from './servers.js';

/**
 * Where a proxy's CPU per tunnel goes, thread by thread: the bench's (a) scenario (a new CONNECT tunnel, a full TLS
 * handshake and a 1 KiB GET, c=50) after a warm-up, with each thread's user and system time and its context
 * switches from /proc/PID/task/*, per tunnel. With `--strace FILE`, strace counts the system calls of the measured
 * tunnels into FILE (`-c`; slower, so its times are not the CPU figures').
 *
 *   node dist/bench/tunnel-threads.js [egress-guard|squid] [tunnels=4000] [warm-up=3000] [--strace FILE]
 *
 * `BENCH_RELAY`, `BENCH_RELAY_THREAD_AFTER` and `BENCH_EGRESS_GUARD_CLI` pick egress-guard's relay, where its native relay
 * moves a tunnel's first bytes, and its build, as for the bench.
 */

interface ThreadTimes {
  name: string;
  userMs: number;
  systemMs: number;
  voluntary: number;
  involuntary: number;
}

/** Clock ticks per second of /proc's times (USER_HZ, 100 on Linux). */
const TICK_MS = 10;

function threadTimes(pid: number): Map<string, ThreadTimes> {
  const threads = new Map<string, ThreadTimes>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      // Fields after the name (which may hold spaces): state is the first, utime the 12th, stime the 13th.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const name = tid === String(pid) ? 'main' : `${stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))} ${tid}`;
      threads.set(tid, {
        name,
        userMs: Number(fields[11]) * TICK_MS,
        systemMs: Number(fields[12]) * TICK_MS,
        voluntary: Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0),
        involuntary: Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0),
      });
    } catch {
      // The thread ended meanwhile.
    }
  }
  return threads;
}

const args = process.argv.slice(2);
const straceAt = args.indexOf('--strace');
const straceFile = straceAt >= 0 ? args.splice(straceAt, 2)[1] : undefined;
const which = args[0] ?? 'egress-guard';
const tunnels = Number(args[1] ?? 4000);
const warmUp = Number(args[2] ?? 3000);
if (which !== 'egress-guard' && which !== 'squid') {
  console.error('usage: tunnel-threads [egress-guard|squid] [tunnels] [warm-up] [--strace FILE]');
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'eg-tunnel-threads-'));
const servers = await startBenchServers();
let proxy: RunningProxy | undefined;
let tracer: ChildProcess | undefined;
try {
  proxy = which === 'squid' ? await startSquid() : await startEgressGuard({ eventsFile: join(dir, 'events.log') });
  const task = tunnelTlsTask(proxy, servers);
  await runLoad({ count: warmUp, timeCapMs: 120_000, concurrency: 50, task });
  if (straceFile) {
    tracer = spawn('strace', ['-c', '-f', '-p', String(proxy.pid), '-o', straceFile], { stdio: 'ignore' });
    // strace attaches to every thread before the count starts.
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
  const before = threadTimes(proxy.pid);
  const load = await runLoad({ count: tunnels, timeCapMs: 120_000, concurrency: 50, task });
  const after = threadTimes(proxy.pid);
  if (tracer) {
    const exited = new Promise((resolve) => tracer!.once('exit', resolve));
    tracer.kill('SIGINT');
    await exited;
    tracer = undefined;
  }
  const per = (value: number) => (value / load.completed).toFixed(2);
  const us = (ms: number) => Math.round((ms * 1000) / load.completed);
  console.log(`${which}: ${load.completed} tunnels (${load.failed} failed) in ${Math.round(load.elapsedMs)} ms; load average ${readFileSync('/proc/loadavg', 'utf8').trim()}`);
  let total = 0;
  for (const [tid, end] of after) {
    const start = before.get(tid) ?? { userMs: 0, systemMs: 0, voluntary: 0, involuntary: 0 };
    const user = end.userMs - start.userMs;
    const system = end.systemMs - start.systemMs;
    const switches = end.voluntary - start.voluntary + end.involuntary - start.involuntary;
    total += user + system;
    if (user + system === 0 && switches === 0) continue;
    console.log(
      `  ${end.name.padEnd(22)} user ${us(user)} µs, system ${us(system)} µs per tunnel; context switches ${per(end.voluntary - start.voluntary)} voluntary, ${per(end.involuntary - start.involuntary)} involuntary`,
    );
  }
  console.log(`  all threads ${us(total)} µs per tunnel${straceFile ? ` (system calls counted in ${straceFile})` : ''}`);
} finally {
  if (tracer) tracer.kill('SIGKILL');
  await proxy?.stop();
  await servers.close();
  rmSync(dir, { recursive: true, force: true });
}
