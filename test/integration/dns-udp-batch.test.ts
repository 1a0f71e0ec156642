import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { startDnsServer } from '../../dns/server.js';
import { EventLog } from '../../events/event-log.js';
import { AddressBook } from '../../decision/address-book.js';
import { BatchUdpSocket, batchUdpUnavailable } from '../../net/udp-batch.js';
import { readQuery } from '../../dns/wire.js';
import { dig, makePolicy, queryBytes, rcodeOf, startDnsFixture, type DnsFixture } from '../helpers/dns-fixture.js';

/**
 * The batched UDP path of the DNS server (setting dns-udp batch, net/udp-batch.ts, native/udp_batch.c) with real
 * clients: dig, and node dgram sockets. The other DNS tests run on it too (and on dgram with EGRESS_DNS_UDP=dgram).
 */
const skip = batchUdpUnavailable();

/** A client socket bound with SO_REUSEADDR, so that a child process can send from the same port (see burst()). */
function bindClient(type: 'udp4' | 'udp6', host: string): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket({ type, reuseAddr: true });
    socket.once('error', reject);
    socket.bind(0, host, () => resolve(socket));
  });
}

/**
 * Sends `packets` to the server from a child process bound to the client's port while this process's event loop
 * is blocked (execFileSync): they are all queued on the server's socket before it reads any, so the server reads
 * them in one recvmmsg. The answers come back to `client` once the child has exited.
 */
function burst(client: dgram.Socket, serverHost: string, serverPort: number, packets: Buffer[]): void {
  const { address, port } = client.address();
  const script = `
    const dgram = require('node:dgram');
    const packets = ${JSON.stringify(packets.map((p) => p.toString('base64')))}.map((b) => Buffer.from(b, 'base64'));
    const s = dgram.createSocket({ type: ${JSON.stringify(client.address().family === 'IPv6' ? 'udp6' : 'udp4')}, reuseAddr: true });
    s.bind(${port}, ${JSON.stringify(address)}, () => {
      let left = packets.length;
      for (const p of packets) s.send(p, ${serverPort}, ${JSON.stringify(serverHost)}, () => { if (--left === 0) s.close(); });
    });
    setTimeout(() => process.exit(3), 5000).unref();`;
  execFileSync(process.execPath, ['-e', script], { timeout: 10_000, stdio: 'ignore' });
}

/** A query for `name` of exactly `length` bytes: its OPT record's data (zero bytes) fills it up. */
function queryFilling(id: number, name: string, length: number): Buffer {
  const query = queryBytes(id, name);
  query.writeUInt16BE(1, 10); // ARCOUNT: the OPT record
  const optHeader = Buffer.from([0, 0, 41, 0x10, 0x00, 0, 0, 0, 0, 0, 0]);
  const data = length - query.length - optHeader.length;
  optHeader.writeUInt16BE(data, 9);
  return Buffer.concat([query, optHeader, Buffer.alloc(data)]);
}

/** Collects replies on `client` until `count` arrived or `waitMs` passed; keyed by DNS id. */
function collect(client: dgram.Socket, count: number, waitMs = 3000): Promise<Map<number, Buffer>> {
  return new Promise((resolve) => {
    const replies = new Map<number, Buffer>();
    const done = () => {
      clearTimeout(timer);
      client.off('message', onMessage);
      resolve(replies);
    };
    const onMessage = (reply: Buffer) => {
      if (reply.length >= 2) replies.set(reply.readUInt16BE(0), reply);
      if (replies.size >= count) done();
    };
    const timer = setTimeout(done, waitMs);
    client.on('message', onMessage);
  });
}

const answerCount = (reply: Buffer) => reply.readUInt16BE(6);

