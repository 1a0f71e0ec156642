/**
 * The batched UDP path (net/udp-batch.ts) on a wildcard socket answers from the address the query was sent to, not
 * from the kernel's pick: on an interface with two addresses, the client (dig, a stub resolver) drops an answer from
 * the other one, and a query REDIRECTed to the interface's first address (the container DNS listener, reached from a
 * Docker bridge) cannot have its answer translated back by conntrack when it leaves from the second. Two network
 * namespaces joined by a veth pair made inside the first, its peer moved straight into the second; documentation
 * addresses only. Needs root, `ip` and `iptables`/`ip6tables`.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { batchUdpUnavailable } from '../../net/udp-batch.js';
import { startLateEcho } from './late-echo.js';
import { spawnInNamespace, type NamespaceProcess } from './namespace-process.js';
import { destroyNamespaceSync, joinedNamespaces, must, run } from './netns.js';

const server = `eg-srcaddr-s-${process.pid}`;
const client = `eg-srcaddr-c-${process.pid}`;
const skip = batchUdpUnavailable() ?? (process.getuid?.() === 0 ? undefined : 'needs root for network namespaces');
let echo: ChildProcess | undefined;
let zone: NamespaceProcess | undefined;
let guard: NamespaceProcess | undefined;
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** Echo servers started by a test (on 0.0.0.0, on an IPv6-only [::]), killed after. */
const others: ChildProcess[] = [];
let port = 0;

/**
 * The server's interface has two addresses per family; the client sits in the subnet of the one the kernel would pick
 * to answer it (its own subnet's), and asks the other. The other is also the interface's first (IPv6 lists the
 * address added last first; IPv4's primary is the one added first), where REDIRECT lands.
 */
const SERVER_V6 = ['2001:db8:51::1/64', '2001:db8:52::1/64'];
const SERVER_V4 = ['203.0.113.1/24', '198.51.100.1/24'];
const CLIENT_V6 = '2001:db8:51::2/64';
const CLIENT_V4 = '198.51.100.2/24';
/** Off-link DNS servers the client routes to the server, whose port 53 the server REDIRECTs to the echo server. */
const REDIRECTED_V6 = '2001:db8:99::53';
const REDIRECTED_V4 = '203.0.113.53';

before(async () => {
  if (skip) return;
  await joinedNamespaces(server, client, 'egsa-s', 'egsa-c');
  for (const address of SERVER_V6) await must('ip', ['-n', server, '-6', 'addr', 'add', address, 'dev', 'egsa-s', 'nodad']);
  for (const address of SERVER_V4) await must('ip', ['-n', server, 'addr', 'add', address, 'dev', 'egsa-s']);
  await must('ip', ['-n', client, '-6', 'addr', 'add', CLIENT_V6, 'dev', 'egsa-c', 'nodad']);
  await must('ip', ['-n', client, 'addr', 'add', CLIENT_V4, 'dev', 'egsa-c']);
  await must('ip', ['-n', client, '-6', 'route', 'add', 'default', 'via', SERVER_V6[0]!.split('/')[0]!]);
  await must('ip', ['-n', client, 'route', 'add', 'default', 'via', SERVER_V4[1]!.split('/')[0]!]);
  const started = await startLateEcho(server);
  echo = started.child;
  port = started.port;
  for (const tables of ['iptables', 'ip6tables']) {
    await must('ip', [
      'netns',
      'exec',
      server,
      tables,
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      '-i',
      'egsa-s',
      '-p',
      'udp',
      '--dport',
      '53',
      '-j',
      'REDIRECT',
      '--to-ports',
      String(port),
    ]);
  }
});

after(() => {
  for (const child of [echo, ...others]) if (child?.pid && child.exitCode === null) child.kill('SIGKILL');
  guard?.kill();
  zone?.kill();
  if (skip) return;
  destroyNamespaceSync(server);
  destroyNamespaceSync(client);
});

