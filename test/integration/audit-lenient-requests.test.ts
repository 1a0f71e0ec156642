/**
 * Requests whose lines end in a bare LF (`GET / HTTP/1.1\nHost: x\n\n`: hand-written clients, `printf ... | nc`), which
 * nginx and Python's http.server answer (RFC 9112 2.2 lets a recipient take a lone LF for a line end). egress-guard's
 * request reader refused them 400 in audit mode too (llhttp, strict), so a job that worked without egress-guard broke
 * under it. In audit mode each listener reads them now, on every path (the explicit proxy, a plain CONNECT tunnel,
 * inspected TLS, a redirected connection), decides them as any request, and sends upstream the head it writes itself
 * (CRLF). Block mode still refuses them 400, and audit mode still refuses what could smuggle a request (Content-Length
 * with Transfer-Encoding, a CR inside a header line, a control byte in a header value). Raw sockets; the explicit proxy
 * and the plain tunnel through the real CLI; inspected TLS and the transparent listener in-process (the mode switched
 * between connections, as a policy reload does; the transparent listener's iptables redirection is the e2e suite's).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { loadCertificateAuthority } from '../../certs/ca-store.js';
import { createCertificateAuthority } from '../../certs/certificates.js';
import { LeafIssuer } from '../../certs/leaf-issuer.js';
import type { DecisionEvent, EgressEvent } from '../../events/schema.js';
import { EventLog } from '../../events/event-log.js';
import { buildPolicy, type Mode, type Policy } from '../../policy/index.js';
import { AddressBook } from '../../decision/address-book.js';
import { Resolver } from '../../decision/resolver.js';
import type { HttpProxyServer } from '../../proxy/explicit/server.js';
import { createTransparentHttp } from '../../proxy/transparent/http.js';
import { startEgressGuard, type EgressGuardProcess } from '../helpers/egress-guard-process.js';
import { startInspectingProxy } from '../helpers/inspecting-proxy.js';
import { exchangeOnTunnel, openTunnel, rawExchange } from '../helpers/raw-client.js';
import { leafFor } from '../helpers/servers.js';
import { tempDir } from '../helpers/temp-dir.js';

/** `target` and `host` in a request whose every line ends in a bare LF. */
const bareLf = (target: string, host: string) => `GET ${target} HTTP/1.1\nHost: ${host}\nUser-Agent: printf\nConnection: close\n\n`;

/** Bare-LF requests as clients write them: each line, only the header lines, or an HTTP/1.0 one without header lines. */
const BARE_LF_REQUESTS = [
  { what: 'every line', request: bareLf },
  { what: 'its header lines, its blank line CRLF', request: (target: string, host: string) => `GET ${target} HTTP/1.1\r\nHost: ${host}\nConnection: close\n\r\n` },
  // `printf 'GET / HTTP/1.0\n\n' | nc`: llhttp took the second LF for the first one's missing CR, and waited.
  { what: 'HTTP/1.0 without header lines', request: (target: string) => `GET ${target} HTTP/1.0\n\n` },
];

/**
 * A server that answers bare-LF requests as nginx does (node's parser with its lenient flags), saying which Host and
 * target it read; `received` keeps every byte each connection sent it, to see what egress-guard wrote upstream.
 */
interface LenientServer {
  port: number;
  received: string[];
  close: () => Promise<void>;
}

