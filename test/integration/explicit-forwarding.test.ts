import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { httpsGetThroughProxy, rawExchange } from '../helpers/raw-client.js';
import { leafFor, startHttpServer, startHttpsServer, testCa, type TestServer } from '../helpers/servers.js';
import { tempDir } from '../helpers/temp-dir.js';

const BIG = 32 * 1024 * 1024;

/** Deterministic bytes, generated in chunks so the server streams them. */
function bigChunk(i: number): Buffer {
  return Buffer.from(createHash('sha512').update(String(i)).digest('hex').repeat(512).slice(0, 65536));
}

function bigBodyHash(): string {
  const hash = createHash('sha256');
  for (let i = 0; i < BIG / 65536; i++) hash.update(bigChunk(i));
  return hash.digest('hex');
}

describe('explicit proxy forwards allowed traffic intact', () => {
  let http1: TestServer;
  let https1: TestServer;
  let guard: EgressGuardProcess;
  let dir: string;
  let caFile: string;

  before(async () => {
    dir = tempDir('eg-fwd-');
    caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, testCa().certPem);
    const handler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => {
      if (req.url === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG });
        let i = 0;
        const pump = () => {
          while (i < BIG / 65536) {
            if (!res.write(bigChunk(i++))) return void res.once('drain', pump);
          }
          res.end();
        };
        return pump();
      }
      if (req.url === '/stream') {
        // No Content-Length: to an HTTP/1.0 client the proxy can only end such a response by closing.
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('streamed ');
        return res.end('answer');
      }
      if (req.method === 'POST') {
        const digest = createHash('sha256').update(body).digest('hex');
        res.writeHead(200, { 'content-type': 'text/plain' });
        return res.end(`${body.length} ${digest}`);
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'x-upstream': 'yes' });
      res.end(`hello ${req.headers.host} ${req.url} proxy-conn=${req.headers['proxy-connection'] ?? 'none'}`);
    };
    http1 = await startHttpServer(handler);
    https1 = await startHttpsServer(leafFor('allowed.test', 'big.test'), handler);
    guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1', '--resolve', 'big.test=127.0.0.1'], {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:* big.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      GITHUB_REPOSITORY: 'octo/repo',
      GITHUB_RUN_ID: '42',
      GITHUB_JOB: 'build',
    });
  });

  after(async () => {
    await guard?.stop();
    await http1?.close();
    await https1?.close();
  });

  test('curl: plain HTTP through the proxy, body and headers intact, hop-by-hop headers dropped', async () => {
    const r = await runProcess('curl', ['-sS', '-i', '-x', guard.proxyUrl, '-H', 'Proxy-Connection: keep-alive', `http://allowed.test:${http1.port}/path?q=1`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/1\.1 200/);
    assert.match(r.stdout, /x-upstream: yes/i);
    assert.match(r.stdout, new RegExp(`hello allowed.test:${http1.port} /path\\?q=1 proxy-conn=none`));
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.kind === 'http' && l.path === '/path');
    assert.equal(decision.decision, 'allowed');
    assert.equal(decision.host, 'allowed.test');
    assert.equal(decision.ip, '127.0.0.1');
    assert.equal(decision.method, 'GET');
    assert.equal(decision.mode, 'block');
    assert.equal(decision.schema, 1);
    assert.match(String(decision.client), /^127\.0\.0\.1:\d+$/);
    assert.deepEqual(decision.ci, { repository: 'octo/repo', run_id: '42', job: 'build' });
    const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    assert.equal(close.status, 200);
    assert.ok((close.bytes_in as number) > 0);
  });

  test('the Host header upstream is the decided authority, not the one the client sent (no fronting by Host)', async () => {
    const answer = await rawExchange(guard.port, `GET http://allowed.test:${http1.port}/fronting HTTP/1.1\r\nHost: attacker.test\r\nConnection: close\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.match(answer, new RegExp(`hello allowed.test:${http1.port} /fronting`));
    assert.equal(http1.requests.find((q) => q.url === '/fronting')?.host, `allowed.test:${http1.port}`);
  });

  test('the Host header upstream is the host as decided, not as the target spelt it (a trailing dot, upper case)', async () => {
    for (const [spelt, path] of [
      ['allowed.test.', '/trailing-dot'],
      ['ALLOWED.test', '/upper-case'],
    ] as const) {
      const answer = await rawExchange(guard.port, `GET http://${spelt}:${http1.port}${path} HTTP/1.1\r\nHost: ${spelt}:${http1.port}\r\nConnection: close\r\n\r\n`);
      assert.match(answer, /^HTTP\/1\.1 200/, spelt);
      assert.equal(http1.requests.find((q) => q.url === path)?.host, `allowed.test:${http1.port}`, spelt);
    }
  });

  test("a client's Connection: close is honoured: the answer comes, then the proxy closes the connection", async () => {
    const socket = net.connect(guard.port, '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk: Buffer) => {
      answer += chunk.toString('latin1');
    });
    socket.write(`GET http://allowed.test:${http1.port}/close-me HTTP/1.1\r\nHost: allowed.test:${http1.port}\r\nConnection: close\r\n\r\n`);
    const ended = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 5000);
      socket.once('end', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    socket.destroy();
    assert.match(answer, /^HTTP\/1\.1 200/);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    assert.ok(ended, 'the proxy closed the connection after the answer');
  });

  test('a request pipelined behind a response that closes the connection: every decision that forwards gets its close event', async () => {
    const socket = net.connect(guard.port, '127.0.0.1');
    socket.on('data', () => undefined);
    const authority = `allowed.test:${http1.port}`;
    socket.write(
      `GET http://${authority}/stream HTTP/1.0\r\nHost: ${authority}\r\nConnection: keep-alive\r\n\r\n` +
        `POST http://${authority}/pipelined-behind HTTP/1.0\r\nHost: ${authority}\r\nContent-Length: 6\r\n\r\nSTOLEN`,
    );
    await new Promise((resolve) => socket.once('close', resolve));
    const decisions = [
      await guard.waitFor((l) => l.event === 'decision' && l.path === '/stream'),
      await guard.waitFor((l) => l.event === 'decision' && l.path === '/pipelined-behind'),
    ];
    for (const decision of decisions) await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
  });

  test('curl: HTTPS through a CONNECT tunnel', async () => {
    const r = await runProcess('curl', ['-sS', '--cacert', caFile, '-x', guard.proxyUrl, `https://allowed.test:${https1.port}/tls`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /hello allowed.test:\d+ \/tls/);
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.kind === 'connect' && l.port === https1.port);
    assert.equal(decision.decision, 'allowed');
    const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    assert.ok((close.bytes_in as number) > 1000, 'TLS handshake and response counted');
    assert.ok((close.bytes_out as number) > 100);
  });

  test('curl: a 32 MiB download is streamed through the tunnel byte for byte', async () => {
    const out = join(dir, 'big.bin');
    const r = await runProcess('curl', ['-sS', '--cacert', caFile, '-x', guard.proxyUrl, '-o', out, `https://big.test:${https1.port}/big`], undefined, 120_000);
    assert.equal(r.code, 0, r.stderr);
    const got = createHash('sha256').update(readFileSync(out)).digest('hex');
    assert.equal(got, bigBodyHash());
  });

  test('curl: an 8 MiB upload over plain HTTP arrives intact', async () => {
    const upload = join(dir, 'up.bin');
    const data = Buffer.alloc(8 * 1024 * 1024, 7);
    data.write('start-marker');
    writeFileSync(upload, data);
    const r = await runProcess('curl', ['-sS', '-x', guard.proxyUrl, '--data-binary', `@${upload}`, `http://allowed.test:${http1.port}/upload`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${data.length} ${createHash('sha256').update(data).digest('hex')}`);
  });

  test('curl: keep-alive reuses the proxy connection for several requests', async () => {
    const url = `http://allowed.test:${http1.port}/ka`;
    const r = await runProcess('curl', ['-sS', '-v', '-x', guard.proxyUrl, url, url, url]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((r.stdout.match(/hello allowed.test/g) ?? []).length, 3);
    assert.match(r.stderr, /Re-using existing connection/);
  });

  test('node: http client with an absolute URI, and a TLS client over CONNECT', async () => {
    const body = await new Promise<string>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: guard.port, method: 'GET', path: `http://allowed.test:${http1.port}/node`, headers: { host: `allowed.test:${http1.port}` } },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => {
            text += c.toString();
          });
          res.on('end', () => resolve(`${res.statusCode} ${text}`));
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.match(body, /^200 hello allowed.test:\d+ \/node/);
    const tls = await httpsGetThroughProxy(guard.port, 'allowed.test', https1.port, '/node-tls', testCa().certPem);
    assert.equal(tls.status, 200);
    assert.match(tls.body, /hello allowed.test:\d+ \/node-tls/);
  });
});
