/**
 * Plain HTTP in a CONNECT tunnel (curl -p) costs the server one connection, not two (issue 14): the tunnel's upstream,
 * connected before the 200 so that a failed connect is a 502, carries the first request the request reader forwards
 * where a new connection would have been opened for it (it was closed unused, and the request went over a second
 * connection). Where the proxy holds an idle connection to the server already, that one is taken and the tunnel's is
 * closed, so tunnels do not pile idle connections up at the server. Both relays of a tunnel (setting `relay`): the
 * kernel relay's upstream is the addon's until it is handed back. Servers that count the connections they accept.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { openTunnel } from '../helpers/raw-client.js';
import { serveWebSocketEcho, webSocketExchange } from '../helpers/websocket.js';

interface Accepted {
  requests: string[];
  closed: boolean;
}

/**
 * An HTTP server on loopback recording each connection it accepts and the requests on it; `close`: answers with
 * Connection: close; `webSocket`: upgrades WebSocket requests and echoes their messages (recorded as `UPGRADE path`).
 */
async function countingServer(close = false, webSocket = false): Promise<{ port: number; connections: Accepted[]; stop: () => void }> {
  const connections: Accepted[] = [];
  const bySocket = new Map<Socket, Accepted>();
  const server = http.createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    bySocket.get(req.socket)?.requests.push(`${req.method} ${req.url}`);
    req.resume();
    if (close) res.setHeader('Connection', 'close');
    req.on('end', () => res.end(`ok ${req.url}\n`));
  });
  if (webSocket) {
    server.on('upgrade', (req: http.IncomingMessage) => bySocket.get(req.socket)?.requests.push(`UPGRADE ${req.url}`));
    serveWebSocketEcho(server, () => undefined);
  }
  server.on('connection', (socket: Socket) => {
    const accepted: Accepted = { requests: [], closed: false };
    connections.push(accepted);
    bySocket.set(socket, accepted);
    socket.once('close', () => (accepted.closed = true));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections,
    stop: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** Wait (at most 5 s) until `done` holds. */
async function settled(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!done() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

for (const relay of ['kernel', 'js'] as const) {
  describe(`${relay} relay: plain HTTP through CONNECT reuses the tunnel's upstream connection`, () => {
    let guard: EgressGuardProcess;
    const servers: { stop: () => void }[] = [];
    const server = async (close = false, webSocket = false) => {
      const started = await countingServer(close, webSocket);
      servers.push(started);
      return started;
    };

    before(async () => {
      guard = await startEgressGuard(['--resolve', 'one.test=127.0.0.1'], {
        EGRESS_MODE: 'block',
        EGRESS_ALLOWED_ENDPOINTS: 'one.test:*',
        EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
        EGRESS_RELAY: relay,
      });
    });
    after(async () => {
      await guard?.stop();
      for (const s of servers) s.stop();
    });

    /** curl through a CONNECT tunnel (-p), every URL on one connection; stdout: each status. */
    const curlTunnelled = (urls: string[], args: string[] = []) =>
      runProcess('curl', ['-sS', '--max-time', '10', '-p', '-x', guard.proxyUrl, '-w', '%{http_code}\\n', ...args, ...urls.flatMap((u) => ['-o', '/dev/null', u])]);

    test('one request: the server accepts exactly one connection, which carries it', async () => {
      const { port, connections } = await server();
      const result = await curlTunnelled([`http://one.test:${port}/one`]);
      assert.equal(result.stdout, '200\n', result.stderr);
      assert.deepEqual(
        connections.map((c) => c.requests),
        [['GET /one']],
      );
    });

    test('three keep-alive requests on one tunnel: still one connection, carrying all three; each request closes without error', async () => {
      const { port, connections } = await server();
      const result = await curlTunnelled([`http://one.test:${port}/a`, `http://one.test:${port}/b`, `http://one.test:${port}/c`]);
      assert.equal(result.stdout, '200\n200\n200\n', result.stderr);
      assert.deepEqual(
        connections.map((c) => c.requests),
        [['GET /a', 'GET /b', 'GET /c']],
      );
      const decisions = await guard.waitForCount((l) => l.event === 'decision' && ['/a', '/b', '/c'].includes(l.path as string) && l.port === port, 3);
      for (const decision of decisions) {
        const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
        assert.equal(close.error, undefined, JSON.stringify(close));
        assert.equal(close.status, 200);
      }
    });

    test('a server that closes after each answer: one connection per tunnel, each carrying its request', async () => {
      const { port, connections } = await server(true);
      for (const path of ['/1', '/2', '/3']) assert.equal((await curlTunnelled([`http://one.test:${port}${path}`])).stdout, '200\n');
      assert.deepEqual(
        connections.map((c) => c.requests),
        [['GET /1'], ['GET /2'], ['GET /3']],
      );
    });

    test('tunnels one after another: the idle connection the proxy holds is taken, the tunnel connection closed; one left open', async () => {
      const { port, connections } = await server();
      for (const path of ['/1', '/2', '/3', '/4']) assert.equal((await curlTunnelled([`http://one.test:${port}${path}`])).stdout, '200\n');
      await settled(() => connections.filter((c) => !c.closed).length <= 1);
      assert.equal(connections.filter((c) => !c.closed).length, 1, 'idle connections piled up at the server');
      assert.deepEqual(connections.flatMap((c) => c.requests).sort(), ['GET /1', 'GET /2', 'GET /3', 'GET /4']);
    });

    // (No method or path rules here: a CONNECT to a host with some is inspected from the start, with no upstream of its own.)
    test('a first request that is refused (a Host of another site): nothing reaches the server, and the connection made for the tunnel is closed', async () => {
      const { port, connections } = await server();
      const result = await curlTunnelled([`http://one.test:${port}/x`], ['-H', 'Host: other.test']);
      assert.equal(result.stdout, '421\n', result.stderr);
      // The connection made for the CONNECT (before its 200) carried nothing and is closed with the client's, not kept.
      assert.equal(connections.length, 1);
      await settled(() => connections[0]!.closed);
      assert.equal(connections[0]!.closed, true, 'the unused upstream connection was left open');
      assert.deepEqual(connections[0]!.requests, []);
    });

    test('a WebSocket upgrade the server answers without upgrading (keep-alive): answer relayed, the upgrade connection closed, not held open', async () => {
      // The server has no 'upgrade' listener: node answers the upgrade request as a plain one (200, keep-alive, 30 s).
      const { port, connections } = await server();
      const result = await curlTunnelled([`http://one.test:${port}/ws`], ['-H', 'Connection: Upgrade', '-H', 'Upgrade: websocket', '-H', 'Sec-WebSocket-Version: 13']);
      assert.equal(result.stdout, '200\n', result.stderr);
      await guard.waitFor((l) => l.event === 'close' && l.error === 'not-upgraded' && l.status === 200);
      // The tunnel's own connection, which carried the upgrade (until 2026-12-03 it was closed unused and the upgrade
      // connected again), closed.
      await settled(() => connections.every((c) => c.closed));
      assert.deepEqual(
        connections.map((c) => [c.requests, c.closed]),
        [[['GET /ws'], true]],
      );
    });

    /** A tunnel to one.test:`port` whose first request is a WebSocket upgrade (Host `host`) and one message (`path`). */
    const webSocketFirst = async (port: number, host: string, path: string) => {
      const tunnel = await openTunnel(guard.port, `one.test:${port}`);
      assert.equal(tunnel.status, 200, tunnel.response);
      return webSocketExchange(tunnel.socket, { host, path, message: path });
    };

    test('a WebSocket upgrade as the first request: sent on the tunnel connection (the server accepts one), echoed, then both closed', async () => {
      // Until 2026-12-03 the reservation was wired to the forwarder's pool at once, where no upgrade can go: it was closed
      // unused and the upgrade connected again (two connections at the server for one tunnel).
      const { port, connections } = await server(false, true);
      const ws = await webSocketFirst(port, `one.test:${port}`, '/ws-first');
      assert.deepEqual([ws.status, ws.accepted, ws.echoed, ws.closed], [101, true, 'echo: /ws-first', true], ws.head);
      const decision = await guard.waitFor((l) => l.event === 'decision' && l.path === '/ws-first' && l.port === port);
      const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
      assert.deepEqual([close.status, close.error], [101, undefined], JSON.stringify(close));
      await settled(() => connections.every((c) => c.closed));
      assert.deepEqual(
        connections.map((c) => [c.requests, c.closed]),
        [[['UPGRADE /ws-first'], true]],
      );
    });

    test('a WebSocket upgrade refused as the first request (a Host of another site): nothing reaches the server, the tunnel connection is closed', async () => {
      const { port, connections } = await server(false, true);
      const ws = await webSocketFirst(port, 'other.test', '/ws-refused');
      assert.equal(ws.status, 421, ws.head);
      await settled(() => connections.every((c) => c.closed));
      assert.ok(
        connections.every((c) => c.closed),
        'the tunnel connection was left open',
      );
      assert.deepEqual(
        connections.map((c) => c.requests),
        [[]],
      );
    });

    test('an h2c upgrade as the first request (curl --http2): served as the plain request it also is, on the tunnel connection', async () => {
      const { port, connections } = await server();
      const result = await curlTunnelled([`http://one.test:${port}/h2c-first`], ['--http2']);
      assert.equal(result.stdout, '200\n', result.stderr);
      assert.deepEqual(
        connections.map((c) => c.requests),
        [['GET /h2c-first']],
      );
    });

    test('a tunnel whose upstream cannot be connected is still answered 502', async () => {
      const closed = http.createServer();
      await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
      const closedPort = (closed.address() as AddressInfo).port;
      await new Promise<void>((resolve) => closed.close(() => resolve()));
      const result = await curlTunnelled([`http://one.test:${closedPort}/x`]);
      assert.match(result.stderr, /502/);
    });
  });
}

describe('audit mode: a first request naming another Host is not sent on the tunnel connection', () => {
  let guard: EgressGuardProcess;
  let stop: (() => void) | undefined;

  before(async () => {
    guard = await startEgressGuard(['--resolve', 'one.test=127.0.0.1'], {
      EGRESS_MODE: 'audit',
      EGRESS_ALLOWED_ENDPOINTS: 'one.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    });
  });
  after(async () => {
    await guard?.stop();
    stop?.();
  });

  test('relayed (would-block) over a connection of its own; the one made for the CONNECT carries nothing and is closed', async () => {
    const server = await countingServer();
    stop = server.stop;
    const result = await runProcess('curl', [
      '-sS',
      '--max-time',
      '10',
      '-p',
      '-x',
      guard.proxyUrl,
      '-o',
      '/dev/null',
      '-w',
      '%{http_code}',
      '-H',
      'Host: other.test',
      `http://one.test:${server.port}/x`,
    ]);
    assert.equal(result.stdout, '200', result.stderr);
    await settled(() => server.connections[0]?.closed === true);
    assert.deepEqual(
      server.connections.map((c) => [c.requests, c.closed]),
      [
        [[], true],
        [['GET /x'], false],
      ],
    );
  });
});