async function startLenientServer(): Promise<LenientServer> {
  const received: string[] = [];
  // A body read is said too (` body=...`), to see that a chunked one came whole.
  const server = http.createServer({ insecureHTTPParser: true }, (req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('latin1')));
    req.on('end', () => res.end(`served ${req.headers.host} ${req.url}${body ? ` body=${body}` : ''}\n`));
  });
  server.on('connection', (socket: net.Socket) => {
    const index = received.push('') - 1;
    socket.on('data', (chunk: Buffer) => (received[index] += chunk.toString('latin1')));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}

/** What the server received for the request whose target ends in `path`: its head as sent, every line CRLF-ended. */
function receivedFor(received: string[], path: string): string | undefined {
  return received.find((bytes) => bytes.includes(`${path} HTTP/1.1\r\n`));
}

function assertCrlfOnly(head: string): void {
  assert.doesNotMatch(head, /(^|[^\r])\n/, `a bare LF went upstream: ${JSON.stringify(head)}`);
}

/**
 * A chunked POST whose every line ends in a bare LF, its body ended by `0\n\n` (the last chunk, then the blank line),
 * and a GET pipelined behind it (`${target}-next`, which closes the connection). llhttp took the blank line's LF for
 * the last chunk line's missing CR: the POST waited for a line that never came, and the GET was read as a trailer.
 */
const bareLfChunked = (target: string, host: string) =>
  `POST ${target} HTTP/1.1\nHost: ${host}\nTransfer-Encoding: chunked\n\n5\nhello\n6\n world\n0\n\n` + `GET ${target}-next HTTP/1.1\nHost: ${host}\nConnection: close\n\n`;

/** Both answers to `bareLfChunked` (the POST's with its whole body), and what the server got for the POST: CRLF, re-chunked. */
function assertChunkedServed(answer: string, received: string[], path: string, target = path): void {
  assert.match(answer, new RegExp(`^HTTP/1\\.[01] 200 [^]*served allowed\\.test:\\d+ ${target} body=hello world\n[^]*served allowed\\.test:\\d+ ${target}-next\n$`), answer);
  const sent = received.find((bytes) => bytes.includes(`${path} HTTP/1.1\r\n`));
  assert.ok(sent, 'the POST reached the server');
  assertCrlfOnly(sent);
  assert.match(sent, /\r\nTransfer-Encoding: chunked\r\n[^]*\r\n\r\n[^]*hello[^]* world\r\n0\r\n\r\n/);
}

/** CONNECT heads to the explicit proxy with bare line ends: every line, the request line alone, no header line. */
const BARE_LF_CONNECTS = [
  { what: 'every line', head: (authority: string) => `CONNECT ${authority} HTTP/1.1\nHost: ${authority}\n\n` },
  { what: 'its request line', head: (authority: string) => `CONNECT ${authority} HTTP/1.1\nHost: ${authority}\r\n\r\n` },
  { what: 'a head without header lines', head: (authority: string) => `CONNECT ${authority} HTTP/1.0\n\n` },
];

/** `head` to the proxy on a new connection: the proxy's answer to it, and the socket (the tunnel if it said 200). */
async function connectWith(port: number, head: string): Promise<{ socket: net.Socket; answer: string }> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const answer = await exchangeOnTunnel(socket, head, '\r\n\r\n');
  return { socket, answer };
}

/** Requests that audit mode still refuses: each could be read two ways by the servers behind (request smuggling). */
const STILL_REFUSED = [
  {
    what: 'Content-Length and Transfer-Encoding together',
    request: (target: string, host: string) => `POST ${target} HTTP/1.1\nHost: ${host}\nContent-Length: 5\nTransfer-Encoding: chunked\nConnection: close\n\n0\n\nhello`,
  },
  { what: 'a CR inside a header line', request: (target: string, host: string) => `GET ${target} HTTP/1.1\nX-A: 1\rHost: ${host}\nConnection: close\n\n` },
  { what: 'a control byte in a header value', request: (target: string, host: string) => `GET ${target} HTTP/1.1\nHost: ${host}\nX-A: a\x01b\nConnection: close\n\n` },
];

/** The lenient server, and the CLI in `mode` in front of it (allowed.test at 127.0.0.1), for the suite this is called in. */
function cliInFront(mode: Mode): { server: LenientServer; guard: EgressGuardProcess; authority: string } {
  const cli = {} as { server: LenientServer; guard: EgressGuardProcess; authority: string };
  before(async () => {
    cli.server = await startLenientServer();
    cli.authority = `allowed.test:${cli.server.port}`;
    cli.guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1'], {
      EGRESS_MODE: mode,
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    });
  });
  after(async () => {
    await cli.guard?.stop();
    await cli.server?.close();
  });
  return cli;
}

