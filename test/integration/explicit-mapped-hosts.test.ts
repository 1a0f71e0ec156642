/**
 * An IPv4-mapped IPv6 host ([::ffff:a.b.c.d]) through the explicit proxy is decided as a.b.c.d: an absolute URI, a
 * CONNECT authority, and the Host of a plain request inside a CONNECT tunnel (inspection.ts), with curl and a raw
 * client against the real CLI. Until 2026-12-03 the mapped form stayed IPv6: events named ::ffff:7f00:1, a plain
 * tunnel to 127.0.0.1 refused `Host: [::ffff:127.0.0.1]` (421) and a tunnel to [::ffff:127.0.0.1] refused
 * `Host: 127.0.0.1` (421), both the same address.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { openTunnel } from '../helpers/raw-client.js';
import { startHttpServer, type TestServer } from '../helpers/servers.js';

/** One request on an open tunnel: what comes back until the answer's body (`hello from`) or 421/403, or 5 s. */
function requestOnTunnel(socket: import('node:net').Socket, request: string): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(text);
    };
    const timer = setTimeout(done, 5000);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (/\r\n\r\n[^]*\n$/.test(text)) done();
    });
    socket.once('close', done);
    socket.write(request);
  });
}

describe('explicit proxy: an IPv4-mapped IPv6 host is decided as its IPv4 address', () => {
  let plain: TestServer;
  let guard: EgressGuardProcess;

  before(async () => {
    plain = await startHttpServer();
    guard = await startEgressGuard([], { EGRESS_MODE: 'block', EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*', EGRESS_ALLOWED_IPS: '127.0.0.1' });
  });

  after(async () => {
    await guard?.stop();
    await plain?.close();
  });

  test('an absolute URI: allowed as 127.0.0.1 (the event names it so); [::ffff:127.0.0.2] is refused as 127.0.0.2 is', async () => {
    for (const host of ['127.0.0.1', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]']) {
      const path = `/abs-${host.replace(/\W/g, '')}`;
      const r = await runProcess('curl', ['-sS', '--max-time', '10', '-x', guard.proxyUrl, `http://${host}:${plain.port}${path}`]);
      // The Host sent is the decided one, 127.0.0.1 (it was the target's authority as URL writes it: [::ffff:7f00:1]).
      assert.match(r.stdout, new RegExp(`^hello from 127\\.0\\.0\\.1:${plain.port} ${path}\n$`), `${host}: ${r.stderr}`);
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === path);
      assert.deepEqual([event.host, event.ip, event.reason, event.decision], ['127.0.0.1', '127.0.0.1', 'allowed-ip', 'allowed'], host);
    }
    for (const host of ['127.0.0.2', '[::ffff:127.0.0.2]']) {
      const path = `/abs-denied-${host.replace(/\W/g, '')}`;
      const r = await runProcess('curl', ['-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', '-x', guard.proxyUrl, `http://${host}:${plain.port}${path}`]);
      assert.equal(r.stdout, '403', host);
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === path);
      assert.deepEqual([event.host, event.reason, event.decision], ['127.0.0.2', 'raw-ip', 'blocked'], host);
    }
    assert.ok(!plain.requests.some((q) => q.url.startsWith('/abs-denied')), JSON.stringify(plain.requests));
  });

  test('a plain request in a CONNECT tunnel names the tunnel host in either spelling, the CONNECT authority in either spelling', async () => {
    for (const authority of ['127.0.0.1', '[::ffff:127.0.0.1]']) {
      for (const host of ['127.0.0.1', '[::ffff:127.0.0.1]']) {
        const path = `/tunnel-${authority.replace(/\W/g, '')}-${host.replace(/\W/g, '')}`;
        const tunnel = await openTunnel(guard.port, `${authority}:${plain.port}`);
        assert.equal(tunnel.status, 200, `CONNECT ${authority}`);
        const text = await requestOnTunnel(tunnel.socket, `GET ${path} HTTP/1.1\r\nHost: ${host}:${plain.port}\r\n\r\n`);
        assert.match(text, /^HTTP\/1\.1 200 /, `CONNECT ${authority}, Host ${host}: ${text}`);
        assert.match(text, new RegExp(`hello from 127\\.0\\.0\\.1:${plain.port} ${path}\\n$`), text);
        const event = await guard.waitFor((l) => l.event === 'decision' && l.path === path);
        assert.deepEqual([event.host, event.reason, event.decision], ['127.0.0.1', 'allowed-ip', 'allowed'], `CONNECT ${authority}, Host ${host}`);
      }
    }
    // Another address than the tunnel's, mapped or not, is still another host (421, never sent).
    for (const host of ['127.0.0.2', '[::ffff:127.0.0.2]']) {
      const path = `/tunnel-other-${host.replace(/\W/g, '')}`;
      const tunnel = await openTunnel(guard.port, `127.0.0.1:${plain.port}`);
      const text = await requestOnTunnel(tunnel.socket, `GET ${path} HTTP/1.1\r\nHost: ${host}:${plain.port}\r\n\r\n`);
      assert.match(text, /^HTTP\/1\.1 421 /, `Host ${host}: ${text}`);
      const event = await guard.waitFor((l) => l.event === 'decision' && l.path === path);
      assert.deepEqual([event.reason, event.decision], ['sni-mismatch', 'blocked'], host);
    }
    assert.ok(!plain.requests.some((q) => q.url.startsWith('/tunnel-other')), JSON.stringify(plain.requests));
  });

  test('[::127.0.0.1] is the IPv4-compatible ::7f00:1, not 127.0.0.1: a CONNECT to it is refused as the absolute URI is', async () => {
    // ipaddr.js reads ::a.b.c.d as ::ffff:a.b.c.d: until review43 this CONNECT was allowed as 127.0.0.1 and tunnelled there.
    const tunnel = await openTunnel(guard.port, `[::127.0.0.1]:${plain.port}`);
    tunnel.socket.destroy();
    assert.equal(tunnel.status, 403, tunnel.response);
    const connect = await guard.waitFor((l) => l.event === 'decision' && l.kind === 'connect' && l.host === '::7f00:1');
    assert.deepEqual([connect.reason, connect.decision], ['raw-ip', 'blocked']);
    const r = await runProcess('curl', ['-sS', '--max-time', '10', '-o', '/dev/null', '-w', '%{http_code}', '-x', guard.proxyUrl, `http://[::127.0.0.1]:${plain.port}/compatible`]);
    assert.equal(r.stdout, '403');
    const absolute = await guard.waitFor((l) => l.event === 'decision' && l.path === '/compatible');
    assert.deepEqual([absolute.host, absolute.reason, absolute.decision], ['::7f00:1', 'raw-ip', 'blocked']);
  });
});
