/**
 * The README's first command, run as written (after its `npm ci &&`, which CI has done): it must start the main job
 * with what its comment promises (the proxy on 127.0.0.1:3128, DNS on 127.0.0.1:53 and [::1]:53, the embedded
 * default policy, audit mode) and decide a request. Run in a network namespace of its own, so the default ports are
 * free whatever the machine runs, and its upstream DNS server is unreachable. Needs root.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { destroyNamespaceSync, must, run } from './netns.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const ns = `eg-quickstart-${process.pid}`;
const ORIGIN_PORT = 8080;
const children: ChildProcess[] = [];

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

function spawnInNamespace(command: string): ChildProcess {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EGRESS_') && !k.startsWith('GITHUB_')));
  const child = spawn('ip', ['netns', 'exec', ns, 'bash', '-c', `exec ${command}`], { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return child;
}

before(async () => {
  await must('ip', ['netns', 'add', ns]);
  await must('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
});

after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  destroyNamespaceSync(ns);
});

test("the README's first command starts the proxy and DNS on their default addresses, in audit mode, and decides a request", { timeout: 60_000 }, async () => {
  const { setup, command } = quickStartCommand();
  assert.equal(setup, 'npm ci', 'the first command sets the machine up with npm ci');
  assert.doesNotMatch(command, /\bnpx\b/, 'npx re-runs the build in its cache on a first call (README)');

  const origin = spawnInNamespace(
    `${JSON.stringify(process.execPath)} -e "require('http').createServer((q, s) => s.end('hello from the origin')).listen(${ORIGIN_PORT}, '127.0.0.1')"`,
  );
  const guard = spawnInNamespace(command);
  const lines: Array<Record<string, unknown>> = [];
  let stderr = '';
  guard.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const waiters: Array<() => void> = [];
  createInterface({ input: guard.stdout! }).on('line', (text) => {
    try {
      lines.push(JSON.parse(text) as Record<string, unknown>);
    } catch {
      return; // not a JSON line
    }
    for (const wake of waiters.splice(0)) wake();
  });
  const exited = new Promise<number | null>((resolve) => guard.on('exit', (code) => resolve(code)));
  const waitFor = async (what: string, predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = lines.find(predicate);
      if (found) return found;
      if (guard.exitCode !== null) assert.fail(`egress-guard exited (${guard.exitCode}) before ${what}: ${stderr}`);
      if (Date.now() > deadline) assert.fail(`no line for ${what} within ${timeoutMs} ms; stderr: ${stderr}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 200).unref();
      });
    }
  };

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

  guard.kill('SIGTERM');
  assert.equal(await exited, 0, `egress-guard stops cleanly on SIGTERM: ${stderr}`);
  origin.kill('SIGKILL');
});
