/**
 * What the inspector's own request reader (proxy/relay/request-reader.ts, raw-response.ts) must do as node's
 * http.Server did, on an inspected CONNECT connection: pipelined requests with bodies answered in order and each
 * decided on its own, `Expect: 100-continue` (and any other expectation: 417), HTTP/1.0 answers (no chunked
 * framing, the connection closed, or kept with a length), a head over node's size limit (400, nothing decided,
 * the proxy keeps serving), a client that resets in the middle of a body (the body streamed upstream as it
 * came, the request's record closed as client-aborted), an answer read whole from upstream written to the
 * client in one go, and a client that stops reading (the upstream TLS connection, read natively by its parser, stops
 * being read). A raw TLS client writes exact bytes; the upstream is a real HTTPS server on loopback; the proxy
 * runs in this process.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { createCertificateAuthority, issueLeafCertificate } from '../../certs/certificates.js';
import { AddressBook } from '../../decision/address-book.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../../events/schema.js';
import { buildPolicy } from '../../policy/index.js';
import { inspectedSocket as inspectedSocketThrough, inspectionLeaves, startInspectingProxy } from '../helpers/inspecting-proxy.js';
import type { HttpProxyServer } from '../../proxy/explicit/server.js';
import { leafFor } from '../helpers/servers.js';
import { readAnswer, untilStalled } from '../helpers/slow-reader.js';
import { waitFor } from '../helpers/wait-for.js';

/** What the upstream saw of each request: method, path and body, once the request was whole or broke off. */
interface Seen {
  method: string;
  path: string;
  body: string;
  aborted: boolean;
}

/** Bytes from `socket` until `done(text)` says so or it closes (bounded: 5 s). */
function readUntil(socket: net.Socket, done: (text: string) => boolean): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve({ text, closed });
    };
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (done(text)) finish(false);
    };
    const onClose = () => finish(true);
    const timer = setTimeout(() => finish(false), 5000);
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.resume();
  });
}

/** The status lines of the answers in `text`, in order. */
/** The idle timeout of the keep-alive grace test's proxy. */
const SHORT_IDLE_MS = 3000;
/** The answer to /ok/big: more than the loopback sockets and TLS buffers on the way hold while the client reads nothing. */
const BIG = 32 * 1024 * 1024;

const statusLines = (text: string) => [...text.matchAll(/HTTP\/1\.1 (\d{3})[^\r]*\r\n/g)].map((m) => Number(m[1]));