describe('batched UDP DNS path', { skip }, () => {
  let fx: DnsFixture;
  before(async () => {
    fx = await startDnsFixture({ mode: 'block', udp: 'batch' });
  });
  after(async () => fx?.close());

  test('the server uses the batched path', () => {
    assert.equal(fx.server.udp, 'batch');
  });

  test('a burst of 60 queries read in one batch: every one answered correctly, one decision event each', async () => {
    const client = await bindClient('udp4', '127.0.0.1');
    try {
      const eventsBefore = fx.decisions.length;
      const packets = Array.from({ length: 60 }, (_, i) => queryBytes(1000 + i, i % 2 === 0 ? 'allowed.test' : `d${i}.denied.test`));
      const replies = collect(client, packets.length);
      burst(client, '127.0.0.1', fx.port, packets);
      const got = await replies;
      assert.equal(got.size, 60, 'every query answered');
      for (let i = 0; i < 60; i++) {
        const reply = got.get(1000 + i)!;
        assert.ok(reply, `answer to query ${i}`);
        if (i % 2 === 0) {
          assert.equal(rcodeOf(reply), 0);
          assert.equal(answerCount(reply), 1);
          assert.deepEqual([...reply.subarray(reply.length - 4)], [198, 51, 100, 10]);
        } else {
          assert.equal(rcodeOf(reply), 3, 'denied names get NXDOMAIN in block mode');
        }
      }
      assert.equal(fx.decisions.length - eventsBefore, 60);
      assert.ok(fx.decisions.slice(eventsBefore).every((e) => e.kind === 'dns'));
    } finally {
      client.close();
    }
  });

  test('a malformed datagram among good ones: the good ones are answered, the bad ones as the responder says', async () => {
    const client = await bindClient('udp4', '127.0.0.1');
    try {
      const headerOnly = Buffer.alloc(12);
      headerOnly.writeUInt16BE(2002, 0); // no question: FORMERR
      const response = queryBytes(2003, 'allowed.test');
      response[2]! |= 0x80; // QR set: a response, dropped
      const garbage = Buffer.from([0x07, 0xd4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x3f]); // id 2004, counts nonsense
      const tooLarge = Buffer.concat([queryBytes(2005, 'allowed.test'), Buffer.alloc(5000)]); // larger than a slot: cut, FORMERR
      const packets = [queryBytes(2000, 'allowed.test'), Buffer.from([0x07]), headerOnly, response, garbage, tooLarge, Buffer.alloc(0), queryBytes(2001, 'allowed.test', 28)];
      const replies = collect(client, 5, 1500);
      burst(client, '127.0.0.1', fx.port, packets);
      const got = await replies;
      assert.equal(rcodeOf(got.get(2000)!), 0);
      assert.equal(answerCount(got.get(2000)!), 1);
      assert.equal(rcodeOf(got.get(2001)!), 0, 'the AAAA query after the bad ones is answered');
      assert.equal(answerCount(got.get(2001)!), 1);
      assert.equal(rcodeOf(got.get(2002)!), 1, 'a header with no question gets FORMERR');
      assert.equal(got.has(2003), false, 'a response is not answered');
      assert.equal(rcodeOf(got.get(2005)!), 1, 'a datagram larger than a slot gets FORMERR, as on the dgram path');
      // The server goes on answering.
      const after = await dig(fx.port, 'allowed.test', 'A', '+notcp');
      assert.equal(after.status, 'NOERROR');
    } finally {
      client.close();
    }
  });

  test('datagrams larger than a slot (4096 bytes, up to 65,000): each gets the FORMERR and the malformed-request event the dgram path gives it, even one whose first 4096 bytes are a valid query', async () => {
    const client = await bindClient('udp4', '127.0.0.1');
    try {
      const eventsBefore = fx.decisions.length;
      // Its first 4096 bytes (one slot) are a whole, valid query: read cut, they alone would get a normal answer.
      const wholeInOneSlot = queryFilling(3003, 'allowed.test', 4096);
      assert.equal(readQuery(wholeInOneSlot).ok, true, 'the start of the datagram parses as a query by itself');
      const packets = [
        Buffer.concat([queryBytes(3000, 'allowed.test'), Buffer.alloc(5000)]),
        queryBytes(3001, 'allowed.test'),
        Buffer.concat([queryBytes(3002, 'x.denied.test'), Buffer.alloc(65_000 - 40)]),
        Buffer.concat([wholeInOneSlot, Buffer.alloc(500)]),
      ];
      const replies = collect(client, 4);
      burst(client, '127.0.0.1', fx.port, packets);
      const got = await replies;
      assert.equal(rcodeOf(got.get(3000)!), 1);
      assert.equal(rcodeOf(got.get(3001)!), 0);
      assert.equal(rcodeOf(got.get(3002)!), 1);
      assert.equal(rcodeOf(got.get(3003)!), 1, 'a datagram read cut is refused, never answered as if whole');
      const events = fx.decisions.slice(eventsBefore);
      assert.equal(events.length, 4, 'one decision event per datagram');
      assert.equal(events.filter((e) => e.reason === 'malformed-request' && e.decision === 'blocked').length, 3);
      assert.match(String(events.find((e) => e.reason === 'malformed-request' && /larger than the 4096 bytes/.test(String(e.message)))?.message), /datagram larger/);
    } finally {
      client.close();
    }
  });

  test('dig over UDP, allowed and denied', async () => {
    const allowed = await dig(fx.port, 'allowed.test', 'A', '+notcp');
    assert.equal(allowed.status, 'NOERROR');
    assert.deepEqual(
      allowed.answers.map((a) => a[3]),
      ['198.51.100.10'],
    );
    const denied = await dig(fx.port, 'evil.test', 'A', '+notcp');
    assert.equal(denied.status, 'NXDOMAIN');
  });
});

