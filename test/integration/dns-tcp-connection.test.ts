import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { test } from 'node:test';
import { queryBytes, startDnsFixture, type DnsFixture } from '../helpers/dns-fixture.js';
import { waitFor } from '../helpers/wait-for.js';

/**
 * An upstream that answers only when told: a query held there is an answer egress-guard owes its TCP client for as
 * long as the test likes (an upstream slower than the idle timeout), with no timing to guess.
 */
interface HeldUpstream {
  address: string;
  /** The names asked, in order. */
  asked: string[];
  /** Answer every query held so far (NOERROR, no records: the question echoed with QR and RA set). */
  release(): void;
  close(): Promise<void>;
}

async function startHeldUpstream(): Promise<HeldUpstream> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  const held: [Buffer, dgram.RemoteInfo][] = [];
  const asked: string[] = [];
  socket.on('message', (packet, rinfo) => {
    held.push([packet, rinfo]);
    // The question's name, label by label (no compression in a query).
    const labels: string[] = [];
    for (let at = 12; at < packet.length && packet[at]! > 0; at += 1 + packet[at]!) labels.push(packet.subarray(at + 1, at + 1 + packet[at]!).toString('latin1'));
    asked.push(labels.join('.'));
  });
  return {
    address: `127.0.0.1:${socket.address().port}`,
    asked,
    release: () => {
      for (const [packet, rinfo] of held.splice(0)) {
        const reply = Buffer.from(packet);
        reply.writeUInt16BE(reply.readUInt16BE(2) | 0x8080, 2);
        socket.send(reply, rinfo.port, rinfo.address);
      }
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

const framed = (query: Buffer) => Buffer.concat([Buffer.from([query.length >> 8, query.length & 0xff]), query]);

/** A TCP client of the DNS server: the frames it got, its close, and whether the server closed its side first. */
interface TcpClient {
  socket: net.Socket;
  /** The ids of the answers received so far, in order. */
  answerIds: number[];
  closed: Promise<void>;
  isClosed(): boolean;
}

function connectClient(port: number): TcpClient {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const answerIds: number[] = [];
  let pending = Buffer.alloc(0);
  let closed = false;
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
      answerIds.push(pending.readUInt16BE(2));
      pending = pending.subarray(2 + pending.readUInt16BE(0));
    }
  });
  // A server that ends its side is done with the connection: the client ends too, as a resolver does.
  socket.on('end', () => socket.end());
  socket.on('error', () => socket.destroy());
  const closedPromise = new Promise<void>((resolve) =>
    socket.on('close', () => {
      closed = true;
      resolve();
    }),
  );
  return { socket, answerIds, closed: closedPromise, isClosed: () => closed };
}

