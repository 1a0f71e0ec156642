import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { rawExchange } from '../helpers/raw-client.js';
import { guardInFrontOf } from '../helpers/raw-upstream.js';
import { startHttpServer, type TestServer } from '../helpers/servers.js';

/** Read from `socket` until `done(text)` says the answers are all there, or the socket closes, or 5 s pass. */
function readUntil(socket: net.Socket, done: (text: string) => boolean): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      resolve({ text, closed });
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (done(text)) finish();
    };
    const timer = setTimeout(finish, 5000);
    socket.on('data', onData);
    socket.once('close', () => {
      closed = true;
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

describe('explicit proxy: requests on kept-alive connections, each decided and forwarded on its own', () => {
  let upstream: TestServer;
  let guard: EgressGuardProcess;
  /** The client port of the upstream connection each request arrived on, by path. */
  const upstreamSockets = new Map<string, number>();
  let authority: string;

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      upstreamSockets.set(req.url ?? '', req.socket.remotePort ?? 0);
      if (req.url === '/cut') {
        // Promises 100 bytes, sends 3, and goes.
        res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 100 });
        res.write('abc');
        return void setTimeout(() => res.socket?.destroy(), 50);
      }
      if (req.url === '/hop') {
        res.writeHead(200, [
          ['Content-Type', 'text/plain'],
          ['Connection', 'x-upstream-secret'],
          ['X-Upstream-Secret', 'hop'],
          ['Keep-Alive', 'timeout=5'],
          ['Set-Cookie', 'a=1'],
          ['Set-Cookie', 'b=2'],
          ['Content-Length', '2'],
        ]);
        return void res.end('ok');
      }
      if (req.url === '/slow') {
        // Answered after the CONNECT pipelined behind it has been decided.
        return void setTimeout(() => res.end('GET /slow'), 300);
      }
      if (req.url === '/chunked') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('part one, ');
        return void res.end('part two');
      }
      if (req.url === '/echo-headers') {
        const text = JSON.stringify(req.rawHeaders);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
        return void res.end(text);
      }
      const text = `${req.method} ${req.url}`;
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
      res.end(req.method === 'HEAD' ? undefined : text);
    });
    authority = `allowed.test:${upstream.port}`;
    guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1', '--resolve', 'denied.test=127.0.0.1'], {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    });
  });

  after(async () => {
    await guard?.stop();
    await upstream?.close();
  });

  test('pipelined requests on one connection: each is decided on its own host and path, answered in order', async () => {
    const socket = await connect(guard.port);
    try {
      socket.write(
        `GET http://${authority}/pipe-1 HTTP/1.1\r\nHost: ${authority}\r\n\r\n` +
          `GET http://denied.test:${upstream.port}/pipe-2 HTTP/1.1\r\nHost: denied.test:${upstream.port}\r\n\r\n` +
          `GET http://${authority}/pipe-3 HTTP/1.1\r\nHost: ${authority}\r\n\r\n`,
      );
      const { text } = await readUntil(socket, (t) => t.includes('GET /pipe-3'));
      const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
      assert.deepEqual(statuses, ['200', '403', '200']);
      assert.ok(text.indexOf('GET /pipe-1') < text.indexOf('GET /pipe-3'), 'answers in the order of the requests');
    } finally {
      socket.destroy();
    }
    assert.ok(!upstream.requests.some((q) => q.url === '/pipe-2'), 'the refused request never reached upstream');
    const decisions = await Promise.all(['/pipe-1', '/pipe-2', '/pipe-3'].map((path) => guard.waitFor((l) => l.event === 'decision' && l.path === path)));
    assert.deepEqual(
      decisions.map((d) => [d.host, d.decision]),
      [
        ['allowed.test', 'allowed'],
        ['denied.test', 'blocked'],
        ['allowed.test', 'allowed'],
      ],
    );
    for (const decision of [decisions[0]!, decisions[2]!]) {
      const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
      assert.equal(close.status, 200);
    }
    assert.equal(guard.events().filter((l) => l.event === 'close' && l.id === decisions[1]!.id).length, 0, 'a refused request has no close event');
  });

  test('a CONNECT pipelined behind a request still being answered is answered after it, in order', async () => {
    const socket = await connect(guard.port);
    try {
      socket.write(`GET http://${authority}/slow HTTP/1.1\r\nHost: ${authority}\r\n\r\nCONNECT denied.test:${upstream.port} HTTP/1.1\r\nHost: denied.test\r\n\r\n`);
      const { text } = await readUntil(socket, (t) => t.includes('GET /slow') && / 403 /.test(t));
      const statuses = [...text.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => m[1]);
      assert.deepEqual(statuses, ['200', '403'], text);
    } finally {
      socket.destroy();
    }
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.path === '/slow');
    const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    assert.equal(close.status, 200);
    assert.equal(close.error, undefined);
  });

  test('a client that resets while its CONNECT waits behind a request: the proxy goes on serving', async () => {
    const socket = await connect(guard.port);
    socket.on('error', () => undefined);
    socket.write(`GET http://${authority}/slow HTTP/1.1\r\nHost: ${authority}\r\n\r\nCONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    socket.resetAndDestroy();
    // After /slow's answer met the reset connection.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const next = await connect(guard.port);
    try {
      next.write(`GET http://${authority}/after-reset HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      const { text } = await readUntil(next, (t) => t.includes('GET /after-reset'));
      assert.match(text, /^HTTP\/1\.1 200 /);
    } finally {
      next.destroy();
    }
  });

  test('upstream connections are reused across requests and across client connections', async () => {
    const paths: string[] = [];
    for (let client = 0; client < 3; client++) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        for (let i = 0; i < 3; i++) {
          const path = `/reuse-${client}-${i}`;
          paths.push(path);
          const status = await new Promise<number>((resolve, reject) => {
            const req = http.request({ host: '127.0.0.1', port: guard.port, path: `http://${authority}${path}`, headers: { host: authority }, agent }, (res) => {
              res.resume();
              res.once('end', () => resolve(res.statusCode ?? 0));
            });
            req.setTimeout(5000, () => req.destroy(new Error('timed out')));
            req.once('error', reject);
            req.end();
          });
          assert.equal(status, 200);
        }
      } finally {
        agent.destroy();
      }
    }
    const used = new Set(paths.map((p) => upstreamSockets.get(p)));
    assert.equal(used.size, 1, `9 sequential requests from 3 client connections went over ${used.size} upstream connections`);
    for (const path of paths) await guard.waitFor((l) => l.event === 'decision' && l.path === path);
  });

  test('HEAD then GET on one connection: the HEAD answer has no body and the GET after it is read whole', async () => {
    const socket = await connect(guard.port);
    try {
      socket.write(`HEAD http://${authority}/head HTTP/1.1\r\nHost: ${authority}\r\n\r\nGET http://${authority}/after-head HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      const { text } = await readUntil(socket, (t) => t.endsWith('GET /after-head'));
      const answers = text.split(/(?=HTTP\/1\.1 )/);
      assert.equal(answers.length, 2, text);
      assert.match(answers[0]!, /content-length: 10\r\n/i, 'HEAD keeps the length of what a GET would get');
      assert.ok(answers[0]!.endsWith('\r\n\r\n'), 'and has no body');
      assert.ok(answers[1]!.endsWith('\r\n\r\nGET /after-head'));
    } finally {
      socket.destroy();
    }
  });

  test('response headers: hop-by-hop ones and those the upstream Connection names are dropped, repeated ones kept', async () => {
    const answer = await rawExchange(guard.port, `GET http://${authority}/hop HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.doesNotMatch(answer, /x-upstream-secret/i);
    assert.doesNotMatch(answer, /keep-alive: timeout=5/i);
    assert.equal((answer.match(/^set-cookie: /gim) ?? []).length, 2);
    assert.match(answer, /\r\nconnection: close\r\n/i);
  });

  test('request headers: hop-by-hop ones and those Connection names are dropped, the rest go as sent, Host is the decided authority', async () => {
    const answer = await rawExchange(
      guard.port,
      `GET http://${authority}/echo-headers HTTP/1.1\r\nHost: attacker.test\r\nConnection: close, X-Client-Secret\r\nX-Client-Secret: 1\r\n` +
        `Proxy-Authorization: Basic Zm9vOmJhcg==\r\nTE: trailers\r\nX-Repeated: one\r\nX-Repeated: two\r\n\r\n`,
    );
    const raw = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as string[];
    const names = raw.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
    for (const dropped of ['x-client-secret', 'proxy-authorization', 'te']) assert.ok(!names.includes(dropped), `${dropped} is not forwarded`);
    assert.deepEqual(
      raw.flatMap((v, i) => (i % 2 === 1 && raw[i - 1]!.toLowerCase() === 'host' ? [v] : [])),
      [authority],
    );
    assert.deepEqual(
      raw.flatMap((v, i) => (i % 2 === 1 && raw[i - 1] === 'X-Repeated' ? [v] : [])),
      ['one', 'two'],
    );
  });

  test('an HTTP/1.0 client gets a chunked upstream answer as plain bytes, then the connection closes', async () => {
    const answer = await rawExchange(guard.port, `GET http://${authority}/chunked HTTP/1.0\r\nHost: ${authority}\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.doesNotMatch(answer, /transfer-encoding/i);
    assert.ok(answer.endsWith('\r\n\r\npart one, part two'), answer);
  });

  test('a chunked request body is streamed upstream and counted', async () => {
    const answer = await rawExchange(
      guard.port,
      `POST http://${authority}/upload-chunked HTTP/1.1\r\nHost: ${authority}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n`,
    );
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.equal(upstream.requests.find((q) => q.url === '/upload-chunked')?.body.toString(), 'hello world');
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.path === '/upload-chunked');
    const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    assert.ok((close.bytes_out as number) >= 11, `bytes_out ${close.bytes_out}`);
  });

  test('an upstream that breaks off mid-body: the client sees the connection end short, and the close event says so', async () => {
    const socket = await connect(guard.port);
    try {
      socket.write(`GET http://${authority}/cut HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      const { text, closed } = await readUntil(socket, () => false);
      assert.match(text, /^HTTP\/1\.1 200/);
      assert.ok(text.endsWith('\r\n\r\nabc'), 'the three bytes upstream sent');
      assert.ok(closed, 'the proxy closed the client connection rather than leave it waiting for 97 bytes');
    } finally {
      socket.destroy();
    }
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.path === '/cut');
    const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    assert.equal(close.status, 200);
    assert.equal(close.error, 'upstream-econnreset');
    assert.equal(close.bytes_in, 3);
  });
});

describe('explicit proxy: an upstream answer framed by the connection end is passed on framed the same way', () => {
  let upstream: net.Server;
  let guard: EgressGuardProcess;
  let authority: string;

  before(async () => {
    // Raw, since node's server does not close after a body it is told is `Transfer-Encoding: gzip`.
    upstream = net.createServer((socket) => {
      socket.on('error', () => socket.destroy());
      let head = '';
      socket.on('data', (chunk: Buffer) => {
        head += chunk.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        // RFC 9112 6.3: a Transfer-Encoding whose last coding is not chunked: the body is what comes until the close.
        if (head.startsWith('GET /te-gzip ')) return void socket.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc');
        // Switching protocols for a request that asked for none (the proxy never forwards Upgrade).
        if (head.startsWith('GET /switch ')) return void socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: upgrade\r\n\r\n');
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      });
    });
    ({ authority, guard } = await guardInFrontOf(upstream));
  });

  after(async () => {
    await guard?.stop();
    await new Promise((resolve) => upstream?.close(resolve));
  });

  test('Transfer-Encoding not ending in chunked: the client connection ends after the body, no answer follows it', async () => {
    const socket = await connect(guard.port);
    try {
      // A pipelined second request: kept alive, its answer would be read by the client as more of the first body.
      socket.write(`GET http://${authority}/te-gzip HTTP/1.1\r\nHost: ${authority}\r\n\r\nGET http://${authority}/second HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      const { text, closed } = await readUntil(socket, () => false);
      assert.match(text, /^HTTP\/1\.1 200 /);
      assert.match(text, /\r\ntransfer-encoding: gzip\r\n/i);
      assert.ok(text.endsWith('\r\n\r\nabc'), `the body ends the connection's bytes: ${JSON.stringify(text)}`);
      assert.ok(closed, 'the proxy closed the connection that ends the body');
    } finally {
      socket.destroy();
    }
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.path === '/te-gzip');
    const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    assert.equal(close.status, 200);
    assert.equal(close.bytes_in, 3);
  });

  test('a 101 for a request that asked for no upgrade: the client gets a 502, and the request pipelined behind it its answer', async () => {
    const socket = await connect(guard.port);
    try {
      socket.write(`GET http://${authority}/switch HTTP/1.1\r\nHost: ${authority}\r\n\r\nGET http://${authority}/after-switch HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      const { text } = await readUntil(socket, (t) => t.endsWith('\r\n\r\nok'));
      assert.match(text, /^HTTP\/1\.1 502 /, `an answer, not a wait: ${JSON.stringify(text)}`);
      assert.match(text, /upstream failed \(EPROTO\)/);
      assert.ok(text.endsWith('\r\n\r\nok'), 'the pipelined request is answered after it');
    } finally {
      socket.destroy();
    }
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.path === '/switch');
    const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    assert.equal(close.status, 502);
    assert.equal(close.error, 'upstream-eproto');
  });
});
