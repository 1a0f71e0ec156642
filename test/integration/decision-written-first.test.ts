/**
 * A decision's line is in the events file before a byte of what it allows moves past egress-guard, and before a
 * refused client reads its refusal, on every path, now that the decisions of one turn share one write (issue 14,
 * "decisions written once per turn"). The real CLI writes its events file into a FIFO this process reads
 * (StalledEventsFile): with the pipe full, the proxy's write of a decision's line blocks the proxy, so a request head,
 * a tunnel's first bytes or a 403 that reaches this process while the line is not in the pipe was sent before its
 * line was written. Each check reads the pipe at the moment the byte arrives. The pipe is let go after a while, so
 * that the build that waits makes progress; nothing here asserts a time.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { openTunnel } from '../helpers/raw-client.js';
import { leafFor, startHttpServer, startHttpsServer, testCa, type TestServer } from '../helpers/servers.js';
import { StalledEventsFile } from '../helpers/stalled-events-file.js';
import { tempDir } from '../helpers/temp-dir.js';

/** How long a stalled events file stays stalled when nothing arrives (the build that waits sends nothing until then). */
const RELEASE_AFTER_MS = 400;

/** A TLS connection to inspected.test through a CONNECT tunnel (egress-guard's leaf, not verified here). */
async function inspectedClient(proxyPort: number, port: number): Promise<tls.TLSSocket> {
  const tunnel = await openTunnel(proxyPort, `inspected.test:${port}`);
  assert.equal(tunnel.status, 200);
  const client = tls.connect({ socket: tunnel.socket, servername: 'inspected.test', rejectUnauthorized: false });
  await new Promise<void>((resolve, reject) => client.once('secureConnect', resolve).once('error', reject));
  return client;
}

/**
 * Run `exchange` with the events file stalled, let go after RELEASE_AFTER_MS or when it settles. The close lines of
 * the decisions `before` names (each a list of parts of a decision line) are waited for first: one written after the
 * stall would block the proxy before the exchange begins, and the exchange would then run with the file let go.
 */
async function whileStalled<T>(file: StalledEventsFile, exchange: () => Promise<T>, before: string[][] = []): Promise<T> {
  for (const parts of before) await closeWritten(file, parts);
  file.stall();
  const timer = setTimeout(() => file.release(), RELEASE_AFTER_MS);
  try {
    return await exchange();
  } finally {
    clearTimeout(timer);
    file.release();
  }
}

/** The decision lines in the file now that contain every one of `parts`. */
function decisionLines(file: StalledEventsFile, ...parts: string[]): string[] {
  return file.lines().filter((line) => line.includes('"event":"decision"') && parts.every((part) => line.includes(part)));
}

