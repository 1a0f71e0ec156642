/**
 * action-dist/teardown.js: as root, remove the redirect rules and restore /etc/resolv.conf (network-teardown.ts).
 * Run by post (through sudo) and by audit mode's supervisor when egress-guard exits.
 */
import { restoreNetwork } from './network-teardown.js';
import { actionLayout } from './layout.js';
import { privileged } from './privileged.js';

restoreNetwork(privileged(true), actionLayout(process.env)).then(
  (done) => process.stdout.write(`egress-guard: ${done.length > 0 ? done.join('; ') : 'nothing to undo'}\n`),
  (err: unknown) => {
    process.stderr.write(`egress-guard teardown: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
