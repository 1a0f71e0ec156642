/**
 * The README's first command, run as written (after its `npm ci &&`, which CI has done): it must start the main job
 * with what its comment promises (the proxy on 127.0.0.1:3128, DNS on 127.0.0.1:53 and [::1]:53, the embedded
 * default policy, audit mode) and decide a request. Run in a network namespace of its own, so the default ports are
 * free whatever the machine runs, and its upstream DNS server is unreachable. Needs root.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { spawnInNamespace, type NamespaceProcess } from './namespace-process.js';
import { destroyNamespaceSync, must, run } from './netns.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const ns = `eg-quickstart-${process.pid}`;
const ORIGIN_PORT = 8080;
const processes: NamespaceProcess[] = [];

/** The quick start's first line: `npm ci && <command>   # comment`. */
function quickStartCommand(): { setup: string; command: string } {
  const readme = readFileSync(path.join(repo, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Quick start'));
  const block = /```sh\n([^\n]*)\n/.exec(section);
  assert.ok(block, 'the README has a ```sh block under "## Quick start"');
  const line = block[1].replace(/\s+#.*$/, '').trim();
  const [setup, ...rest] = line.split('&&').map((part) => part.trim());
  return { setup, command: rest.join(' && ') };
}

before(async () => {
  await must('ip', ['netns', 'add', ns]);
  await must('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
});

after(() => {
  for (const started of processes) started.kill();
  destroyNamespaceSync(ns);
});

test("the README's first command starts the proxy and DNS on their default addresses, in audit mode, and decides a request", { timeout: 60_000 }, async () => {
  const { setup, command } = quickStartCommand();
  assert.equal(setup, 'npm ci', 'the first command sets the machine up with npm ci');
  assert.doesNotMatch(command, /\bnpx\b/, 'npx re-runs the build in its cache on a first call (README)');

  const origin = spawnInNamespace(
    ns,
    `${JSON.stringify(process.execPath)} -e "require('http').createServer((q, s) => s.end('hello from the origin')).listen(${ORIGIN_PORT}, '127.0.0.1')"`,
    repo,
  );
  const guard = spawnInNamespace(ns, command, repo);
  processes.push(origin, guard);
  const { waitFor } = guard;

  const proxy = await waitFor('the proxy listening', (l) => l.msg === 'listening' && l.listener === 'proxy');
  assert.deepEqual([proxy.address, proxy.port], ['127.0.0.1', 3128]);
  assert.equal((proxy.policy as { mode: string }).mode, 'audit');
  await waitFor('DNS on 127.0.0.1:53', (l) => l.msg === 'listening' && l.listener === 'dns' && l.address === '127.0.0.1' && l.port === 53);
  await waitFor('DNS on [::1]:53', (l) => l.msg === 'listening' && l.listener === 'dns' && l.address === '::1' && l.port === 53);

  // A raw-IP request: refused by the default policy, passed in audit mode, reported as would-block.
  const curl = await run('ip', ['netns', 'exec', ns, 'curl', '-sS', '--max-time', '10', '-x', 'http://127.0.0.1:3128', `http://127.0.0.1:${ORIGIN_PORT}/`], { timeoutMs: 15_000 });
  assert.equal(curl.code, 0, curl.stderr);
  assert.equal(curl.stdout, 'hello from the origin');
  const decision = await waitFor('the request decision', (l) => l.event === 'decision' && l.kind === 'http' && l.port === ORIGIN_PORT);
  assert.deepEqual([decision.decision, decision.reason], ['would-block', 'raw-ip']);

  // A lookup on each DNS address is decided (the name is not in the default policy); the answer itself does not
  // matter here: the namespace has no upstream.
  for (const server of ['127.0.0.1', '::1']) {
    const name = `quick-start-${server === '::1' ? 'v6' : 'v4'}.test`;
    await run('ip', ['netns', 'exec', ns, 'dig', `@${server}`, name, 'A', '+time=2', '+tries=1'], { timeoutMs: 10_000 });
    const dns = await waitFor(`the DNS decision for ${name}`, (l) => l.event === 'decision' && l.kind === 'dns' && l.host === name);
    assert.equal(dns.decision, 'would-block');
  }

  guard.child.kill('SIGTERM');
  assert.equal(await guard.exited, 0, `egress-guard stops cleanly on SIGTERM: ${guard.stderr()}`);
  origin.kill();
});