describe('inspected requests read without node http.Server', () => {
  const inspectionCa = createCertificateAuthority('egress-guard reader test CA');
  let upstream: https.Server;
  let upstreamPort = 0;
  let plainUpstream: http.Server;
  let plainPort = 0;
  let proxy: HttpProxyServer;
  /** The same proxy with a 3 s idle timeout (the keep-alive grace test), started by that test. */
  let shortIdleProxy: HttpProxyServer | undefined;
  let startShortIdleProxy: () => Promise<HttpProxyServer>;
  const seen: Seen[] = [];
  const events: EgressEvent[] = [];
  const decisions = () => events.filter((e): e is DecisionEvent => e.event === 'decision');
  const closes = () => events.filter((e): e is CloseEvent => e.event === 'close');
  /** The bytes of /ok/big's body the upstream has handed to its socket (its writes wait for 'drain'). */
  let bigWritten = 0;
  /** The inspection CA's certificate, as a file (for clients in other processes). */
  let caFile = '';

  before(async () => {
    const inspection = inspectionLeaves(inspectionCa, 'eg-reader-');
    caFile = inspection.caFile;
    const leaves = inspection.leaves;
    // /ok/slow answers after a while (so a pipelined answer behind it would overtake it if not kept in order);
    // /ok/chunked answers without a length; /ok/at-once answers before its body, unread (as nginx does a static GET);
    // anything else echoes what it read. The upstream sees bodies as they come.
    const leaf = leafFor('reader.test');
    const recordAndAnswer = (req: http.IncomingMessage, res: http.ServerResponse) => {
      const record: Seen = { method: req.method ?? '', path: req.url ?? '', body: '', aborted: false };
      seen.push(record);
      if (record.path === '/ok/at-once') return void res.writeHead(201, { 'content-length': 2 }).end('ok');
      req.on('data', (chunk: Buffer) => (record.body += chunk.toString('latin1')));
      req.once('aborted', () => (record.aborted = true));
      req.once('end', () => {
        const answer = () => {
          if (record.path === '/ok/big') {
            res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BIG });
            const piece = Buffer.alloc(64 * 1024, 0x61);
            const pump = () => {
              while (bigWritten < BIG) {
                bigWritten += piece.length;
                if (!res.write(piece)) return void res.once('drain', pump);
              }
              res.end();
            };
            return pump();
          }
          if (record.path === '/ok/chunked') {
            res.writeHead(200, { 'content-type': 'text/plain' });
            res.write('chunk-one,');
            return void res.end('chunk-two');
          }
          const text = `${record.method} ${record.path} ${record.body}`;
          res.writeHead(201, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
          res.end(text);
        };
        if (record.path === '/ok/slow') setTimeout(answer, 150);
        else answer();
      });
    };
    upstream = https.createServer({ key: leaf.keyPem, cert: leaf.certPem }, recordAndAnswer);
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    upstreamPort = (upstream.address() as AddressInfo).port;
    // The same for plain HTTP inside a CONNECT tunnel (a tunnel to an inspected host's HTTP port).
    plainUpstream = http.createServer(recordAndAnswer);
    await new Promise<void>((resolve) => plainUpstream.listen(0, '127.0.0.1', resolve));
    plainPort = (plainUpstream.address() as AddressInfo).port;
    const origin = { file: 'test', line: 1 };
    const policy = buildPolicy({
      mode: { value: 'block', origin },
      'allowed-endpoints': { value: 'reader.test:*/ok/**', origin },
      'trusted-ranges': { value: '127.0.0.0/8', origin },
    });
    const log = new EventLog({ stdout: false });
    log.subscribe((e) => void events.push(e));
    const resolver = new Resolver({ overrides: new Map([['reader.test', ['127.0.0.1']]]), addressBook: new AddressBook() });
    const context = { policy: () => policy, resolver, events: log };
    proxy = await startInspectingProxy(context, leaves);
    startShortIdleProxy = async () => (shortIdleProxy = await startInspectingProxy(context, leaves, SHORT_IDLE_MS));
  });

  after(async () => {
    shortIdleProxy?.closeAllConnections();
    shortIdleProxy?.close();
    proxy?.closeAllConnections();
    proxy?.close();
    upstream?.closeAllConnections();
    upstream?.close();
    plainUpstream?.closeAllConnections();
    plainUpstream?.close();
  });

  /** A TLS connection to reader.test through the proxy's CONNECT, trusting the inspection CA. */
  const inspectedSocket = (through = proxy) => inspectedSocketThrough(through, 'reader.test', upstreamPort, inspectionCa);
  const host = () => `Host: reader.test:${upstreamPort}\r\n`;
  /** A request the proxy must not have acted on: no decision for its path, nothing of it upstream. */
  const neitherDecidedNorSent = (path: string) => {
    assert.equal(
      decisions().find((d) => d.path === path),
      undefined,
      `${path} is not decided`,
    );
    assert.equal(
      seen.find((s) => s.path === path),
      undefined,
      `${path} is not sent`,
    );
  };

  /**
   * A request refused unread as malformed (since 2026-12-03 with its event; before, a bare 400 and no event): a 400
   * naming its decision, a blocked `malformed-request` on the connection's host (of `path` where the head was read,
   * and the only decision of it), nothing of it sent upstream.
   */
  const refusedAsMalformed = (answer: string, why: RegExp, path?: string) => {
    assert.match(answer, /^HTTP\/1\.1 400 Bad Request\r\n/);
    assert.match(answer, /\r\nconnection: close\r\n/i);
    const id = /\r\nx-egress-guard-event: ([^\r]+)\r\n/i.exec(answer)?.[1];
    const event = decisions().find((d) => d.id === id);
    assert.ok(event, `the 400 names its decision event: ${answer}`);
    assert.equal(event.reason, 'malformed-request');
    assert.equal(event.decision, 'blocked');
    assert.equal(event.host, 'reader.test');
    assert.match(event.message, why);
    if (path === undefined) return;
    assert.equal(event.path, path);
    assert.deepEqual(
      decisions()
        .filter((d) => d.path === path)
        .map((d) => d.id),
      [id],
      JSON.stringify(decisions().filter((d) => d.path === path)),
    );
    assert.equal(
      seen.find((s) => s.path === path),
      undefined,
      `${path} is not sent`,
    );
  };

  test('pipelined requests with bodies: answered in order, each decided on its own; a refused one is not sent and ends the connection, and the one behind it is neither decided nor sent', async () => {
    const client = await inspectedSocket();
    const H = host();
    client.write(
      `POST /ok/slow HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nfirst` +
        `POST /ok/pipe-2 HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n` +
        `PUT /no/pipe-3 HTTP/1.1\r\n${H}Content-Length: 5\r\n\r\nthird` +
        `GET /ok/pipe-4 HTTP/1.1\r\n${H}\r\n`,
    );
    const { text, closed } = await readUntil(client, () => false);
    client.destroy();
    assert.deepEqual(statusLines(text), [201, 201, 403], text);
    assert.ok(closed, 'the connection ends after the refusal');
    const bodies = text.split(/HTTP\/1\.1 /).slice(1);
    assert.match(bodies[0]!, /\r\n\r\nPOST \/ok\/slow first$/);
    assert.match(bodies[1]!, /\r\n\r\nPOST \/ok\/pipe-2 second$/);
    assert.match(bodies[2]!, /X-Egress-Guard-Reason: /i);
    assert.equal(
      seen.find((s) => s.path === '/no/pipe-3'),
      undefined,
      'the refused request never reached upstream',
    );
    const pipelined = decisions().filter((d) => d.path?.includes('pipe') || d.path === '/ok/slow');
    assert.deepEqual(
      pipelined.map((d) => d.path),
      ['/ok/slow', '/ok/pipe-2', '/no/pipe-3'],
      'every request up to the refusal decided, in order',
    );
    assert.deepEqual(
      pipelined.map((d) => d.reason === 'path-not-allowed'),
      [false, false, true],
    );
    // Until 2026-12-01 it was decided and sent upstream, its answer never delivered.
    neitherDecidedNorSent('/ok/pipe-4');
  });

  test("a request pipelined behind a chunked body with trailers keeps its own target (not the first request's prefixed)", async () => {
    // A trailer makes node's parser flush its head callback again with the first request's target; the next request
    // in the same read then comes through that slow path, its target gathered from those callbacks.
    const client = await inspectedSocket();
    const H = host();
    client.write(`POST /ok/trailer HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\nGET /no/after-trailer HTTP/1.1\r\n${H}\r\n`);
    const { text } = await readUntil(client, () => false);
    client.destroy();
    assert.deepEqual(statusLines(text), [201, 403], text);
    assert.deepEqual(
      decisions()
        .filter((d) => d.path?.includes('trailer'))
        .map((d) => d.path),
      ['/ok/trailer', '/no/after-trailer'],
    );
    assert.equal(
      seen.find((s) => s.path.includes('after-trailer')),
      undefined,
      'the refused request never reached upstream',
    );
  });

  test('a request begun in the keep-alive grace second may pause mid-head as long as node allowed (idle timeout and the second)', async () => {
    // node's server: after an answer the timeout is the idle timeout plus a second, restarted by every read until
    // the next head is whole. The head below starts inside that extra second and pauses 2 s twice (each under 3 s + 1 s).
    const client = await inspectedSocket(await startShortIdleProxy());
    const H = host();
    client.write(`GET /ok/grace-a HTTP/1.1\r\n${H}\r\n`);
    await readUntil(client, (text) => text.endsWith('GET /ok/grace-a '));
    client.pause();
    await new Promise((resolve) => setTimeout(resolve, SHORT_IDLE_MS + 500));
    client.write('GET /ok/grace-b HTTP/1.1\r\n');
    await new Promise((resolve) => setTimeout(resolve, 2000));
    if (!client.destroyed) client.write('X-Paused: 1\r\n');
    await new Promise((resolve) => setTimeout(resolve, 2000));
    if (!client.destroyed) client.write(`${H}\r\n`);
    const { text, closed } = await readUntil(client, (got) => got.endsWith('GET /ok/grace-b '));
    client.destroy();
    assert.deepEqual(statusLines(text), [201], `${closed ? 'closed' : 'open'}: ${text}`);
  });

  test('an upgrade pipelined behind a request not yet answered: that answer first, then the connection ends; the upgrade is not sent', async () => {
    // Handed over then, what the upgrade becomes (h2c: its request read again, answered at once) would be written
    // before the earlier answer, which the client would then take for the upgrade's.
    const client = await inspectedSocket();
    const H = host();
    client.write(
      `GET /ok/slow HTTP/1.1\r\n${H}X-Order: first\r\n\r\nGET /ok/h2c-behind HTTP/1.1\r\n${H}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n`,
    );
    const { text, closed } = await readUntil(client, () => false);
    client.destroy();
    assert.deepEqual(statusLines(text), [201], text);
    assert.ok(text.endsWith('\r\n\r\nGET /ok/slow '), text);
    assert.ok(closed, 'the connection ends after the earlier answer');
    assert.equal(
      seen.find((s) => s.path === '/ok/h2c-behind'),
      undefined,
      'the upgrade request was not sent',
    );
  });

  test('a request pipelined behind one without Host: 400 with its malformed-request event, then the connection ends; the one behind is neither decided nor sent', async () => {
    // node's server answered the 400 and still handed over what followed: decided and forwarded, its answer never
    // delivered (the connection ends after the 400).
    const client = await inspectedSocket();
    client.write(`GET /ok/no-host HTTP/1.1\r\n\r\nGET /ok/behind-no-host HTTP/1.1\r\n${host()}\r\n`);
    const { text, closed } = await readUntil(client, () => false);
    client.destroy();
    assert.deepEqual(statusLines(text), [400], text);
    refusedAsMalformed(text, /without a Host header/, '/ok/no-host');
    assert.ok(closed, 'the connection ends after the 400');
    neitherDecidedNorSent('/ok/behind-no-host');
  });

  test('a request pipelined behind a Connection: close one: the first is answered and the connection ends; the one behind is neither decided nor sent', async () => {
    // RFC 9112 9.6: the server closes after the answer to a request with `close` and assumes nothing follows. llhttp
    // (strict) calls bytes after it an error; node's server answered that 400 and lost the first request's answer.
    const client = await inspectedSocket();
    const H = host();
    client.write(`GET /ok/slow HTTP/1.1\r\n${H}Connection: close\r\n\r\nGET /ok/behind-close HTTP/1.1\r\n${H}\r\n`);
    const { text, closed } = await readUntil(client, () => false);
    client.destroy();
    assert.deepEqual(statusLines(text), [201], text);
    assert.ok(text.endsWith('\r\n\r\nGET /ok/slow '), text);
    assert.ok(closed, 'the connection ends after the answer');
    neitherDecidedNorSent('/ok/behind-close');
  });

  test('a body read whole while its request waits for its decision, then a request in a later read: both answered', async () => {
    // Plain HTTP in a tunnel: the head and the whole body come in one read, so the body's buffer fills (the socket
    // is paused for it) and the body ends before the request is decided; the next request needs the socket read again.
    const socket = net.connect((proxy.address() as AddressInfo).port, '127.0.0.1');
    socket.write(`CONNECT reader.test:${plainPort} HTTP/1.1\r\nHost: reader.test:${plainPort}\r\n\r\n`);
    await new Promise<void>((resolve) => socket.once('data', () => resolve()));
    socket.pause(); // what comes next waits for readUntil
    const H = `Host: reader.test:${plainPort}\r\n`;
    const size = 40_000;
    socket.write(`POST /ok/buffered HTTP/1.1\r\n${H}Content-Length: ${size}\r\n\r\n${'p'.repeat(size)}`);
    await waitFor('the whole body upstream', () => seen.find((s) => s.path === '/ok/buffered')?.body.length === size, 10_000);
    socket.write(`GET /ok/after-buffered HTTP/1.1\r\n${H}\r\n`);
    const { text, closed } = await readUntil(socket, (got) => got.endsWith('GET /ok/after-buffered '));
    socket.destroy();
    assert.deepEqual(statusLines(text), [201, 201], `${closed ? 'closed' : 'open'}: ${text.slice(0, 300)}`);
  });

  test('Expect: 100-continue gets 100 before the body is sent; another expectation gets 417 and is not decided', async () => {
    const client = await inspectedSocket();
    const H = host();
    client.write(`POST /ok/expect HTTP/1.1\r\n${H}Content-Length: 4\r\nExpect: 100-continue\r\n\r\n`);
    const interim = await readUntil(client, (text) => text.includes('\r\n\r\n'));
    assert.equal(interim.text, 'HTTP/1.1 100 Continue\r\n\r\n');
    client.write('body');
    const final = await readUntil(client, (text) => text.endsWith('POST /ok/expect body'));
    assert.deepEqual(statusLines(final.text), [201]);
    client.write(`POST /ok/expect-other HTTP/1.1\r\n${H}Content-Length: 4\r\nExpect: other\r\n\r\nbody`);
    const refused = await readUntil(client, (text) => text.includes('\r\n\r\n'));
    assert.deepEqual(statusLines(refused.text), [417]);
    client.write(`GET /ok/after-417 HTTP/1.1\r\n${H}\r\n`);
    const after417 = await readUntil(client, (text) => text.endsWith('GET /ok/after-417 '));
    client.destroy();
    assert.deepEqual(statusLines(after417.text), [201], 'the connection still serves requests after a 417');
    assert.equal(
      decisions().find((d) => d.path === '/ok/expect-other'),
      undefined,
    );
  });

  test('HTTP/1.0: a body without a length comes unframed and the connection closes; with keep-alive and a length, the connection stays', async () => {
    const unframed = await inspectedSocket();
    unframed.write(`GET /ok/chunked HTTP/1.0\r\n${host()}\r\n`);
    const one = await readUntil(unframed, () => false);
    unframed.destroy();
    assert.ok(one.closed, 'the body ends with the connection');
    assert.match(one.text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(one.text, /\r\nConnection: close\r\n/);
    assert.doesNotMatch(one.text, /Transfer-Encoding/i);
    assert.ok(one.text.endsWith('\r\n\r\nchunk-one,chunk-two'), one.text);

    const kept = await inspectedSocket();
    kept.write(`GET /ok/ten-a HTTP/1.0\r\n${host()}Connection: keep-alive\r\n\r\n`);
    const first = await readUntil(kept, (text) => text.endsWith('GET /ok/ten-a '));
    assert.match(first.text, /\r\nConnection: keep-alive\r\n/);
    kept.write(`GET /ok/ten-b HTTP/1.0\r\n${host()}\r\n`);
    const second = await readUntil(kept, () => false);
    kept.destroy();
    assert.ok(second.text.endsWith('GET /ok/ten-b '), second.text);
    assert.ok(second.closed, 'a request without keep-alive ends the connection');
  });

  test('a head over node size limit gets 400 and its malformed-request event, is not decided on its path; the proxy keeps serving', async () => {
    const client = await inspectedSocket();
    client.write(`GET /ok/too-big HTTP/1.1\r\n${host()}X-Big: ${'a'.repeat(17 * 1024)}\r\n\r\n`);
    const answer = await readUntil(client, () => false);
    client.destroy();
    refusedAsMalformed(answer.text, /HPE_HEADER_OVERFLOW/);
    assert.ok(answer.closed);
    assert.equal(
      decisions().find((d) => d.path === '/ok/too-big'),
      undefined,
    );
    const next = await inspectedSocket();
    next.write(`GET /ok/after-400 HTTP/1.1\r\n${host()}X-Fits: ${'a'.repeat(15 * 1024)}\r\n\r\n`);
    const served = await readUntil(next, (text) => text.endsWith('GET /ok/after-400 '));
    next.destroy();
    assert.deepEqual(statusLines(served.text), [201]);
  });

  test('node header count limit: a head of more than a thousand header lines (its Host past them) gets 400 and a malformed-request event, not forwarded', async () => {
    const client = await inspectedSocket();
    const many = Array.from({ length: 1100 }, (_, i) => `X-${i}: ${i}\r\n`).join('');
    client.write(`GET /ok/many-headers HTTP/1.1\r\n${many}${host()}\r\n`);
    const answer = await readUntil(client, () => false);
    client.destroy();
    refusedAsMalformed(answer.text, /more than 1000 header lines/, '/ok/many-headers');
    assert.ok(answer.closed);
  });

  test('node header count limit: a Content-Length past the thousandth header line does not make upstream read the next request as a body (400, nothing sent)', async () => {
    const client = await inspectedSocket();
    client.on('error', () => {});
    const H = host();
    // The second request's head as the forwarder writes it upstream, and the request its body smuggles.
    const smuggled = `GET /no/smuggled HTTP/1.1\r\n${H}\r\n`;
    const secondHead = `POST /ok/second HTTP/1.1\r\n${H}Content-Length: ${smuggled.length}\r\nConnection: keep-alive\r\n\r\n`;
    // 1000 header lines (what node built `headers` from), then a Content-Length as long as that head: node sent it on
    // (until 2026-12-02), the forwarder sent no body, and upstream read the second request's head as this one's body.
    const filler = Array.from({ length: 999 }, (_, i) => `X-${i}: ${i}\r\n`).join('');
    client.write(`GET /ok/at-once HTTP/1.1\r\n${H}${filler}Content-Length: ${secondHead.length}\r\n\r\n${'b'.repeat(secondHead.length)}`);
    const first = await readUntil(client, (text) => text.endsWith('\r\n\r\nok'));
    if (!client.destroyed) client.write(`POST /ok/second HTTP/1.1\r\n${H}Content-Length: ${smuggled.length}\r\n\r\n${smuggled}`);
    await readUntil(client, (text) => /\r\n\r\n(ok|GET \/ok\/second )/.test(text));
    client.destroy();
    // A request on a new connection is answered after whatever upstream read before it (nothing waits on time).
    const next = await inspectedSocket();
    next.write(`GET /ok/after-many-headers HTTP/1.1\r\n${H}Connection: close\r\n\r\n`);
    await readUntil(next, () => false);
    next.destroy();
    neitherDecidedNorSent('/no/smuggled');
    refusedAsMalformed(first.text, /more than 1000 header lines/, '/ok/at-once');
    assert.ok(first.closed);
    assert.ok(seen.some((s) => s.path === '/ok/after-many-headers'));
  });

  test('a CONNECT inside an inspected connection is refused 400 with its decision (ambiguous-host), not forwarded', async () => {
    // Until 2026-12-03 the reader, with no CONNECT handler there, closed the connection with no answer and no event.
    // Block mode; audit mode relays it (below, and for a plain tunnel connect-tunnel-inner-connect).
    const client = await inspectedSocket();
    client.write(`CONNECT elsewhere.test:443 HTTP/1.1\r\nHost: elsewhere.test:443\r\n\r\n`);
    const answer = await readUntil(client, (text) => text.includes('\r\n\r\n'));
    client.destroy();
    const decision = decisions().find((d) => d.host === 'elsewhere.test');
    assert.deepEqual([decision?.reason, decision?.decision, decision?.method, decision?.path], ['ambiguous-host', 'blocked', 'CONNECT', 'elsewhere.test:443']);
    assert.match(answer.text, /^HTTP\/1\.1 400 /);
    assert.match(answer.text, new RegExp(`X-Egress-Guard-Event: ${decision!.id}\r\n`, 'i'));
    assert.ok(!seen.some((s) => s.path.includes('elsewhere')), JSON.stringify(seen));
  });

  test("an answer read whole from upstream goes to the client in one write (one TLS record's worth): head, body and end together", async () => {
    const client = await inspectedSocket();
    // What the proxy hands its inspected TLS sockets, per call (node writes a corked head and body as one writev).
    // Counted on the prototype: the inspector makes those sockets itself (server side, and of no tls.Server: the
    // upstream's own sockets here are that server's).
    const proto = tls.TLSSocket.prototype as unknown as Record<'_write' | '_writev', (this: tls.TLSSocket, ...args: unknown[]) => unknown>;
    const own = { write: Object.hasOwn(proto, '_write'), writev: Object.hasOwn(proto, '_writev') };
    const { _write: write, _writev: writev } = proto;
    const writes: string[] = [];
    const inspected = (socket: tls.TLSSocket) => {
      const options = (socket as tls.TLSSocket & { _tlsOptions?: { isServer?: boolean; server?: unknown } })._tlsOptions;
      return options?.isServer === true && options.server === undefined;
    };
    proto._write = function (...args) {
      if (inspected(this)) writes.push('write');
      return write.apply(this, args);
    };
    proto._writev = function (...args) {
      if (inspected(this)) writes.push('writev');
      return writev.apply(this, args);
    };
    try {
      // node's HTTPS server writes this short answer (head and body) in one record: the proxy reads it in one read.
      client.write(`GET /ok/whole HTTP/1.1\r\n${host()}\r\n`);
      await readUntil(client, (text) => text.endsWith('GET /ok/whole '));
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      if (own.write) proto._write = write;
      else delete (proto as Partial<typeof proto>)._write;
      if (own.writev) proto._writev = writev;
      else delete (proto as Partial<typeof proto>)._writev;
      client.destroy();
    }
    assert.equal(writes.length, 1, `one write for the whole answer, not ${writes.join(', ')}`);
  });

  test("a client that stops reading stops the upstream TLS connection (its parser's native reads paused); the body then arrives whole and counted", async () => {
    const client = await inspectedSocket();
    try {
      client.pause();
      client.write(`GET /ok/big HTTP/1.1\r\n${host()}\r\n`);
      // Until the upstream has stopped writing: with backpressure, well before the end.
      await untilStalled('the upstream stalled or finished', () => bigWritten);
      assert.ok(bigWritten < BIG, `the upstream wrote ${bigWritten} of ${BIG} bytes while the client read nothing`);
      const { head, received } = await readAnswer(client, BIG);
      assert.equal(received, BIG);
      assert.match(head, /^HTTP\/1\.1 200 /);
    } finally {
      client.destroy();
    }
    const decision = decisions().find((d) => d.path === '/ok/big');
    await waitFor('the close event of /ok/big', () => closes().some((c) => c.id === decision?.id), 5000);
    assert.equal(closes().find((c) => c.id === decision?.id)!.bytes_in, BIG);
  });

  test('a client reset in the middle of a body: what came was streamed upstream, the request closes as client-aborted', async () => {
    const client = await inspectedSocket();
    client.write(`POST /ok/reset HTTP/1.1\r\n${host()}Content-Length: 100000\r\n\r\n${'x'.repeat(3000)}`);
    await waitFor('the body so far upstream', () => (seen.find((s) => s.path === '/ok/reset')?.body.length ?? 0) === 3000, 5000);
    (client as unknown as { _parent: net.Socket })._parent?.resetAndDestroy?.();
    client.destroy();
    const decision = decisions().find((d) => d.path === '/ok/reset');
    await waitFor('the close event and the upstream abort', () => closes().some((c) => c.id === decision?.id) && seen.find((s) => s.path === '/ok/reset')!.aborted, 5000);
    const close = closes().find((c) => c.id === decision?.id)!;
    assert.equal(close.error, 'client-aborted');
    assert.equal(close.bytes_out, 3000);
  });

  test("a refused request whose client writes its whole body before reading (Python's http.client): the client reads the 403, nothing reaches upstream", async () => {
    // Until 2026-12-01 the connection was closed with the body's rest unread: the kernel's reset reached the client
    // while it was still writing, which reported a broken pipe (SSLEOFError) and never read the 403 (5 of 5 runs).
    const script = `
import http.client, ssl, sys
proxy_port, port, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPSConnection('127.0.0.1', proxy_port, context=ssl.create_default_context(cafile=sys.argv[4]), timeout=10)
c.set_tunnel('reader.test', port)
try:
    c.request('POST', '/no/python-upload', body=b'x' * size)
    r = c.getresponse()
    print(r.status, r.getheader('x-egress-guard-reason'))
except Exception as e:
    print('error', repr(e))
`;
    const proxyPort = (proxy.address() as AddressInfo).port;
    const { stdout } = await promisify(execFile)('python3', ['-c', script, String(proxyPort), String(upstreamPort), String(32 * 1024 * 1024), caFile], { timeout: 30_000 });
    assert.match(stdout.trim(), /^403 \S/, stdout);
    assert.equal(decisions().find((d) => d.path === '/no/python-upload')?.reason, 'path-not-allowed');
    assert.equal(
      seen.find((s) => s.path === '/no/python-upload'),
      undefined,
      'the refused request never reached upstream',
    );
  });
});

