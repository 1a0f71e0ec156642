/**
 * A way out of the rules for containers on Docker bridges (rules/container-rules.ts, the GitHub Action applies them):
 * a container whose port is published (a DNAT from the runner's address) answers an outside host that connects to
 * it. The host's own services may not (the OUTPUT rules refuse what the job sends on a connection an outside host
 * opened, e2e ways-out), but the FORWARD rules let every ESTABLISHED packet through whatever its direction, so a
 * secret the job handed a service container (a database, a cache) was read from outside. The topology: a bridge
 * named docker0 in the runner namespace, a "container" namespace on it (documentation addresses), a DNAT for port
 * 8080 as `docker run -p` makes. The internet side's reading is the judge; the event is asserted in both modes.
 * Needs root (namespaces, iptables).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { applyContainerRules, removeContainerRules } from '../../rules/run-container-rules.js';
import type { CommandRunner } from '../../rules/run-rules.js';
import { NET, World } from './harness.js';
import { destroyNamespaceSync, must, run } from './netns.js';

const CONTAINER = { bridge: 'docker0', bridgeAddress: '203.0.113.129', address: '203.0.113.130', prefix: '203.0.113.128/26', port: 8080 };

const CONTAINER_PORTS = { transparent: 3130, dns: 5300 };

let world: World;
let containerNs: string;
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
  ]) {
    await must('ip', ['netns', 'exec', containerNs, ...args]);
  }
  for (const args of [
    ['ip', 'link', 'add', CONTAINER.bridge, 'type', 'bridge'],
    ['ip', 'link', 'set', 'vethc0', 'master', CONTAINER.bridge],
    ['ip', 'addr', 'add', `${CONTAINER.bridgeAddress}/26`, 'dev', CONTAINER.bridge],
    ['ip', 'link', 'set', 'vethc0', 'up'],
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
});

after(async () => {
  await world?.close();
  if (containerNs) destroyNamespaceSync(containerNs);
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
          EGRESS_TRANSPARENT_LISTEN: `127.0.0.1:3129 [::1]:3129 0.0.0.0:${CONTAINER_PORTS.transparent}`,
          EGRESS_DNS_LISTEN: `127.0.0.1:53 [::1]:53 0.0.0.0:${CONTAINER_PORTS.dns}`,
        },
      });
      await applyContainerRules({ mode, transparentPort: CONTAINER_PORTS.transparent, dnsPort: CONTAINER_PORTS.dns, forwardHook: 'FORWARD' }, inRunner);
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
  });
}