/** `request` (for `path`) to the explicit proxy and on a plain CONNECT tunnel: 400 on both, and the server got neither. */
async function assertRefusedOnBothPaths(cli: ReturnType<typeof cliInFront>, request: (target: string, host: string) => string, path: string): Promise<void> {
  const explicit = await rawExchange(cli.guard.port, request(`http://${cli.authority}${path}`, cli.authority));
  assert.match(explicit, /^HTTP\/1\.1 400 /, explicit);
  const tunnel = await openTunnel(cli.guard.port, cli.authority);
  assert.equal(tunnel.status, 200);
  const inTunnel = await exchangeOnTunnel(tunnel.socket, request(path, cli.authority), '\r\n\r\n');
  tunnel.socket.destroy();
  assert.match(inTunnel, /^HTTP\/1\.1 400 /, inTunnel);
  assert.equal(receivedFor(cli.server.received, path), undefined);
}

/** The policy of each mode, allowing `allowed` (as a reload to another mode would give). */
function policiesByMode(allowed: string): Map<Mode, Policy> {
  const origin = { file: 'test', line: 1 };
  return new Map(
    (['audit', 'block'] as const).map((mode) => [
      mode,
      buildPolicy({ mode: { value: mode, origin }, 'allowed-endpoints': { value: allowed, origin }, 'trusted-ranges': { value: '127.0.0.0/8', origin } }),
    ]),
  );
}

describe('a request whose lines end in a bare LF: what the server answers without egress-guard', () => {
  test('the server answers it directly (as nginx and http.server do)', async () => {
    const server = await startLenientServer();
    try {
      const answer = await rawExchange(server.port, bareLf('/direct', `allowed.test:${server.port}`));
      assert.match(answer, /^HTTP\/1\.1 200 [^]*served allowed\.test:\d+ \/direct\n$/, answer);
    } finally {
      await server.close();
    }
  });
});