/** What the client gets back for `now` and `late` sent to each of `targets` ([address, port]): `from address port: text`. */
async function askFromClient(targets: readonly (readonly [string, number])[]): Promise<string[]> {
  const script = `
    const dgram = require('node:dgram');
    const targets = ${JSON.stringify(targets)};
    const got = [];
    const sockets = [dgram.createSocket('udp6'), dgram.createSocket('udp4')];
    for (const s of sockets) s.on('message', (m, r) => got.push(r.address + ' ' + r.port + ': ' + m.toString()));
    for (const [address, port] of targets) {
      const s = sockets[address.includes(':') ? 0 : 1];
      s.send('now', port, address);
      s.send('late', port, address);
    }
    setTimeout(() => { console.log(JSON.stringify(got.sort())); for (const s of sockets) s.close(); }, 1500);`;
  const result = await run('ip', ['netns', 'exec', client, process.execPath, '-e', script], { timeoutMs: 15_000 });
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout.trim()) as string[];
}

test("answers, at once and later, come from the address the query was sent to, not the kernel's pick", { skip, timeout: 60_000 }, async () => {
  const v6 = SERVER_V6[1]!.split('/')[0]!;
  const v4 = SERVER_V4[0]!.split('/')[0]!;
  const clientV6 = CLIENT_V6.split('/')[0]!;
  const clientV4 = CLIENT_V4.split('/')[0]!;
  const got = await askFromClient([
    [v6, port],
    [v4, port],
  ]);
  // The IPv4 client of the dual-stack socket is written v4-mapped by the addon.
  assert.deepEqual(
    got,
    [`${v4} ${port}: late ::ffff:${clientV4}`, `${v4} ${port}: now ::ffff:${clientV4}`, `${v6} ${port}: late ${clientV6}`, `${v6} ${port}: now ${clientV6}`].sort(),
  );
});

test('a query REDIRECTed to the interface gets its answer translated back (from the server it asked)', { skip, timeout: 60_000 }, async () => {
  const got = await askFromClient([
    [REDIRECTED_V6, 53],
    [REDIRECTED_V4, 53],
  ]);
  const clientV6 = CLIENT_V6.split('/')[0]!;
  const clientV4 = CLIENT_V4.split('/')[0]!;
  assert.deepEqual(
    got,
    [
      `${REDIRECTED_V4} 53: late ::ffff:${clientV4}`,
      `${REDIRECTED_V4} 53: now ::ffff:${clientV4}`,
      `${REDIRECTED_V6} 53: late ${clientV6}`,
      `${REDIRECTED_V6} 53: now ${clientV6}`,
    ].sort(),
  );
});

test('so do sockets bound to 0.0.0.0 (IPv4 only) and to an IPv6-only [::], as the container DNS listener binds them', { skip, timeout: 60_000 }, async () => {
  const v4Only = await startLateEcho(server, ['0.0.0.0']);
  others.push(v4Only.child);
  const v6Only = await startLateEcho(server, ['::', 'v6only']);
  others.push(v6Only.child);
  const v6 = SERVER_V6[1]!.split('/')[0]!;
  const v4 = SERVER_V4[0]!.split('/')[0]!;
  const clientV6 = CLIENT_V6.split('/')[0]!;
  const clientV4 = CLIENT_V4.split('/')[0]!;
  const got = await askFromClient([
    [v6, v6Only.port],
    [v4, v4Only.port],
  ]);
  // An IPv4 socket writes its clients as IPv4.
  assert.deepEqual(
    got,
    [`${v4} ${v4Only.port}: late ${clientV4}`, `${v4} ${v4Only.port}: now ${clientV4}`, `${v6} ${v6Only.port}: late ${clientV6}`, `${v6} ${v6Only.port}: now ${clientV6}`].sort(),
  );
});

