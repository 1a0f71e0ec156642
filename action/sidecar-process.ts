import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { PORTS, type ActionLayout } from './layout.js';
import { findDescendant, type ProcessIdentity } from './process-identity.js';
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

/** egress-guard's own argv: what setpriv execs, under sudo and (audit mode) the supervisor's shell. */
function egressGuardArgv(layout: ActionLayout): string[] {
  return [layout.node, layout.entry, 'run'];
}

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
    ...egressGuardArgv(layout),
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
 * egress-guard itself, in the tree of the process main started (`launcherPid`: sudo, the audit supervisor, or, when
 * main runs as root in block mode, egress-guard itself). Post asks whether this process still runs, not the launcher:
 * the audit supervisor outlives egress-guard by its teardown, and sudo by a moment.
 */
export function findEgressGuard(launcherPid: number, layout: ActionLayout): ProcessIdentity | undefined {
  return findDescendant(launcherPid, egressGuardArgv(layout));
}
