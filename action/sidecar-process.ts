import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { PORTS, type ActionLayout } from './layout.js';
import type { Privileged } from './privileged.js';
import type { SidecarUser } from './sidecar-user.js';

/** `egress-guard run` as its own user, left running when this step ends; returns the PID (sudo's, or setpriv's as root). */
export function spawnSidecar(root: Privileged, layout: ActionLayout, user: SidecarUser, env: Record<string, string>): ChildProcess {
  const output = openSync(layout.logFile, 'a');
  // As the container's entrypoint does: no groups, and only the capability to bind port 53.
  const setpriv = [
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
  const [command, ...args] = root.argv('setpriv', setpriv, env);
  const child = spawn(command!, args, { detached: true, stdio: ['ignore', output, output], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
  child.unref();
  return child;
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function logTail(layout: ActionLayout): string {
  try {
    return readFileSync(layout.logFile, 'utf8').slice(-3000);
  } catch {
    return '(no output)';
  }
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

/** SIGTERM (egress-guard drains its tunnels, drain-timeout 10 s), then SIGKILL if it is still there. */
export async function stopSidecar(root: Privileged, pid: number, timeoutMs = 15_000): Promise<'stopped' | 'killed' | 'gone'> {
  if (!processAlive(pid)) return 'gone';
  await root.run('kill', ['-TERM', String(pid)]);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!processAlive(pid)) return 'stopped';
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await root.run('kill', ['-KILL', String(pid)]);
  return 'killed';
}
