/**
 * The Node the simulated runner runs the action with, as a GitHub runner has its own in externals/: Node 24, which
 * action.yml's `runs.using: node24` names (not the node running the tests, 20 on the test host). It comes from
 * scripts/node24.sh (the npm package node-linux-ARCH, fetched once into a cache under /tmp, also used by
 * scripts/test-node24.sh). Never skipped: without it the test fails with the script's reason.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from './netns.js';

const repository = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** A fetch fails within about half a minute (npm's own retries); unpacking takes seconds. */
const FETCH_TIMEOUT_MS = 180_000;

let pending: Promise<string> | undefined;

/** The directory of the official Node 24 build (bin/node inside), fetched on the first call of the process. */
export function node24Dir(): Promise<string> {
  pending ??= (async () => {
    const result = await run('bash', [path.join(repository, 'scripts/node24.sh')], { timeoutMs: FETCH_TIMEOUT_MS });
    const node = result.stdout.trim();
    if (result.code !== 0 || !node) {
      pending = undefined;
      throw new Error(`no Node 24 for the simulated runner (scripts/node24.sh exited ${result.code}): ${result.stderr.trim()}`);
    }
    return path.dirname(path.dirname(node));
  })();
  return pending;
}
