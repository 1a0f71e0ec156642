/**
 * TLS inspection on the explicit proxy's CONNECT path (issue 13): a host with path rules is terminated with a
 * leaf of egress-guard's CA; each request inside is decided on its own and forwarded over TLS verified for the
 * decided name. Real curl against a real HTTPS server on loopback; the proxy runs in this process. Every test runs
 * with both leaf key types (ECDSA P-256, the default, and RSA 2048), leaves from the sidecar's LeafIssuer.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { loadCertificateAuthority } from '../../certs/ca-store.js';
import { createCertificateAuthority, LEAF_KEY_TYPES } from '../../certs/certificates.js';
import { LeafIssuer } from '../../certs/leaf-issuer.js';
import { AddressBook } from '../../decision/address-book.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../../events/schema.js';
import { buildPolicy, type Policy } from '../../policy/index.js';
import { inspectedSocket as inspectedSocketThrough, startInspectingProxy } from '../helpers/inspecting-proxy.js';
import type { HttpProxyServer } from '../../proxy/explicit/server.js';
import { startHttpsServer, testCa, leafFor, type TestServer } from '../helpers/servers.js';
import { serveWebSocketEcho, webSocketExchange } from '../helpers/websocket.js';
import { curlTwoOnOneConnection } from '../helpers/curl-keep-alive.js';
import { tempDir } from '../helpers/temp-dir.js';

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '10', ...args], (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

for (const [mode, keyType] of (['block', 'audit'] as const).flatMap((m) => LEAF_KEY_TYPES.map((k) => [m, k] as const))) {
  describe(`${mode} mode, ${keyType} leaves: inspected CONNECT`, () => {
    const inspectionCa = createCertificateAuthority('egress-guard inspection test CA');
    let upstream: TestServer;
    let wrongName: TestServer;
    /** A WebSocket echo server for github.test, and the upgrade paths that reached it. */
    let webSockets: https.Server;
    const upgradesSeen: string[] = [];
    let proxy: HttpProxyServer;
    let proxyUrl: string;
    let caFile: string;
    const events: EgressEvent[] = [];
    const decisions = () => events.filter((e): e is DecisionEvent => e.event === 'decision');
    const closes = () => events.filter((e): e is CloseEvent => e.event === 'close');

    before(async () => {
      const dir = tempDir('eg-inspect-');
      caFile = join(dir, 'inspection-ca.pem');
      writeFileSync(caFile, inspectionCa.certPem);
      const caKeyFile = join(dir, 'inspection-ca.key');
      writeFileSync(caKeyFile, inspectionCa.keyPem, { mode: 0o600 });
      const leaves = new LeafIssuer(loadCertificateAuthority({ stateDir: dir, caCert: caFile, caKey: caKeyFile }), { keyType });
      upstream = await startHttpsServer(leafFor('github.test'));
      wrongName = await startHttpsServer(leafFor('someone-else.test'));
      const wsLeaf = leafFor('github.test');
      webSockets = https.createServer({ key: wsLeaf.keyPem, cert: wsLeaf.certPem });
      serveWebSocketEcho(webSockets, (path) => upgradesSeen.push(path));
      await new Promise<void>((resolve) => webSockets.listen(0, '127.0.0.1', resolve));
      const origin = { file: 'test', line: 1 };
      const policy: Policy = buildPolicy({
        mode: { value: mode, origin },
        'allowed-endpoints': { value: `github.test:*/my-org/** wrong.test:*/**`, origin },
        'denied-endpoints': { value: 'POST github.test:*/my-org/secret DELETE github.test:*/my-org/issues/**', origin },
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
      proxy = await startInspectingProxy(context, leaves);
      proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    });

    after(async () => {
      proxy?.closeAllConnections();
      proxy?.close();
      await upstream?.close();
      await wrongName?.close();
      webSockets?.closeAllConnections();
      webSockets?.close();
    });

    /** A TLS connection to `host:port` through the proxy's CONNECT, trusting the inspection CA. */
    const inspectedSocket = (host: string, port: number) => inspectedSocketThrough(proxy, host, port, inspectionCa);
    /** The close event of the decision on `path`, once it has come (bounded). */
    const closeOf = async (path: string) => {
      for (let i = 0; i < 30; i++) {
        const decision = decisions().find((d) => d.path === path);
        const close = closes().find((c) => c.id === decision?.id);
        if (close) return close;
        await new Promise((r) => setTimeout(r, 100));
      }
      return undefined;
    };

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

    test(`the client is served a ${keyType} leaf for the host it asked for, signed by the CA`, async () => {
      const secure = await inspectedSocket('github.test', upstream.port);
      const leaf = secure.getPeerX509Certificate()!;
      secure.destroy();
      assert.equal(leaf.publicKey.asymmetricKeyType, keyType === 'ecdsa' ? 'ec' : 'rsa');
      assert.equal(leaf.subjectAltName, 'DNS:github.test');
      assert.ok(leaf.verify(new X509Certificate(inspectionCa.certPem).publicKey));
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

    test('a `_method` field in a POST body inside TLS, past a 300 KiB file part: judged before any of it goes upstream (issue 13)', async () => {
      const file = join(tempDir('eg-inspect-form-'), 'upload.bin');
      writeFileSync(file, `${'x'.repeat(300 * 1024)}END-OF-FILE`);
      const post = (path: string, fields: string[]) => through(`https://github.test:${upstream.port}${path}`, ['-F', `file=@${file}`, ...fields.flatMap((field) => ['-F', field])]);
      const overridden = await post('/my-org/issues/1', ['_method=DELETE']);
      const plain = await post('/my-org/issues/2', ['title=x']);
      const decision = decisions().find((d) => d.path === '/my-org/issues/1');
      assert.equal(decision?.reason, 'denied-endpoint');
      assert.equal(decision?.method, 'POST');
      const upload = (path: string) => upstream.requests.find((r) => r.url === path)?.body.toString('latin1') ?? '';
      if (mode === 'block') {
        assert.equal(overridden.stdout, '403', overridden.stderr);
        assert.ok(!upstream.requests.some((r) => r.url === '/my-org/issues/1'), 'nothing reached the server');
      } else {
        assert.equal(overridden.stdout, '200', overridden.stderr);
        assert.equal(decision?.decision, 'would-block');
        assert.match(upload('/my-org/issues/1'), /END-OF-FILE[^]*name="_method"\r\n\r\nDELETE\r\n/, 'relayed whole');
      }
      // A form naming no other method passes whole, held no longer than its body took.
      assert.equal(plain.stdout, '200', plain.stderr);
      assert.equal(decisions().find((d) => d.path === '/my-org/issues/2')?.decision, 'allowed');
      assert.match(upload('/my-org/issues/2'), /^--[^]*x{1000}[^]*END-OF-FILE\r\n[^]*name="title"\r\n\r\nx\r\n--[^]*--\r\n$/);
    });

    test('keep-alive: the second request on one inspected connection is decided on its own', async () => {
      const [first, second] = await curlTwoOnOneConnection(
        ['--cacert', caFile, '-x', proxyUrl],
        `https://github.test:${upstream.port}/my-org/one`,
        `https://github.test:${upstream.port}/other/two`,
      );
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

    test('a node client that does not trust the CA (it closes, no alert): client-rejected-certificate, no half-open socket', async () => {
      const socket = net.connect((proxy.address() as AddressInfo).port, '127.0.0.1');
      socket.write(`CONNECT github.test:${upstream.port} HTTP/1.1\r\nHost: github.test:${upstream.port}\r\n\r\n`);
      await new Promise<void>((resolve) => socket.once('data', () => resolve()));
      const decision = decisions().at(-1);
      const failed = await new Promise<string>((resolve) => {
        const client = tls.connect({ socket, servername: 'github.test', ca: testCa().certPem });
        client.once('secureConnect', () => resolve('connected'));
        client.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      });
      assert.equal(failed, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE');
      for (let i = 0; i < 30 && !closes().some((c) => c.id === decision?.id); i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(closes().find((c) => c.id === decision?.id)?.error, 'client-rejected-certificate');
    });

    test('an upstream whose certificate names another host: 502 upstream-tls, nothing sent', async () => {
      const result = await through(`https://wrong.test:${wrongName.port}/x`);
      assert.equal(result.stdout, '502');
      await new Promise((r) => setTimeout(r, 200));
      const decision = decisions().find((d) => d.host === 'wrong.test' && d.path === '/x');
      assert.equal(closes().find((c) => c.id === decision?.id)?.error, 'upstream-tls');
      assert.equal(wrongName.requests.length, 0);
    });

    test('pooled upstream connections are per server name: another name at the same address and port is verified for itself', async () => {
      // github.test's request leaves a pooled connection verified for github.test; wrong.test resolves to the same
      // address, and this upstream's certificate does not name it: its request must not ride the pooled connection.
      assert.equal((await through(`https://github.test:${upstream.port}/my-org/pooled`)).stdout, '200');
      const result = await through(`https://wrong.test:${upstream.port}/same-address`);
      assert.equal(result.stdout, '502');
      await new Promise((r) => setTimeout(r, 200));
      const decision = decisions().find((d) => d.host === 'wrong.test' && d.path === '/same-address');
      assert.equal(closes().find((c) => c.id === decision?.id)?.error, 'upstream-tls');
      assert.ok(!upstream.requests.some((r) => r.url.includes('same-address')));
    });

    test('a request naming another Host inside the connection: refused (421) in block mode, relayed as sent in audit mode', async () => {
      const result = await through(`https://github.test:${upstream.port}/my-org/fronted`, ['-H', 'Host: attacker.test']);
      const decision = decisions().find((d) => d.path === '/my-org/fronted');
      assert.equal(decision?.reason, 'sni-mismatch');
      if (mode === 'block') {
        assert.equal(result.stdout, '421');
        assert.ok(!upstream.requests.some((r) => r.url.includes('fronted')));
        return;
      }
      // Audit mode never breaks a job: the request goes to the connection's checked address with the client's own Host.
      assert.equal(result.stdout, '200');
      assert.equal(decision?.decision, 'would-block');
      assert.deepEqual(
        upstream.requests.filter((r) => r.url.includes('fronted')).map((r) => r.host),
        ['attacker.test'],
      );
      for (let i = 0; i < 30 && !closes().some((c) => c.id === decision?.id); i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(closes().find((c) => c.id === decision?.id)?.status, 200, 'its close event');
    });

    test(
      'keep-alive: a request naming another Host after one naming the right one is refused (421) in block mode',
      { skip: mode === 'audit' && 'relayed in audit mode (above)' },
      async () => {
        // The inspector remembers a Host value that named the connection's host; any other value is checked again.
        const secure = await inspectedSocket('github.test', upstream.port);
        const host = `github.test:${upstream.port}`;
        secure.write(
          `GET /my-org/kept-1 HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /my-org/kept-2 HTTP/1.1\r\nHost: ${host}\r\n\r\nGET /my-org/fronted-kept HTTP/1.1\r\nHost: attacker.test:${upstream.port}\r\n\r\n`,
        );
        let answer = '';
        secure.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no end of the connection: ${answer}`)), 5000);
          secure.once('close', () => resolve(clearTimeout(timer)));
        });
        const statuses = [...answer.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]);
        assert.deepEqual(statuses, ['200', '200', '421'], answer);
        assert.equal(decisions().find((d) => d.path === '/my-org/kept-2')?.decision, 'allowed');
        assert.equal(decisions().find((d) => d.path === '/my-org/fronted-kept')?.reason, 'sni-mismatch');
        assert.ok(!upstream.requests.some((r) => r.url.includes('fronted-kept')));
      },
    );

    test('the HTTP/2 preface after a request on terminated TLS: the answer first, then closed (client-http2-only), nothing of it upstream', async () => {
      const secure = await inspectedSocket('github.test', upstream.port);
      const host = `github.test:${upstream.port}`;
      const before = closes().filter((c) => c.error === 'client-http2-only').length;
      // The preface pipelined behind a request whose answer is due: it waits for that answer, then ends the connection.
      secure.write(`GET /my-org/before-h2 HTTP/1.1\r\nHost: ${host}\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00`, 'latin1');
      let answer = '';
      secure.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
      secure.on('error', () => undefined);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no end of the connection: ${answer}`)), 5000);
        secure.once('close', () => resolve(clearTimeout(timer)));
      });
      assert.deepEqual(
        [...answer.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]),
        ['200'],
        answer,
      );
      for (let i = 0; i < 30 && closes().filter((c) => c.error === 'client-http2-only').length === before; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(closes().filter((c) => c.error === 'client-http2-only').length, before + 1);
      // No decision of its own: on terminated TLS it is the client's error, as before the plain tunnels' handling of it.
      assert.ok(!decisions().some((d) => /h2c/.test(d.message)));
      assert.ok(!upstream.requests.some((r) => r.method === 'PRI'));
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

    test('a WebSocket upgrade on an allowed path: decided, 101 from upstream, relayed both ways, one close event', async () => {
      const port = (webSockets.address() as AddressInfo).port;
      const ws = await webSocketExchange(await inspectedSocket('github.test', port), { host: `github.test:${port}`, path: '/my-org/live?token=s3cret', message: 'hello' });
      assert.equal(ws.status, 101, ws.head);
      assert.ok(ws.accepted, 'Sec-WebSocket-Accept of the upstream, for our key');
      assert.equal(ws.echoed, 'echo: hello');
      assert.ok(ws.closed, 'the close frame came back');
      const decision = decisions().find((d) => d.path === '/my-org/live');
      assert.equal(decision?.decision, 'allowed');
      assert.equal(decision?.method, 'GET');
      const close = await closeOf('/my-org/live');
      assert.equal(close?.status, 101);
      assert.equal(close?.error, undefined);
      // Both ways counted: our frames (masked text + close) out, the echo and close frame in.
      assert.ok(close!.bytes_out >= 'hello'.length + 6 + 8 && close!.bytes_in >= 'echo: hello'.length + 2 + 4, JSON.stringify(close));
    });

    test('a WebSocket upgrade on a refused path: 403 with the reason (block), nothing reaches upstream', async () => {
      const port = (webSockets.address() as AddressInfo).port;
      const ws = await webSocketExchange(await inspectedSocket('github.test', port), { host: `github.test:${port}`, path: '/attacker/live', message: 'loot' });
      const decision = decisions().find((d) => d.path === '/attacker/live');
      assert.equal(decision?.reason, 'path-not-allowed');
      if (mode === 'block') {
        assert.equal(ws.status, 403, ws.head);
        assert.match(ws.head, /x-egress-guard-reason: GET github\.test\/attacker\/live: the path is not allowed/i);
        assert.ok(!upgradesSeen.includes('/attacker/live'), 'the upgrade never reached upstream');
      } else {
        assert.equal(ws.status, 101, ws.head);
        assert.equal(ws.echoed, 'echo: loot');
        assert.equal(decision?.decision, 'would-block');
      }
    });

    test('an upgrade upstream does not accept: its answer is relayed, the close event says not-upgraded', async () => {
      const port = (webSockets.address() as AddressInfo).port;
      const ws = await webSocketExchange(await inspectedSocket('github.test', port), { host: `github.test:${port}`, path: '/my-org/no-upgrade', message: 'x' });
      assert.equal(ws.status, 404, ws.head);
      assert.equal((await closeOf('/my-org/no-upgrade'))?.error, 'not-upgraded');
    });

    test('an h2c upgrade is served as the plain request it also is (decided, no 101, no relay)', async () => {
      const secure = await inspectedSocket('github.test', upstream.port);
      let answer = '';
      secure.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
      secure.write(
        `GET /my-org/h2c HTTP/1.1\r\nHost: github.test:${upstream.port}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n`,
      );
      for (let i = 0; i < 50 && !answer.includes('hello from'); i++) await new Promise((r) => setTimeout(r, 100));
      secure.destroy();
      assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/);
      assert.equal(decisions().find((d) => d.path === '/my-org/h2c')?.decision, 'allowed');
      assert.ok(upstream.requests.some((r) => r.url === '/my-org/h2c'));
      // Forwarded as a request (its close event is the forwarder's), not attempted as an upgrade (`not-upgraded`).
      const close = await closeOf('/my-org/h2c');
      assert.equal(close?.status, 200);
      assert.equal(close?.error, undefined);
    });

    test('a denied entry wins inside an allowed prefix', async () => {
      const result = await through(`https://github.test:${upstream.port}/my-org/secret`, ['-X', 'POST', '-d', 'x']);
      assert.equal(decisions().find((d) => d.path === '/my-org/secret')?.reason, 'denied-endpoint');
      if (mode === 'block') assert.equal(result.stdout, '403');
    });
  });
}
