import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { exchangeOnTunnel as exchange, openTunnel } from '../helpers/raw-client.js';
import { startHttpServer, type TestServer } from '../helpers/servers.js';
import { sslv2ClientHello } from '../helpers/tls-client-hello.js';

/** The HTTP/2 client connection preface (RFC 9113 3.4) and an empty SETTINGS frame. */
const H2C_PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00';

/**
 * A server that answers each HTTP/1.1 GET head 200 `ok` (kept alive) and echoes anything else (`echo:` and the bytes);
 * `received` holds what each connection got, in order of connection.
 */
async function startGetOrEchoServer(): Promise<{ port: number; received: string[]; close: () => Promise<void> }> {
  const received: string[] = [];
  const server = net.createServer((socket) => {
    const index = received.push('') - 1;
    let pending = '';
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      received[index] += chunk.toString('latin1');
      pending += chunk.toString('latin1');
      if (pending.startsWith('GET ')) {
        if (!pending.includes('\r\n\r\n')) return;
        pending = pending.slice(pending.indexOf('\r\n\r\n') + 4);
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        if (pending === '') return;
      }
      socket.write(`echo:${pending}`);
      pending = '';
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, received, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** A GET for `path` on a tunnel to allowed.test:`port`, then its `ok` answer. */
async function getOnTunnel(socket: net.Socket, port: number, path: string): Promise<string> {
  const answer = await exchange(socket, `GET ${path} HTTP/1.1\r\nHost: allowed.test:${port}\r\n\r\n`, '\r\n\r\nok');
  socket.removeAllListeners('data');
  socket.removeAllListeners('close');
  return answer;
}

describe('audit mode: what a CONNECT tunnel carries in the clear still gets through as without egress-guard', () => {
  let plain: TestServer;
  let echo: net.Server;
  let echoPort: number;
  let getOrEcho: Awaited<ReturnType<typeof startGetOrEchoServer>>;
  let guard: EgressGuardProcess;

  before(async () => {
    plain = await startHttpServer();
    getOrEcho = await startGetOrEchoServer();
    echo = net.createServer((socket) => socket.on('data', (c: Buffer) => socket.write(Buffer.concat([Buffer.from('echo:'), c]))).on('error', () => undefined));
    await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
    echoPort = (echo.address() as net.AddressInfo).port;
    guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1'], {
      EGRESS_MODE: 'audit',
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    });
  });

  after(async () => {
    await guard?.stop();
    await plain?.close();
    await getOrEcho?.close();
    await new Promise((resolve) => echo?.close(resolve));
  });

  test('a one-word text without a line end (a client waiting for its answer) is relayed after a moment, reported would-block', async () => {
    for (const text of ['ping', '\r\n\r\n']) {
      const tunnel = await openTunnel(guard.port, `allowed.test:${echoPort}`);
      assert.equal(tunnel.status, 200);
      // Within the exchange's 5 s: handed to the request reader, it waited for a line end until the 300 s idle timeout.
      const answer = await exchange(tunnel.socket, text, 'echo:');
      tunnel.socket.destroy();
      assert.equal(answer, `echo:${text}`);
    }
    const decisions = await guard.waitForCount((l) => l.event === 'decision' && l.port === echoPort && /first line had not ended/.test(String(l.message)), 2);
    for (const decision of decisions) assert.equal(decision.decision, 'would-block');
  });

  test('HTTP/2 with prior knowledge after an HTTP/1.1 request on the same tunnel is relayed from its preface on, reported would-block', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
    assert.equal(tunnel.status, 200);
    assert.match(await getOnTunnel(tunnel.socket, getOrEcho.port, '/before-h2'), /^HTTP\/1\.1 200 /);
    const answer = await exchange(tunnel.socket, H2C_PREFACE, 'echo:');
    tunnel.socket.destroy();
    assert.equal(answer, `echo:${H2C_PREFACE}`);
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.port === getOrEcho.port && /where an HTTP\/1\.1 request was due/.test(String(l.message)));
    assert.equal(decision.decision, 'would-block');
    assert.equal(decision.reason, 'sni-mismatch');
    const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
    assert.equal(close.bytes_out, H2C_PREFACE.length);
    assert.ok(
      getOrEcho.received.some((bytes) => bytes === H2C_PREFACE),
      'the preface went upstream on a connection of its own, whole',
    );
  });

  test('an HTTP/1.0 request without Host (which names no other site) reaches the CONNECT host', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${plain.port}`);
    assert.equal(tunnel.status, 200);
    const answer = await exchange(tunnel.socket, 'GET /no-host HTTP/1.0\r\n\r\n', '\r\n\r\n');
    tunnel.socket.destroy();
    assert.match(answer, /^HTTP\/1\.[01] 200 /, answer.slice(0, 200));
    assert.deepEqual(
      plain.requests.filter((q) => q.url === '/no-host').map((q) => q.host),
      [`allowed.test:${plain.port}`],
    );
  });

  test('a request naming another Host than the CONNECT host is relayed as sent (its Host, to the checked address), reported would-block', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${plain.port}`);
    assert.equal(tunnel.status, 200);
    const answer = await exchange(tunnel.socket, `GET /other-host HTTP/1.1\r\nHost: other.test:${plain.port}\r\n\r\n`, '\r\n\r\n');
    tunnel.socket.destroy();
    assert.match(answer, /^HTTP\/1\.1 200 /, answer.slice(0, 200));
    assert.deepEqual(
      plain.requests.filter((q) => q.url === '/other-host').map((q) => q.host),
      [`other.test:${plain.port}`],
    );
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.path === '/other-host');
    assert.equal(decision.reason, 'sni-mismatch');
    assert.equal(decision.decision, 'would-block');
  });

  test('a client-first protocol whose first message is text without a line end (JSON over TCP) is relayed, not read as HTTP', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${echoPort}`);
    assert.equal(tunnel.status, 200);
    const answer = await exchange(tunnel.socket, '{"id":1,"method":"ping"}', 'echo:');
    tunnel.socket.destroy();
    assert.equal(answer, 'echo:{"id":1,"method":"ping"}');
  });

  test("a client of another protocol whose first byte is a TLS handshake's is relayed within seconds, not after the idle timeout", async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${echoPort}`);
    assert.equal(tunnel.status, 200);
    // A TLS record header (0x16 0x03 0x01, 512 bytes announced) and then nothing: it waited for the record's rest, 300 s.
    const first = '\x16\x03\x01\x02\x00ping';
    const answer = await exchange(tunnel.socket, first, 'echo:', 20_000);
    tunnel.socket.destroy();
    assert.equal(answer, `echo:${first}`);
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.port === echoPort && /ClientHello not finished/.test(String(l.message)));
    assert.equal(decision.decision, 'would-block');
  });

  test('a request line without a version (HTTP/0.9 style `GET http://attacker.test/x`) is relayed, reported would-block (hunt2)', async () => {
    const line = 'GET http://attacker.test/audit-09\r\n';
    const tunnel = await openTunnel(guard.port, `allowed.test:${echoPort}`);
    assert.equal(tunnel.status, 200);
    const answer = await exchange(tunnel.socket, line, 'echo:');
    tunnel.socket.destroy();
    assert.equal(answer, `echo:${line}`);
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.port === echoPort && /without an HTTP version/.test(String(l.message)));
    assert.equal(decision.decision, 'would-block');
    assert.equal(decision.reason, 'sni-mismatch');
  });

  test('HTTP/2 with prior knowledge (h2c: gRPC without TLS through a proxy) is relayed, reported would-block', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${echoPort}`);
    assert.equal(tunnel.status, 200);
    const answer = await exchange(tunnel.socket, H2C_PREFACE, 'echo:');
    tunnel.socket.destroy();
    assert.equal(answer, `echo:${H2C_PREFACE}`);
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.port === echoPort && /HTTP\/2/.test(String(l.message)));
    assert.equal(decision.decision, 'would-block');
  });
});

describe('block mode: what a plain CONNECT tunnel carries that names no host, or another, is refused', () => {
  let guard: EgressGuardProcess;
  let raw: net.Server;
  let rawPort: number;
  let getOrEcho: Awaited<ReturnType<typeof startGetOrEchoServer>>;
  const heads: string[] = [];

  before(async () => {
    getOrEcho = await startGetOrEchoServer();
    // A raw server that records each request head and accepts any upgrade (nginx, Go and Apache route an absolute-form
    // target on its authority, whatever the Host header says: RFC 9112 3.2.2).
    raw = net.createServer((socket) => {
      let head = '';
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => {
        head += chunk.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        heads.push(head.split('\r\n\r\n')[0]!);
        socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n');
      });
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    rawPort = (raw.address() as net.AddressInfo).port;
    guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1'], {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    });
  });

  after(async () => {
    await guard?.stop();
    await getOrEcho?.close();
    await new Promise((resolve) => raw?.close(resolve));
  });

  test('a one-word text without a line end is refused after a moment with a decision event, nothing relayed', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
    assert.equal(tunnel.status, 200);
    const answer = await exchange(tunnel.socket, 'ping', 'echo:');
    tunnel.socket.destroy();
    assert.equal(answer, '');
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.port === getOrEcho.port && /first line had not ended/.test(String(l.message)));
    assert.equal(decision.decision, 'blocked');
    assert.ok(!getOrEcho.received.some((bytes) => bytes.includes('ping')), 'nothing reached the server');
  });

  test('a request line cut after a space in its target (`GET /a b`, then ` HTTP/1.1` naming another Host) is refused, never relayed unread', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
    assert.equal(tunnel.status, 200);
    tunnel.socket.on('error', () => undefined);
    tunnel.socket.write('GET /a b');
    // Older nginx reads a target with a space in it: the rest of the line and the Host came later.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const answer = await exchange(tunnel.socket, ' HTTP/1.1\r\nHost: attacker.test\r\n\r\n', 'echo:', 2000);
    tunnel.socket.destroy();
    assert.equal(answer, '');
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.port === getOrEcho.port && /first line had not ended/.test(String(l.message)));
    assert.equal(decision.decision, 'blocked');
    assert.ok(!getOrEcho.received.some((bytes) => bytes.includes('GET /a b')), 'nothing reached the server');
  });

  test('HTTP/2 with prior knowledge after an HTTP/1.1 request on the same tunnel is refused with a decision event of its own', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
    assert.equal(tunnel.status, 200);
    assert.match(await getOnTunnel(tunnel.socket, getOrEcho.port, '/before-h2'), /^HTTP\/1\.1 200 /);
    const answer = await exchange(tunnel.socket, H2C_PREFACE, 'echo:', 2000);
    tunnel.socket.destroy();
    assert.equal(answer, '');
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.port === getOrEcho.port && /where an HTTP\/1\.1 request was due/.test(String(l.message)));
    assert.equal(decision.decision, 'blocked');
    assert.ok(!getOrEcho.received.some((bytes) => bytes.includes('PRI')), 'nothing of it reached the server');
  });

  test('HTTP/2 with prior knowledge (h2c) is refused with a decision event of its own', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${rawPort}`);
    assert.equal(tunnel.status, 200);
    await exchange(tunnel.socket, H2C_PREFACE, '\r\n\r\n', 2000);
    tunnel.socket.destroy();
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.port === rawPort && l.decision === 'blocked');
    assert.match(String(decision.message), /HTTP\/2/);
    assert.ok(!heads.some((head) => head.startsWith('PRI')), 'nothing reached the server');
  });

  test('a request line without a version (HTTP/0.9 style) is refused with a decision event, nothing relayed; SMTP, memcached and redis first lines still pass (hunt2)', async () => {
    for (const line of ['GET http://attacker.test/block-09\r\n', 'GET /block-09-path\n']) {
      const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
      assert.equal(tunnel.status, 200);
      const answer = await exchange(tunnel.socket, line, 'echo:');
      tunnel.socket.destroy();
      assert.equal(answer, '', line);
    }
    const decisions = await guard.waitForCount((l) => l.event === 'decision' && l.port === getOrEcho.port && /without an HTTP version/.test(String(l.message)), 2);
    for (const decision of decisions) assert.deepEqual([decision.decision, decision.reason], ['blocked', 'sni-mismatch']);
    assert.ok(!getOrEcho.received.some((bytes) => bytes.includes('block-09')), 'nothing reached the server');
    for (const line of ['EHLO runner.test\r\n', 'get some-key\r\n', 'PING\r\n']) {
      const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
      assert.equal(tunnel.status, 200);
      const answer = await exchange(tunnel.socket, line, 'echo:');
      tunnel.socket.destroy();
      assert.equal(answer, `echo:${line}`, line);
    }
  });

  test("a request line without a version split on VT, FF or a lone CR (Python's http.server serves these) is refused, nothing relayed; NATS's CONNECT {...} still passes (review41b)", async () => {
    const versionless = (l: { event?: unknown; port?: unknown; message?: unknown }) =>
      l.event === 'decision' && l.port === getOrEcho.port && /without an HTTP version/.test(String(l.message));
    const before = guard.lines.filter(versionless).length;
    for (const line of ['GET\v/block-blank-vt\r\n', 'GET\r/block-blank-cr\n', '\fGET /block-blank-ff\r\n']) {
      const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
      assert.equal(tunnel.status, 200);
      const answer = await exchange(tunnel.socket, line, 'echo:');
      tunnel.socket.destroy();
      assert.equal(answer, '', JSON.stringify(line));
    }
    const decisions = (await guard.waitForCount(versionless, before + 3)).slice(before);
    assert.equal(decisions.length, 3);
    for (const decision of decisions) assert.deepEqual([decision.decision, decision.reason], ['blocked', 'sni-mismatch']);
    assert.ok(!getOrEcho.received.some((bytes) => bytes.includes('block-blank')), 'nothing reached the server');
    const nats = 'CONNECT {"verbose":false,"pedantic":false,"lang":"go","version":"1.31.0","protocol":1}\r\n';
    const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
    assert.equal(tunnel.status, 200);
    const answer = await exchange(tunnel.socket, nats, 'echo:');
    tunnel.socket.destroy();
    assert.equal(answer, `echo:${nats}`);
  });

  test('an SSLv2-format ClientHello is relayed as a ClientHello without SNI: to the checked address of the CONNECT host, no refusal (hunt2)', async () => {
    const hello = sslv2ClientHello();
    const tunnel = await openTunnel(guard.port, `allowed.test:${getOrEcho.port}`);
    assert.equal(tunnel.status, 200);
    tunnel.socket.on('error', () => undefined);
    const answer = new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve(''), 5000);
      tunnel.socket.once('data', (chunk: Buffer) => {
        clearTimeout(timer);
        resolve(chunk.toString('latin1'));
      });
    });
    tunnel.socket.write(hello);
    assert.match(await answer, /^echo:/);
    tunnel.socket.destroy();
    assert.ok(getOrEcho.received.includes(hello.toString('latin1')), 'the hello reached the server whole, on one connection');
  });

  test('an absolute-form target naming another host goes upstream in origin form, under the CONNECT host', async () => {
    const tunnel = await openTunnel(guard.port, `allowed.test:${rawPort}`);
    assert.equal(tunnel.status, 200);
    const upgrade =
      `GET http://attacker.test/ws HTTP/1.1\r\nHost: allowed.test:${rawPort}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n';
    await exchange(tunnel.socket, upgrade, '\r\n\r\n');
    tunnel.socket.destroy();
    assert.ok(heads.length > 0, 'the upgrade reached the server');
    for (const head of heads) assert.match(head, /^GET \/ws HTTP\/1\.1\r\n/, head);
  });
});
