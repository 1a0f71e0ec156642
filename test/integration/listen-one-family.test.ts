import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { AddressBook } from '../../decision/address-book.js';
import { startDnsServer, type DnsServer, type DnsUdpMode } from '../../dns/server.js';
import { EventLog } from '../../events/event-log.js';
import { listen } from '../../net/listen.js';
import { makePolicy } from '../helpers/dns-fixture.js';

/**
 * Every listen address is one family (net/listen.ts ipv6OnlyFor): `0.0.0.0:P` and `[::]:P` are two listeners side by
 * side, as the GitHub Action runs them for containers on Docker bridges (each family redirected to its own). Before
 * 2026-12-02 `[::]` bound both families (Linux's default, net.ipv6.bindv6only=0) and the second bind failed with
 * EADDRINUSE. Each pair is asked over 127.0.0.1 and ::1 with real clients, and must answer from the right listener.
 */
const run = promisify(execFile);

/** A TCP listener that writes its own name to whoever connects. */
function namedTcpServer(name: string): net.Server {
  return net.createServer((socket) => socket.end(name));
}

function readFrom(host: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, host);
    let got = '';
    socket.setTimeout(5000, () => socket.destroy(new Error(`no answer from ${host}:${port}`)));
    socket.on('data', (chunk: Buffer) => (got += chunk.toString()));
    socket.on('end', () => resolve(got));
    socket.on('error', reject);
  });
}

/** A free port on both families at once (a dual-stack bind of :: holds it for both, then lets it go). */
async function freePortBothFamilies(): Promise<number> {
  const probe = net.createServer();
  await new Promise<void>((resolve, reject) => probe.once('error', reject).listen({ port: 0, host: '::', ipv6Only: false }, resolve));
  const { port } = probe.address() as net.AddressInfo;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

describe('one family per listen address', () => {
  test('TCP (net/listen.ts): 0.0.0.0:P and [::]:P both bind; IPv4 reaches the first, IPv6 the second', async () => {
    const port = await freePortBothFamilies();
    const v4 = namedTcpServer('v4');
    const v6 = namedTcpServer('v6');
    try {
      await listen(v4, { host: '0.0.0.0', port }, 'transparent-listen');
      await listen(v6, { host: '::', port }, 'transparent-listen');
      assert.equal(await readFrom('127.0.0.1', port), 'v4');
      assert.equal(await readFrom('::1', port), 'v6');
    } finally {
      v4.close();
      v6.close();
    }
  });

  test('TCP: [::]:P alone takes no IPv4 (it is not a dual-stack listener any more)', async () => {
    const port = await freePortBothFamilies();
    const v6 = namedTcpServer('v6');
    try {
      await listen(v6, { host: '::', port }, 'listen');
      await assert.rejects(readFrom('127.0.0.1', port), /ECONNREFUSED/);
    } finally {
      v6.close();
    }
  });

  for (const udp of ['batch', 'dgram'] as const satisfies readonly DnsUdpMode[]) {
    test(`DNS (UDP ${udp} and TCP): 0.0.0.0:P and [::]:P both serve; dig over each family gets its own listener's answer`, async () => {
      const port = await freePortBothFamilies();
      const servers: DnsServer[] = [];
      const start = (host: string, address: string) =>
        startDnsServer({
          listen: { host, port },
          upstreams: [],
          policy: () => makePolicy({ mode: 'block' }),
          events: new EventLog({ stdout: false }),
          addressBook: new AddressBook(),
          // Which listener answered: each names which.test with its own address.
          localNames: new Map([['which.test', [address]]]),
          udp,
        });
      try {
        servers.push(await start('0.0.0.0', '198.51.100.4'));
        servers.push(await start('::', '198.51.100.6'));
        assert.equal(servers[0]!.udp, udp);
        for (const [server, expected] of [
          ['127.0.0.1', '198.51.100.4'],
          ['::1', '198.51.100.6'],
        ] as const) {
          for (const transport of ['+notcp', '+tcp']) {
            const { stdout } = await run('dig', [`@${server}`, '-p', String(port), 'which.test', 'A', '+short', '+time=3', '+tries=1', transport], { timeout: 10_000 });
            assert.equal(stdout.trim(), expected, `dig @${server} ${transport}`);
          }
        }
      } finally {
        await Promise.all(servers.map((s) => s.close()));
      }
    });
  }
});
