/**
 * The batched UDP path (net/udp-batch.ts) answers a client that writes from an IPv6 link-local address: the answer
 * that comes later (sendTo from the source address's text, as the DNS server's answers from upstream do) must go back
 * out of the interface the query came in on, so the text carries the zone (`fe80::1%eth0`, as node's dgram writes it).
 * Two network namespaces joined by a veth pair made inside the first, its peer moved straight into the second; the
 * link-local addresses are the ones the kernel gives the interfaces (none is assigned here). Needs root and `ip`.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { batchUdpUnavailable } from '../../net/udp-batch.js';
import { startLateEcho } from './late-echo.js';
import { destroyNamespaceSync, joinedNamespaces, must, run } from './netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const server = `eg-linklocal-s-${process.pid}`;
const client = `eg-linklocal-c-${process.pid}`;
const skip = batchUdpUnavailable() ?? (process.getuid?.() === 0 ? undefined : 'needs root for network namespaces');
let echo: ChildProcess | undefined;

/** The interface's link-local address, once the kernel has given it one (DAD is off in these namespaces). */
async function linkLocal(ns: string, dev: string): Promise<string> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const out = await must('ip', ['-n', ns, '-6', '-o', 'addr', 'show', 'dev', dev, 'scope', 'link']);
    const match = /inet6 (fe80:[0-9a-f:]+)\/64/.exec(out);
    if (match && !/tentative/.test(out)) return match[1]!;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no link-local address on ${dev} in ${ns}`);
}

before(async () => {
  if (skip) return;
  await joinedNamespaces(server, client, 'egll-s', 'egll-c');
});

after(() => {
  if (echo?.pid && echo.exitCode === null) echo.kill('SIGKILL');
  if (skip) return;
  destroyNamespaceSync(server);
  destroyNamespaceSync(client);
});

test('an answer sent later to a link-local client goes back out of its interface', { skip, timeout: 60_000 }, async () => {
  const serverAddress = await linkLocal(server, 'egll-s');
  const clientAddress = await linkLocal(client, 'egll-c');
  const started = await startLateEcho(server);
  echo = started.child;
  const { port } = started;
  const script = `
    const s = require('node:dgram').createSocket('udp6');
    const timer = setTimeout(() => { console.log('timeout'); process.exit(0); }, 3000);
    s.on('message', (m) => { console.log(m.toString()); clearTimeout(timer); s.close(); });
    s.send(Buffer.from('query'), ${port}, ${JSON.stringify(`${serverAddress}%egll-c`)});`;
  const result = await run('ip', ['netns', 'exec', client, process.execPath, '-e', script], { timeoutMs: 15_000 });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), `late ${clientAddress}%egll-s`, `the client's answer (server said: ${started.output().trim()})`);
});

test('a numeric zone is the interface index itself: one outside 32 bits, signed or padded is refused, not wrapped to another interface', { skip, timeout: 60_000 }, async () => {
  const clientAddress = await linkLocal(client, 'egll-c');
  const index = Number(/^(\d+):/.exec(await must('ip', ['-n', server, '-o', 'link', 'show', 'dev', 'egll-s']))?.[1]);
  assert.ok(index > 0, 'the interface index of egll-s');
  const listener = `
    const s = require('node:dgram').createSocket('udp6');
    const got = [];
    s.on('message', (m) => got.push(m.toString()));
    s.bind(5353, '::', () => console.log('ready'));
    setTimeout(() => { console.log(JSON.stringify(got)); s.close(); }, 2500);`;
  const received = run('ip', ['netns', 'exec', client, process.execPath, '-e', listener], { timeoutMs: 15_000 });
  await new Promise((resolve) => setTimeout(resolve, 500));
  const zones = [`${index}`, `${index + 2 ** 32}`, `-${index}`, ` ${index}`, `${index}x`, ''];
  const sender = `
    const { BatchUdpSocket } = await import(${JSON.stringify(path.join(here, '../../net/udp-batch.js'))});
    const s = BatchUdpSocket.bind('::', 0, () => null);
    const sent = ${JSON.stringify(zones)}.map((zone) => s.sendTo(Buffer.from('zone ' + zone), ${JSON.stringify(clientAddress)} + '%' + zone, 5353));
    s.close();
    console.log(JSON.stringify(sent));`;
  const sent = await run('ip', ['netns', 'exec', server, process.execPath, '--input-type=module', '-e', sender], { timeoutMs: 15_000 });
  assert.equal(sent.code, 0, sent.stderr);
  assert.deepEqual(JSON.parse(sent.stdout.trim()), [true, false, false, false, false, false], `sendTo per zone ${JSON.stringify(zones)}`);
  const result = await received;
  assert.equal(result.code, 0, result.stderr);
  assert.deepEqual(JSON.parse(result.stdout.trim().split('\n').at(-1)!), [`zone ${index}`], 'only the datagram with the interface index itself arrived');
});
