import { lstatSync } from 'node:fs';
import { removeContainerRules } from '../rules/run-container-rules.js';
import { removeRules } from '../rules/run-rules.js';
import { restoreResolvConf } from './job-dns.js';
import type { ActionLayout } from './layout.js';
import type { Privileged } from './privileged.js';

/**
 * Give the job its network back: the redirect rules (host and containers) removed, /etc/resolv.conf as it was.
 * Idempotent; runs as root (post through sudo, and the audit supervisor when egress-guard dies: teardown.ts).
 */
export async function restoreNetwork(root: Privileged, layout: ActionLayout): Promise<string[]> {
  const done = [...(await removeRules()), ...(await removeContainerRules())];
  if (lstatSync(layout.savedResolvConf, { throwIfNoEntry: false })) {
    await restoreResolvConf(root, layout.savedResolvConf);
    // Gone once used: a later job on this runner must never get this job's copy back.
    await root.must('rm', ['-f', layout.savedResolvConf]);
    done.push('/etc/resolv.conf restored');
  }
  return done;
}
