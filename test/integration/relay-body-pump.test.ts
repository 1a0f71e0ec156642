/**
 * The body pump (issue 14): the rest of a bulk Content-Length answer to a plain request moved from upstream to the
 * client by the native relay (kernel_relay.c's pump(), splice(2) on its thread, bounded by the body's length), not
 * read into JavaScript (upstream-connection.ts's `pumpBody`). The explicit proxy runs in this process so that the
 * relay's own counters (kernelRelayStats) show that a pump ran and ended, and the process's fds that none leaked.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { EventLog } from '../../events/event-log.js';
import type { EgressEvent } from '../../events/schema.js';
import { kernelRelayStats, kernelRelayUnavailable, useRelay } from '../../net/kernel-relay.js';
import { createHttpProxyServer, type HttpProxyServer } from '../../proxy/explicit/server.js';
import { createHttpForwarder } from '../../proxy/relay/http-forwarder.js';
import { createTrafficCounters } from '../../proxy/relay/traffic-counters.js';
import { spliceTunnel } from '../../proxy/relay/tunnel.js';
import { blockModeContext } from '../helpers/block-mode-context.js';
import { readAnswer, untilStalled } from '../helpers/slow-reader.js';
import { waitFor } from '../helpers/wait-for.js';

/** More than loopback's socket buffers hold: a client that stops reading leaves the pump waiting. */
const BULK = 24 * 1024 * 1024 + 77;
const bulkBody = (() => {
  const body = Buffer.alloc(BULK);
  for (let i = 0; i < BULK; i++) body[i] = (i * 7 + (i >> 16)) & 0xff;
  return body;
})();
/** Where /cut, /stall and /reset stop sending: past the first pieces read in JavaScript, inside the pump. */
const PART = 4 * 1024 * 1024 + 5;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const IDLE_MS = 1500;
/** More than every buffer between upstream and a client that stops reading holds (/big: written as the proxy reads it). */
const BIG = 64 * 1024 * 1024;

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

interface Answer {
  head: string;
  body: Buffer;
}

/**
 * Read `count` answers framed by Content-Length (20 s at most); fewer when the socket closes first, the last one's
 * body bytes then in `cut`.
 */
