import { lstatSync } from 'node:fs';
import { removeContainerRules } from '../rules/run-container-rules.js';
import { removeFrameGuard } from '../rules/run-frame-guard.js';
import { execRunner, removeRules, type CommandRunner } from '../rules/run-rules.js';
import { restoreResolvConf } from './job-dns.js';
import type { ActionLayout } from './layout.js';
import type { Privileged } from './privileged.js';

/**
 * Give the job its network back: the redirect rules (host and containers) removed, /etc/resolv.conf as it was.
 * Idempotent; runs as root (post through sudo, and the audit supervisor when egress-guard dies: teardown.ts).
 * Each part is tried whatever became of the others: until 2026-12-02 a host rule that could not be removed (the
 * xtables lock held past its wait) left the container rules and the job's resolv.conf, which names egress-guard's
 * dead DNS listener, in place, and audit mode broke the job's DNS. What failed is thrown at the end, with what was done.
 */
export async function restoreNetwork(root: Privileged, layout: ActionLayout, run: CommandRunner = execRunner): Promise<string[]> {
  const done: string[] = [];
  const failed: string[] = [];
  const attempt = async (part: string, undo: () => Promise<string[]>) => {
    try {
      done.push(...(await undo()));
    } catch (err) {
      failed.push(`${part}: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
  await attempt('the redirect rules', () => removeRules(run));
  await attempt('the guard against packet-socket frames', () => removeFrameGuard(run));
  await attempt('the rules for containers', () => removeContainerRules(run));
  await attempt('/etc/resolv.conf', async () => {
    if (!lstatSync(layout.savedResolvConf, { throwIfNoEntry: false })) return [];
    await restoreResolvConf(root, layout.savedResolvConf);
    // Gone once used: a later job on this runner must never get this job's copy back.
    await root.must('rm', ['-f', layout.savedResolvConf]);
    return ['/etc/resolv.conf restored'];
  });
  if (failed.length > 0) throw new NetworkTeardownError(failed, done);
  return done;
}

/** Parts of the teardown that failed (each with its error), and what was undone all the same. */
export class NetworkTeardownError extends Error {
  constructor(
    readonly failed: readonly string[],
    readonly done: readonly string[],
  ) {
    super(`not undone: ${failed.join('; ')}${done.length > 0 ? `; undone: ${done.join('; ')}` : ''}`);
    this.name = 'NetworkTeardownError';
  }
}
