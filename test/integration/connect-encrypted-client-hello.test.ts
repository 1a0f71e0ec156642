import assert from 'node:assert/strict';
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startEgressGuard, type EgressGuardProcess, type LogLine } from '../helpers/egress-guard-process.js';
import { firstBytesOutcome, openTunnel } from '../helpers/raw-client.js';
import { clientHelloFor, clientHelloWithEch } from '../helpers/tls-client-hello.js';
import { waitFor } from '../helpers/wait-for.js';

/** An upstream on loopback that records every byte each connection sends it and answers the first ones with `ACK`. */
async function startRecordingUpstream() {
  const connections: { bytes: Buffer[]; closed: Promise<unknown> }[] = [];
  const server = net.createServer((socket) => {
    const bytes: Buffer[] = [];
    connections.push({ bytes, closed: once(socket, 'close') });
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      if (bytes.length === 0) socket.write('ACK');
      bytes.push(chunk);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, connections, port: (server.address() as AddressInfo).port };
}

type Upstream = Awaited<ReturnType<typeof startRecordingUpstream>>;

/**
 * For the tests of the enclosing describe: an upstream that records bytes, and egress-guard in `mode` (with `env`
 * added) allowing allowed.test, resolved to loopback. Both started before the tests and stopped after them.
 */
function guardInFrontOfRecordingUpstream(mode: 'block' | 'audit', env: Record<string, string> = {}): { guard: () => EgressGuardProcess; upstream: () => Upstream } {
  let guard: EgressGuardProcess;
  let upstream: Upstream;
  before(async () => {
    upstream = await startRecordingUpstream();
    guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1'], {
      EGRESS_MODE: mode,
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
      ...env,
    });
  });
  after(async () => {
    await guard.stop();
    upstream.server.close();
  });
  return { guard: () => guard, upstream: () => upstream };
}

type Running = ReturnType<typeof guardInFrontOfRecordingUpstream>;

/**
 * Send `hello` inside a CONNECT tunnel to the upstream: the outcome, every byte the upstream got on the tunnel's
 * connection (read once that connection closed: egress-guard closes it when the client's end closes), and the
 * CONNECT's own decision.
 */
async function helloThroughTunnel(running: Running, hello: Buffer): Promise<{ outcome: string; received: Buffer; connect: LogLine }> {
  const guard = running.guard();
  const upstream = running.upstream();
  const isConnect = (l: LogLine) => l.event === 'decision' && l.kind === 'connect' && l.port === upstream.port && l.decision === 'allowed';
  const connects = guard.events().filter(isConnect).length;
  const connections = upstream.connections.length;
  const tunnel = await openTunnel(guard.port, `allowed.test:${upstream.port}`);
  assert.equal(tunnel.status, 200);
  // egress-guard connected upstream before it answered 200; the upstream (this process) may hear of it a moment later.
  await waitFor("the tunnel's upstream connection", () => upstream.connections.length > connections);
  const outcome = await firstBytesOutcome(tunnel.socket, hello);
  const connection = upstream.connections[connections]!;
  await connection.closed;
  const connect = (await guard.waitForCount(isConnect, connects + 1))[connects]!;
  return { outcome, received: Buffer.concat(connection.bytes), connect };
}

describe('ECH inside a CONNECT tunnel, block mode, encrypted-client-hello: refuse (the default)', () => {
  const running = guardInFrontOfRecordingUpstream('block');

  test('a ClientHello whose outer SNI is the allowed host but which carries ECH is reset before a byte reaches upstream', async () => {
    const { outcome, received } = await helloThroughTunnel(running, await clientHelloWithEch('allowed.test'));
    assert.equal(outcome, 'ECONNRESET');
    assert.equal(received.length, 0, 'the upstream received nothing');
    const event = await running.guard().waitFor((l) => l.event === 'decision' && l.reason === 'encrypted-client-hello');
    assert.deepEqual(
      [event.kind, event.decision, event.host, event.sni, event.ip, event.port],
      ['connect', 'blocked', 'allowed.test', 'allowed.test', '127.0.0.1', running.upstream().port],
    );
    assert.match(String(event.message), /encrypted inner ClientHello \(ECH\) whose server name egress-guard cannot read/);
  });

  test('a ClientHello without ECH still goes through', async () => {
    const hello = await clientHelloFor('allowed.test');
    const { outcome, received } = await helloThroughTunnel(running, hello);
    assert.equal(outcome, 'answered');
    assert.deepEqual(received, hello);
  });
});

describe('ECH inside a CONNECT tunnel, audit mode', () => {
  const running = guardInFrontOfRecordingUpstream('audit');

  test('is relayed unchanged, and reported would-block as encrypted-client-hello', async () => {
    const hello = await clientHelloWithEch('allowed.test');
    const { outcome, received } = await helloThroughTunnel(running, hello);
    assert.equal(outcome, 'answered');
    assert.deepEqual(received, hello);
    const event = await running.guard().waitFor((l) => l.event === 'decision' && l.reason === 'encrypted-client-hello');
    assert.deepEqual([event.kind, event.decision, event.mode, event.host, event.sni], ['connect', 'would-block', 'audit', 'allowed.test', 'allowed.test']);
    // The tunnel went on as this decision's: its close event counts what was relayed.
    const close = await running.guard().waitFor((l) => l.event === 'close' && l.id === event.id);
    assert.equal(close.bytes_out, hello.length);
  });
});

describe('ECH inside a CONNECT tunnel, block mode, encrypted-client-hello: allow', () => {
  const running = guardInFrontOfRecordingUpstream('block', { EGRESS_ENCRYPTED_CLIENT_HELLO: 'allow' });

  test('is decided on the outer SNI alone and relayed, as before the setting', async () => {
    const hello = await clientHelloWithEch('allowed.test');
    const { outcome, received, connect } = await helloThroughTunnel(running, hello);
    assert.equal(outcome, 'answered');
    assert.deepEqual(received, hello);
    assert.equal(connect.decision, 'allowed');
    const close = await running.guard().waitFor((l) => l.event === 'close' && l.id === connect.id);
    assert.equal(close.bytes_out, hello.length);
    assert.ok(
      !running
        .guard()
        .events()
        .some((l) => l.reason === 'encrypted-client-hello'),
    );
  });
});
