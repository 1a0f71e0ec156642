import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { once } from 'node:events';
import { serverIdleLimitMs, UpstreamPool, type ConnectOptions, type PooledSocket, type PoolRequest } from '../../proxy/relay/upstream-pool.js';

type ClientSocket = net.Socket & { _httpMessage?: { res?: { rawHeaders: string[] } | null } | null };

/** Node's client as a user of the pool: the request gets its socket (or the error a connect threw). */
function poolRequest(req: http.ClientRequest): PoolRequest {
  return {
    get cancelled() {
      return req.destroyed;
    },
    give: (socket: PooledSocket | undefined, err?: Error) => (req.onSocket as (s: net.Socket | undefined, e?: Error) => void)(socket as unknown as net.Socket, err),
  };
}

/** An agent whose sockets come from an UpstreamPool; node's client's 'free' (a response ended on a kept connection) releases them. */
class PoolAgent extends http.Agent {
  readonly pool: UpstreamPool;
  readonly connections: net.Socket[] = [];
  constructor(idleTimeoutMs: number, maxIdlePerKey: number, maxBusyPerKey?: number) {
    super({ keepAlive: true, timeout: idleTimeoutMs });
    this.pool = new UpstreamPool({ idleTimeoutMs, maxIdlePerKey, ...(maxBusyPerKey !== undefined && { maxBusyPerKey }) });
  }
  addRequest(req: http.ClientRequest, options: http.ClientRequestArgs): void {
    this.pool.acquire(
      poolRequest(req),
      `${options.host}:${options.port}`,
      (o: ConnectOptions) => {
        const socket: ClientSocket = net.connect({ host: o.host, port: o.port }).setTimeout(30_000);
        socket.on('free', () => {
          const raw = socket._httpMessage?.res?.rawHeaders;
          socket._httpMessage = null;
          this.pool.release(socket, raw);
        });
        this.connections.push(socket);
        return socket;
      },
      { host: options.host!, port: Number(options.port) },
    );
  }
}

