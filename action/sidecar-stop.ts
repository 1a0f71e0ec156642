import { isSameProcess, stopProcess, waitUntilGone, type ProcessIdentity } from './process-identity.js';
import type { Privileged } from './privileged.js';
import type { ActionState } from './state.js';

/**
 * How long post waits for egress-guard to go after SIGTERM (it drains its tunnels, drain-timeout 10 s, then the audit
 * supervisor runs its teardown), and for a supervisor that is already tearing down to finish.
 */
const STOP_TIMEOUT_MS = 15_000;

type SidecarProcesses = Pick<ActionState, 'sidecarPid' | 'sidecarStart' | 'egressGuard'>;

/** The process main started (sudo, the audit supervisor...), when the state names it with its start time. */
function launcherOf(state: SidecarProcesses): ProcessIdentity | undefined {
  return state.sidecarPid !== undefined && state.sidecarStart !== undefined ? { pid: state.sidecarPid, start: state.sidecarStart } : undefined;
}

/**
 * Whether egress-guard exited before post came (a crash, the OOM killer, a kill): by egress-guard's own process. The
 * launcher is no measure of it: the audit supervisor runs on after egress-guard while it tears down, and post coming
 * in that moment took that for egress-guard running, then 'stopped' it. A state without egress-guard's own identity
 * (main could not find it) is judged by the launcher, as before. Undefined: the state names no process post can
 * tell from a later one with its pid (no start time), so post says nothing either way.
 */
export function egressGuardExited(state: SidecarProcesses): boolean | undefined {
  if (state.egressGuard) return !isSameProcess(state.egressGuard);
  const launcher = launcherOf(state);
  return launcher ? !isSameProcess(launcher) : undefined;
}

/**
 * Post's stop: 'gone' when egress-guard had exited already (post signals nothing then, and waits, bounded, for an
 * audit supervisor still tearing down to finish, so post's own teardown does not run beside it); else SIGTERM
 * through the launcher (sudo passes it on; the audit supervisor passes it on and then tears down), or to
 * egress-guard itself when the launcher is gone. 'unknown': nothing is signalled (no start time in the state).
 */
export async function stopEgressGuard(root: Privileged, state: SidecarProcesses, timeoutMs = STOP_TIMEOUT_MS): Promise<'stopped' | 'killed' | 'gone' | 'unknown' | undefined> {
  if (state.sidecarPid === undefined) return undefined;
  const launcher = launcherOf(state);
  const exited = egressGuardExited(state);
  if (!launcher || exited === undefined) return 'unknown';
  if (exited) {
    await waitUntilGone(launcher, timeoutMs);
    return 'gone';
  }
  const target = isSameProcess(launcher) || !state.egressGuard ? launcher : state.egressGuard;
  return stopProcess(root, target, timeoutMs);
}
