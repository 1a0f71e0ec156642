/**
 * The explicit proxy's plain requests read without node's http.Server (proxy/relay/request-reader.ts behind
 * connect-front.ts, issue 14): what node's server did there and no other test covered: the max-tunnels 503 for
 * plain requests, shutdown (close() and closeIdleConnections() close kept-alive connections between requests,
 * not one whose answer is under way; closeAllConnections() closes that one too, and one whose CONNECT waits behind
 * such an answer), and a request that asks for an
 * upgrade answered as a plain request (node's server had no 'upgrade' listener here).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { EventLog } from '../../events/event-log.js';
import { createHttpProxyServer, type HttpProxyServer } from '../../proxy/explicit/server.js';
import { createHttpForwarder } from '../../proxy/relay/http-forwarder.js';
import { createTrafficCounters, type TrafficCounters } from '../../proxy/relay/traffic-counters.js';
import { spliceTunnel } from '../../proxy/relay/tunnel.js';
import { blockModeContext } from '../helpers/block-mode-context.js';

/** An explicit proxy allowing `a.test` (at 127.0.0.1) with at most `maxTunnels` open connections, listening. */
async function explicitProxy(maxTunnels: number, counters: TrafficCounters): Promise<HttpProxyServer> {
  const events = new EventLog({ stdout: false });
  const forwarder = createHttpForwarder({ events, connectTimeoutMs: 2000, idleTimeoutMs: 5000 });
  const proxy = createHttpProxyServer({
    ...blockModeContext('a.test:*', ['a.test'], events),
    counters,
    tunnel: spliceTunnel,
    connectTimeoutMs: 2000,
    idleTimeoutMs: 5000,
    maxTunnels,
    forwarder,
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return proxy;
}

function portOf(server: net.Server): number {
  return (server.address() as net.AddressInfo).port;
}

/** A client connection that collects what comes back; `until(text)` waits (at most 5 s) for text to contain it. */
async function client(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.on('error', () => {});
  let text = '';
  let closed = false;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const w of waiters) w();
  };
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    wake();
  });
  socket.on('close', () => {
    closed = true;
    wake();
  });
  const waitFor = (done: () => boolean) =>
    new Promise<boolean>((resolve) => {
      const check = () => {
        if (!done()) return;
        clearTimeout(timer);
        waiters.delete(check);
        resolve(true);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        resolve(false);
      }, 5000);
      waiters.add(check);
      check();
    });
  return {
    socket,
    text: () => text,
    closed: () => closed,
    until: (needle: string) => waitFor(() => text.includes(needle)),
    untilClosed: () => waitFor(() => closed),
  };
}

