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
 * `[::]:P` beside an IPv4 address with the same port in one list binds IPv6 only (net/listen.ts ipv6OnlyFor):
 * `0.0.0.0:P [::]:P` are two listeners side by side, as the GitHub Action runs them for containers on Docker bridges
 * (each family redirected to its own). Before 2026-12-02 `[::]` always bound both families (Linux's default,
 * net.ipv6.bindv6only=0) and the second bind failed with EADDRINUSE. Alone, `[::]:P` still takes both families: a
 * setting that listened on `[::]:P` for IPv4 clients too (the explicit proxy, the DNS server) keeps working (for a
 * while on 2026-12-02 it took IPv6 only, and every IPv4 client was refused). Each case is asked over 127.0.0.1 and
 * ::1 with real clients, and must answer from the right listener.
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
  test('TCP (net/listen.ts): 0.0.0.0:P and [::]:P in one list both bind; IPv4 reaches the first, IPv6 the second', async () => {
    const port = await freePortBothFamilies();
    const v4 = namedTcpServer('v4');
    const v6 = namedTcpServer('v6');
    const list = [
      { host: '0.0.0.0', port },
      { host: '::', port },
    ];
    try {
      await listen(v4, list[0]!, 'transparent-listen', list);
      await listen(v6, list[1]!, 'transparent-listen', list);
      assert.equal(await readFrom('127.0.0.1', port), 'v4');
      assert.equal(await readFrom('::1', port), 'v6');
    } finally {
      v4.close();
      v6.close();
    }
  });

  test('TCP: [::]:P alone takes IPv4 too, as it always has (a lone wildcard serves both families)', async () => {
    const port = await freePortBothFamilies();
    const any = namedTcpServer('any');
    try {
      await listen(any, { host: '::', port }, 'listen');
      assert.equal(await readFrom('127.0.0.1', port), 'any');
      assert.equal(await readFrom('::1', port), 'any');
    } finally {
      any.close();
    }
  });

  for (const udp of ['batch', 'dgram'] as const satisfies readonly DnsUdpMode[]) {
    test(`DNS (UDP ${udp} and TCP): 0.0.0.0:P and [::]:P in one list both serve; dig over each family gets its own listener's answer`, async () => {
      const port = await freePortBothFamilies();
      const servers: DnsServer[] = [];
      const start = (host: string, address: string) =>
        startDnsServer({
          listen: { host, port },
          // As the sidecar starts each address of dns-listen: the others of the list beside it.
          otherListens: [{ host: host === '::' ? '0.0.0.0' : '::', port }],
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

    test(`DNS (UDP ${udp} and TCP): [::]:P alone answers over IPv4 too, as it always has`, async () => {
      const port = await freePortBothFamilies();
      const server = await startDnsServer({
        listen: { host: '::', port },
        upstreams: [],
        policy: () => makePolicy({ mode: 'block' }),
        events: new EventLog({ stdout: false }),
        addressBook: new AddressBook(),
        localNames: new Map([['which.test', ['198.51.100.6']]]),
        udp,
      });
      try {
        assert.equal(server.udp, udp);
        for (const address of ['127.0.0.1', '::1']) {
          for (const transport of ['+notcp', '+tcp']) {
            const { stdout } = await run('dig', [`@${address}`, '-p', String(port), 'which.test', 'A', '+short', '+time=3', '+tries=1', transport], { timeout: 10_000 });
            assert.equal(stdout.trim(), '198.51.100.6', `dig @${address} ${transport}`);
          }
        }
      } finally {
        await server.close();
      }
    });
  }
});
