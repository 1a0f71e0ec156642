/**
 * A way out of the rules for containers on Docker bridges (rules/container-rules.ts, the GitHub Action applies them):
 * a container whose port is published (a DNAT from the runner's address) answers an outside host that connects to
 * it. The host's own services may not (the OUTPUT rules refuse what the job sends on a connection an outside host
 * opened, e2e ways-out), but the FORWARD rules let every ESTABLISHED packet through whatever its direction, so a
 * secret the job handed a service container (a database, a cache) was read from outside. The topology: a bridge
 * named docker0 in the runner namespace, a "container" namespace on it (documentation addresses), a DNAT for port
 * 8080 as `docker run -p` makes. The internet side's reading is the judge; the event is asserted in both modes.
 *
 * The same bridge carries IPv6 (a network made with `docker network create --ipv6`): until 2026-12-02 the rules for
 * containers were IPv4 only, and a container's IPv6 connections and datagrams left unfiltered and unreported in
 * both modes. Now ip6tables redirects its TCP and DNS to egress-guard's [::] listeners and refuses or reports the rest.
 * Needs root (namespaces, iptables, ip6tables).
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { applyContainerRules, removeContainerRules } from '../../rules/run-container-rules.js';
import type { CommandRunner } from '../../rules/run-rules.js';
import { NET, World } from './harness.js';
import { destroyNamespaceSync, must, run } from './netns.js';

const CONTAINER = {
  bridge: 'docker0',
  bridgeAddress: '203.0.113.129',
  address: '203.0.113.130',
  prefix: '203.0.113.128/26',
  bridgeAddress6: '2001:db8:c0::1',
  address6: '2001:db8:c0::2',
  prefix6: '2001:db8:c0::/64',
  port: 8080,
};
/** The second container's addresses on the same bridge: global ones, neither in a private range. */
const PEER = { address: '203.0.113.131', address6: '2001:db8:c0::3' };
/**
 * A second Docker network whose bridge has no address of its own (`com.docker.network.bridge.inhibit_ipv4`, the
 * `isolated` gateway mode), so the runner has no route to its subnet; two containers on it.
 */
const BARE = { bridge: 'br-egbare', a: '203.0.113.193', b: '203.0.113.194', a6: '2001:db8:c1::2', b6: '2001:db8:c1::3' };

const CONTAINER_PORTS = { transparent: 3130, dns: 5300 };

let world: World;
let containerNs: string;
/** A second container on the same bridge (global addresses, and the IPv6 link-local one Docker's IPv6 gives every container). */
let peerNs: string;
/** The two containers on the bare bridge. */
let bareNs: [string, string];
const inRunner: CommandRunner = (binary, args) => run('ip', ['netns', 'exec', world.runnerNs, binary, ...args]);
const inContainer = (args: string[], timeoutMs = 30_000) => run('ip', ['netns', 'exec', containerNs, ...args], { timeoutMs });