/** The close line of the decision whose line contains `parts`, in the file (at most 5 s). */
async function closeWritten(file: StalledEventsFile, parts: string[]): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    const id = /"id":"([^"]+)"/.exec(decisionLines(file, ...parts)[0] ?? '')?.[1];
    if (id !== undefined && file.lines().some((line) => line.includes('"event":"close"') && line.includes(`"id":"${id}"`))) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no close line for the decision with ${parts.join(', ')}`);
}

/** One HTTP/1.1 answer with a Content-Length read from `socket` (TLS or plain), or what came until it closed. */
function readAnswer(socket: net.Socket | tls.TLSSocket, onHead?: () => void): Promise<{ status: number; text: string }> {
  return new Promise((resolve) => {
    let text = '';
    let headSeen = false;
    const done = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), text });
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (end === -1) return;
      if (!headSeen) {
        headSeen = true;
        onHead?.();
      }
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
      if (text.length >= end + 4 + length) done();
    };
    const timer = setTimeout(done, 10_000);
    socket.on('data', onData);
    socket.once('close', done);
  });
}

function proxiedGet(proxyPort: number, url: string, agent: http.Agent | false, onResponse?: () => void): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxyPort, path: url, agent, headers: { host: new URL(url).host } }, (res) => {
      onResponse?.();
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

/** A ClientHello naming `servername` sent into an open tunnel; settled when the tunnel closes (`onClose` called then). */
function helloUntilClosed(socket: net.Socket, servername: string, onClose?: () => void): Promise<void> {
  return new Promise((resolve) => {
    const hello = tls.connect({ socket, servername, rejectUnauthorized: false });
    hello.once('error', () => undefined);
    socket.once('close', () => {
      onClose?.();
      resolve();
    });
  });
}

/** After a suite: the proxy stopped, then the servers closed, then the events file let go. */
async function stopAll(file: StalledEventsFile, guard: EgressGuardProcess | undefined, servers: Array<TestServer | net.Server | undefined>): Promise<void> {
  await guard?.stop();
  for (const server of servers) {
    if (server instanceof net.Server) server.close();
    else await server?.close();
  }
  file.close();
}

/**
 * Two GETs on one kept-alive client connection (so on one pooled upstream connection, where a request head goes out
 * on the next tick), the second with the events file stalled once the first's close line is written.
 */
async function secondOnKeptAlive(file: StalledEventsFile, proxyPort: number, base: string, first: string, second: string): Promise<{ status: number; body: string }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    assert.equal((await proxiedGet(proxyPort, `${base}${first}`, agent)).status, 200);
    return await whileStalled(file, () => proxiedGet(proxyPort, `${base}${second}`, agent), [[`"path":"${first}"`]]);
  } finally {
    agent.destroy();
  }
}

describe('a decision is in the events file before its action moves (block mode)', () => {
  const file = new StalledEventsFile();
  let guard: EgressGuardProcess;
  let plain: TestServer;
  let secure: TestServer;
  let tunnelTarget: net.Server;
  /** For each upstream request path: how many decision lines for it were in the events file when its head arrived. */
  const linesAtArrival = new Map<string, number>();
  /** The client port of the upstream connection each path arrived on. */
  const upstreamSocket = new Map<string, number>();
  /** How many tunnel lines were in the file when the tunnel's first byte reached the upstream. */
  let tunnelLinesAtFirstByte = -1;

  before(async () => {
    const seen: http.RequestListener = (req, res) => {
      const path = req.url ?? '';
      linesAtArrival.set(path, decisionLines(file, `"path":"${path}"`).length);
      upstreamSocket.set(path, req.socket.remotePort ?? 0);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    };
    plain = await startHttpServer(seen);
    secure = await startHttpsServer(leafFor('inspected.test'), seen);
    tunnelTarget = net.createServer((socket) => {
      socket.once('data', () => {
        tunnelLinesAtFirstByte = decisionLines(file, '"kind":"connect"', '"host":"tunnel.test"').length;
        socket.end('pong');
      });
    });
    await new Promise<void>((resolve) => tunnelTarget.listen(0, '127.0.0.1', resolve));
    const dir = tempDir('eg-written-first-');
    const upstreamCa = join(dir, 'upstream-ca.pem');
    writeFileSync(upstreamCa, testCa().certPem);
    guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1', '--resolve', 'tunnel.test=127.0.0.1', '--resolve', 'inspected.test=127.0.0.1'], {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:* tunnel.test:* inspected.test:*/ok/**',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      EGRESS_EVENTS_FILE: file.path,
      EGRESS_STATE_DIR: dir,
      EGRESS_UPSTREAM_CA: upstreamCa,
    });
  });
  after(() => stopAll(file, guard, [plain, secure, tunnelTarget]));

  test('plain HTTP: a request on a reused keep-alive upstream connection reaches the server after its line', async () => {
    const second = await secondOnKeptAlive(file, guard.port, `http://allowed.test:${plain.port}`, '/keep-1', '/keep-2');
    assert.equal(second.status, 200);
    assert.equal(upstreamSocket.get('/keep-2'), upstreamSocket.get('/keep-1'), 'the second request went over the pooled connection');
    assert.equal(linesAtArrival.get('/keep-2'), 1, 'the decision line was in the file when the request head arrived');
  });

  test('plain HTTP: 30 concurrent requests, each reaches the server after its own line', async () => {
    const paths = Array.from({ length: 30 }, (_, i) => `/many-${i}`);
    const answers = await whileStalled(file, () => Promise.all(paths.map((path) => proxiedGet(guard.port, `http://allowed.test:${plain.port}${path}`, false))), [
      ['"path":"/keep-2"'],
    ]);
    assert.deepEqual(
      answers.map((a) => a.status),
      paths.map(() => 200),
    );
    assert.deepEqual(
      paths.map((path) => linesAtArrival.get(path)),
      paths.map(() => 1),
    );
  });

  test('plain HTTP: a refused client reads its 403 after the line', async () => {
    let linesAt403 = -1;
    const answer = await whileStalled(
      file,
      () => proxiedGet(guard.port, 'http://refused-http.test/secret', false, () => (linesAt403 = decisionLines(file, '"host":"refused-http.test"').length)),
      Array.from({ length: 30 }, (_, i) => [`"path":"/many-${i}"`]),
    );
    assert.equal(answer.status, 403);
    assert.equal(linesAt403, 1);
  });

  test("CONNECT: the tunnel's first bytes reach the upstream after its line", async () => {
    const port = (tunnelTarget.address() as AddressInfo).port;
    const reply = await whileStalled(file, async () => {
      const tunnel = await openTunnel(guard.port, `tunnel.test:${port}`);
      tunnel.socket.write('ping\n'); // a whole line: a printable line still unfinished is waited for, then read as HTTP
      const text = await new Promise<string>((resolve) => {
        let got = '';
        tunnel.socket.on('data', (c: Buffer) => (got += c.toString()));
        tunnel.socket.once('close', () => resolve(got));
      });
      return { status: tunnel.status, text };
    });
    assert.equal(reply.status, 200);
    assert.equal(reply.text, 'pong');
    assert.equal(tunnelLinesAtFirstByte, 1);
  });

  test('CONNECT: a refused client reads its 403 after the line', async () => {
    let linesAt403 = -1;
    const tunnel = await whileStalled(file, async () => {
      const opened = await openTunnel(guard.port, 'refused-connect.test:443');
      linesAt403 = decisionLines(file, '"kind":"connect"', '"host":"refused-connect.test"').length;
      opened.socket.destroy();
      return opened;
    }, [['"host":"tunnel.test"']]);
    assert.equal(tunnel.status, 403);
    assert.equal(linesAt403, 1);
  });

  test('CONNECT: a ClientHello naming a refused host (sni-mismatch) sees its tunnel reset after the line', async () => {
    const port = (tunnelTarget.address() as AddressInfo).port;
    const tunnel = await openTunnel(guard.port, `tunnel.test:${port}`);
    assert.equal(tunnel.status, 200);
    let linesAtReset = -1;
    await whileStalled(file, () =>
      helloUntilClosed(tunnel.socket, 'refused-sni.test', () => (linesAtReset = decisionLines(file, '"reason":"sni-mismatch"', '"host":"refused-sni.test"').length)),
    );
    assert.equal(linesAtReset, 1);
  });

  test('inspected: a request on a kept-alive TLS connection reaches the server after its line; a refused one reads its 403 after its line', async () => {
    const client = await inspectedClient(guard.port, secure.port);
    const ask = (path: string, onHead?: () => void) => {
      const answer = readAnswer(client, onHead);
      client.write(`GET ${path} HTTP/1.1\r\nHost: inspected.test:${secure.port}\r\n\r\n`);
      return answer;
    };
    assert.equal((await ask('/ok/1')).status, 200);
    const second = await whileStalled(file, () => ask('/ok/2'), [['"path":"/ok/1"']]);
    assert.equal(second.status, 200);
    assert.equal(linesAtArrival.get('/ok/2'), 1, 'the inspected request reached the server after its line');
    let linesAt403 = -1;
    const refused = await whileStalled(file, () => ask('/no/3', () => (linesAt403 = decisionLines(file, '"path":"/no/3"').length)), [['"path":"/ok/2"']]);
    assert.equal(refused.status, 403);
    assert.equal(linesAt403, 1, 'the refused request read its 403 after its line');
    client.destroy();
  });

  test('inspected: a request naming another Host reads its 421 after its line', async () => {
    const client = await inspectedClient(guard.port, secure.port);
    let linesAt421 = -1;
    const answer = await whileStalled(file, () => {
      const read = readAnswer(client, () => (linesAt421 = decisionLines(file, '"path":"/ok/elsewhere"', '"reason":"sni-mismatch"').length));
      client.write('GET /ok/elsewhere HTTP/1.1\r\nHost: other.test\r\n\r\n');
      return read;
    });
    client.destroy();
    assert.equal(answer.status, 421);
    assert.equal(linesAt421, 1);
  });
  test('inspected: a WebSocket upgrade reaches the server after its line; a refused one reads its 403 after its line', async () => {
    const client = await inspectedClient(guard.port, secure.port);
    const upgrade = (path: string) =>
      `GET ${path} HTTP/1.1\r\nHost: inspected.test:${secure.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n';
    // A request first, whose close line is then waited for: the lines of the tests before are all written by then.
    const warm = readAnswer(client);
    client.write(`GET /ok/ws-warm HTTP/1.1\r\nHost: inspected.test:${secure.port}\r\n\r\n`);
    assert.equal((await warm).status, 200);
    // The test server has no upgrade listener: it answers the upgrade as a plain request (200), after recording it.
    await whileStalled(file, () => {
      const answer = readAnswer(client);
      client.write(upgrade('/ok/ws'));
      return answer;
    }, [['"path":"/ok/ws-warm"']]);
    client.destroy();
    assert.equal(linesAtArrival.get('/ok/ws'), 1, 'the upgrade reached the server after its line');
    const refusedTunnel = await openTunnel(guard.port, `inspected.test:${secure.port}`);
    const refusedClient = tls.connect({ socket: refusedTunnel.socket, servername: 'inspected.test', rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => refusedClient.once('secureConnect', resolve).once('error', reject));
    let linesAt403 = -1;
    const refused = await whileStalled(file, () => {
      const answer = readAnswer(refusedClient, () => (linesAt403 = decisionLines(file, '"path":"/no/ws"').length));
      refusedClient.write(upgrade('/no/ws'));
      return answer;
    }, [['"path":"/ok/ws"']]);
    refusedClient.destroy();
    assert.equal(refused.status, 403);
    assert.equal(linesAt403, 1, 'the refused upgrade read its 403 after its line');
  });

  test('inspected: pipelined requests (one write) each reach the server after their own line', async () => {
    const client = await inspectedClient(guard.port, secure.port);
    const paths = ['/ok/pipe-1', '/ok/pipe-2', '/ok/pipe-3'];
    const text = await whileStalled(file, () => {
      const all = new Promise<string>((resolve) => {
        let got = '';
        const timer = setTimeout(() => resolve(got), 10_000);
        client.on('data', (chunk: Buffer) => {
          got += chunk.toString('latin1');
          if (got.split('HTTP/1.1 ').length > paths.length) {
            clearTimeout(timer);
            resolve(got);
          }
        });
      });
      client.write(paths.map((path) => `GET ${path} HTTP/1.1\r\nHost: inspected.test:${secure.port}\r\n\r\n`).join(''));
      return all;
    });
    client.destroy();
    assert.equal(text.split('HTTP/1.1 200').length - 1, paths.length);
    assert.deepEqual(
      paths.map((path) => linesAtArrival.get(path)),
      paths.map(() => 1),
    );
  });

  test("inspected: the CONNECT's 200 (nothing connects upstream for the tunnel) is read after its line", async () => {
    const connectLines = () => decisionLines(file, '"kind":"connect"', '"host":"inspected.test"').length;
    const before = connectLines();
    let linesAt200 = -1;
    const tunnel = await whileStalled(file, async () => {
      const opened = await openTunnel(guard.port, `inspected.test:${secure.port}`);
      linesAt200 = connectLines();
      return opened;
    }, [['"path":"/ok/pipe-3"']]);
    tunnel.socket.destroy();
    assert.equal(tunnel.status, 200);
    assert.equal(linesAt200, before + 1);
  });
});

describe('audit mode: a would-block decision is in the events file before its action moves', () => {
  const file = new StalledEventsFile();
  let guard: EgressGuardProcess;
  let plain: TestServer;
  let tunnelTarget: net.Server;
  const linesAtArrival = new Map<string, number>();
  let mismatchLinesAtFirstByte = -1;

  before(async () => {
    plain = await startHttpServer((req, res) => {
      linesAtArrival.set(req.url ?? '', decisionLines(file, `"path":"${req.url ?? ''}"`, '"decision":"would-block"').length);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    });
    tunnelTarget = net.createServer((socket) => {
      socket.on('error', () => undefined);
      socket.once('data', () => {
        mismatchLinesAtFirstByte = decisionLines(file, '"reason":"sni-mismatch"', '"host":"refused-sni.test"').length;
        socket.destroy();
      });
    });
    await new Promise<void>((resolve) => tunnelTarget.listen(0, '127.0.0.1', resolve));
    guard = await startEgressGuard(['--resolve', 'refused.test=127.0.0.1', '--resolve', 'tunnel.test=127.0.0.1'], {
      EGRESS_MODE: 'audit',
      EGRESS_ALLOWED_ENDPOINTS: 'tunnel.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      EGRESS_EVENTS_FILE: file.path,
      EGRESS_STATE_DIR: tempDir('eg-written-first-audit-'),
    });
  });
  after(() => stopAll(file, guard, [plain, tunnelTarget]));

  test('a would-block request on a reused keep-alive upstream connection is forwarded after its line', async () => {
    const answer = await secondOnKeptAlive(file, guard.port, `http://refused.test:${plain.port}`, '/audit-0', '/audit-1');
    assert.equal(answer.status, 200);
    assert.equal(linesAtArrival.get('/audit-1'), 1, 'the would-block line was in the file when the request head arrived');
  });

  test("CONNECT: a ClientHello naming a refused host (sni-mismatch) is relayed after the mismatch's line", async () => {
    const port = (tunnelTarget.address() as AddressInfo).port;
    const tunnel = await openTunnel(guard.port, `tunnel.test:${port}`);
    assert.equal(tunnel.status, 200);
    await whileStalled(file, () => helloUntilClosed(tunnel.socket, 'refused-sni.test'), [['"path":"/audit-1"']]);
    assert.equal(mismatchLinesAtFirstByte, 1);
  });
});