test('past the table of destinations (64 per socket), an answer at once still comes from the address the query was sent to', { skip, timeout: 60_000 }, async () => {
  // More addresses than the table holds, each asked once; the socket's table has the earlier tests' entries already.
  const many = Array.from({ length: 70 }, (_, i) => `2001:db8:60::${(i + 1).toString(16)}`);
  await must('ip', ['-n', server, '-batch', '-'], { input: many.map((address) => `addr add ${address}/128 dev egsa-s nodad\n`).join('') });
  await must('ip', ['-n', client, '-6', 'route', 'add', '2001:db8:60::/64', 'via', SERVER_V6[0]!.split('/')[0]!]);
  const script = `
    const s = require('node:dgram').createSocket('udp6');
    const got = [];
    s.on('message', (m, r) => got.push(r.address + ': ' + m.toString()));
    const targets = ${JSON.stringify(many)};
    let i = 0;
    const next = () => { if (i < targets.length) { s.send('now', ${port}, targets[i++]); setTimeout(next, 5); } };
    next();
    setTimeout(() => { console.log(JSON.stringify(got.sort())); s.close(); }, 2500);`;
  const result = await run('ip', ['netns', 'exec', client, process.execPath, '-e', script], { timeoutMs: 15_000 });
  assert.equal(result.code, 0, result.stderr);
  const clientV6 = CLIENT_V6.split('/')[0]!;
  assert.deepEqual(JSON.parse(result.stdout.trim()), many.map((address) => `${address}: now ${clientV6}`).sort());
});

test(
  "egress-guard's DNS server on wildcard listeners answers dig from the address it asked, cached or refused at once and allowed after its upstream",
  { skip, timeout: 90_000 },
  async () => {
    // The zone server (the upstream) on the server namespace's loopback, then egress-guard with the container DNS
    // listener's binds: 0.0.0.0 and an IPv6-only [::] (net/listen.ts ipv6OnlyFor, as the GitHub Action sets them).
    const helpers = path.join(repo, 'dist/test/helpers/dns-zone-server.js');
    const zoneScript = `const { startZoneServer } = await import(${JSON.stringify(helpers)}); const z = await startZoneServer({ 'www.allowed.test': [{ type: 'A', value: '203.0.113.10' }] }); console.log(JSON.stringify({ msg: 'zone', port: z.port }));`;
    zone = spawnInNamespace(server, `${JSON.stringify(process.execPath)} --input-type=module -e ${JSON.stringify(zoneScript)}`, repo);
    const zonePort = (await zone.waitFor('the zone server', (l) => l.msg === 'zone')).port as number;
    guard = spawnInNamespace(server, `${JSON.stringify(process.execPath)} dist/egress-guard.js run`, repo, {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: '*.allowed.test',
      EGRESS_DNS_LISTEN: '0.0.0.0:5353 [::]:5353',
      EGRESS_DNS_UPSTREAM: `127.0.0.1:${zonePort}`,
      EGRESS_LISTEN: '127.0.0.1:0',
    });
    for (const address of ['0.0.0.0', '::']) await guard.waitFor(`DNS on ${address}`, (l) => l.msg === 'listening' && l.listener === 'dns' && l.address === address);
    for (const serverAddress of [SERVER_V6[1]!.split('/')[0]!, SERVER_V4[0]!.split('/')[0]!]) {
      // dig drops an answer from another address than the one it asked (";; reply from unexpected source") and times out.
      for (const [name, status] of [
        ['www.allowed.test', 'NOERROR'],
        ['www.allowed.test', 'NOERROR'],
        ['exfil.attacker.test', 'REFUSED|NXDOMAIN'],
      ] as const) {
        const dig = await run('ip', ['netns', 'exec', client, 'dig', `@${serverAddress}`, '-p', '5353', name, 'A', '+time=3', '+tries=1'], { timeoutMs: 15_000 });
        assert.equal(dig.code, 0, `dig @${serverAddress} ${name}: ${dig.stdout}${dig.stderr}`);
        assert.match(dig.stdout, new RegExp(`status: (${status})`), dig.stdout);
        assert.match(dig.stdout, new RegExp(`SERVER: ${serverAddress.replace(/\./g, '\\.')}#5353`), dig.stdout);
      }
    }
  },
);