describe('audit mode, through the CLI: a bare-LF request is decided, forwarded with a CRLF head and answered', () => {
  const cli = cliInFront('audit');
  /** The CONNECT decisions a test has taken as its own. */
  const seenConnects = new Set<unknown>();

  for (const [index, { what, request }] of BARE_LF_REQUESTS.entries()) {
    test(`explicit proxy (absolute URI, as HTTP_PROXY clients write it), bare LF ending ${what}`, async () => {
      const path = `/explicit-bare-lf-${index}`;
      const answer = await rawExchange(cli.guard.port, request(`http://${cli.authority}${path}?q=1`, cli.authority));
      assert.match(answer, new RegExp(`^HTTP/1\\.1 200 [^]*served allowed\\.test:\\d+ ${path}\\?q=1\n$`), answer);
      const decision = await cli.guard.waitFor((l) => l.event === 'decision' && l.path === path);
      assert.deepEqual([decision.kind, decision.host, decision.port, decision.method, decision.mode], ['http', 'allowed.test', cli.server.port, 'GET', 'audit']);
      const sent = receivedFor(cli.server.received, `${path}?q=1`);
      assert.ok(sent, 'the request reached the server');
      assertCrlfOnly(sent);
      assert.match(sent, new RegExp(`\r\nHost: ${cli.authority}\r\n`));
    });

    test(`plain CONNECT tunnel (the inspector reads the requests inside), bare LF ending ${what}`, async () => {
      const path = `/tunnel-bare-lf-${index}`;
      const tunnel = await openTunnel(cli.guard.port, cli.authority);
      assert.equal(tunnel.status, 200);
      const answer = await exchangeOnTunnel(tunnel.socket, request(path, cli.authority), `${path}\n`);
      tunnel.socket.destroy();
      assert.match(answer, new RegExp(`^HTTP/1\\.[01] 200 [^]*served allowed\\.test:\\d+ ${path}\n$`), answer);
      const decision = await cli.guard.waitFor((l) => l.event === 'decision' && l.path === path);
      assert.deepEqual([decision.host, decision.port, decision.method, decision.mode], ['allowed.test', cli.server.port, 'GET', 'audit']);
      const sent = receivedFor(cli.server.received, path);
      assert.ok(sent, 'the request reached the server');
      assertCrlfOnly(sent);
    });
  }

  test('explicit proxy: a bare-LF chunked body ending `0\\n\\n` completes, and the request pipelined behind it is read as one', async () => {
    const path = '/explicit-bare-lf-chunked';
    const target = `http://${cli.authority}${path}`;
    const answer = await rawExchange(cli.guard.port, bareLfChunked(target, cli.authority), { untilText: `${path}-next\n` });
    assertChunkedServed(answer, cli.server.received, path);
    const decision = await cli.guard.waitFor((l) => l.event === 'decision' && l.path === path);
    assert.deepEqual([decision.method, decision.decision, decision.mode], ['POST', 'allowed', 'audit']);
    await cli.guard.waitFor((l) => l.event === 'decision' && l.path === `${path}-next`);
  });

  test('plain CONNECT tunnel: a bare-LF chunked body ending `0\\n\\n` completes, and the request pipelined behind it is read as one', async () => {
    const path = '/tunnel-bare-lf-chunked';
    const tunnel = await openTunnel(cli.guard.port, cli.authority);
    assert.equal(tunnel.status, 200);
    const answer = await exchangeOnTunnel(tunnel.socket, bareLfChunked(path, cli.authority), `${path}-next\n`);
    tunnel.socket.destroy();
    assertChunkedServed(answer, cli.server.received, path);
    const decision = await cli.guard.waitFor((l) => l.event === 'decision' && l.path === path);
    assert.deepEqual([decision.method, decision.mode], ['POST', 'audit']);
  });

  for (const [index, { what, head }] of BARE_LF_CONNECTS.entries()) {
    test(`explicit proxy: a CONNECT with bare line ends (${what}) is decided and tunnelled as any CONNECT`, async () => {
      const { socket, answer } = await connectWith(cli.guard.port, head(cli.authority));
      try {
        assert.match(answer, /^HTTP\/1\.1 200 /, answer);
        const decision = await cli.guard.waitFor((l) => l.event === 'decision' && l.kind === 'connect' && l.port === cli.server.port && !seenConnects.has(l.id));
        seenConnects.add(decision.id);
        assert.deepEqual([decision.host, decision.decision, decision.mode], ['allowed.test', 'allowed', 'audit']);
        const path = `/in-bare-lf-connect-${index}`;
        const inTunnel = await exchangeOnTunnel(socket, `GET ${path} HTTP/1.1\r\nHost: ${cli.authority}\r\n\r\n`, `${path}\n`);
        assert.match(inTunnel, new RegExp(`^HTTP/1\\.1 200 [^]*served allowed\\.test:\\d+ ${path}\n$`), inTunnel);
      } finally {
        socket.destroy();
      }
    });
  }

  for (const { what, request } of STILL_REFUSED) {
    test(`still refused 400, and nothing reaches the server: ${what}`, async () => {
      await assertRefusedOnBothPaths(cli, request, `/refused-${what.replace(/\W+/g, '-')}`);
    });
  }
});

