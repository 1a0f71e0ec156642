/**
 * Requests the explicit proxy cannot forward whatever the policy says: one sent to it as to an origin server (no
 * absolute URI), an absolute URI of another scheme than http:// (`GET https://...`: a client that will not CONNECT), a
 * CONNECT whose target is not host:port. Each is refused 400 in audit mode too (there is nothing to forward) and is a
 * decision with its event, reason malformed-request, naming the host it names: until 2026-12-03 they were answered
 * 400 with a log line at most, so an audit run did not show them. Raw requests against the real CLI, in audit mode.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import net, { type AddressInfo } from 'node:net';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { openTunnel, rawExchange } from '../helpers/raw-client.js';

describe('explicit proxy: a request it cannot forward is a malformed-request decision with its event, in audit mode too', () => {
  let guard: EgressGuardProcess;

  before(async () => {
    guard = await startEgressGuard([], { EGRESS_MODE: 'audit', EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*' });
  });
  after(async () => {
    await guard?.stop();
  });

  const cases = [
    {
      what: 'origin form, named by its Host',
      request: 'GET /origin-form?token=s3cret HTTP/1.1\r\nHost: Attacker.test:8080\r\nConnection: close\r\n\r\n',
      event: { kind: 'http', host: 'attacker.test', port: 8080, method: 'GET', path: '/origin-form' },
      reason: /is not an absolute URI/,
    },
    {
      what: 'origin form without a Host',
      request: 'GET /no-host HTTP/1.0\r\n\r\n',
      event: { kind: 'http', host: '(none)', port: 0, method: 'GET', path: '/no-host' },
      reason: /is not an absolute URI/,
    },
    {
      what: 'an https:// absolute URI',
      request: 'POST https://attacker.test/upload HTTP/1.1\r\nHost: attacker.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
      event: { kind: 'http', host: 'attacker.test', port: 443, method: 'POST', path: '/upload' },
      reason: /use CONNECT for https:/,
    },
    {
      // Until 2026-12-03 the three below were a 400 with a log line only (the parser's error, node's Host rule).
      what: 'a head the HTTP parser cannot read (a header line without a colon)',
      request: 'GET http://allowed.test/x HTTP/1.1\r\nHost allowed.test\r\n\r\n',
      event: { kind: 'http', host: '(none)', port: 0 },
      reason: /^malformed HTTP request \(HPE_[A-Z_]+\)$/,
    },
    {
      what: 'bytes that are no HTTP request',
      request: 'hello, proxy\r\n\r\n',
      event: { kind: 'http', host: '(none)', port: 0 },
      reason: /^malformed HTTP request \(HPE_[A-Z_]+\)$/,
    },
    {
      what: 'an HTTP/1.1 request without Host',
      request: 'GET http://Allowed.test:8080/no-host-header?token=s3cret HTTP/1.1\r\nConnection: close\r\n\r\n',
      event: { kind: 'http', host: 'allowed.test', port: 8080, method: 'GET', path: '/no-host-header' },
      reason: /without a Host header/,
    },
    {
      what: 'a CONNECT target with a port out of range',
      request: 'CONNECT attacker.test:99999 HTTP/1.1\r\nHost: attacker.test:99999\r\n\r\n',
      event: { kind: 'connect', host: '(none)', port: 0 },
      reason: /CONNECT needs host:port, got "attacker.test:99999"/,
    },
  ];

  for (const { what, request, event, reason } of cases) {
    test(`${what}: 400, one blocked decision event (malformed-request) whose id the answer carries`, async () => {
      const before = guard.lines.length;
      const answer = await rawExchange(guard.port, request);
      assert.match(answer, /^HTTP\/1\.1 400 /, answer.slice(0, 200));
      const decision = await guard.waitFor((l) => guard.lines.indexOf(l) >= before && l.event === 'decision');
      assert.deepEqual(Object.fromEntries(Object.keys(event).map((k) => [k, decision[k]])), event);
      assert.deepEqual([decision.decision, decision.reason, decision.mode, decision.rule], ['blocked', 'malformed-request', 'audit', null]);
      assert.match(String(decision.message), reason);
      assert.match(answer, new RegExp(`X-Egress-Guard-Event: ${decision.id}\r\n`, 'i'));
      // The query string is not logged (log-query is off).
      assert.ok(!JSON.stringify(decision).includes('s3cret'));
    });
  }
});

describe('explicit proxy: a head unfinished at head-timeout is answered 408 with a malformed-request event, in audit mode too', () => {
  let guard: EgressGuardProcess;

  before(async () => {
    guard = await startEgressGuard([], { EGRESS_MODE: 'audit', EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*', EGRESS_HEAD_TIMEOUT: '500' });
  });
  after(async () => {
    await guard?.stop();
  });

  // Until 2026-12-03: a 400 after a fixed 30 s, with a log line only (and no test: 30 s each).
  const heads = [
    { what: 'a request head the request reader is reading', head: 'GET http://allowed.test/x HTTP/1.1\r\nHost: allo' },
    { what: 'a CONNECT head the front is reading', head: 'CONNECT allowed.test:443 HTTP/1.1\r\nHo' },
  ];
  for (const { what, head } of heads) {
    test(`${what}, stalled`, async () => {
      const before = guard.lines.length;
      const answer = await rawExchange(guard.port, head, { timeoutMs: 5000 });
      assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/, answer.slice(0, 200));
      const decision = await guard.waitFor((l) => guard.lines.indexOf(l) >= before && l.event === 'decision');
      assert.deepEqual(
        [decision.kind, decision.host, decision.port, decision.decision, decision.reason, decision.mode, decision.rule],
        ['http', '(none)', 0, 'blocked', 'malformed-request', 'audit', null],
      );
      assert.equal(decision.message, 'request head not complete within 500 ms (head-timeout)');
      assert.match(answer, new RegExp(`X-Egress-Guard-Event: ${decision.id}\r\n`, 'i'));
    });
  }

  // Until review45 its event said `request head not complete`, of a connection that had sent no byte.
  test('a connection that sends nothing, whose event says no request came', async () => {
    const before = guard.lines.length;
    const answer = await rawExchange(guard.port, '', { timeoutMs: 5000 });
    assert.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/, answer.slice(0, 200));
    const decision = await guard.waitFor((l) => guard.lines.indexOf(l) >= before && l.event === 'decision');
    assert.deepEqual([decision.host, decision.decision, decision.reason, decision.mode], ['(none)', 'blocked', 'malformed-request', 'audit']);
    assert.equal(decision.message, 'no request within 500 ms (head-timeout)');
  });
});

describe('explicit proxy at max-tunnels: the 503 is an at-capacity decision with its event, in audit mode too', () => {
  let guard: EgressGuardProcess;
  let holder: net.Server;
  const held: net.Socket[] = [];

  before(async () => {
    // A server that accepts and says nothing: the one tunnel max-tunnels allows stays open through the test.
    holder = net.createServer((socket) => void held.push(socket));
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    guard = await startEgressGuard([], { EGRESS_MODE: 'audit', EGRESS_ALLOWED_IPS: '127.0.0.1/32', EGRESS_MAX_TUNNELS: '1' });
  });
  after(async () => {
    await guard?.stop();
    for (const socket of held) socket.destroy();
    await new Promise<void>((resolve) => holder?.close(() => resolve()));
  });

  test('with one tunnel open, a CONNECT and a plain request are refused 503 with one blocked at-capacity event each, whose id the answer carries', async () => {
    const port = (holder.address() as AddressInfo).port;
    const tunnel = await openTunnel(guard.port, `127.0.0.1:${port}`);
    try {
      assert.equal(tunnel.status, 200);
      const requests = [
        { request: `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`, event: { kind: 'connect', host: '127.0.0.1', port } },
        {
          request: `GET http://Other.test:8080/x?token=s3cret HTTP/1.1\r\nHost: other.test:8080\r\nConnection: close\r\n\r\n`,
          event: { kind: 'http', host: 'other.test', port: 8080, method: 'GET', path: '/x' },
        },
      ];
      for (const { request, event } of requests) {
        const before = guard.lines.length;
        const answer = await rawExchange(guard.port, request);
        assert.match(answer, /^HTTP\/1\.1 503 /, answer.slice(0, 200));
        // (The held tunnel's own decision may be printed after `before`.)
        const decision = await guard.waitFor((l) => guard.lines.indexOf(l) >= before && l.event === 'decision' && l.reason !== 'allowed-ip');
        assert.deepEqual(Object.fromEntries(Object.keys(event).map((k) => [k, decision[k]])), event);
        assert.deepEqual([decision.decision, decision.reason, decision.mode, decision.rule], ['blocked', 'at-capacity', 'audit', null]);
        assert.match(String(decision.message), /at its limit of 1 open/);
        assert.match(answer, new RegExp(`X-Egress-Guard-Event: ${decision.id}\r\n`, 'i'));
        assert.ok(!JSON.stringify(decision).includes('s3cret'));
      }
    } finally {
      tunnel.socket.destroy();
    }
  });
});

describe('explicit proxy: a refused CONNECT or an unreadable head whose client never ends its side is closed after the idle timeout', () => {
  let guard: EgressGuardProcess;

  before(async () => {
    guard = await startEgressGuard([], { EGRESS_MODE: 'block', EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*', EGRESS_IDLE_TIMEOUT: '1000' });
  });
  after(async () => {
    await guard?.stop();
  });

  /**
   * Write `payload`, never end: what came back, and whether egress-guard had closed the connection 3 s later. Its FIN
   * came with the answer, so the client sees no other sign of the close: a socket it has closed since answers the next
   * bytes with a reset, one it keeps reads them.
   */
  const held = (payload: string) =>
    new Promise<{ text: string; closed: boolean }>((resolve) => {
      const socket = net.connect({ port: guard.port, host: '127.0.0.1', allowHalfOpen: true });
      let text = '';
      const finish = (closed: boolean) => {
        clearTimeout(timer);
        clearTimeout(probe);
        socket.destroy();
        resolve({ text, closed });
      };
      // The first write after the close draws the reset, the next one fails on it (EPIPE).
      const probe = setTimeout(() => {
        socket.write('still there?');
        setTimeout(() => socket.write('still there?'), 300).unref();
      }, 3000);
      const timer = setTimeout(() => finish(false), 6000);
      socket.on('connect', () => socket.write(payload));
      socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
      socket.on('error', () => finish(true));
      socket.on('close', () => finish(true));
    });

  for (const { what, payload, status } of [
    { what: 'a CONNECT refused 403', payload: 'CONNECT attacker.test:443 HTTP/1.1\r\nHost: attacker.test:443\r\n\r\n', status: 403 },
    { what: 'a head the parser cannot read', payload: 'hello, proxy\r\n\r\n', status: 400 },
  ]) {
    test(`${what}: answered, then closed (until 2026-12-03 it stayed open for good)`, async () => {
      const r = await held(payload);
      assert.match(r.text, new RegExp(`^HTTP/1\\.1 ${status} `), r.text);
      assert.ok(r.closed, 'egress-guard closed the connection after the idle timeout');
    });
  }
});