describe('UpstreamPool: keep-alive upstream connections for node client', () => {
  let server: http.Server;
  let port: number;
  /** Upstream connections the server has seen close. */
  let closed = 0;
  const slow = new Set<string>();
  /** Paths answered only after 1.5 s. */
  const slower = new Set<string>();

  before(async () => {
    server = http.createServer((req, res) => {
      const answer = () => res.end(`${req.url} on ${req.socket.remotePort}`);
      if (slower.has(req.url ?? '')) setTimeout(answer, 1500);
      else if (slow.has(req.url ?? '')) setTimeout(answer, 100);
      else answer();
    });
    server.on('connection', (s: net.Socket) => s.once('close', () => closed++));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as net.AddressInfo).port;
  });

  after(() => {
    server.closeAllConnections();
    server.close();
  });

  function get(agent: http.Agent, path: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.once('end', () => resolve(body));
      });
      req.setTimeout(5000, () => req.destroy(new Error('timed out')));
      req.once('error', reject);
      req.end();
    });
  }

  /** Resolves when `check()` holds; rejects after 5 s (a leak fails the test, never hangs it). */
  async function until(check: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 5000;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`not within 5 s: ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  test('sequential requests go over one connection, which waits idle in the pool between them', async () => {
    const agent = new PoolAgent(30_000, 4);
    try {
      const ports = new Set<string>();
      for (let i = 0; i < 5; i++) {
        const body = await get(agent, `/seq-${i}`);
        assert.match(body, new RegExp(`^/seq-${i} on `));
        ports.add(body.split(' on ')[1]!);
        await until(() => agent.pool.idleCount() === 1, 'the connection back in the pool');
      }
      assert.equal(ports.size, 1);
      assert.equal(agent.connections.length, 1);
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });

  test('a connection the server closes while idle leaves the pool; the next request opens a new one', async () => {
    const agent = new PoolAgent(30_000, 4);
    try {
      await get(agent, '/before');
      await until(() => agent.pool.idleCount() === 1, 'idle');
      const closedBefore = closed;
      server.closeIdleConnections();
      await until(() => closed > closedBefore && agent.pool.idleCount() === 0, 'the closed connection out of the pool');
      assert.match(await get(agent, '/after'), /^\/after on /);
      assert.equal(agent.connections.length, 2);
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });

  test('an idle connection is closed after the idle timeout (and one in use is not taken from its request)', async () => {
    const agent = new PoolAgent(300, 4);
    try {
      await get(agent, '/idle');
      await until(() => agent.pool.idleCount() === 1, 'idle');
      await until(() => agent.connections[0]!.destroyed && agent.pool.idleCount() === 0, 'the idle connection closed by its timeout');
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });

  test('no more idle connections per key than the limit; the rest are closed', async () => {
    const agent = new PoolAgent(30_000, 2);
    try {
      for (const p of ['/c-1', '/c-2', '/c-3', '/c-4']) slow.add(p);
      const bodies = await Promise.all(['/c-1', '/c-2', '/c-3', '/c-4'].map((p) => get(agent, p)));
      assert.equal(new Set(bodies.map((b) => b.split(' on ')[1])).size, 4, 'four requests at once, four connections');
      await until(() => agent.connections.filter((s) => s.destroyed).length === 2, 'two connections closed');
      assert.equal(agent.pool.idleCount(), 2);
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });

  test("the server's Keep-Alive timeout, less a second, bounds an idle connection's reuse; timeout=1 is not kept", async () => {
    // A server that says timeout=2 and never closes: a connection idle past the hint less a second is not reused.
    const hinting = net.createServer((s) => {
      s.on('data', () => s.write('HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok'));
      s.on('error', () => {});
    });
    hinting.listen(0, '127.0.0.1');
    await once(hinting, 'listening');
    const hintingPort = (hinting.address() as net.AddressInfo).port;
    const agent = new PoolAgent(30_000, 4);
    const status = () =>
      new Promise<number>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: hintingPort, agent }, (res) => {
          res.resume();
          res.once('end', () => resolve(res.statusCode ?? 0));
        });
        req.setTimeout(5000, () => req.destroy(new Error('timed out')));
        req.once('error', reject);
        req.end();
      });
    try {
      assert.equal(await status(), 200);
      await until(() => agent.pool.idleCount() === 1, 'idle');
      assert.equal(await status(), 200);
      assert.equal(agent.connections.length, 1, 'reused within the hint');
      await until(() => agent.pool.idleCount() === 1, 'idle again');
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal(await status(), 200);
      assert.equal(agent.connections.length, 2, 'a new connection after the hint less a second');
      assert.ok(agent.connections[0]!.destroyed, 'the stale one closed');
      server.keepAliveTimeout = 1000;
      await get(agent, '/hint-1');
      await until(() => agent.connections[2]!.destroyed, 'the connection the server would close at once not kept');
    } finally {
      server.keepAliveTimeout = 5000;
      for (const s of agent.connections) s.destroy();
      hinting.close();
    }
  });

  test("a reused connection's request has the whole idle timeout, not the server's Keep-Alive hint the idle wait had", async () => {
    const agent = new PoolAgent(30_000, 4);
    try {
      server.keepAliveTimeout = 2000;
      await get(agent, '/hinted-fast');
      await until(() => agent.pool.idleCount() === 1, 'idle');
      slower.add('/hinted-slow');
      // As the forwarder: a request 'timeout' (the socket's, relayed by node's client) fails the request; and no
      // request timeout of its own, which would set the socket's and hide the pool's.
      const body = await new Promise<string>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, path: '/hinted-slow', agent }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.once('end', () => resolve(text));
        });
        req.on('timeout', () => req.destroy(new Error('upstream timed out')));
        const bound = setTimeout(() => req.destroy(new Error('no answer within 5 s')), 5000);
        req.once('close', () => clearTimeout(bound));
        req.once('error', reject);
        req.end();
      });
      assert.match(body, /^\/hinted-slow on /);
      assert.equal(agent.connections.length, 1, 'the request went over the pooled connection');
    } finally {
      server.keepAliveTimeout = 5000;
      for (const s of agent.connections) s.destroy();
    }
  });

  test('no more busy connections per key than the limit: more requests wait for one, in order, and one given up on is skipped', async () => {
    const agent = new PoolAgent(30_000, 4, 2);
    try {
      const paths = ['/w-1', '/w-2', '/w-3', '/w-4', '/w-5', '/w-6'];
      for (const p of paths) slow.add(p);
      const results = paths.map((p) => get(agent, p));
      // The third request waits (two busy connections); its client gives up before it gets one.
      const gaveUp = http.request({ host: '127.0.0.1', port, path: '/w-abandoned', agent });
      gaveUp.once('error', () => {});
      gaveUp.end();
      gaveUp.destroy();
      const bodies = await Promise.all(results);
      bodies.forEach((body, i) => assert.match(body, new RegExp(`^${paths[i]} on `)));
      assert.equal(agent.connections.length, 2, 'six requests over two connections');
      assert.equal(new Set(bodies.map((b) => b.split(' on ')[1])).size, 2);
      await until(() => agent.pool.idleCount() === 2, 'both connections idle at the end');
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });

  test('a busy connection that closes makes room: a waiting request gets a new connection', async () => {
    const agent = new PoolAgent(30_000, 4, 1);
    try {
      slow.add('/cut-first');
      const first = get(agent, '/cut-first').then(
        () => 'answered',
        () => 'failed',
      );
      const second = get(agent, '/after-cut');
      await until(() => agent.connections.length === 1, 'the first connection');
      agent.connections[0]!.destroy();
      assert.equal(await first, 'failed');
      assert.match(await second, /^\/after-cut on /);
      assert.equal(agent.connections.length, 2);
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });

  test('an idle connection destroyed but not yet closed, taken and skipped, does not count as a busy one closing', async () => {
    const agent = new PoolAgent(30_000, 4, 1);
    try {
      await get(agent, '/before-dead');
      await until(() => agent.pool.idleCount() === 1, 'idle');
      agent.connections[0]!.destroy(); // its 'close' comes later, after the next two requests are placed
      for (const p of ['/dead-a', '/dead-b']) slow.add(p);
      const bodies = await Promise.all([get(agent, '/dead-a'), get(agent, '/dead-b')]);
      assert.equal(new Set(bodies.map((b) => b.split(' on ')[1])).size, 1, "the second waited for the first one's connection");
      assert.equal(agent.connections.length, 2);
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });

  test("a connect that throws fails its request with that error (not http.request's caller), waiting or not", async () => {
    const eperm = () => {
      throw Object.assign(new Error('marked socket refused'), { code: 'EPERM' });
    };
    class ThrowingAgent extends PoolAgent {
      refuse = false;
      override addRequest(req: http.ClientRequest, options: http.ClientRequestArgs): void {
        if (!this.refuse) return super.addRequest(req, options);
        this.pool.acquire(poolRequest(req), `${options.host}:${options.port}`, eperm, { host: options.host!, port: Number(options.port) });
      }
    }
    const agent = new ThrowingAgent(30_000, 4, 1);
    const code = (path: string) =>
      new Promise<string>((resolve) => {
        const req = http.request({ host: '127.0.0.1', port, path, agent }, (res) => {
          res.resume();
          res.once('end', () => resolve(`status ${res.statusCode}`));
        });
        req.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
        req.end();
      });
    try {
      agent.refuse = true;
      assert.equal(await code('/refused'), 'EPERM');
      // One busy connection (the limit), a request waiting for it; the connection closes and the new one is refused.
      agent.refuse = false;
      slow.add('/busy-then-cut');
      const busy = code('/busy-then-cut');
      await until(() => agent.connections.length === 1, 'the busy connection');
      agent.refuse = true;
      const waiting = code('/waiting-refused');
      agent.connections[0]!.destroy();
      assert.notEqual(await busy, 'status 200');
      assert.equal(await waiting, 'EPERM');
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });

  test('serverIdleLimitMs reads Keep-Alive: timeout=N from the raw headers', () => {
    assert.equal(serverIdleLimitMs(['Content-Length', '2', 'Keep-Alive', 'timeout=5']), 4000);
    assert.equal(serverIdleLimitMs(['keep-alive', 'timeout=1, max=100']), 0);
    assert.equal(serverIdleLimitMs(['Connection', 'keep-alive']), undefined);
    assert.equal(serverIdleLimitMs(['Keep-Alive', 'max=5']), undefined);
  });

  test('an error on an idle connection closes it without an unhandled error', async () => {
    const agent = new PoolAgent(30_000, 4);
    try {
      await get(agent, '/err');
      await until(() => agent.pool.idleCount() === 1, 'idle');
      agent.connections[0]!.emit('error', new Error('ECONNRESET while idle'));
      await until(() => agent.pool.idleCount() === 0 && agent.connections[0]!.destroyed, 'the failed connection gone');
      assert.match(await get(agent, '/next'), /^\/next on /);
    } finally {
      for (const s of agent.connections) s.destroy();
    }
  });
});
