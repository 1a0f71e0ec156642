import assert from 'node:assert/strict';
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { actionLayout, type ActionLayout } from '../../action/layout.js';
import { privileged } from '../../action/privileged.js';
import { identifyProcess, isSameProcess, type ProcessIdentity } from '../../action/process-identity.js';
import { findEgressGuard, spawnSidecar } from '../../action/sidecar-process.js';
import { egressGuardExited, stopEgressGuard } from '../../action/sidecar-stop.js';
import { idleScript, recordingRoot } from '../helpers/action-processes.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

/** The supervisor's setpriv runs "egress-guard" as this user (any user but root). */
const NOBODY = { name: 'nobody', uid: 65534, gid: 65534 };

/**
 * A layout whose egress-guard.js idles until SIGTERM, and whose teardown.js (run by the audit supervisor, as the real
 * one) says when it starts, then holds until the test writes `release` (at most 20 s) and says when it is done.
 */
function fakeLayout(): { layout: ActionLayout; marks: { started: string; release: string; done: string } } {
  const dir = tempDir('egact-stop-');
  chmodSync(dir, 0o755);
  const marks = { started: path.join(dir, 'teardown-started'), release: path.join(dir, 'release'), done: path.join(dir, 'teardown-done') };
  const teardown = path.join(dir, 'teardown.js');
  writeFileSync(
    teardown,
    `const fs = require('node:fs');
fs.writeFileSync(${JSON.stringify(marks.started)}, '');
const deadline = Date.now() + 20_000;
const tick = () => {
  if (!fs.existsSync(${JSON.stringify(marks.release)}) && Date.now() < deadline) return setTimeout(tick, 20);
  fs.writeFileSync(${JSON.stringify(marks.done)}, '');
};
tick();
`,
  );
  const layout = { ...actionLayout({ RUNNER_TEMP: dir }), node: process.execPath, entry: idleScript(dir), teardown, logFile: path.join(dir, 'egress-guard.log') };
  return { layout, marks };
}

type AuditSidecar = { launcher: ProcessIdentity; state: { sidecarPid: number; sidecarStart: string; egressGuard: ProcessIdentity }; marks: ReturnType<typeof fakeLayout>['marks'] };

/**
 * main's part (the audit supervisor started, egress-guard found below it, as main saves them in the state), then
 * `body`; the supervisor's process group (it, egress-guard, its teardown) is killed at the end. `released`: its
 * teardown does not hold.
 */
async function withAuditSidecar(released: boolean, body: (sidecar: AuditSidecar) => Promise<void>): Promise<void> {
  const { layout, marks } = fakeLayout();
  if (released) writeFileSync(marks.release, '');
  const sidecar = spawnSidecar(privileged(true), layout, NOBODY, {}, 'audit');
  const launcher = identifyProcess(sidecar.pid!)!;
  try {
    let egressGuard: ProcessIdentity | undefined;
    await waitFor('egress-guard under the audit supervisor', () => (egressGuard = findEgressGuard(sidecar.pid!, layout)) !== undefined, 10_000);
    await body({ launcher, state: { sidecarPid: launcher.pid, sidecarStart: launcher.start, egressGuard: egressGuard! }, marks });
  } finally {
    try {
      process.kill(-launcher.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

test("post while the audit supervisor tears down after egress-guard exited: 'gone' (the notice), nothing signalled, post waits for that teardown", { timeout: 60_000 }, () =>
  withAuditSidecar(false, async ({ launcher, state, marks }) => {
    process.kill(state.egressGuard.pid, 'SIGKILL');
    await waitFor('the supervisor to start its teardown', () => existsSync(marks.started), 10_000);
    assert.equal(isSameProcess(launcher), true, 'the supervisor runs on while it tears down');
    // Post comes now: the supervisor is still there, egress-guard is not.
    const root = recordingRoot(false);
    assert.equal(egressGuardExited(state), true, 'with disable-sudo post only asks this');
    const stopping = stopEgressGuard(root, state, 30_000);
    writeFileSync(marks.release, '');
    assert.equal(await stopping, 'gone', 'egress-guard exited during the job, and post took the supervisor for it');
    assert.deepEqual(root.calls, [], 'post signalled the supervisor in the middle of its teardown');
    assert.ok(existsSync(marks.done), "post went on before the supervisor's teardown was done (its own would run beside it)");
    assert.equal(isSameProcess(launcher), false);
  }),
);

test("post with egress-guard running: SIGTERM through the audit supervisor, which passes it on and tears down: 'stopped', no notice", { timeout: 60_000 }, () =>
  withAuditSidecar(true, async ({ launcher, state, marks }) => {
    assert.equal(egressGuardExited(state), false);
    const root = recordingRoot(true);
    assert.equal(await stopEgressGuard(root, state, 30_000), 'stopped');
    assert.deepEqual(root.calls, [['kill', '-TERM', String(launcher.pid)]]);
    assert.equal(isSameProcess(state.egressGuard), false);
    assert.ok(existsSync(marks.done), 'the supervisor did not tear down');
  }),
);

test("a state without egress-guard's own process is judged by the launcher; one without start times signals nothing", { timeout: 60_000 }, () =>
  withAuditSidecar(true, async ({ launcher, state }) => {
    const byLauncher = { sidecarPid: launcher.pid, sidecarStart: launcher.start };
    assert.equal(egressGuardExited(byLauncher), false);
    const blind = recordingRoot(false);
    assert.equal(await stopEgressGuard(blind, { sidecarPid: launcher.pid }, 1_000), 'unknown');
    assert.equal(egressGuardExited({ sidecarPid: launcher.pid }), undefined);
    assert.deepEqual(blind.calls, [], 'a pid without its start time was signalled');
    assert.equal(await stopEgressGuard(recordingRoot(true), byLauncher, 30_000), 'stopped');
    assert.equal(isSameProcess(state.egressGuard), false);
    assert.equal(egressGuardExited(byLauncher), true);
    assert.equal(await stopEgressGuard(recordingRoot(false), byLauncher, 1_000), 'gone');
  }),
);