describe('block mode, through the CLI: a bare-LF request is still refused 400 (fail closed)', () => {
  const cli = cliInFront('block');

  test('explicit proxy and plain CONNECT tunnel: 400, nothing reaches the server', async () => {
    await assertRefusedOnBothPaths(cli, bareLf, '/block-bare-lf');
  });

  test('explicit proxy: a CONNECT with bare line ends is refused 400 with its malformed-request event', async () => {
    const malformed = (l: { event?: unknown; reason?: unknown; message?: unknown }) =>
      l.event === 'decision' && l.reason === 'malformed-request' && /^malformed HTTP request \(HPE_/.test(String(l.message));
    const before = cli.guard.lines.filter(malformed).length;
    for (const { what, head } of BARE_LF_CONNECTS) {
      const { socket, answer } = await connectWith(cli.guard.port, head(cli.authority));
      socket.destroy();
      assert.match(answer, /^HTTP\/1\.1 400 /, `${what}: ${answer}`);
    }
    const refusals = await cli.guard.waitForCount(malformed, before + BARE_LF_CONNECTS.length);
    assert.ok(refusals.slice(before).every((l) => l.decision === 'blocked' && l.mode === 'block'));
  });
});

describe('redirected plain HTTP (the transparent listener): read leniently when its connection began in audit mode', () => {
  let server: LenientServer;
  let front: net.Server;
  let frontPort: number;
  let authority: string;
  let mode: Mode = 'audit';
  let policies: Map<Mode, Policy>;
  const decisions: DecisionEvent[] = [];

  before(async () => {
    server = await startLenientServer();
    authority = `allowed.test:${server.port}`;
    policies = policiesByMode(`allowed.test:${server.port}`);
    const events = new EventLog({ stdout: false });
    events.subscribe((e: EgressEvent) => {
      if (e.event === 'decision') decisions.push(e);
    });
    const addressBook = new AddressBook();
    const resolver = new Resolver({ overrides: new Map([['allowed.test', ['127.0.0.1']]]), addressBook });
    // The policy's mode is read at each call, as a reloaded policy is.
    const plainHttp = createTransparentHttp({ policy: () => policies.get(mode)!, events, addressBook, resolver, connectTimeoutMs: 2000, idleTimeoutMs: 10_000 });
    front = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.pause();
      plainHttp.adopt(socket, { client: `${socket.remoteAddress}:${socket.remotePort}`, destination: { address: '127.0.0.1', port: server.port, family: 4 } });
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    frontPort = (front.address() as net.AddressInfo).port;
  });
  after(async () => {
    front?.close();
    await server?.close();
  });

  for (const [index, { what, request }] of BARE_LF_REQUESTS.entries()) {
    test(`audit mode, bare LF ending ${what}: forwarded with a CRLF head and answered; its decision names its host`, async () => {
      mode = 'audit';
      const path = `/transparent-bare-lf-${index}`;
      const answer = await rawExchange(frontPort, request(path, authority));
      assert.match(answer, new RegExp(`^HTTP/1\\.[01] 200 [^]*served allowed\\.test:\\d+ ${path}\n$`), answer);
      const decision = decisions.find((d) => d.path === path);
      assert.deepEqual([decision?.kind, decision?.host, decision?.port, decision?.method, decision?.mode], ['transparent', 'allowed.test', server.port, 'GET', 'audit']);
      const sent = receivedFor(server.received, path);
      assert.ok(sent, 'the request reached the server');
      assertCrlfOnly(sent);
    });
  }

  test('audit mode: a bare-LF chunked body ending `0\\n\\n` completes, and the request pipelined behind it is read as one', async () => {
    mode = 'audit';
    const path = '/transparent-bare-lf-chunked';
    const answer = await rawExchange(frontPort, bareLfChunked(path, authority), { untilText: `${path}-next\n` });
    assertChunkedServed(answer, server.received, path);
    assert.deepEqual(
      decisions.filter((d) => d.path?.startsWith(path)).map((d) => [d.path, d.method, d.mode]),
      [
        [path, 'POST', 'audit'],
        [`${path}-next`, 'GET', 'audit'],
      ],
    );
  });

  test('audit mode: a smuggling-prone request is still refused 400', async () => {
    mode = 'audit';
    for (const { what, request } of STILL_REFUSED) {
      const answer = await rawExchange(frontPort, request('/transparent-refused', authority));
      assert.match(answer, /^HTTP\/1\.1 400 /, `${what}: ${answer}`);
    }
    assert.equal(receivedFor(server.received, '/transparent-refused'), undefined);
  });

  test('block mode: refused 400, nothing reaches the server', async () => {
    mode = 'block';
    const answer = await rawExchange(frontPort, bareLf('/transparent-block', authority));
    assert.match(answer, /^HTTP\/1\.1 400 /, answer);
    assert.equal(receivedFor(server.received, '/transparent-block'), undefined);
  });

  test('the mode is the one when the connection began: a connection opened in audit mode stays lenient after a switch to block', async () => {
    mode = 'audit';
    const socket = net.connect(frontPort, '127.0.0.1');
    let text = '';
    socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
    const answered = (count: number) =>
      new Promise<void>((resolve, reject) => {
        const deadline = setTimeout(() => reject(new Error(`no answer ${count}: ${text}`)), 5000);
        const check = () => {
          if (text.split('served ').length - 1 < count) return;
          clearTimeout(deadline);
          socket.off('data', check);
          resolve();
        };
        socket.on('data', check);
        check();
      });
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.write(`GET /switch-1 HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    await answered(1);
    mode = 'block';
    socket.write(bareLf('/switch-2', authority));
    await answered(2);
    socket.destroy();
    assert.match(text, /served allowed\.test:\d+ \/switch-2\n/);
    // Decided under the policy in force now (block mode): allowed.test is allowed.
    assert.deepEqual([decisions.find((d) => d.path === '/switch-2')?.decision, decisions.find((d) => d.path === '/switch-2')?.mode], ['allowed', 'block']);
  });
});

describe('inspected TLS (the inspector, in-process): read leniently when its connection began in audit mode', () => {
  const inspectionCa = createCertificateAuthority('egress-guard lenient test CA');
  let upstream: https.Server;
  let upstreamPort = 0;
  let proxy: HttpProxyServer;
  let mode: Mode = 'audit';
  let policies: Map<Mode, Policy>;
  const decisions: DecisionEvent[] = [];
  const served: string[] = [];

  before(async () => {
    const dir = tempDir('eg-lenient-');
    const caFile = join(dir, 'inspection-ca.pem');
    const caKeyFile = join(dir, 'inspection-ca.key');
    writeFileSync(caFile, inspectionCa.certPem);
    writeFileSync(caKeyFile, inspectionCa.keyPem, { mode: 0o600 });
    const leaves = new LeafIssuer(loadCertificateAuthority({ stateDir: dir, caCert: caFile, caKey: caKeyFile }));
    // node's strict parser: what it answers came to it with CRLF line ends.
    const leaf = leafFor('lenient.test');
    upstream = https.createServer({ key: leaf.keyPem, cert: leaf.certPem }, (req, res) => {
      served.push(req.url ?? '');
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString('latin1')));
      req.on('end', () => res.end(`served ${req.headers.host} ${req.url}${body ? ` body=${body}` : ''}\n`));
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    upstreamPort = (upstream.address() as net.AddressInfo).port;
    // A path rule: the connection is inspected.
    policies = policiesByMode('lenient.test:*/ok/**');
    const log = new EventLog({ stdout: false });
    log.subscribe((e: EgressEvent) => {
      if (e.event === 'decision') decisions.push(e);
    });
    const resolver = new Resolver({ overrides: new Map([['lenient.test', ['127.0.0.1']]]), addressBook: new AddressBook() });
    proxy = await startInspectingProxy({ policy: () => policies.get(mode)!, resolver, events: log }, leaves);
  });
  after(() => {
    proxy?.closeAllConnections();
    proxy?.close();
    upstream?.closeAllConnections();
    upstream?.close();
  });

  /** `request` on a TLS connection to lenient.test through the proxy's CONNECT (inspected), and the answer until the close. */
  /** `request` on an inspected TLS connection; `firstPart`, if given, is written first, alone (a read of its own). */
  const inspectedExchange = async (request: string, firstPart?: string): Promise<string> => {
    const socket = net.connect((proxy.address() as net.AddressInfo).port, '127.0.0.1');
    socket.write(`CONNECT lenient.test:${upstreamPort} HTTP/1.1\r\nHost: lenient.test:${upstreamPort}\r\n\r\n`);
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    const secure = tls.connect({ socket, servername: 'lenient.test', ca: inspectionCa.certPem, ALPNProtocols: ['http/1.1'] });
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    if (firstPart !== undefined) {
      secure.write(firstPart);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const answer = await exchangeOnTunnel(secure, request, '\n\n\n');
    secure.destroy();
    return answer;
  };

  test('audit mode: a bare-LF request is forwarded and answered; its decision names its host', async () => {
    mode = 'audit';
    for (const [index, { what, request }] of BARE_LF_REQUESTS.entries()) {
      const path = `/ok/inspected-bare-lf-${index}`;
      const answer = await inspectedExchange(request(path, `lenient.test:${upstreamPort}`));
      assert.match(answer, new RegExp(`^HTTP/1\\.[01] 200 [^]*served lenient\\.test:\\d+ ${path}\\n$`), `${what}: ${answer}`);
      const decision = decisions.find((d) => d.path === path);
      assert.deepEqual([decision?.host, decision?.port, decision?.method, decision?.decision, decision?.mode], ['lenient.test', upstreamPort, 'GET', 'allowed', 'audit'], what);
    }
  });

  test('audit mode: a bare-LF chunked body ending `0\\n\\n` completes, and the request pipelined behind it is read as one', async () => {
    mode = 'audit';
    // Whole in one read, then cut after the last chunk's line (the connection read natively until the body begins).
    for (const [index, cutAt] of [undefined, '0\n'].entries()) {
      const path = `/ok/inspected-bare-lf-chunked-${index}`;
      const request = bareLfChunked(path, `lenient.test:${upstreamPort}`);
      const cut = cutAt === undefined ? 0 : request.indexOf(cutAt) + cutAt.length;
      const answer = await inspectedExchange(request.slice(cut), cutAt === undefined ? undefined : request.slice(0, cut));
      assert.match(answer, new RegExp(`^HTTP/1\\.1 200 [^]*served lenient\\.test:\\d+ ${path} body=hello world\n[^]*served lenient\\.test:\\d+ ${path}-next\n$`), answer);
      assert.deepEqual(
        decisions.filter((d) => d.path?.startsWith(path)).map((d) => [d.path, d.method, d.mode]),
        [
          [path, 'POST', 'audit'],
          [`${path}-next`, 'GET', 'audit'],
        ],
      );
    }
  });

  test('block mode: refused 400, nothing reaches the server', async () => {
    mode = 'block';
    const answer = await inspectedExchange(bareLf('/ok/inspected-block', `lenient.test:${upstreamPort}`));
    assert.match(answer, /^HTTP\/1\.1 400 /, answer);
    assert.ok(!served.includes('/ok/inspected-block'));
  });
});

/**
 * A server that answers with bare-LF line ends (written by hand, as some embedded or test servers do), keeping its
 * connections open: `/lf-length` with a Content-Length body, `/lf-chunked` with a chunked one ended by `0\n\n` (its
 * blank line in a read of its own), `/lf-204` a 204 that says chunked. `connections` counts the connections it accepted.
 */
async function startBareLfServer(): Promise<{ port: number; connections: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let pending = '';
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end !== -1; end = pending.indexOf('\r\n\r\n')) {
        const path = / (\S+) HTTP/.exec(pending.slice(0, end))?.[1] ?? '';
        pending = pending.slice(end + 4);
        // A 204 that says chunked (RFC 9110 forbids the header there; llhttp reads no body): nothing follows its head.
        if (path.endsWith('/lf-204')) socket.write('HTTP/1.1 204 No Content\nTransfer-Encoding: chunked\n\n');
        else if (path.endsWith('/lf-length')) socket.write('HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 12\n\nhello world\n');
        else {
          // Cut after the last chunk's line: its blank line comes in a read of its own.
          socket.write('HTTP/1.1 200 OK\nContent-Type: text/plain\nTransfer-Encoding: chunked\n\n5\nhello\n7\n world\n\n0\n');
          setTimeout(() => socket.writable && socket.write('\n'), 50);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), server.close(() => resolve()))),
  };
}

/** GET `url` through the proxy with node's client (strict: it refuses a bare-LF answer itself), on `agent`: status and body. */
function getThroughProxy(proxyPort: number, url: string, agent: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: proxyPort, path: url, agent, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no whole answer to ${url} in 5 s`)));
    req.on('error', reject);
  });
}

