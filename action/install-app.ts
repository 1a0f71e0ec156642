import { lstatSync } from 'node:fs';
import path from 'node:path';
import type { ActionLayout } from './layout.js';
import type { Privileged } from './privileged.js';
import type { SidecarUser } from './sidecar-user.js';

/**
 * Copy the bundle (action-dist/: egress-guard.js and its prebuilt addons) and the node binary running this
 * action into the state directory. The runner's checkout and node live under its home, which another user
 * may not be allowed to enter; the copies are root-owned and readable by everyone, in a directory that is root's.
 */
export async function installApp(root: Privileged, layout: ActionLayout, bundleDir: string, user: SidecarUser): Promise<void> {
  // Root's. An earlier version of the action gave it to the egress-guard user: nothing in it can be trusted then (a
  // symlink at spool/ or sidecar/ would have the `install -d -o` below chown its target, /etc say, to that user; a
  // resolv.conf.saved of its own would be copied onto /etc/resolv.conf), so it goes whole and is made anew.
  if (!rootsOnly(layout.stateDir)) await root.must('rm', ['-rf', layout.stateDir]);
  await root.must('install', ['-d', '-m', '0755', '-o', '0', '-g', '0', layout.stateDir]);
  // install -d follows a symlink at the path it is given: only ever a real directory here (no one else can make one
  // in the root's directory above, but what an earlier run left is checked all the same).
  for (const dir of [layout.spoolDir, layout.sidecarStateDir]) {
    if (lstatSync(dir, { throwIfNoEntry: false })?.isDirectory() === false) await root.must('rm', ['-f', dir]);
  }
  await root.must('rm', ['-rf', layout.appDir]);
  await root.must('cp', ['-R', bundleDir, layout.appDir]);
  await root.must('chmod', ['-R', 'a+rX,go-w', layout.appDir]);
  await root.must('install', ['-m', '0755', process.execPath, layout.node]);
  // Present from the start, owned by egress-guard, readable by the runner user (post reads it, maybe without sudo).
  await root.must('install', ['-m', '0644', '-o', String(user.uid), '-g', String(user.gid), '/dev/null', layout.eventsFile]);
  await root.must('install', ['-d', '-m', '0700', '-o', String(user.uid), '-g', String(user.gid), layout.spoolDir]);
  await root.must('install', ['-d', '-m', '0755', '-o', String(user.uid), '-g', String(user.gid), layout.sidecarStateDir]);
}

/** Whether `dir` is absent or a directory only root can change (owned by root, no write for group or others). */
function rootsOnly(dir: string): boolean {
  const stat = lstatSync(dir, { throwIfNoEntry: false });
  return !stat || (stat.isDirectory() && stat.uid === 0 && (stat.mode & 0o022) === 0);
}

/** The policy file of the repository, copied where the egress-guard user can read it (the workspace is the runner's). */
export async function installPolicyFile(root: Privileged, layout: ActionLayout, workspace: string, file: string, user: SidecarUser): Promise<string> {
  const source = path.resolve(workspace, file);
  await root.must('install', ['-m', '0600', '-o', String(user.uid), '-g', String(user.gid), source, layout.policyFile]);
  return layout.policyFile;
}