describe('transparent plain HTTP: a decision is in the events file before its action moves', () => {
  const file = new StalledEventsFile();
  let upstream: TestServer;
  let worker: Worker;
  let frontPort: number;
  const linesAtArrival = new Map<string, number>();

  before(async () => {
    upstream = await startHttpServer((req, res) => {
      linesAtArrival.set(req.url ?? '', decisionLines(file, `"path":"${req.url ?? ''}"`).length);
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
      res.end('ok');
    });
    worker = new Worker(new URL('../helpers/transparent-http-worker.js', import.meta.url), { workerData: { eventsFile: file.path, upstreamPort: upstream.port } });
    frontPort = await new Promise<number>((resolve, reject) => worker.once('message', resolve).once('error', reject));
  });
  after(async () => {
    worker?.postMessage('stop');
    await new Promise((resolve) => worker?.once('exit', resolve));
    await upstream?.close();
    file.close();
  });

  test('a request on a kept-alive redirected connection reaches the server after its line; refusals are read after theirs', async () => {
    const client = net.connect(frontPort, '127.0.0.1');
    await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
    const ask = (path: string, host: string, onHead?: () => void) => {
      const answer = readAnswer(client, onHead);
      client.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
      return answer;
    };
    const allowed = `allowed.test:${upstream.port}`;
    assert.equal((await ask('/t-1', allowed)).status, 200);
    const second = await whileStalled(file, () => ask('/t-2', allowed), [['"path":"/t-1"']]);
    assert.equal(second.status, 200);
    assert.equal(linesAtArrival.get('/t-2'), 1, 'the request reached the server after its line');
    let linesAtMismatch = -1;
    const mismatch = await whileStalled(
      file,
      () => ask('/t-3', `elsewhere.test:${upstream.port}`, () => (linesAtMismatch = decisionLines(file, '"path":"/t-3"', '"reason":"sni-mismatch"').length)),
      [['"path":"/t-2"']],
    );
    assert.equal(mismatch.status, 403, 'a Host whose name did not resolve to the destination is refused');
    assert.equal(linesAtMismatch, 1, 'the mismatch refusal was read after its line');
    client.destroy();
    const other = net.connect(frontPort, '127.0.0.1');
    await new Promise<void>((resolve, reject) => other.once('connect', resolve).once('error', reject));
    let linesAt403 = -1;
    const refused = await whileStalled(file, () => {
      const answer = readAnswer(other, () => (linesAt403 = decisionLines(file, '"path":"/t-4"').length));
      other.write('GET /t-4 HTTP/1.1\r\nHost: attacker.test\r\n\r\n');
      return answer;
    });
    other.destroy();
    assert.equal(refused.status, 403);
    assert.equal(linesAt403, 1, 'the refusal was read after its line');
  });
});

