import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { runProcess, startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { openTunnel } from '../helpers/raw-client.js';
import { startHttpServer, type TestServer } from '../helpers/servers.js';
import dgram from 'node:dgram';
import { startZoneServer, type ZoneServer } from '../helpers/dns-zone-server.js';

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

describe('upstream failures are reported as 502/504 with an event', () => {
  let dns: ZoneServer;
  let silentDns: dgram.Socket;
  let slow: TestServer;
  let guard: EgressGuardProcess;
  let silentGuard: EgressGuardProcess;

  before(async () => {
    dns = await startZoneServer({ 'resolvable.test': [{ type: 'A', value: '127.0.0.1' }] });
    // Receives queries and never answers: upstream DNS must time out.
    silentDns = dgram.createSocket('udp4');
    await new Promise<void>((r) => silentDns.bind(0, '127.0.0.1', () => r()));
    // Answers nothing: the proxy's idle timeout must end the request with 504.
    slow = await startHttpServer(() => undefined);
    const env = {
      EGRESS_MODE: 'block',
      EGRESS_ALLOWED_ENDPOINTS: 'nowhere.test:* slow-dns.test:* resolvable.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      EGRESS_IDLE_TIMEOUT: '700',
      EGRESS_CONNECT_TIMEOUT: '800',
    };
    guard = await startEgressGuard([], { ...env, EGRESS_DNS_UPSTREAM: dns.address });
    silentGuard = await startEgressGuard([], { ...env, EGRESS_DNS_UPSTREAM: `127.0.0.1:${silentDns.address().port}` });
  });

  after(async () => {
    await guard?.stop();
    await silentGuard?.stop();
    await dns?.close();
    await new Promise<void>((r) => (silentDns ? silentDns.close(() => r()) : r()));
    await slow?.close();
  });

  test('a name that does not resolve gets 502 (HTTP and CONNECT)', async () => {
    const r = await runProcess('curl', ['-sS', '-i', '-x', guard.proxyUrl, 'http://nowhere.test/']);
    assert.match(r.stdout, /^HTTP\/1\.1 502/);
    assert.match(r.stdout, /x-egress-guard-reason: nowhere.test does not resolve/i);
    const tunnel = await openTunnel(guard.port, 'nowhere.test:443');
    tunnel.socket.destroy();
    assert.equal(tunnel.status, 502);
    assert.ok(dns.askedNames().includes('nowhere.test'), 'the configured upstream was asked');
    const close = await guard.waitFor((l) => l.event === 'close' && l.host === 'nowhere.test');
    assert.equal(close.error, 'upstream-dns');
    assert.equal(close.status, 502);
  });

  test('upstream DNS that never answers gives 504', async () => {
    const r = await runProcess('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', silentGuard.proxyUrl, 'http://slow-dns.test/']);
    assert.equal(r.stdout, '504');
    const close = await silentGuard.waitFor((l) => l.event === 'close' && l.host === 'slow-dns.test');
    assert.equal(close.error, 'upstream-dns-timeout');
  });

  test('a refused upstream connection gives 502, an upstream that stalls gives 504', async () => {
    const port = await closedPort();
    const refused = await runProcess('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', guard.proxyUrl, `http://resolvable.test:${port}/`]);
    assert.equal(refused.stdout, '502');
    const tunnel = await openTunnel(guard.port, `resolvable.test:${port}`);
    tunnel.socket.destroy();
    assert.equal(tunnel.status, 502);
    await guard.waitFor((l) => l.event === 'close' && l.kind === 'connect' && l.error === 'upstream-refused');
    const stalled = await runProcess('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', '-x', guard.proxyUrl, `http://resolvable.test:${slow.port}/stall`]);
    assert.equal(stalled.stdout, '504');
    await guard.waitFor((l) => l.event === 'close' && l.error === 'upstream-timeout' && l.status === 504);
  });
});
