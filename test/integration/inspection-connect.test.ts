/**
 * TLS inspection on the explicit proxy's CONNECT path (issue 13): a host with path rules is terminated with a
 * leaf of egress-guard's CA; each request inside is decided on its own and forwarded over TLS verified for the
 * decided name. Real curl against a real HTTPS server on loopback; the proxy runs in this process.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { createCertificateAuthority, issueLeafCertificate } from '../../certs/certificates.js';
import { AddressBook } from '../../decision/address-book.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../../events/schema.js';
import { buildPolicy, type Policy } from '../../policy/index.js';
import { createHttpProxyServer } from '../../proxy/explicit/server.js';
import { createHttpForwarder } from '../../proxy/relay/http-forwarder.js';
import { createInspector } from '../../proxy/relay/inspection.js';
import { createTrafficCounters } from '../../proxy/relay/traffic-counters.js';
import { spliceTunnel } from '../../proxy/relay/tunnel.js';
import { startHttpsServer, testCa, leafFor, type TestServer } from '../helpers/servers.js';

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '10', ...args], (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

for (const mode of ['block', 'audit'] as const) {
  describe(`${mode} mode: inspected CONNECT`, () => {
    const inspectionCa = createCertificateAuthority('egress-guard inspection test CA');
    let upstream: TestServer;
    let wrongName: TestServer;
    let proxy: http.Server;
    let proxyUrl: string;
    let caFile: string;
    const events: EgressEvent[] = [];
    const decisions = () => events.filter((e): e is DecisionEvent => e.event === 'decision');
    const closes = () => events.filter((e): e is CloseEvent => e.event === 'close');

    before(async () => {
      const dir = mkdtempSync(join(tmpdir(), 'eg-inspect-'));
      caFile = join(dir, 'inspection-ca.pem');
      writeFileSync(caFile, inspectionCa.certPem);
      upstream = await startHttpsServer(leafFor('github.test'));
      wrongName = await startHttpsServer(leafFor('someone-else.test'));
      const origin = { file: 'test', line: 1 };
      const policy: Policy = buildPolicy({
        mode: { value: mode, origin },
        'allowed-endpoints': { value: `github.test:*/my-org/** wrong.test:*/**`, origin },
        'denied-endpoints': { value: 'POST github.test:*/my-org/secret', origin },
        'trusted-ranges': { value: '127.0.0.0/8', origin },
      });
      const log = new EventLog({ stdout: false });
      log.subscribe((e) => void events.push(e));
      const addressBook = new AddressBook();
      const resolver = new Resolver({
        overrides: new Map([
          ['github.test', ['127.0.0.1']],
          ['wrong.test', ['127.0.0.1']],
        ]),
        addressBook,
      });
      const context = { policy: () => policy, resolver, events: log };
      const upstreamTrust = tls.createSecureContext({ ca: testCa().certPem });
      const forwarder = createHttpForwarder({ events: log, connectTimeoutMs: 3000, idleTimeoutMs: 10_000, upstreamTrust: () => upstreamTrust });
      const leaves = {
        secureContextFor: async (host: string) => {
          const leaf = issueLeafCertificate(inspectionCa, [host]);
          return tls.createSecureContext({ key: leaf.keyPem, cert: leaf.certPem });
        },
      };
      const inspector = createInspector({ ...context, leaves, forwarder, idleTimeoutMs: 10_000 });
      proxy = createHttpProxyServer({
        ...context,
        counters: createTrafficCounters(),
        tunnel: spliceTunnel,
        connectTimeoutMs: 3000,
        idleTimeoutMs: 10_000,
        maxTunnels: 100,
        inspector,
        forwarder,
      });
      await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
      proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    });

    after(async () => {
      proxy?.closeAllConnections();
      proxy?.close();
      await upstream?.close();
      await wrongName?.close();
    });

    const through = (url: string, extra: string[] = []) => curl(['--cacert', caFile, '-x', proxyUrl, '-o', '/dev/null', '-w', '%{http_code}', ...extra, url]);

    test('an allowed path is decided, forwarded over verified TLS, and has its own events', async () => {
      const result = await through(`https://github.test:${upstream.port}/my-org/app?token=s3cret`);
      assert.equal(result.stdout, '200', result.stderr);
      assert.ok(upstream.requests.some((r) => r.url === '/my-org/app?token=s3cret'));
      const decision = decisions().find((d) => d.path === '/my-org/app');
      assert.equal(decision?.decision, 'allowed');
      assert.equal(decision?.method, 'GET');
      assert.ok(!JSON.stringify(events).includes('s3cret'), 'no query string in events');
      const outer = decisions().find((d) => d.kind === 'connect' && d.method === undefined);
      assert.equal(outer?.decision, 'allowed', 'the CONNECT itself is allowed for inspection');
    });

    test('a path outside the prefix: 403 inside TLS with the reason (block), relayed (audit)', async () => {
      const result = await curl([
        '--cacert',
        caFile,
        '-x',
        proxyUrl,
        '-D',
        '-',
        '-o',
        '/dev/null',
        '-X',
        'POST',
        '-d',
        'loot',
        `https://github.test:${upstream.port}/attacker/loot`,
      ]);
      const decision = decisions().find((d) => d.path === '/attacker/loot');
      assert.equal(decision?.reason, 'path-not-allowed');
      if (mode === 'block') {
        // -D shows the CONNECT's own 200 first, then the response from inside the TLS.
        assert.match(result.stdout, /\r\n\r\nHTTP\/1\.1 403 Forbidden\r\n/);
        assert.match(result.stdout, /x-egress-guard-reason: POST github\.test\/attacker\/loot: the path is not allowed/i);
        assert.ok(!upstream.requests.some((r) => r.url.includes('attacker')), 'nothing reached the server');
      } else {
        assert.match(result.stdout, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
        assert.equal(decision?.decision, 'would-block');
      }
    });

    test('keep-alive: the second request on one inspected connection is decided on its own', async () => {
      const result = await curl([
        '--cacert',
        caFile,
        '-x',
        proxyUrl,
        '-o',
        '/dev/null',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code} %{num_connects}\\n',
        `https://github.test:${upstream.port}/my-org/one`,
        `https://github.test:${upstream.port}/other/two`,
      ]);
      const [first, second] = result.stdout.trim().split('\n');
      assert.equal(first, '200 1');
      assert.equal(second, mode === 'block' ? '403 0' : '200 0');
      assert.equal(decisions().find((d) => d.path === '/other/two')?.reason, 'path-not-allowed');
    });

    test('a client that does not trust the CA fails, and the close event says so', async () => {
      const result = await curl(['-x', proxyUrl, '-o', '/dev/null', `https://github.test:${upstream.port}/my-org/untrusting`]);
      assert.notEqual(result.code, 0);
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(
        closes().some((c) => c.error === 'client-rejected-certificate'),
        JSON.stringify(closes().map((c) => c.error)),
      );
      assert.ok(!upstream.requests.some((r) => r.url.includes('untrusting')));
    });

    test('an upstream whose certificate names another host: 502 upstream-tls, nothing sent', async () => {
      const result = await through(`https://wrong.test:${wrongName.port}/x`);
      assert.equal(result.stdout, '502');
      await new Promise((r) => setTimeout(r, 200));
      const decision = decisions().find((d) => d.host === 'wrong.test' && d.path === '/x');
      assert.equal(closes().find((c) => c.id === decision?.id)?.error, 'upstream-tls');
      assert.equal(wrongName.requests.length, 0);
    });

    test('a request naming another Host inside the connection is refused (421)', async () => {
      const result = await through(`https://github.test:${upstream.port}/my-org/fronted`, ['-H', 'Host: attacker.test']);
      assert.equal(result.stdout, '421');
      assert.ok(!upstream.requests.some((r) => r.url.includes('fronted')));
      assert.equal(decisions().find((d) => d.path === '/my-org/fronted')?.reason, 'sni-mismatch');
    });

    test('an HTTP/2-only client is refused, and the close event says why', async () => {
      const socket = net.connect((proxy.address() as AddressInfo).port, '127.0.0.1');
      socket.write(`CONNECT github.test:${upstream.port} HTTP/1.1\r\nHost: github.test:${upstream.port}\r\n\r\n`);
      await new Promise<void>((resolve) => socket.once('data', () => resolve()));
      const failed = await new Promise<string>((resolve) => {
        const client = tls.connect({ socket, servername: 'github.test', ca: inspectionCa.certPem, ALPNProtocols: ['h2'] });
        client.once('secureConnect', () => resolve('connected'));
        client.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      });
      assert.equal(failed, 'ERR_SSL_TLSV1_ALERT_NO_APPLICATION_PROTOCOL');
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(closes().some((c) => c.error === 'client-http2-only'));
      socket.destroy();
    });

    test('a denied entry wins inside an allowed prefix', async () => {
      const result = await through(`https://github.test:${upstream.port}/my-org/secret`, ['-X', 'POST', '-d', 'x']);
      assert.equal(decisions().find((d) => d.path === '/my-org/secret')?.reason, 'denied-endpoint');
      if (mode === 'block') assert.equal(result.stdout, '403');
    });
  });
}