for (const mode of ['audit', 'block'] as const) {
  describe(`${mode} mode: an events file that cannot be written (a full disk: /dev/full)`, () => {
    let guard: EgressGuardProcess;
    let plain: TestServer;

    before(async () => {
      plain = await startHttpServer();
      guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1', '--resolve', 'refused.test=127.0.0.1'], {
        EGRESS_MODE: mode,
        EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
        EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
        EGRESS_EVENTS_FILE: '/dev/full',
      });
    });
    after(async () => {
      await guard?.stop();
      await plain?.close();
    });

    test('requests are still decided and served as before; the failure is reported on stderr', async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
      const allowed = await Promise.all([1, 2, 3].map((i) => proxiedGet(guard.port, `http://allowed.test:${plain.port}/a${i}`, agent)));
      const refused = await proxiedGet(guard.port, `http://refused.test:${plain.port}/r`, agent);
      agent.destroy();
      assert.deepEqual(
        allowed.map((a) => a.status),
        [200, 200, 200],
      );
      assert.equal(refused.status, mode === 'audit' ? 200 : 403);
      assert.match(guard.stderr(), /cannot write the events file \/dev\/full \(ENOSPC\)/);
      const decisions = await guard.waitForCount((l) => l.event === 'decision', 4);
      assert.equal(decisions.length, 4, 'every decision is still on stdout');
    });
  });
}
