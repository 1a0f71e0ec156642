/**
 * DNS over TCP: a client that sends queries and does not read its answers must not make egress-guard buffer
 * answers without bound. Needs root: the probe runs in a network namespace of its own with tiny TCP buffers.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { destroyNamespaceSync, must, run } from './netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ns = `eg-dnsbp-${process.pid}`;

before(async () => {
  await must('ip', ['netns', 'add', ns]);
  await must('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  await must('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.tcp_rmem=4096 4096 4096', 'net.ipv4.tcp_wmem=4096 4096 4096']);
});

after(() => destroyNamespaceSync(ns));

test('a TCP client that does not read its answers is not read from either; once it reads (also after a half-close), every answer arrives', async () => {
  const probe = await run('ip', ['netns', 'exec', ns, process.execPath, path.join(here, '../helpers/dns-tcp-backpressure-probe.js'), '20000'], { timeoutMs: 60_000 });
  assert.equal(probe.code, 0, probe.stderr);
  const result = JSON.parse(probe.stdout.trim().split('\n').pop()!) as {
    queries: number;
    payloadBytes: number;
    unsentWhileNotReading: number;
    udpAnswered: boolean;
    answers: number;
    halfClosedAnswers: number;
  };
  assert.ok(result.unsentWhileNotReading > result.payloadBytes / 2, `most queries stay with the client while it does not read: ${JSON.stringify(result)}`);
  assert.ok(result.udpAnswered, 'other clients are served meanwhile');
  assert.equal(result.answers, result.queries);
  assert.equal(result.halfClosedAnswers, result.queries, 'a client that half-closed after its queries gets every answer before the close');
});