/** Waits `ms` or until the client is closed, whichever is first (a bound, not an assertion on timing). */
const closedWithin = async (client: TcpClient, ms: number): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([client.closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
  return client.isClosed();
};

async function withHeldFixture(idleMs: number, body: (fx: DnsFixture, upstream: HeldUpstream) => Promise<void>): Promise<void> {
  const upstream = await startHeldUpstream();
  // The upstream timeout far past the test's waits: the queries are answered when the test releases them, not by SERVFAIL.
  const fx = await startDnsFixture({ mode: 'block', upstreams: [upstream.address], upstreamTimeoutMs: 60_000, tcpIdleTimeoutMs: idleMs });
  try {
    await body(fx, upstream);
  } finally {
    await fx.close();
    await upstream.close();
  }
}

const malformed = (fx: DnsFixture) => fx.decisions.filter((e) => e.reason === 'malformed-request').map((e) => e.message);

test('DNS over TCP: a connection waiting for answers from a slow upstream is not idle; it gets them, then closes at the idle timeout', { timeout: 30_000 }, async () => {
  await withHeldFixture(300, async (fx, upstream) => {
    const client = connectClient(fx.port);
    // No FIN: the client waits for its answer, as a resolver does.
    client.socket.write(framed(queryBytes(41, 'slow.allowed.test')));
    await waitFor('the query at the upstream', () => upstream.asked.length === 1, 5000);
    // Until this fix the idle timeout closed the connection here, the answer owed to it never sent (and no event).
    assert.equal(await closedWithin(client, 1200), false, 'closed at the idle timeout while its answer was owed');
    upstream.release();
    await waitFor('the answer', () => client.answerIds.length === 1, 5000);
    assert.deepEqual(client.answerIds, [41]);
    // Owed nothing now: idle, so closed at the timeout all the same, without an event.
    assert.equal(await closedWithin(client, 10_000), true, 'not closed once idle');
    assert.deepEqual(malformed(fx), []);
  });
});

test('DNS over TCP: a client that sends its queries then FIN gets every answer before the close, however slow the upstream', { timeout: 30_000 }, async () => {
  await withHeldFixture(300, async (fx, upstream) => {
    const client = connectClient(fx.port);
    client.socket.end(Buffer.concat([framed(queryBytes(1, 'one.allowed.test')), framed(queryBytes(2, 'two.allowed.test')), framed(queryBytes(3, 'localhost'))]));
    await waitFor('both queries at the upstream', () => upstream.asked.length === 2, 5000);
    assert.equal(await closedWithin(client, 1200), false, 'closed at the idle timeout while answers were owed');
    upstream.release();
    assert.equal(await closedWithin(client, 10_000), true, 'not closed after the answers');
    assert.deepEqual([...client.answerIds].sort(), [1, 2, 3]);
    assert.deepEqual(malformed(fx), []);
  });
});

test('DNS over TCP: a client that sends nothing and is owed nothing is closed at the idle timeout, without an event', { timeout: 30_000 }, async () => {
  await withHeldFixture(300, async (fx) => {
    const client = connectClient(fx.port);
    assert.equal(await closedWithin(client, 10_000), true, 'an idle connection was kept open');
    assert.deepEqual(client.answerIds, []);
    assert.deepEqual(fx.decisions, []);
  });
});

test(
  'DNS over TCP: an oversized frame behind queries still owed an answer has exactly one event, however many answers come back after the close',
  { timeout: 30_000 },
  async () => {
    await withHeldFixture(60_000, async (fx, upstream) => {
      const client = connectClient(fx.port);
      const queries = ['a', 'b', 'c'].map((label, i) => framed(queryBytes(i + 1, `${label}.allowed.test`)));
      client.socket.write(Buffer.concat([...queries, Buffer.from([0xff, 0xff]), Buffer.alloc(600)]));
      await client.closed;
      await waitFor('the queries at the upstream', () => upstream.asked.length === 3, 5000);
      upstream.release();
      // The upstream's answers reach the cache, then (a microtask later) the connection's handling of each.
      await waitFor('the answers in the cache', () => fx.server.stats().cacheEntries === 3, 5000);
      await new Promise((resolve) => setImmediate(resolve));
      // Until this fix each answer that came back after the close read the oversized frame again: one event per answer.
      assert.deepEqual(malformed(fx), ['malformed DNS packet over tcp (a frame of 65535 bytes, over the 4096-byte limit for a query); connection closed']);
      assert.deepEqual(client.answerIds, []);
    });
  },
);

test('DNS over TCP: the queries behind a dropped message are not read once the connection is closed (no decision for them)', { timeout: 30_000 }, async () => {
  await withHeldFixture(60_000, async (fx, upstream) => {
    const client = connectClient(fx.port);
    // A 1-byte message (no id to answer FORMERR with) is dropped, which closes the connection; 15 queries at the
    // upstream fill the pipeline with it, so the 16th is still waiting in the server's buffer at the close.
    const names = Array.from({ length: 16 }, (_, i) => `q${i}.allowed.test`);
    client.socket.write(Buffer.concat([Buffer.from([0, 1, 7]), ...names.map((name, i) => framed(queryBytes(i + 1, name)))]));
    await client.closed;
    await waitFor('the queries at the upstream', () => upstream.asked.length === 15, 5000);
    upstream.release();
    await waitFor('the answers in the cache', () => fx.server.stats().cacheEntries === 15, 5000);
    await new Promise((resolve) => setImmediate(resolve));
    // Until this fix each answer that came back after the close read on: the 16th query had its decision and went
    // upstream for a connection already gone.
    assert.deepEqual(
      fx.decisions.filter((e) => e.reason !== 'malformed-request').map((e) => e.host),
      names.slice(0, 15),
    );
    assert.deepEqual(upstream.asked, names.slice(0, 15));
    // One event, saying the connection closed (until 2026-12-04 `dropped`, as if the connection had gone on).
    assert.deepEqual(malformed(fx), ['malformed DNS packet over tcp (1-byte packet has no id); connection closed']);
  });
});

/**
 * An upstream whose answers are as long as a TCP message can be (65,535 bytes of TXT records) and carry no OPT
 * record, though asked with one: over UDP it says TC, so the answer is fetched over TCP.
 */
async function startLongAnswerUpstream(): Promise<{ address: string; close(): Promise<void> }> {
  const questionOf = (query: Buffer) => {
    let at = 12;
    while (query[at]! > 0) at += 1 + query[at]!;
    return query.subarray(12, at + 5);
  };
  const onQuery = (udp: dgram.Socket) => (query: Buffer, rinfo: dgram.RemoteInfo) => {
    const header = Buffer.from(query.subarray(0, 12));
    header.writeUInt16BE(0x8380, 2); // QR, TC, RD, RA
    header.writeUInt32BE(0x00010000, 4); // one question, no answer
    header.writeUInt32BE(0, 8);
    udp.send(Buffer.concat([header, questionOf(query)]), rinfo.port, rinfo.address);
  };
  const tcp = net.createServer((socket) => {
    let pending = Buffer.alloc(0);
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (pending.length < 2 || pending.length < 2 + pending.readUInt16BE(0)) return;
      const query = pending.subarray(2, 2 + pending.readUInt16BE(0));
      const question = questionOf(query);
      const records: Buffer[] = [];
      for (let left = 65_535 - 12 - question.length; left > 0;) {
        // A TXT record owned by the question name (pointer to offset 12): 12 bytes, then one string of up to 255.
        const text = Math.min(255, left - 13);
        const record = Buffer.alloc(13 + text, 0x61);
        record.writeUInt16BE(0xc00c, 0);
        record.writeUInt16BE(16, 2);
        record.writeUInt16BE(1, 4);
        record.writeUInt32BE(60, 6);
        record.writeUInt16BE(1 + text, 10);
        record[12] = text;
        records.push(record);
        left -= record.length;
      }
      const header = Buffer.from(query.subarray(0, 12));
      header.writeUInt16BE(0x8180, 2);
      header.writeUInt16BE(1, 4);
      header.writeUInt16BE(records.length, 6);
      header.writeUInt32BE(0, 8);
      const answer = Buffer.concat([header, question, ...records]);
      socket.end(Buffer.concat([Buffer.from([answer.length >> 8, answer.length & 0xff]), answer]));
    });
  });
  // UDP and TCP on one port: the kernel picks it for UDP, and something may hold it for TCP (another test's
  // connection); then another is tried.
  let udp: dgram.Socket;
  for (let attempt = 0; ; attempt++) {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(socket.address().port, '127.0.0.1', () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      udp = socket;
      break;
    } catch (err) {
      await new Promise<void>((resolve) => socket.close(() => resolve()));
      if (attempt >= 10 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  udp.on('message', onQuery(udp));
  return {
    address: `127.0.0.1:${udp.address().port}`,
    close: async () => {
      await new Promise<void>((resolve) => udp.close(() => resolve()));
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    },
  };
}

test('DNS over TCP: an answer of 65,535 bytes to a query with EDNS is still answered (it fits without the OPT record)', { timeout: 30_000 }, async () => {
  const upstream = await startLongAnswerUpstream();
  const fx = await startDnsFixture({ mode: 'block', upstreams: [upstream.address], upstreamTimeoutMs: 5000 });
  try {
    const client = connectClient(fx.port);
    let answer = Buffer.alloc(0);
    client.socket.on('data', (chunk: Buffer) => (answer = Buffer.concat([answer, chunk])));
    // Asked twice: from the upstream, then from the cache.
    for (const id of [7, 8]) {
      client.socket.write(framed(queryBytes(id, 'long.allowed.test', 16, true)));
      // Until this fix the frame's length did not fit its 2 bytes: the write threw, the answer was lost.
      await waitFor(`answer ${id}`, () => client.answerIds.length === id - 6, 10_000);
    }
    assert.deepEqual(client.answerIds, [7, 8]);
    const first = answer.subarray(2, 2 + answer.readUInt16BE(0));
    assert.equal(first.length, 65_535);
    assert.equal(first.readUInt16BE(6) > 200, true, 'the TXT records are there');
    client.socket.end();
    await client.closed;
  } finally {
    await fx.close();
    await upstream.close();
  }
});

test('DNS over TCP: a connection past the cap is closed with an at-capacity event naming its client; the open ones are still served', { timeout: 30_000 }, async () => {
  const fx = await startDnsFixture({ mode: 'block', maxTcpConnections: 2 });
  const clients: TcpClient[] = [];
  try {
    // Each of the first two is answered once: the server holds both (node counts a connection once it is accepted).
    for (const id of [1, 2]) {
      const client = connectClient(fx.port);
      clients.push(client);
      client.socket.write(framed(queryBytes(id, 'localhost')));
      await waitFor(`answer ${id}`, () => client.answerIds.length === 1, 5000);
    }
    const third = connectClient(fx.port);
    clients.push(third);
    await new Promise<void>((resolve) => third.socket.once('connect', () => resolve()));
    const thirdText = `127.0.0.1:${third.socket.localPort}`;
    assert.equal(await closedWithin(third, 10_000), true, 'the connection past the cap was kept open');
    // Until this fix node closed it with no event at all.
    await waitFor('the at-capacity event', () => fx.decisions.some((e) => e.reason === 'at-capacity'), 5000);
    const capacity = fx.decisions.filter((e) => e.reason === 'at-capacity');
    assert.deepEqual(
      capacity.map((e) => [e.kind, e.client, e.host, e.decision, e.message]),
      [['dns', thirdText, '(none)', 'blocked', "DNS over TCP connection closed unread: 2 connections are open already (egress-guard's limit)"]],
    );
    // The first two are still served.
    for (const [i, client] of clients.slice(0, 2).entries()) {
      client.socket.write(framed(queryBytes(11 + i, 'localhost')));
      await waitFor(`answer ${11 + i}`, () => client.answerIds.length === 2, 5000);
      assert.deepEqual(client.answerIds, [1 + i, 11 + i]);
      assert.equal(client.isClosed(), false);
    }
  } finally {
    for (const client of clients) client.socket.destroy();
    await fx.close();
  }
});

/** Writes one byte of `bytes` every 100 ms (well under the tests' idle timeout of 1 s) until stopped or closed; the count written. */
function trickle(client: TcpClient, bytes: Buffer): { written(): number; stop(): void } {
  let at = 0;
  const timer = setInterval(() => {
    if (client.isClosed() || !client.socket.writable || at >= bytes.length) return;
    client.socket.write(bytes.subarray(at, at + 1));
    at++;
  }, 100);
  return { written: () => at, stop: () => clearInterval(timer) };
}

// The frame claims 4000 bytes: at a byte every 100 ms it is never whole within the tests' bounds.
const trickled = () => Buffer.concat([Buffer.from([4000 >> 8, 4000 & 0xff]), Buffer.alloc(4000, 0x61)]);

test('DNS over TCP: a frame trickled a byte at a time, each under the idle timeout, is closed at the frame deadline with one event', { timeout: 30_000 }, async () => {
  await withHeldFixture(1000, async (fx) => {
    const client = connectClient(fx.port);
    const sender = trickle(client, trickled());
    try {
      // Until this fix each byte restarted the idle timeout: the connection stayed open for as long as the client liked.
      assert.equal(await closedWithin(client, 15_000), true, 'the trickled frame kept the connection open');
      const events = malformed(fx);
      assert.equal(events.length, 1, JSON.stringify(events));
      assert.match(events[0]!, /^malformed DNS packet over tcp \(a frame not whole 2000 ms after its first byte, with \d+ bytes of a frame unanswered\); connection closed$/);
      assert.equal(sender.written() > 0, true);
    } finally {
      sender.stop();
    }
  });
});

test('DNS over TCP: a frame trickled behind a query at a slow upstream: the answer owed is delivered, then the connection closes with one event', { timeout: 30_000 }, async () => {
  await withHeldFixture(1000, async (fx, upstream) => {
    const client = connectClient(fx.port);
    client.socket.write(framed(queryBytes(5, 'slow.allowed.test')));
    await waitFor('the query at the upstream', () => upstream.asked.length === 1, 5000);
    const sender = trickle(client, trickled());
    try {
      // Past the frame deadline (2 s) several times over, by the bytes sent; the answer is still owed: the connection waits for it.
      await waitFor('bytes trickled for 4 s', () => sender.written() >= 40, 15_000);
      assert.equal(client.isClosed(), false, 'closed with its answer owed');
      upstream.release();
      // Until this fix the trickle kept the connection open after the answer, as long as the client liked.
      assert.equal(await closedWithin(client, 15_000), true, 'the trickled frame kept the connection open after the answer');
      assert.deepEqual(client.answerIds, [5]);
      const events = malformed(fx);
      assert.equal(events.length, 1, JSON.stringify(events));
      assert.match(events[0]!, /^malformed DNS packet over tcp \(a frame not whole 2000 ms after its first byte, with \d+ bytes of a frame unanswered\); connection closed$/);
    } finally {
      sender.stop();
    }
  });
});