before(async () => {
  world = await World.create();
  containerNs = `eg-container-${process.pid}`;
  destroyNamespaceSync(containerNs);
  await must('ip', ['netns', 'add', containerNs]);
  // The pair is made in the container namespace and its peer moved straight into the runner namespace.
  await must('ip', ['netns', 'exec', containerNs, 'ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'vethc0', 'netns', world.runnerNs]);
  for (const args of [
    ['ip', 'link', 'set', 'lo', 'up'],
    ['ip', 'addr', 'add', `${CONTAINER.address}/26`, 'dev', 'eth0'],
    ['ip', 'link', 'set', 'eth0', 'up'],
    ['ip', 'route', 'add', 'default', 'via', CONTAINER.bridgeAddress],
    ['ip', '-6', 'addr', 'add', `${CONTAINER.address6}/64`, 'dev', 'eth0', 'nodad'],
    ['ip', '-6', 'route', 'add', 'default', 'via', CONTAINER.bridgeAddress6],
  ]) {
    await must('ip', ['netns', 'exec', containerNs, ...args]);
  }
  peerNs = `eg-ctr-peer-${process.pid}`;
  destroyNamespaceSync(peerNs);
  await must('ip', ['netns', 'add', peerNs]);
  await must('ip', ['netns', 'exec', peerNs, 'ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'vethc1', 'netns', world.runnerNs]);
  for (const args of [
    ['ip', 'link', 'set', 'lo', 'up'],
    ['ip', 'addr', 'add', `${PEER.address}/26`, 'dev', 'eth0'],
    ['ip', '-6', 'addr', 'add', `${PEER.address6}/64`, 'dev', 'eth0', 'nodad'],
    ['ip', 'link', 'set', 'eth0', 'up'],
  ]) {
    await must('ip', ['netns', 'exec', peerNs, ...args]);
  }
  bareNs = [`eg-bare-a-${process.pid}`, `eg-bare-b-${process.pid}`];
  await must('ip', ['netns', 'exec', world.runnerNs, 'ip', 'link', 'add', BARE.bridge, 'type', 'bridge']);
  for (const [i, ns] of bareNs.entries()) {
    destroyNamespaceSync(ns);
    await must('ip', ['netns', 'add', ns]);
    await must('ip', ['netns', 'exec', ns, 'ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `vethb${i}`, 'netns', world.runnerNs]);
    for (const args of [
      ['ip', 'link', 'set', 'lo', 'up'],
      ['ip', 'addr', 'add', `${i === 0 ? BARE.a : BARE.b}/27`, 'dev', 'eth0'],
      ['ip', '-6', 'addr', 'add', `${i === 0 ? BARE.a6 : BARE.b6}/64`, 'dev', 'eth0', 'nodad'],
      ['ip', 'link', 'set', 'eth0', 'up'],
    ]) {
      await must('ip', ['netns', 'exec', ns, ...args]);
    }
    await must('ip', ['netns', 'exec', world.runnerNs, 'ip', 'link', 'set', `vethb${i}`, 'master', BARE.bridge]);
    await must('ip', ['netns', 'exec', world.runnerNs, 'ip', 'link', 'set', `vethb${i}`, 'up']);
  }
  await must('ip', ['netns', 'exec', world.runnerNs, 'ip', 'link', 'set', BARE.bridge, 'up']);
  // What Docker writes into a container's resolv.conf on the default bridge: the host's resolvers (here, the
  // internet's), which the nat rules redirect to egress-guard's container DNS listeners.
  mkdirSync(`/etc/netns/${containerNs}`, { recursive: true });
  writeFileSync(`/etc/netns/${containerNs}/resolv.conf`, `nameserver ${NET.dns6}\noptions attempts:1 timeout:2\n`);
  for (const args of [
    ['ip', 'link', 'add', CONTAINER.bridge, 'type', 'bridge'],
    ['ip', 'link', 'set', 'vethc0', 'master', CONTAINER.bridge],
    ['ip', 'addr', 'add', `${CONTAINER.bridgeAddress}/26`, 'dev', CONTAINER.bridge],
    ['ip', '-6', 'addr', 'add', `${CONTAINER.bridgeAddress6}/64`, 'dev', CONTAINER.bridge, 'nodad'],
    ['sysctl', '-q', '-w', 'net.ipv6.conf.all.forwarding=1'],
    ['ip', 'link', 'set', 'vethc0', 'up'],
    ['ip', 'link', 'set', 'vethc1', 'master', CONTAINER.bridge],
    ['ip', 'link', 'set', 'vethc1', 'up'],
    ['ip', 'link', 'set', CONTAINER.bridge, 'up'],
    ['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'],
    // `docker run -p 8080:8080`: the runner's port 8080 is the container's.
    [
      'iptables',
      '-w',
      '5',
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      '-p',
      'tcp',
      '--dport',
      String(CONTAINER.port),
      '-j',
      'DNAT',
      '--to-destination',
      `${CONTAINER.address}:${CONTAINER.port}`,
    ],
  ]) {
    await must('ip', ['netns', 'exec', world.runnerNs, ...args]);
  }
  await must('ip', ['netns', 'exec', world.internetNs, 'ip', 'route', 'add', CONTAINER.prefix, 'via', NET.runnerV4]);
  await must('ip', ['netns', 'exec', world.internetNs, 'ip', '-6', 'route', 'add', CONTAINER.prefix6, 'via', NET.runnerV6]);
});

after(async () => {
  await world?.close();
  if (peerNs) destroyNamespaceSync(peerNs);
  for (const ns of bareNs ?? []) destroyNamespaceSync(ns);
  if (containerNs) {
    destroyNamespaceSync(containerNs);
    rmSync(`/etc/netns/${containerNs}`, { recursive: true, force: true });
  }
});

/** The container's service: sends `secret` to whoever connects, once (bounded). */
function serveSecret(secret: string) {
  const script = `
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(1)
s.settimeout(15)
print('listening', flush=True)
try:
    c, _ = s.accept()
    c.sendall(sys.argv[2].encode())
    c.close()
except OSError:
    pass
`;
  return inContainer(['python3', '-c', script, String(CONTAINER.port), secret], 25_000);
}

/** From the internet: connect to the runner's published port and print what comes back within 3 s. */
function reachIn() {
  const script = `
const s = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
let got = '';
const done = () => { process.stdout.write(got); process.exit(0); };
setTimeout(done, 3000);
s.on('data', (c) => (got += c));
s.on('error', done);
s.on('close', done);
`;
  return world.fromInternet(process.execPath, ['-e', script, NET.runnerV4, String(CONTAINER.port)]);
}

/**
 * The second container (or `server`) serves `from the peer` once on `port`; the first (or `client`) connects to it at
 * `host`: what it read (bounded).
 */
async function fromPeer(family: 4 | 6, host: string, port: number, client = containerNs, server = peerNs): Promise<string> {
  const serve = `import socket, sys
s = socket.socket(socket.AF_INET6 if sys.argv[1] == '6' else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('::' if sys.argv[1] == '6' else '0.0.0.0', int(sys.argv[2])))
s.listen(1)
s.settimeout(15)
print('listening', flush=True)
try:
    c, _ = s.accept()
    c.sendall(b'from the peer')
    c.close()
except OSError:
    pass
`;
  const service = run('ip', ['netns', 'exec', server, 'python3', '-c', serve, String(family), String(port)], { timeoutMs: 25_000 });
  for (let i = 0; i < 50 && !(await run('ip', ['netns', 'exec', server, 'ss', '-Hltn', `sport = :${port}`])).stdout.includes(`:${port}`); i++)
    await new Promise((r) => setTimeout(r, 100));
  const read = `const s = require('node:net').connect({ host: process.argv[1], port: Number(process.argv[2]) }); let got = ''; s.on('data', (c) => (got += c)); const done = () => { process.stdout.write(got); process.exit(0); }; s.on('close', done); s.on('error', done); setTimeout(done, 5000);`;
  const got = await run('ip', ['netns', 'exec', client, process.execPath, '-e', read, host, String(port)], { timeoutMs: 30_000 });
  await service;
  return got.stdout;
}

/** Whether bridged frames of `family` pass the runner's ip(6)tables (br_netfilter): without it they never meet the rules. */
async function brNetfilterActive(family: 4 | 6): Promise<boolean> {
  const brnf = await inRunner('cat', [`/proc/sys/net/bridge/bridge-nf-call-ip${family === 4 ? '' : '6'}tables`]);
  return brnf.code === 0 && brnf.stdout.trim() === '1';
}

/** egress-guard has no event naming `host` (a connection that was not redirected), a moment after it ended. */
async function assertUnseen(host: string): Promise<void> {
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(
    world.events().find((e) => 'host' in e && e.host === host),
    undefined,
    'egress-guard never saw it: not redirected',
  );
}

async function listening(): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if ((await inContainer(['ss', '-Hltn', `sport = :${CONTAINER.port}`])).stdout.includes(`:${CONTAINER.port}`)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('the container service did not start');
}

for (const mode of ['block', 'audit'] as const) {
  describe(`${mode} mode`, () => {
    before(async () => {
      // Listeners for containers on 0.0.0.0, as the GitHub Action runs them (the nat rules redirect there).
      await world.startEgressGuard(mode, [], {
        env: {
          EGRESS_TRANSPARENT_LISTEN: `127.0.0.1:3129 [::1]:3129 0.0.0.0:${CONTAINER_PORTS.transparent} [::]:${CONTAINER_PORTS.transparent}`,
          EGRESS_DNS_LISTEN: `127.0.0.1:53 [::1]:53 0.0.0.0:${CONTAINER_PORTS.dns} [::]:${CONTAINER_PORTS.dns}`,
        },
      });
      const applied = await applyContainerRules({ mode, transparentPort: CONTAINER_PORTS.transparent, dnsPort: CONTAINER_PORTS.dns }, inRunner);
      // setup-test-host.sh installs nftables: what stays on the bridges is told by route here, never by the fallback.
      assert.deepEqual(applied, { staysOnBridges: 'route', madeDockerUser: [4, 6] });
    });
    after(async () => {
      await removeContainerRules(inRunner).catch(() => undefined);
      await world.stopEgressGuard();
    });

    test('a container with a published port answers an outside host that connects to it', async () => {
      const secret = `container-published-${mode}`;
      const service = serveSecret(secret);
      await listening();
      const got = (await reachIn()).stdout;
      await service;
      if (mode === 'block') assert.equal(got, '', 'nothing leaves a container on a connection the outside opened');
      else assert.equal(got, secret, 'audit mode passes it');
      const event = await world.decision((e) => e.reason === 'inbound-reply' && e.kind === 'tcp' && e.host === NET.internetV4 && e.client.startsWith(`${CONTAINER.address}:`));
      assert.equal(event?.decision, mode === 'block' ? 'blocked' : 'would-block', 'the event names the attempt');
      // Containers have no --inbound-ports: the message must not point there (until 2026-12-02 it did).
      assert.match(event.message, /\(a container on a Docker bridge\).*a container answering a connection/);
      assert.doesNotMatch(event.message, /inbound-ports/);
    });

    test('control: a container reaches allowed.test, redirected to egress-guard, and gets its answer', async () => {
      const got = await inContainer([
        'curl',
        '-sS',
        '--max-time',
        '10',
        '--resolve',
        `allowed.test:80:${NET.allowed}`,
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        'http://allowed.test/',
      ]);
      assert.equal(got.stdout, '200', got.stderr);
    });

    test('IPv6: a container reaches allowed.test by name (DNS and TCP redirected to the [::] listeners) and gets its answer', async () => {
      const got = await inContainer(['curl', '-6', '-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', 'http://allowed.test/']);
      assert.equal(got.stdout, '200', got.stderr);
      const dns = await world.decision((e) => e.kind === 'dns' && e.host === 'allowed.test' && e.client.startsWith(`[${CONTAINER.address6}]:`));
      assert.equal(dns?.decision, 'allowed', 'the container DNS listener on [::] answered the query');
      const tcp = await world.decision((e) => e.kind === 'transparent' && e.host === 'allowed.test' && e.client.startsWith(`[${CONTAINER.address6}]:`));
      assert.equal(tcp?.decision, 'allowed', 'the connection was decided by egress-guard, not forwarded around it');
    });

    test('IPv6: a container connects to a raw IPv6 address; decided like IPv4 (refused in block mode)', async () => {
      const secret = `container-tcp6-${mode}`;
      const send = `const [host, secret] = process.argv.slice(1); const s = require('node:net').connect(9419, host); s.on('error', () => {}); s.end(secret); setTimeout(() => process.exit(0), 3000);`;
      await inContainer([process.execPath, '-e', send, NET.attacker6, secret]);
      await new Promise((r) => setTimeout(r, 500));
      const arrived = world.internetLog().filter((e) => e.type === 'tcp-data' && e.port === 9419 && String(e.data).includes(secret));
      assert.equal(arrived.length, mode === 'block' ? 0 : 1, 'the internet side received the bytes');
      const event = await world.decision((e) => e.kind === 'transparent' && e.host === NET.attacker6 && e.port === 9419 && e.client.startsWith(`[${CONTAINER.address6}]:`));
      assert.equal(event?.decision, mode === 'block' ? 'blocked' : 'would-block', 'the event names the attempt');
    });

    for (const family of [4, 6] as const) {
      test(`IPv${family}: a container reaches another container on its bridge by a global address, not redirected (told by route)`, async (t) => {
        // Frames bridged between two containers pass PREROUTING as routed ones do (br_netfilter). Until 2026-12-02 only
        // the private ranges told them apart: a bridge on other addresses (these, or `docker network create --ipv6
        // --subnet 2001:db8:...`) had its containers' connections to each other redirected and decided as raw-address
        // connects, refused in block mode. Now the destination's route (nftables fib) says it stays on the bridge.
        if (!(await brNetfilterActive(family))) return t.skip('br_netfilter is not active here');
        const target = family === 4 ? PEER.address : PEER.address6;
        const got = await fromPeer(family, target, 8082);
        assert.equal(got, 'from the peer', 'the connection reached the other container');
        await assertUnseen(target);
      });
    }

    for (const family of [4, 6] as const) {
      test(`IPv${family}: two containers on a bridge without an address of its own reach each other, not redirected`, async (t) => {
        // The runner has no route to such a bridge's subnet, so the destination's route says nothing. Until 2026-12-02
        // (the route lookup's first version) their connections to each other were redirected, and REDIRECT dropped them:
        // the bridge has no address to redirect to. Now a source the runner would not route back out of its bridge
        // marks the connection as staying on the bridges (rules/bridge-routes.ts).
        if (!(await brNetfilterActive(family))) return t.skip('br_netfilter is not active here');
        const target = family === 4 ? BARE.b : BARE.b6;
        const got = await fromPeer(family, target, 8083, bareNs[0], bareNs[1]);
        assert.equal(got, 'from the peer', 'the connection reached the other container');
        await assertUnseen(target);
      });
    }

    if (mode === 'block') {
      // Block mode only: audit mode would let egress-guard connect to it, and no test host may have such an address.
      test('a container connects to a private address off the bridges: redirected and decided by the policy, not refused unseen by FORWARD', async () => {
        // Until 2026-12-02 private destinations were never redirected (the only way to keep Docker's own subnets
        // working), so a container's connection to an internal service was refused by the FORWARD chain whatever
        // `allowed-ips` or `trusted-ranges` said, with an NFLOG report instead of a decision by the policy.
        const target = '10.255.255.1';
        const send = `const s = require('node:net').connect(9419, process.argv[1]); s.on('error', () => {}); s.end('GET / HTTP/1.0\\r\\n\\r\\n'); setTimeout(() => process.exit(0), 3000);`;
        await inContainer([process.execPath, '-e', send, target]);
        const event = await world.decision((e) => e.host === target && e.client.startsWith(`${CONTAINER.address}:`));
        assert.equal(event?.kind, 'transparent', 'decided by the transparent listener');
        assert.equal(event?.reason, 'raw-ip');
        assert.equal(event?.decision, 'blocked');
      });
    }

    test('IPv6: a container reaches another container on its bridge by link-local address, not redirected (br_netfilter)', async (t) => {
      // With br_netfilter, frames bridged between two containers pass ip6tables PREROUTING as routed ones do; a
      // link-local destination is never routed, so it is one container talking to another and is not redirected
      // (egress-guard could not reach an address without its zone either). Without br_netfilter there is nothing
      // to test: bridged frames never meet the rules.
      if (!(await brNetfilterActive(6))) return t.skip('br_netfilter is not active for IPv6 here');
      const peer = (await run('ip', ['netns', 'exec', peerNs, 'ip', '-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'link'])).stdout;
      const linkLocal = /inet6 (fe80:[0-9a-f:]+)\//.exec(peer)?.[1];
      assert.ok(linkLocal, `the peer has no link-local address: ${peer}`);
      const got = await fromPeer(6, `${linkLocal}%eth0`, 8081);
      assert.equal(got, 'from the peer', 'the connection reached the other container (redirected before 2026-12-02, and failed in both modes)');
    });

    for (const family of [4, 6] as const) {
      // Both families: until 2026-12-02 the reader took every forwarded packet for the kernel's, and a container's
      // datagrams had no event in either mode (netlog/report.ts sentByJob).
      test(`IPv${family}: a datagram from a container to an outside host is reported, and refused in block mode`, async () => {
        const secret = `container-udp${family}-${mode}`;
        const target = family === 4 ? NET.attacker : NET.attacker6;
        const send = `const [host, secret] = process.argv.slice(1); const s = require('node:dgram').createSocket('udp${family}'); s.on('error', () => s.close()); s.send(secret, 9999, host, () => setTimeout(() => s.close(), 300));`;
        await inContainer([process.execPath, '-e', send, target, secret]);
        await new Promise((r) => setTimeout(r, 500));
        const arrived = world.internetLog().filter((e) => e.type === 'udp' && e.port === 9999 && String(e.data).includes(secret));
        assert.equal(arrived.length, mode === 'block' ? 0 : 1, 'the internet side received the datagram');
        const source = family === 4 ? `${CONTAINER.address}:` : `[${CONTAINER.address6}]:`;
        const event = await world.decision((e) => e.kind === 'udp' && e.host === target && e.port === 9999 && e.client.startsWith(source));
        assert.equal(event?.decision, mode === 'block' ? 'blocked' : 'would-block', 'the event names the attempt');
      });
    }
  });
}