/** `counters.open` once it is `expected`, or as it is after 3 s. */
async function openSettled(counters: TrafficCounters, expected: number): Promise<number> {
  for (let i = 0; i < 300 && counters.open !== expected; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  return counters.open;
}

describe('explicit proxy: plain requests read by the request reader', () => {
  let upstream: http.Server;
  let authority: string;
  /** Answers to /hold wait here until a test lets them go. */
  const held: http.ServerResponse[] = [];

  before(async () => {
    upstream = http.createServer((req, res) => {
      if (req.url === '/hold') return void held.push(res);
      res.end(`answer ${req.url}`);
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    authority = `a.test:${portOf(upstream)}`;
  });

  after(async () => {
    for (const res of held) res.end();
    upstream.closeAllConnections();
    await new Promise((resolve) => upstream.close(resolve));
  });

  const get = (path: string, extra = '') => `GET http://${authority}${path} HTTP/1.1\r\nHost: ${authority}\r\n${extra}\r\n`;

  test('a plain request past max-tunnels gets 503; the count goes down once the answer in flight is out', async () => {
    const counters = createTrafficCounters();
    const proxy = await explicitProxy(1, counters);
    try {
      const first = await client(portOf(proxy));
      first.socket.write(get('/hold'));
      while (held.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      const open = () => counters.open;
      assert.equal(open(), 1, 'the request in flight is counted');
      const second = await client(portOf(proxy));
      second.socket.write(get('/second'));
      assert.ok(await second.until('\r\n\r\n'), 'the second request is answered');
      assert.match(second.text(), /^HTTP\/1\.1 503 /);
      assert.match(second.text(), /limit of 1 open connections/);
      held.shift()!.end('released');
      assert.ok(await first.until('released'), 'the held answer comes');
      while (open() !== 0) await new Promise((resolve) => setTimeout(resolve, 10));
      second.socket.write(get('/third'));
      assert.ok(await second.until('answer /third'), 'served again once under the limit, on the same connection');
      first.socket.destroy();
      second.socket.destroy();
    } finally {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  test('shutdown: close() ends kept-alive connections between requests, not an answer under way; closeAllConnections() ends it', async () => {
    const proxy = await explicitProxy(10, createTrafficCounters());
    const idle = await client(portOf(proxy));
    idle.socket.write(get('/one'));
    assert.ok(await idle.until('answer /one'));
    const busy = await client(portOf(proxy));
    busy.socket.write(get('/hold'));
    while (held.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    const closed = new Promise((resolve) => proxy.close(resolve));
    assert.ok(await idle.untilClosed(), 'the idle kept-alive connection is closed by close()');
    proxy.closeIdleConnections();
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(busy.closed(), false, 'a connection whose answer is under way is not idle');
    proxy.closeAllConnections();
    assert.ok(await busy.untilClosed(), 'closeAllConnections() closes it');
    await closed;
    held.shift()!.end();
  });

  test('shutdown: closeAllConnections() also ends a connection whose CONNECT waits behind an answer under way', async () => {
    // The CONNECT is no longer read as HTTP, nor a tunnel yet: without this, the drain timeout's closeAllConnections()
    // left it open, and close() waited for the answer ahead and the tunnel after it.
    const proxy = await explicitProxy(10, createTrafficCounters());
    const waiting = await client(portOf(proxy));
    waiting.socket.write(get('/hold') + `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    while (held.length === 0) await new Promise((resolve) => setTimeout(resolve, 10));
    const closed = new Promise((resolve) => proxy.close(resolve));
    proxy.closeIdleConnections();
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(waiting.closed(), false, 'not idle: an answer is under way');
    proxy.closeAllConnections();
    const ended = await waiting.untilClosed();
    held.shift()!.end();
    assert.ok(ended, 'closeAllConnections() closes it');
    await closed;
  });

  test('a client resetting its connection releases the count of every request still in flight: queued ones, one a CONNECT waits behind', async () => {
    const counters = createTrafficCounters();
    const proxy = await explicitProxy(10, counters);
    const connect = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;
    try {
      for (const [bytes, inFlight] of [
        [get('/hold') + connect, 1],
        [get('/hold') + get('/hold'), 2],
      ] as const) {
        const c = await client(portOf(proxy));
        c.socket.write(bytes);
        while (held.length < inFlight) await new Promise((resolve) => setTimeout(resolve, 10));
        assert.equal(counters.open, inFlight, 'each request in flight is counted (the CONNECT waits for the answer ahead)');
        c.socket.resetAndDestroy();
        assert.equal(await openSettled(counters, 0), 0, 'the connection is gone: its requests no longer count against max-tunnels');
        for (const res of held.splice(0)) res.end();
      }
    } finally {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  test("a refused CONNECT whose client sent bytes along its head: the client's close frees the tunnel's count", async () => {
    const counters = createTrafficCounters();
    const proxy = await explicitProxy(10, counters);
    try {
      const blocked = `CONNECT c.test:443 HTTP/1.1\r\nHost: c.test:443\r\n\r\nearly bytes`;
      // Alone on its connection (read by connect-front.ts), and behind a request (by the request reader).
      for (const bytes of [blocked, get('/one') + blocked]) {
        const c = await client(portOf(proxy));
        c.socket.write(bytes);
        assert.ok(await c.until('403 Forbidden'), 'the CONNECT is refused');
        assert.ok(await c.untilClosed(), 'the client closes its side in turn');
        assert.equal(await openSettled(counters, 0), 0, 'the refused tunnel no longer counts against max-tunnels');
      }
    } finally {
      // Tunnels are the sidecar's to drain, not closeAllConnections'.
      for (const socket of counters.tunnels) socket.destroy();
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  test('a request asking for an upgrade is answered as a plain request, and the connection serves on', async () => {
    const proxy = await explicitProxy(10, createTrafficCounters());
    try {
      const c = await client(portOf(proxy));
      c.socket.write(get('/ws', 'Connection: Upgrade\r\nUpgrade: websocket\r\n'));
      assert.ok(await c.until('answer /ws'), 'answered as a plain request');
      assert.match(c.text(), /^HTTP\/1\.1 200 /);
      c.socket.write(get('/next'));
      assert.ok(await c.until('answer /next'), 'the connection is still read');
      c.socket.destroy();
    } finally {
      proxy.closeAllConnections();
      await new Promise((resolve) => proxy.close(resolve));
    }
  });
});
