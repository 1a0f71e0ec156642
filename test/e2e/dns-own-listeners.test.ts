/**
 * A resolv.conf that names egress-guard itself (the job's resolv.conf pointed at it, then egress-guard restarted, or
 * started after): no listener forwards to one of egress-guard's own. Before, only the listener on that very address
 * left it out; the [::1]:53 listener forwarded to 127.0.0.1:53, so one lookup was decided twice (two decision events)
 * and answered SERVFAIL by the second. Run with the default dns-listen in a network namespace whose resolv.conf
 * (/etc/netns/NS/resolv.conf, which `ip netns exec` mounts) says `nameserver 127.0.0.1`. Needs root.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { spawnInNamespace, type NamespaceProcess } from './namespace-process.js';
import { destroyNamespaceSync, must, run } from './netns.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const ns = `eg-ownlisten-${process.pid}`;
let guard: NamespaceProcess | undefined;

before(async () => {
  await must('ip', ['netns', 'add', ns]);
  await must('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  mkdirSync(`/etc/netns/${ns}`, { recursive: true });
  writeFileSync(`/etc/netns/${ns}/resolv.conf`, 'nameserver 127.0.0.1\nnameserver ::1\n');
});

after(() => {
  guard?.kill();
  destroyNamespaceSync(ns);
});

test('resolv.conf naming egress-guard: each lookup decided once, on whichever listener it reaches', { timeout: 60_000 }, async () => {
  guard = spawnInNamespace(ns, `${JSON.stringify(process.execPath)} dist/egress-guard.js run`, repo, { EGRESS_ALLOWED_ENDPOINTS: '*.allowed.test' });
  for (const address of ['127.0.0.1', '::1']) {
    const ready = await guard.waitFor(`DNS on ${address}`, (l) => l.msg === 'listening' && l.listener === 'dns' && l.address === address);
    assert.deepEqual(ready.upstreams, [], `no upstream left for ${address}: both name egress-guard`);
  }
  const names = ['via-v6.allowed.test', 'via-v4.allowed.test', 'refused-via-v6.test'];
  const servers = ['::1', '127.0.0.1', '::1'];
  for (const [i, name] of names.entries()) {
    const dig = await run('ip', ['netns', 'exec', ns, 'dig', `@${servers[i]}`, name, 'A', '+time=3', '+tries=1'], { timeoutMs: 10_000 });
    assert.equal(dig.code, 0, dig.stdout + dig.stderr);
  }
  // Events are written in order: once the last lookup's decision is out, a second decision of an earlier one (made
  // before its answer went back) would be out too.
  await guard.waitFor('the last decision', (l) => l.event === 'decision' && l.host === names.at(-1));
  const decisions = guard.lines.filter((l) => l.event === 'decision' && l.kind === 'dns');
  assert.deepEqual(
    decisions.map((l) => [l.host, l.decision]),
    [
      ['via-v6.allowed.test', 'allowed'],
      ['via-v4.allowed.test', 'allowed'],
      ['refused-via-v6.test', 'would-block'],
    ],
  );
});
