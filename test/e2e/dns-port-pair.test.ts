/**
 * The DNS server (and the tests' zone server) share one port number between UDP and TCP. With port 0
 * the kernel picks the UDP port, and TCP on that number may already be held: the start must then move
 * to another pair, never fail (a failed start in CI once left a UDP socket open and hung the run).
 * Needs root: the probe runs in a network namespace of its own with a two-port ephemeral range.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { destroyNamespaceSync, must, run } from './netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ns = `eg-portpair-${process.pid}`;
const TAKEN = 40000;

before(async () => {
  await must('ip', ['netns', 'add', ns]);
  await must('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  await must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', `net.ipv4.ip_local_port_range=${TAKEN} ${TAKEN + 1}`]);
});

after(() => destroyNamespaceSync(ns));

test('with port 0 and the picked number taken over TCP, UDP and TCP move together to a free pair', async () => {
  const probe = await run('ip', ['netns', 'exec', ns, process.execPath, path.join(here, '../helpers/port-pair-probe.js'), String(TAKEN)], { timeoutMs: 30_000 });
  assert.equal(probe.code, 0, probe.stderr);
  const result = JSON.parse(probe.stdout.trim().split('\n').pop()!) as { zone: number[]; dns: Array<[number, number]> };
  assert.deepEqual(result.zone, [TAKEN + 1, TAKEN + 1, TAKEN + 1, TAKEN + 1]);
  assert.deepEqual(
    result.dns,
    Array.from({ length: 4 }, () => [TAKEN + 1, TAKEN + 1]),
  );
});
