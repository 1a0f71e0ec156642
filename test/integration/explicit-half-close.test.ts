/**
 * CONNECT whose first tunnel bytes and FIN arrive in the same segment as the CONNECT itself: the bytes must be
 * put back before the FIN ends the socket's reading, checked, relayed, and the FIN passed on (audit and block).
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { halfClosingClientArgs } from '../helpers/half-closing-client.js';

// Both relays of a decided tunnel (setting `relay`): the kernel relay takes the tunnel once the SNI check has settled.
for (const [mode, relay] of [
  ['audit', 'kernel'],
  ['block', 'kernel'],
  ['block', 'js'],
] as const) {
  describe(`${mode} mode, ${relay} relay: CONNECT, first bytes and FIN in one segment`, () => {
    let server: net.Server;
    let port: number;
    let guard: EgressGuardProcess;
    const received: string[] = [];

    before(async () => {
      server = net.createServer({ allowHalfOpen: true }, (socket) => {
        let data = '';
        socket.on('data', (c: Buffer) => (data += c));
        socket.on('end', () => {
          received.push(data);
          socket.end(`received ${data.length} bytes\n`);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as net.AddressInfo).port;
      guard = await startEgressGuard(['--resolve', 'one.test=127.0.0.1'], {
        EGRESS_MODE: mode,
        EGRESS_ALLOWED_ENDPOINTS: 'one.test:*',
        EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
        EGRESS_RELAY: relay,
      });
    });
    after(async () => {
      await guard?.stop();
      server?.close();
    });

    test('the bytes reach the server, the FIN follows them, the reply comes back; one close event, no error', async () => {
      const result = await runProcess('python3', halfClosingClientArgs('127.0.0.1', guard.port, `CONNECT one.test:${port} HTTP/1.1\\r\\nHost: one.test\\r\\n\\r\\nhello`));
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, 'HTTP/1.1 200 Connection Established\r\n\r\nreceived 5 bytes\n');
      assert.deepEqual(received, ['hello']);
      const decision = await guard.waitFor((l) => l.event === 'decision' && l.kind === 'connect');
      const close = await guard.waitFor((l) => l.event === 'close' && l.id === decision.id);
      assert.equal(close.error, undefined);
      assert.equal(close.bytes_out, 5);
    });
  });
}

describe('block mode: CONNECT, then a plain HTTP request and its FIN in one segment', () => {
  let server: http.Server;
  let port: number;
  let guard: EgressGuardProcess;

  before(async () => {
    server = http.createServer((req, res) => res.end(`hello ${req.headers.host} ${req.url}\n`));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
    guard = await startEgressGuard(['--resolve', 'one.test=127.0.0.1'], { EGRESS_MODE: 'block', EGRESS_ALLOWED_ENDPOINTS: 'one.test:*', EGRESS_TRUSTED_RANGES: '127.0.0.0/8' });
  });
  after(async () => {
    await guard?.stop();
    server?.closeAllConnections();
    server?.close();
  });

  test('the request is decided and answered (the tunnel is read request by request)', async () => {
    const request = `GET /half-closed HTTP/1.1\\r\\nHost: one.test:${port}\\r\\n\\r\\n`;
    const result = await runProcess('python3', halfClosingClientArgs('127.0.0.1', guard.port, `CONNECT one.test:${port} HTTP/1.1\\r\\nHost: one.test\\r\\n\\r\\n${request}`));
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^HTTP\/1\.1 200 Connection Established\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
    assert.ok(result.stdout.endsWith(`hello one.test:${port} /half-closed\n`), JSON.stringify(result.stdout));
    const decision = await guard.waitFor((l) => l.event === 'decision' && l.kind === 'connect' && l.path === '/half-closed');
    assert.equal(decision.decision, 'allowed');
  });
});
