/**
 * A client that sends its request, shuts its sending side (FIN) and reads the answer, on the request reader's path
 * (absolute-form through the explicit proxy, and plain HTTP inside a CONNECT tunnel). While the answer moves it keeps
 * working however long it takes; but once the upstream stops sending, the connection is closed after the half-close
 * timeout, its upstream with it and one close event for the request. Before, the upstream connection stayed open until
 * the idle timeout (300 s): after the client's FIN node no longer reads its socket, so not even the client's reset is
 * seen, and a client that closed meanwhile cannot be told from one still waiting. A server that sends part of an
 * answer and stalls, and one that sends a slow answer.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';

const HALF_CLOSE_TIMEOUT_MS = 2000;

interface ServerConnection {
  closed: boolean;
}

/** Answers each request with a head announcing 120 bytes: `stall`: 10 of them, then nothing; else 10 every 250 ms. */
async function answeringServer(stall: boolean): Promise<{ port: number; connections: ServerConnection[]; close: () => void }> {
  const connections: ServerConnection[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const connection = { closed: false };
    connections.push(connection);
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => {
      connection.closed = true;
      sockets.delete(socket);
    });
    let head = '';
    socket.on('data', (chunk: Buffer) => {
      if (head.includes('\r\n\r\n')) return;
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 120\r\n\r\n0123456789');
      if (stall) return;
      let sent = 1;
      const timer = setInterval(() => {
        if (socket.destroyed || ++sent > 12) return clearInterval(timer);
        socket.write('0123456789');
      }, 250);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections,
    close: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** Wait (at most `ms`) until `done` holds. */
async function until(done: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

/**
 * A client on the proxy: the request (in a CONNECT tunnel, or absolute-form), then its FIN; `received` grows with what
 * comes back after the CONNECT's 200.
 */
async function halfClosingClient(proxyPort: number, port: number, tunnel: boolean, path: string): Promise<{ socket: net.Socket; received: () => string }> {
  const socket = net.connect(proxyPort, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise((resolve) => socket.once('connect', resolve));
  let received = '';
  socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  if (tunnel) {
    socket.write(`CONNECT one.test:${port} HTTP/1.1\r\nHost: one.test:${port}\r\n\r\n`);
    await until(() => received.includes('\r\n\r\n'), 5000);
    assert.match(received, /^HTTP\/1\.1 200 /);
    received = '';
    socket.end(`GET ${path} HTTP/1.1\r\nHost: one.test:${port}\r\n\r\n`);
  } else {
    socket.end(`GET http://one.test:${port}${path} HTTP/1.1\r\nHost: one.test:${port}\r\n\r\n`);
  }
  return { socket, received: () => received };
}

describe('a half-closed client and an answer that stalls', () => {
  let guard: EgressGuardProcess;
  const servers: { close: () => void }[] = [];

  before(async () => {
    guard = await startEgressGuard(['--resolve', 'one.test=127.0.0.1'], {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'one.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      EGRESS_HALF_CLOSE_TIMEOUT: String(HALF_CLOSE_TIMEOUT_MS),
    });
  });
  after(async () => {
    await guard?.stop();
    for (const server of servers) server.close();
  });

  for (const tunnel of [false, true]) {
    const where = tunnel ? 'plain HTTP in a CONNECT tunnel' : 'absolute-form through the proxy';
    for (const gone of ['reset', 'closed'] as const) {
      test(`${where}: the client ${gone === 'reset' ? 'resets' : 'closes'} after part of a stalled answer; the upstream connection is closed after the half-close timeout, one close event`, async () => {
        const server = await answeringServer(true);
        servers.push(server);
        const path = `/stall-${tunnel ? 'tunnel' : 'absolute'}-${gone}`;
        const client = await halfClosingClient(guard.port, server.port, tunnel, path);
        await until(() => client.received().includes('0123456789'), 5000);
        assert.match(client.received(), /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\n0123456789$/);
        if (gone === 'reset') client.socket.resetAndDestroy();
        else client.socket.destroy();
        // The idle timeout is 300 s: closed well before it, by the half-close timeout (2 s).
        await until(() => server.connections.every((c) => c.closed), 15_000);
        assert.deepEqual(
          server.connections.map((c) => c.closed),
          [true],
          'the upstream connection is still open',
        );
        const decision = await guard.waitFor((l) => l.event === 'decision' && l.path === path);
        const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
        assert.equal(close.error, 'half-close-timeout');
        assert.equal(close.bytes_in, 10);
      });
    }

    test(`${where}: a half-closed client that reads a slow answer (longer than the half-close timeout, never silent that long) gets it whole`, async () => {
      const server = await answeringServer(false);
      servers.push(server);
      const client = await halfClosingClient(guard.port, server.port, tunnel, `/slow-${tunnel ? 'tunnel' : 'absolute'}`);
      await until(() => client.socket.readableEnded || client.received().endsWith('0123456789'.repeat(12)), 15_000);
      assert.match(client.received(), /\r\n\r\n(0123456789){12}$/);
      client.socket.destroy();
    });
  }
});