describe('batched UDP DNS path over IPv6', { skip }, () => {
  let fx: DnsFixture | undefined;
  let ipv6 = true;
  before(async () => {
    try {
      fx = await startDnsFixture({ mode: 'block', udp: 'batch', listenHost: '::1' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EADDRNOTAVAIL') throw err;
      ipv6 = false;
    }
  });
  after(async () => fx?.close());

  test('dig and a dgram burst over ::1 are answered', async (t) => {
    if (!ipv6 || !fx) return t.skip('no IPv6 loopback here');
    assert.equal(fx.server.udp, 'batch');
    const { stdout } = await new Promise<{ stdout: string }>((resolve, reject) => {
      const child = spawn('dig', ['@::1', '-p', String(fx!.port), 'allowed.test', 'AAAA', '+notcp', '+time=3', '+tries=1']);
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.on('error', reject);
      child.on('close', () => resolve({ stdout: out }));
    });
    assert.match(stdout, /status: NOERROR/);
    assert.match(stdout, /2001:db8::10/);
    const client = await bindClient('udp6', '::1');
    try {
      const packets = Array.from({ length: 20 }, (_, i) => queryBytes(3000 + i, 'allowed.test'));
      const replies = collect(client, packets.length);
      burst(client, '::1', fx.port, packets);
      const got = await replies;
      assert.equal(got.size, 20);
      for (const reply of got.values()) assert.equal(rcodeOf(reply), 0);
      const event = fx.decisions[fx.decisions.length - 1]!;
      assert.equal(event.kind, 'dns');
    } finally {
      client.close();
    }
  });
});

describe('BatchUdpSocket', { skip }, () => {
  test('reads a burst in one batch and answers with the batch; close frees the port at once', async () => {
    const seen: string[] = [];
    const socket = BatchUdpSocket.bind('127.0.0.1', 0, (d) => {
      seen.push(`${d.family} ${d.address} ${d.bytes.toString()}`);
      return d.bytes.toString() === 'no answer' ? null : Buffer.from(`echo ${d.bytes.toString()}`);
    });
    const client = await bindClient('udp4', '127.0.0.1');
    try {
      const packets = ['a', 'b', 'no answer', 'c'].map((s) => Buffer.from(s));
      const replies = new Promise<string[]>((resolve) => {
        const got: string[] = [];
        const timer = setTimeout(() => resolve(got), 2000);
        client.on('message', (m) => {
          got.push(m.toString());
          if (got.length === 3) {
            clearTimeout(timer);
            resolve(got);
          }
        });
      });
      burst(client, '127.0.0.1', socket.port, packets);
      assert.deepEqual(await replies, ['echo a', 'echo b', 'echo c']);
      assert.deepEqual(seen, ['IPv4 127.0.0.1 a', 'IPv4 127.0.0.1 b', 'IPv4 127.0.0.1 no answer', 'IPv4 127.0.0.1 c']);
      const stats = socket.stats();
      assert.equal(stats.batches, 1, 'the four datagrams queued before the read came in one recvmmsg');
      assert.equal(stats.datagrams, 4);
      assert.equal(stats.sent, 3);
    } finally {
      client.close();
      const port = socket.port;
      socket.close();
      socket.close();
      assert.equal(socket.sendTo(Buffer.from('x'), '127.0.0.1', 9), false, 'a closed socket sends nothing');
      // The fd is closed at once: the port can be bound again.
      const again = BatchUdpSocket.bind('127.0.0.1', port, () => null);
      again.close();
    }
  });

  test('sources from two clients: each datagram has its own address and is answered there; one address string per run of one source', async () => {
    const seen: Array<{ address: string; sender: string }> = [];
    const socket = BatchUdpSocket.bind('127.0.0.1', 0, (d) => {
      seen.push({ address: d.address, sender: d.bytes.toString().split(' ')[0]! });
      return Buffer.from(`echo ${d.bytes.toString()}`);
    });
    const a = await bindClient('udp4', '127.0.0.1');
    const b = await bindClient('udp4', '127.0.0.2');
    try {
      const replies = (client: dgram.Socket, count: number) =>
        new Promise<string[]>((resolve) => {
          const got: string[] = [];
          const timer = setTimeout(() => resolve(got), 3000);
          client.on('message', (m) => {
            got.push(m.toString());
            if (got.length === count) {
              clearTimeout(timer);
              resolve(got);
            }
          });
        });
      const fromA = replies(a, 7);
      const fromB = replies(b, 3);
      const packets = (sender: string, n: number, from: number) => Array.from({ length: n }, (_, i) => Buffer.from(`${sender} ${from + i}`));
      burst(a, '127.0.0.1', socket.port, packets('127.0.0.1', 4, 0));
      burst(b, '127.0.0.1', socket.port, packets('127.0.0.2', 3, 0));
      burst(a, '127.0.0.1', socket.port, packets('127.0.0.1', 3, 4));
      assert.deepEqual(
        (await fromA).sort(),
        ['0', '1', '2', '3', '4', '5', '6'].map((i) => `echo 127.0.0.1 ${i}`),
      );
      assert.deepEqual(
        (await fromB).sort(),
        ['0', '1', '2'].map((i) => `echo 127.0.0.2 ${i}`),
      );
      assert.equal(seen.length, 10);
      for (const s of seen) assert.equal(s.address, s.sender, 'each datagram carries its own source address');
      const runs = seen.filter((s, i) => i === 0 || s.address !== seen[i - 1]!.address).length;
      assert.equal(socket.stats().addressTexts, runs, 'one address string per run of datagrams from one source (not one per datagram)');
    } finally {
      a.close();
      b.close();
      socket.close();
    }
  });

  test('a process whose DNS server closed exits by itself (no handle left on the event loop)', async () => {
    const serverModule = fileURLToPath(new URL('../../dns/server.js', import.meta.url));
    const eventsModule = fileURLToPath(new URL('../../events/event-log.js', import.meta.url));
    const bookModule = fileURLToPath(new URL('../../decision/address-book.js', import.meta.url));
    const fixtureModule = fileURLToPath(new URL('../helpers/dns-fixture.js', import.meta.url));
    const script = `
      const { startDnsServer } = await import(${JSON.stringify(serverModule)});
      const { EventLog } = await import(${JSON.stringify(eventsModule)});
      const { AddressBook } = await import(${JSON.stringify(bookModule)});
      const { makePolicy, udpExchange, queryBytes } = await import(${JSON.stringify(fixtureModule)});
      const policy = makePolicy({ mode: 'block' });
      const server = await startDnsServer({ listen: { host: '127.0.0.1', port: 0 }, upstreams: [], policy: () => policy,
        events: new EventLog({ stdout: false }), addressBook: new AddressBook(), udp: 'batch' });
      const reply = await udpExchange(server.udpAddress.port, queryBytes(7, 'denied.test'));
      await server.close();
      process.stdout.write(server.udp + ' ' + (reply ? reply.readUInt16BE(0) : 'none'));`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = await new Promise<number | null | 'hung'>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve('hung');
      }, 10_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve(code);
      });
    });
    assert.equal(exited, 0, `child exit (stderr: ${err})`);
    assert.equal(out, 'batch 7');
  });

  test('a worker terminated with its socket open: the socket is closed, and the process neither crashes nor hangs', async () => {
    // The close callback is the addon's code: node must not unload the addon before libuv has called it.
    const batchModule = fileURLToPath(new URL('../../net/udp-batch.js', import.meta.url));
    const script = `
      const { Worker } = await import('node:worker_threads');
      const code = "Promise.all([import(" + ${JSON.stringify(JSON.stringify(batchModule))} + "), import('node:worker_threads')]).then(([{ BatchUdpSocket }, { parentPort }]) => {" +
        "const s = BatchUdpSocket.bind('127.0.0.1', 0, () => null); parentPort.postMessage(s.port); });";
      const worker = new Worker(code, { eval: true });
      const port = await new Promise((resolve) => worker.once('message', resolve));
      await worker.terminate();
      const { BatchUdpSocket } = await import(${JSON.stringify(batchModule)});
      const again = BatchUdpSocket.bind('127.0.0.1', port, () => null);
      again.close();
      process.stdout.write('rebound ' + port);`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const exited = await new Promise<number | string | null>((resolve) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve('hung');
      }, 10_000);
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        resolve(signal ?? code);
      });
    });
    assert.equal(exited, 0, `child exit (stderr: ${err})`);
    assert.match(out, /^rebound \d+$/);
  });

  test('the dgram setting uses node dgram', async () => {
    const server = await startDnsServer({
      listen: { host: '127.0.0.1', port: 0 },
      upstreams: [],
      policy: () => makePolicy({ mode: 'block' }),
      events: new EventLog({ stdout: false }),
      addressBook: new AddressBook(),
      udp: 'dgram',
    });
    try {
      assert.equal(server.udp, 'dgram');
      const result = await dig(server.udpAddress.port, 'denied.test', 'A', '+notcp');
      assert.equal(result.status, 'NXDOMAIN');
    } finally {
      await server.close();
    }
  });
});
