import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { rawExchange } from '../helpers/raw-client.js';
import { leafFor, startHttpServer, startHttpsServer, testCa, type TestServer } from '../helpers/servers.js';
import { tempDir } from '../helpers/temp-dir.js';

/** Write `parts` one by one (a pause between), then optionally half-close; collect the answer until the proxy closes. */
function slowExchange(port: number, parts: string[], options: { endAfter?: boolean; gapMs?: number } = {}): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    const timer = setTimeout(() => socket.destroy(), 5000);
    socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(received);
    });
    socket.on('connect', async () => {
      for (const part of parts) {
        if (socket.destroyed) return;
        socket.write(part);
        await new Promise((r) => setTimeout(r, options.gapMs ?? 20));
      }
      if (options.endAfter) socket.end();
    });
  });
}

describe('explicit proxy: CONNECT heads read by the lean reader (connect-front.ts), other requests by node', () => {
  let plain: TestServer;
  let secure: TestServer;
  let guard: EgressGuardProcess;
  let caFile: string;

  before(async () => {
    caFile = join(tempDir('eg-connect-head-'), 'ca.pem');
    writeFileSync(caFile, testCa().certPem);
    plain = await startHttpServer();
    secure = await startHttpsServer(leafFor('allowed.test'));
    guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1', '--resolve', 'blocked.test=127.0.0.1'], {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    });
  });

  after(async () => {
    await guard?.stop();
    await plain?.close();
    await secure?.close();
  });

  test('curl -p: HTTPS and plain HTTP through a CONNECT tunnel; a blocked host gets 403 with its event', async () => {
    const tls = await runProcess('curl', ['-sS', '-p', '--cacert', caFile, '-x', guard.proxyUrl, `https://allowed.test:${secure.port}/curl-tls`]);
    assert.equal(tls.code, 0, tls.stderr);
    assert.match(tls.stdout, /hello from allowed.test:\d+ \/curl-tls/);
    const viaTunnel = await runProcess('curl', ['-sS', '-p', '-x', guard.proxyUrl, `http://allowed.test:${plain.port}/curl-plain`]);
    assert.equal(viaTunnel.code, 0, viaTunnel.stderr);
    assert.match(viaTunnel.stdout, /hello from allowed.test:\d+ \/curl-plain/);
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.kind === 'connect' && l.port === plain.port);
    assert.equal(decision.decision, 'allowed');
    await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    const blocked = await runProcess('curl', ['-sS', '-p', '-o', '/dev/null', '-w', '%{http_connect}', '-x', guard.proxyUrl, `http://blocked.test:${plain.port}/`]);
    assert.equal(blocked.stdout, '403');
    const refused = await guard.waitFor((l) => l.event === 'decision' && l.kind === 'connect' && l.host === 'blocked.test');
    assert.equal(refused.decision, 'blocked');
  });

  test("node's http client: CONNECT, then a request through the tunnel", async () => {
    const { status, socket, head } = await new Promise<{ status: number; socket: net.Socket; head: Buffer }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: guard.port, method: 'CONNECT', path: `allowed.test:${plain.port}` });
      req.on('connect', (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => resolve({ status: res.statusCode ?? 0, socket, head }));
      req.on('error', reject);
      req.end();
    });
    assert.equal(status, 200);
    assert.equal(head.length, 0);
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      const timer = setTimeout(() => socket.destroy(), 5000);
      socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
      socket.on('close', () => {
        clearTimeout(timer);
        resolve(text);
      });
      socket.write(`GET /node-connect HTTP/1.1\r\nHost: allowed.test:${plain.port}\r\nConnection: close\r\n\r\n`);
    });
    assert.match(answer, /^HTTP\/1\.1 200[\s\S]*hello from allowed.test:\d+ \/node-connect/);
  });

  test("bytes sent with the head are the tunnel's first, in order; a head split over many writes is read whole", async () => {
    const authority = `allowed.test:${plain.port}`;
    const together = await rawExchange(
      guard.port,
      `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\nGET /pipelined HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`,
      {
        untilText: '/pipelined\n',
      },
    );
    assert.match(together, /^HTTP\/1\.1 200 Connection Established\r\n\r\nHTTP\/1\.1 200[\s\S]*hello from allowed.test:\d+ \/pipelined\n/);
    const head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;
    const parts = [...head.match(/[\s\S]{1,5}/g)!, `GET /split HTTP/1.1\r\nHost: ${authority}\r\nConnection: close\r\n\r\n`];
    const split = await slowExchange(guard.port, parts, { gapMs: 5 });
    assert.match(split, /^HTTP\/1\.1 200 Connection Established\r\n\r\nHTTP\/1\.1 200[\s\S]*hello from allowed.test:\d+ \/split\n/);
  });

  test('malformed CONNECT heads get 400 and a "malformed" log line, as from node\'s parser; the proxy keeps serving', async () => {
    const cases: Array<[string, string]> = [
      [`CONNECT allowed.test:${plain.port} HTTP/1.1\r\nX: ${'a'.repeat(17_000)}\r\n\r\n`, 'HPE_HEADER_OVERFLOW'],
      [`CONNECT allowed.test:${plain.port} HTTP/1.1\r\nBad Header\r\n\r\n`, 'HPE_INVALID_HEADER_TOKEN'],
      [`CONNECT allowed.test:${plain.port} HTTP/1.1\nHost: x\n\n`, 'HPE_CR_EXPECTED'],
      [`CONNECT allowed.test:${plain.port} HTTP/2.0\r\n\r\n`, 'HPE_INVALID_REQUEST_LINE'],
      // Not CONNECT to the lean reader: node's HTTP server answers them (a method it does not know, lower case).
      [`connect allowed.test:${plain.port} HTTP/1.1\r\n\r\n`, 'HPE_INVALID_METHOD'],
      [`CONNEC allowed.test:${plain.port} HTTP/1.1\r\n\r\n`, 'HPE_INVALID_METHOD'],
    ];
    for (const [payload, code] of cases) {
      const before = guard.lines.length;
      const answer = await rawExchange(guard.port, payload);
      assert.match(answer, new RegExp(`^HTTP/1\\.1 400 Bad Request\\r\\n[\\s\\S]*X-Egress-Guard-Reason: malformed HTTP request \\(${code}\\)`), payload.slice(0, 60));
      await guard.waitFor((l) => guard.lines.indexOf(l) >= before && l.msg === 'malformed HTTP request' && l.err === code);
    }
    const noPort = await rawExchange(guard.port, 'CONNECT allowed.test HTTP/1.1\r\nHost: allowed.test\r\n\r\n');
    assert.match(noPort, /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*CONNECT needs host:port, got "allowed.test"/);
    // A decision with its event (malformed-request), no longer a log line only.
    const refused = await guard.waitFor((l) => l.event === 'decision' && l.kind === 'connect' && l.reason === 'malformed-request');
    assert.deepEqual([refused.decision, refused.host, refused.message], ['blocked', '(none)', 'CONNECT needs host:port, got "allowed.test"']);
    assert.match(noPort, new RegExp(`X-Egress-Guard-Event: ${refused.id}\r\n`));
    const after = await runProcess('curl', ['-sS', '-p', '-o', '/dev/null', '-w', '%{http_code}', '-x', guard.proxyUrl, `http://allowed.test:${plain.port}/after`]);
    assert.equal(after.stdout, '200');
    assert.equal(guard.child.exitCode, null, 'still running');
  });

  test('a client that closes mid-head: a half-close is answered 400 (HPE_INVALID_EOF_STATE), a reset is dropped; no tunnel, no crash', async () => {
    const halfClosed = await slowExchange(guard.port, ['CONNECT allowed.test:', `${plain.port} HTT`], { endAfter: true });
    assert.match(halfClosed, /^HTTP\/1\.1 400 Bad Request\r\n[\s\S]*malformed HTTP request \(HPE_INVALID_EOF_STATE\)/);
    for (let i = 0; i < 20; i++) {
      const socket = net.connect(guard.port, '127.0.0.1');
      socket.on('error', () => undefined);
      await new Promise<void>((resolve) => socket.on('connect', () => resolve()));
      socket.write(`CONNECT allowed.test:${plain.port} HTTP/1.1\r\nHo`);
      socket.resetAndDestroy();
    }
    const silent = net.connect(guard.port, '127.0.0.1');
    await new Promise<void>((resolve) => silent.on('connect', () => resolve()));
    silent.end();
    await new Promise((resolve) => silent.on('close', resolve));
    const after = await runProcess('curl', ['-sS', '-p', '-o', '/dev/null', '-w', '%{http_code}', '-x', guard.proxyUrl, `http://allowed.test:${plain.port}/after-resets`]);
    assert.equal(after.stdout, '200');
    assert.equal(guard.child.exitCode, null, 'still running');
  });

  test('plain absolute-URI requests still go to the forwarder, and a CONNECT after one on the same connection is served', async () => {
    const authority = `allowed.test:${plain.port}`;
    const socket = net.connect(guard.port, '127.0.0.1');
    let received = '';
    const timer = setTimeout(() => socket.destroy(), 5000);
    const seen = (text: string) =>
      new Promise<boolean>((resolve) => {
        const check = () => {
          if (!received.includes(text)) return;
          socket.off('data', check);
          resolve(true);
        };
        socket.on('data', check);
        socket.once('close', () => resolve(received.includes(text)));
      });
    socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
    socket.on('error', () => undefined);
    socket.write(`GET http://${authority}/first HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    assert.ok(await seen('/first\n'), received);
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    assert.ok(await seen('Connection Established\r\n\r\n'), received);
    socket.write(`GET /second HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    assert.ok(await seen('/second\n'), received);
    clearTimeout(timer);
    socket.destroy();
    assert.match(received, /^HTTP\/1\.1 200 OK\r\n[\s\S]*hello from allowed.test:\d+ \/first\n/);
  });
});

