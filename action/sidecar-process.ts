import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { PORTS, type ActionLayout } from './layout.js';
import type { Privileged } from './privileged.js';
import type { SidecarUser } from './sidecar-user.js';

/**
 * Audit mode never breaks a job: a root shell waits for egress-guard and, when it exits however it exits (even
 * SIGKILL), runs teardown.js: the redirect rules go, as the container's entrypoint does, and /etc/resolv.conf comes
 * back (the job's lookups would otherwise go to a dead listener). SIGTERM (post) is passed on to egress-guard.
 */
const AUDIT_SUPERVISOR = `"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do status=0; wait "$child" || status=$?; done
"$EGRESS_ACTION_NODE" "$EGRESS_ACTION_TEARDOWN" >&2 || true
exit "$status"`;

/**
 * `egress-guard run` as its own user, left running when this step ends. Block mode: nothing between sudo and
 * egress-guard, so the rules outlive it (fail closed). Audit mode: under AUDIT_SUPERVISOR.
 */
export function spawnSidecar(root: Privileged, layout: ActionLayout, user: SidecarUser, env: Record<string, string>, mode: 'audit' | 'block'): ChildProcess {
  const output = openSync(layout.logFile, 'a');
  // As the container's entrypoint does: no groups, and only the capability to bind port 53.
  const setpriv = [
    'setpriv',
    `--reuid=${user.uid}`,
    `--regid=${user.gid}`,
    '--clear-groups',
    '--inh-caps=-all,+net_bind_service',
    '--ambient-caps=-all,+net_bind_service',
    '--no-new-privs',
    '--',
    layout.node,
    layout.entry,
    'run',
  ];
  const supervisorEnv = { EGRESS_ACTION_NODE: layout.node, EGRESS_ACTION_TEARDOWN: layout.teardown };
  const [command, ...args] =
    mode === 'audit'
      ? root.argv('sh', ['-c', AUDIT_SUPERVISOR, 'egress-guard-supervisor', ...setpriv], { ...env, ...supervisorEnv })
      : root.argv(setpriv[0]!, setpriv.slice(1), env);
  const child = spawn(command!, args, {
    detached: true,
    stdio: ['ignore', output, output],
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env, ...supervisorEnv },
  });
  child.unref();
  return child;
}

/**
 * When process `pid` started (clock ticks since boot: /proc/PID/stat's 22nd field, readable for any process), or
 * undefined when there is no such process. With the pid, it names one process: a pid is reused once its process is gone.
 */
export function processStartTime(pid: number, readStat = (file: string) => readFileSync(file, 'utf8')): string | undefined {
  let stat: string;
  try {
    stat = readStat(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // The command name (field 2, in parentheses) may hold spaces and parentheses: the fields after its last ')'.
  const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  return start !== undefined && /^\d+$/.test(start) ? start : undefined;
}

/**
 * Whether process `pid` is there (kill -0: EPERM, another user's process, is there too) and, given `start` (its
 * processStartTime when main started it), still the same process and not a later one that got its pid.
 */
export function processAlive(pid: number, start?: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  return start === undefined || processStartTime(pid) === start;
}

function logTail(layout: ActionLayout): string {
  try {
    return readFileSync(layout.logFile, 'utf8').slice(-3000);
  } catch {
    return '(no output)';
  }
}

/**
 * Throws when something already listens on egress-guard's admin port (127.0.0.1:`port`): an egress-guard an earlier
 * job left running (disable-sudo leaves it until the runner is gone; a self-hosted runner outlives the job). Its
 * /healthz would answer for the new one, which cannot bind and exits: the job's traffic would go through the earlier
 * job's egress-guard (its policy, its events file, which main has just replaced: this job's report empty).
 */
export async function assertAdminPortFree(port: number = PORTS.admin, timeoutMs = 2000): Promise<void> {
  const listening = await new Promise<boolean>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (answer: boolean) => {
      socket.destroy();
      resolve(answer);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
  if (listening)
    throw new Error(
      `something already listens on 127.0.0.1:${port}, egress-guard's admin port: an egress-guard an earlier job left running (disable-sudo on a self-hosted runner)? Stop it (or use a fresh runner) first`,
    );
}

/** Until /healthz answers 200 (the admin listener starts after every other listener); throws with egress-guard's output. */
export async function waitUntilHealthy(child: ChildProcess, layout: ActionLayout, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`egress-guard exited (${child.exitCode ?? child.signalCode}) at start:\n${logTail(layout)}`);
    try {
      const response = await fetch(`http://127.0.0.1:${PORTS.admin}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`egress-guard did not answer on 127.0.0.1:${PORTS.admin}/healthz within ${timeoutMs} ms:\n${logTail(layout)}`);
}

/**
 * SIGTERM (egress-guard drains its tunnels, drain-timeout 10 s), then SIGKILL if it is still there. `start` (its
 * processStartTime when main started it): a pid now another process's is 'gone', and root signals nothing (the
 * process that has the pid now is not ours to kill, and egress-guard exited during the job).
 */
export async function stopSidecar(root: Privileged, pid: number, options: { start?: string; timeoutMs?: number } = {}): Promise<'stopped' | 'killed' | 'gone'> {
  const { start, timeoutMs = 15_000 } = options;
  if (!processAlive(pid, start)) return 'gone';
  await root.run('kill', ['-TERM', String(pid)]);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!processAlive(pid, start)) return 'stopped';
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  if (processAlive(pid, start)) await root.run('kill', ['-KILL', String(pid)]);
  return 'killed';
}