function readAnswers(socket: net.Socket, count: number): Promise<{ answers: Answer[]; cut?: number }> {
  return new Promise((resolve) => {
    const answers: Answer[] = [];
    let pieces: Buffer[] = [];
    let size = 0;
    /** The answer being read: its head and where its body ends in the bytes kept, once its head is whole. */
    let head: { text: string; end: number } | undefined;
    const finish = (cut?: number) => {
      clearTimeout(timer);
      socket.off('data', onData);
      resolve({ answers, ...(cut !== undefined && { cut }) });
    };
    const onData = (chunk: Buffer) => {
      pieces.push(chunk);
      size += chunk.length;
      // Flattened only when a head is due or a body is whole: 24 MiB flattened per read took longer than the test.
      for (;;) {
        if (!head) {
          const all = Buffer.concat(pieces);
          pieces = [all];
          const end = all.indexOf('\r\n\r\n');
          if (end === -1) return;
          const text = all.subarray(0, end).toString('latin1');
          head = { text, end: end + 4 + Number(/\r\ncontent-length: *(\d+)/i.exec(text)?.[1] ?? 0) };
        }
        if (size < head.end) return;
        const all = Buffer.concat(pieces);
        answers.push({ head: head.text, body: all.subarray(head.text.length + 4, head.end) });
        pieces = [all.subarray(head.end)];
        size = pieces[0]!.length;
        head = undefined;
        if (answers.length === count) return finish();
      }
    };
    const timer = setTimeout(() => finish(), 20_000);
    socket.on('data', onData);
    socket.once('close', () => {
      if (head) return finish(size - head.text.length - 4);
      finish();
    });
  });
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('the body pump: a bulk answer moved by the native relay', { skip: kernelRelayUnavailable() }, () => {
  let upstream: net.Server;
  let proxy: HttpProxyServer;
  let authority: string;
  const events: EgressEvent[] = [];
  const upstreamSockets = new Set<net.Socket>();
  /** The upstream connection answering a path other than /bulk and /small (PART of the body sent, the rest when the test says). */
  let current: net.Socket | undefined;
  /** What the upstream has handed to its socket of /big (its writes wait for 'drain'). */
  let bigWritten = 0;

  before(async () => {
    useRelay('kernel');
    upstream = net.createServer((socket) => {
      upstreamSockets.add(socket);
      socket.once('close', () => upstreamSockets.delete(socket));
      socket.on('error', () => socket.destroy());
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        for (let end = text.indexOf('\r\n\r\n'); end !== -1; end = text.indexOf('\r\n\r\n')) {
          const path = text.slice(0, end).split(' ')[1]!;
          text = text.slice(end + 4);
          answer(socket, path);
        }
      });
    });
    const answer = (socket: net.Socket, path: string) => {
      if (path === '/small') return void socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall`);
      if (path === '/big') {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BIG}\r\n\r\n`);
        const piece = bulkBody.subarray(0, 1024 * 1024);
        const more = () => {
          while (bigWritten < BIG) {
            bigWritten += piece.length;
            if (!socket.write(piece)) return void socket.once('drain', more);
          }
        };
        return void more();
      }
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BULK}\r\n\r\n`);
      if (path === '/bulk') return void socket.write(bulkBody);
      current = socket;
      socket.write(bulkBody.subarray(0, PART));
      // The server's FIN, or a reset, once the proxy has read what came (it is then in the pump); /stall sends nothing more.
      if (path === '/cut') setTimeout(() => socket.end(), 300);
      if (path === '/reset') setTimeout(() => socket.resetAndDestroy(), 300);
    };
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    authority = `a.test:${(upstream.address() as net.AddressInfo).port}`;
    const log = new EventLog({ stdout: false });
    log.subscribe((event) => void events.push(event));
    const forwarder = createHttpForwarder({ events: log, connectTimeoutMs: 2000, idleTimeoutMs: IDLE_MS });
    proxy = createHttpProxyServer({
      ...blockModeContext('a.test:*', ['a.test'], log),
      counters: createTrafficCounters(),
      tunnel: spliceTunnel,
      connectTimeoutMs: 2000,
      idleTimeoutMs: IDLE_MS,
      maxTunnels: 100,
      forwarder,
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  });

  after(async () => {
    proxy?.closeAllConnections();
    await new Promise((resolve) => proxy?.close(resolve));
    for (const socket of upstreamSockets) socket.destroy();
    await new Promise((resolve) => upstream?.close(resolve));
  });

  const get = (path: string) => `GET http://${authority}${path} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;
  const port = () => (proxy.address() as net.AddressInfo).port;
  /** The close event of the `nth` request for `path` (from 0), once it is written (10 s at most). */
  const closeOf = async (path: string, nth = 0) => {
    let close: EgressEvent | undefined;
    await waitFor(`the close event of ${path}`, () => {
      const id = events.filter((e) => e.event === 'decision' && (e as { path?: string }).path === path)[nth]?.id;
      close = events.find((e) => e.event === 'close' && e.id === id);
      return close !== undefined;
    });
    return close as EgressEvent & { bytes_in: number; error?: string };
  };
  /** Pumps started from now on, and whether every relay has ended since (`idle`). */
  const pumps = () => {
    const base = kernelRelayStats();
    return {
      started: () => kernelRelayStats().started - base.started,
      running: () => kernelRelayStats().relays - base.relays,
    };
  };
  type Pumps = ReturnType<typeof pumps>;
  /** Run `use` on a new client connection (destroyed after it), then wait until every pump started meanwhile has ended. */
  const withClient = async (use: (socket: net.Socket, count: Pumps) => Promise<void>): Promise<Pumps> => {
    const count = pumps();
    const socket = await connect(port());
    socket.on('error', () => {});
    try {
      await use(socket, count);
    } finally {
      socket.destroy();
    }
    await waitFor('every pump ended', () => count.running() === 0, 10_000);
    return count;
  };
  /** The `nth` close of `path` counts the whole body, without an error. */
  const closedWhole = async (path: string, nth = 0) => {
    const close = await closeOf(path, nth);
    assert.equal(close.error, undefined, JSON.stringify(close));
    assert.equal(close.bytes_in, BULK);
  };
  /** One answer, read to its end (`cut` when the connection closed first). */
  const oneAnswer = async (socket: net.Socket) => {
    const { answers, cut } = await readAnswers(socket, 1);
    return { answer: answers[0], cut };
  };
  const assertWhole = (answer: Answer | undefined) => {
    assert.ok(answer, 'an answer came whole');
    assert.match(answer.head, /^HTTP\/1\.1 200 /);
    assert.equal(sha256(answer.body), sha256(bulkBody), 'the body differs from what upstream sent');
  };
  const waitForPump = (count: Pumps) => waitFor('a pump running', () => count.running() > 0);

  test('a large body is pumped whole; the close event counts every byte', async () => {
    const count = await withClient(async (socket) => {
      socket.write(get('/bulk'));
      assertWhole((await oneAnswer(socket)).answer);
    });
    assert.ok(count.started() >= 1, 'the body went through a pump');
    await closedWhole('/bulk');
  });

  test('a request pipelined behind a pumped answer is answered after it, in order', async () => {
    const count = await withClient(async (socket) => {
      socket.write(get('/bulk') + get('/small') + get('/bulk'));
      const { answers } = await readAnswers(socket, 3);
      assert.equal(answers.length, 3, JSON.stringify(answers.map((a) => a.head)));
      assertWhole(answers[0]);
      assert.equal(answers[1]!.body.toString(), 'small');
      assertWhole(answers[2]);
    });
    assert.ok(count.started() >= 2, `both bulk bodies went through a pump (${count.started()})`);
    assert.equal((await closeOf('/small')).bytes_in, 5);
    await closedWhole('/bulk', 2);
  });

  test('a client that stops reading mid-pump: the pump waits, then everything arrives, counted', async () => {
    await withClient(async (socket, count) => {
      socket.pause();
      socket.write(get('/big'));
      await waitForPump(count);
      // Until the upstream has stopped writing (its writes wait on the proxy, which waits on the client): with
      // backpressure, well before the whole body.
      await untilStalled('the upstream stalled', () => bigWritten);
      assert.ok(bigWritten < BIG, `the upstream wrote ${bigWritten} of ${BIG} bytes while the client read nothing`);
      assert.equal(count.running(), 1, 'the pump waits for the client');
      const { head, received } = await readAnswer(socket, BIG);
      assert.match(head, /^HTTP\/1\.1 200 /);
      assert.equal(received, BIG);
    });
    const close = await closeOf('/big');
    assert.equal(close.error, undefined, JSON.stringify(close));
    assert.equal(close.bytes_in, BIG);
  });

  test("the client's FIN mid-pump: the answer still comes whole, then the proxy ends the connection", async () => {
    await withClient(async (socket, count) => {
      socket.pause();
      socket.write(get('/fin-bulk'));
      await waitForPump(count);
      socket.end();
      current!.write(bulkBody.subarray(PART));
      const received = oneAnswer(socket);
      socket.resume();
      assertWhole((await received).answer);
      await waitFor('the proxy ended the connection', () => socket.readableEnded || socket.destroyed);
    });
    await closedWhole('/fin-bulk');
  });

  test("upstream's FIN mid-pump: the body is cut, the client gets the bytes that came and a closed connection", async () => {
    const count = await withClient(async (socket) => {
      socket.write(get('/cut'));
      const { answer, cut } = await oneAnswer(socket);
      assert.equal(answer, undefined);
      assert.equal(cut, PART);
    });
    assert.ok(count.started() >= 1, 'the body went through a pump');
    const close = await closeOf('/cut');
    assert.equal(close.bytes_in, PART);
    assert.ok(close.error, JSON.stringify(close));
  });

  test('either side gone mid-pump (the proxy destroys the client, the client resets, upstream resets): no crash, every fd closed', async () => {
    const fdsBefore = openFds();
    const pipesBefore = kernelRelayStats().pipes;
    // The proxy destroys the client's socket while the pump holds its fd (closeAllConnections: the drain at shutdown).
    await withClient(async (socket, count) => {
      socket.pause();
      socket.write(get('/gone-bulk'));
      await waitForPump(count);
      proxy.closeAllConnections();
      await waitFor('the client closed', () => socket.destroyed || socket.readableEnded, 5000).catch(() => {});
    });
    assert.equal((await closeOf('/gone-bulk')).error, 'client-aborted');
    // The client resets its connection mid-pump (the native side sees it first).
    await withClient(async (socket, count) => {
      socket.pause();
      socket.write(get('/gone-bulk'));
      await waitForPump(count);
      socket.resetAndDestroy();
    });
    assert.ok((await closeOf('/gone-bulk', 1)).error, 'the second close says the client went');
    // Upstream resets mid-pump: the client's answer is cut.
    const count = await withClient(async (socket) => {
      socket.write(get('/reset'));
      const { answer, cut } = await oneAnswer(socket);
      assert.equal(answer, undefined);
      assert.ok(cut !== undefined && cut <= PART, `cut at ${cut}`);
    });
    assert.ok(count.started() >= 1, 'the last went through a pump');
    assert.ok((await closeOf('/reset')).error);
    // Every socket of these exchanges closed: what is open now is at most the pipes the relay keeps for later.
    const spare = 2 * (kernelRelayStats().pipes - pipesBefore);
    await waitFor('the fds closed', () => openFds() <= fdsBefore + spare, 5000).catch(() => {});
    assert.ok(openFds() <= fdsBefore + spare, `fds ${fdsBefore} before, ${openFds()} after (${spare} for pipes)`);
  });

  test('an upstream that stops sending mid-pump: cut at the idle timeout, the close event says so', async () => {
    await withClient(async (socket, count) => {
      socket.write(get('/stall'));
      await waitForPump(count);
      const { answer, cut } = await oneAnswer(socket);
      assert.equal(answer, undefined);
      assert.equal(cut, PART);
    });
    const close = await closeOf('/stall');
    assert.equal(close.error, 'upstream-timeout');
    assert.equal(close.bytes_in, PART);
  });
});