describe('explicit proxy: shutting down with connections still in (or refused at) their CONNECT head', () => {
  test('a silent connection, half a head and a refused head kept open by the client do not hold up the exit', async () => {
    const guard = await startEgressGuard([], { EGRESS_MODE: 'block', EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*', EGRESS_DRAIN_TIMEOUT: '500' });
    const sockets: net.Socket[] = [];
    try {
      const open = async (bytes: string, until?: string) => {
        // Half-open: the client does not close its side when the proxy ends its own (after a 400).
        const socket = net.connect({ port: guard.port, host: '127.0.0.1', allowHalfOpen: true });
        sockets.push(socket);
        socket.on('error', () => undefined);
        let received = '';
        socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
        await new Promise<void>((resolve) => socket.on('connect', () => resolve()));
        if (bytes) socket.write(bytes);
        // Bounded by the test's own timeout: the refused head's 400 comes at once.
        while (until && !received.includes(until)) await new Promise((r) => setTimeout(r, 20));
      };
      await open('');
      await open('CONNECT allowed.test:443 HTTP/1.1\r\nHo');
      await open('CONNECT allowed.test:443 HTTP/1.1\r\nBad Header\r\n\r\n', 'HPE_INVALID_HEADER_TOKEN');
      await guard.waitFor((l) => l.msg === 'malformed HTTP request');
      const exited = await Promise.race([guard.stop(), new Promise<string>((r) => setTimeout(() => r('still running after 20 s'), 20_000).unref())]);
      assert.equal(exited, 0);
    } finally {
      for (const socket of sockets) socket.destroy();
      await guard.stop('SIGKILL');
    }
  });
});