/** What an upstream server got as a CONNECT (node https.Server's 'connect'): its target, head lines and the bytes after it. */
interface ConnectSeen {
  url: string;
  rawHeaders: string[];
  bytes: string;
}

describe('a CONNECT inside an inspected TLS connection in audit mode', () => {
  const inspectionCa = createCertificateAuthority('egress-guard reader audit test CA');
  /** Signed by neither the test CA the proxy's upstream-ca trusts nor the system's roots. */
  const otherCa = createCertificateAuthority('egress-guard untrusted upstream CA');
  const servers: Record<'trusted' | 'untrusted', { server: https.Server; port: number; connects: ConnectSeen[]; handshakes: number }> = {} as never;
  let proxy: HttpProxyServer;
  const events: EgressEvent[] = [];

  before(async () => {
    const { leaves } = inspectionLeaves(inspectionCa, 'eg-reader-audit-');
    // Each answers a CONNECT 200 and echoes every piece it reads after it (`echo:` before it), as a proxy of the job's
    // own would relay it; it ends its side when the client ends.
    for (const [name, leaf] of [
      ['trusted', leafFor('tunnel.test')],
      ['untrusted', issueLeafCertificate(otherCa, ['untrusted.test'])],
    ] as const) {
      const seen = { server: https.createServer({ key: leaf.keyPem, cert: leaf.certPem }), port: 0, connects: [] as ConnectSeen[], handshakes: 0 };
      seen.server.on('secureConnection', () => seen.handshakes++);
      seen.server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
        const record: ConnectSeen = { url: req.url ?? '', rawHeaders: req.rawHeaders, bytes: '' };
        seen.connects.push(record);
        socket.on('error', () => socket.destroy());
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        const echo = (chunk: Buffer) => {
          record.bytes += chunk.toString('latin1');
          socket.write(Buffer.concat([Buffer.from('echo:'), chunk]));
        };
        if (head.length > 0) echo(head);
        socket.on('data', echo);
        socket.once('end', () => socket.end());
      });
      await new Promise<void>((resolve) => seen.server.listen(0, '127.0.0.1', resolve));
      seen.port = (seen.server.address() as AddressInfo).port;
      servers[name] = seen;
    }
    const origin = { file: 'test', line: 1 };
    const policy = buildPolicy({
      mode: { value: 'audit', origin },
      'allowed-endpoints': { value: 'tunnel.test:*/ok/** untrusted.test:*/ok/**', origin },
      'trusted-ranges': { value: '127.0.0.0/8', origin },
    });
    const log = new EventLog({ stdout: false });
    log.subscribe((e) => void events.push(e));
    const overrides = new Map([
      ['tunnel.test', ['127.0.0.1']],
      ['untrusted.test', ['127.0.0.1']],
    ]);
    const resolver = new Resolver({ overrides, addressBook: new AddressBook() });
    // Its forwarder and inspector trust the test CA's upstreams (the upstream-ca option), as the sidecar wires them.
    proxy = await startInspectingProxy({ policy: () => policy, resolver, events: log }, leaves);
  });

  after(() => {
    proxy?.closeAllConnections();
    proxy?.close();
    for (const { server } of Object.values(servers)) {
      server.closeAllConnections();
      server.close();
    }
  });

  /** A TLS connection to `name` (at its server's port) through the proxy's CONNECT, inspected, trusting the inspection CA. */
  const inspectedSocket = (name: string, port: number) => inspectedSocketThrough(proxy, name, port, inspectionCa);
  const decisionOf = (path: string) => events.find((e): e is DecisionEvent => e.event === 'decision' && e.method === 'CONNECT' && e.path === path);
  const closeOf = (id: string) => events.find((e): e is CloseEvent => e.event === 'close' && e.id === id);

  test("relayed as written over egress-guard's own TLS connection, verified with the upstream CA: the answer and the echo come back, would-block, both ways counted", async () => {
    // Until 2026-12-03 (late) it was refused 400 in audit mode too: no TLS connection of its own upstream was built.
    const { port, connects } = servers.trusted;
    const client = await inspectedSocket('tunnel.test', port);
    const inner = 'CONNECT inner.test:443 HTTP/1.1\r\nHost: inner.test:443\r\n\r\nhello';
    client.write(inner);
    const answer = await readUntil(client, (text) => text.replace(/echo:/g, '').endsWith('\r\n\r\nhello'));
    client.end();
    const decision = decisionOf('inner.test:443');
    assert.deepEqual([decision?.reason, decision?.decision, decision?.host, decision?.ip, decision?.port], ['ambiguous-host', 'would-block', 'inner.test', '127.0.0.1', port]);
    assert.ok(answer.text.startsWith('HTTP/1.1 200 Connection Established\r\n\r\n'), JSON.stringify(answer.text));
    assert.equal(answer.text.replace(/echo:/g, ''), 'HTTP/1.1 200 Connection Established\r\n\r\nhello');
    // The server got the CONNECT as the client wrote it, and the bytes behind it.
    assert.deepEqual(connects, [{ url: 'inner.test:443', rawHeaders: ['Host', 'inner.test:443'], bytes: 'hello' }]);
    await waitFor('the CONNECT decision closed', () => closeOf(decision!.id) !== undefined);
    const close = closeOf(decision!.id)!;
    // The plaintext relayed, each way: the CONNECT and its bytes out, the server's answer and echo in.
    assert.deepEqual([close.bytes_out, close.bytes_in, close.error], [inner.length, answer.text.length, undefined], JSON.stringify(close));
  });

  test('an upstream certificate of a CA not trusted: the client is closed with no answer, nothing sent, the close says upstream-tls', async () => {
    const { port, connects } = servers.untrusted;
    const client = await inspectedSocket('untrusted.test', port);
    client.write('CONNECT inner-untrusted.test:443 HTTP/1.1\r\nHost: inner-untrusted.test:443\r\n\r\nhello');
    const answer = await readUntil(client, () => false);
    client.destroy();
    assert.deepEqual([answer.text, answer.closed], ['', true]);
    const decision = decisionOf('inner-untrusted.test:443');
    assert.deepEqual([decision?.reason, decision?.decision], ['ambiguous-host', 'would-block']);
    await waitFor('the CONNECT decision closed', () => closeOf(decision!.id) !== undefined);
    const close = closeOf(decision!.id)!;
    assert.deepEqual([close.error, close.status, close.bytes_out, close.bytes_in], ['upstream-tls', 502, 0, 0], JSON.stringify(close));
    assert.deepEqual(connects, []);
    assert.equal(servers.untrusted.handshakes, 0, 'the handshake with egress-guard did not complete on the server');
  });
});