describe('an upstream server that answers with bare-LF line ends, through the CLI', () => {
  test('without egress-guard, curl reads both answers directly, on one connection (node 20 refuses them: HPE_CR_EXPECTED)', async () => {
    const server = await startBareLfServer();
    try {
      const urls = ['/lf-length', '/lf-chunked'].map((path) => `http://127.0.0.1:${server.port}${path}`);
      const stdout = await new Promise<string>((resolve, reject) =>
        execFile('curl', ['-sS', '--max-time', '5', ...urls], (err, out, stderr) => (err ? reject(new Error(`${err.message}: ${stderr}`)) : resolve(out))),
      );
      assert.equal(stdout, 'hello world\nhello world\n');
      assert.equal(server.connections(), 1);
    } finally {
      await server.close();
    }
  });

  for (const mode of ['audit', 'block'] as const) {
    describe(`${mode} mode`, () => {
      let server: Awaited<ReturnType<typeof startBareLfServer>>;
      let guard: EgressGuardProcess;
      before(async () => {
        server = await startBareLfServer();
        guard = await startEgressGuard(['--resolve', 'lf.test=127.0.0.1'], { EGRESS_MODE: mode, EGRESS_ALLOWED_ENDPOINTS: 'lf.test:*', EGRESS_TRUSTED_RANGES: '127.0.0.0/8' });
      });
      after(async () => {
        await guard?.stop();
        await server?.close();
      });

      if (mode === 'audit') {
        test('explicit proxy: both answers reach the client whole, on one upstream connection (its framing kept)', async () => {
          const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
          try {
            const before = server.connections();
            for (const path of ['/lf-chunked', '/lf-length', '/lf-chunked']) {
              assert.deepEqual(await getThroughProxy(guard.port, `http://lf.test:${server.port}${path}`, agent), { status: 200, body: 'hello world\n' }, path);
            }
            assert.deepEqual(await getThroughProxy(guard.port, `http://lf.test:${server.port}/lf-204`, agent), { status: 204, body: '' });
            assert.equal(server.connections() - before, 1);
          } finally {
            agent.destroy();
          }
        });

        test('plain CONNECT tunnel (the inspector forwards): both answers reach the client whole', async () => {
          const tunnel = await openTunnel(guard.port, `lf.test:${server.port}`);
          assert.equal(tunnel.status, 200);
          const length = await exchangeOnTunnel(tunnel.socket, `GET /lf-length HTTP/1.1\r\nHost: lf.test:${server.port}\r\n\r\n`, 'hello world\n');
          assert.match(length, /^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nhello world\n$/, length);
          const chunked = await exchangeOnTunnel(tunnel.socket, `GET /lf-chunked HTTP/1.1\r\nHost: lf.test:${server.port}\r\n\r\n`, '\r\n0\r\n\r\n');
          tunnel.socket.destroy();
          assert.match(chunked, /^HTTP\/1\.1 200 OK\r\n[^]*Transfer-Encoding: chunked\r\n[^]*\r\n\r\n[^]*hello[^]* world\n[^]*\r\n0\r\n\r\n$/, chunked);
          assert.doesNotMatch(chunked.slice(0, chunked.indexOf('\r\n\r\n')), /(^|[^\r])\n/, 'the head went to the client with CRLF line ends');
        });
      } else {
        test('explicit proxy: 502, as before (block mode reads responses strictly)', async () => {
          const agent = new http.Agent({ keepAlive: false });
          for (const path of ['/lf-length', '/lf-chunked']) {
            assert.equal((await getThroughProxy(guard.port, `http://lf.test:${server.port}${path}`, agent)).status, 502, path);
          }
        });
      }
    });
  }
});
