/**
 * The HTTP/2 preface after HTTP/1.1 requests in a plain CONNECT tunnel (audit mode), relayed from the preface on over a
 * connection of its own: with a FIN right behind it (the preface put back before the socket's 'end'), and behind
 * requests whose answers are still due (handed over once they are out), with what the client sends meanwhile (kept, not
 * read and dropped by the request reader, whose reading resumed when a queued answer drained). In block mode it is
 * refused without cutting the answers due before it (a reset discarded what the client had not read of them yet).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { startEgressGuard, type EgressGuardProcess, type LogLine } from '../helpers/egress-guard-process.js';
import { openTunnel } from '../helpers/raw-client.js';

/** The HTTP/2 client connection preface (RFC 9113 3.4) and an empty SETTINGS frame. */
const H2C_PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00';
/** An HTTP/2 PING frame, sent after the preface in a write of its own. */
const PING = '\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong';
/** Larger than what the kernel's socket buffers on loopback hold: the proxy's client socket needs a drain. */
const BIG = 64 * 1024 * 1024;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A server answering `GET /big` with BIG bytes and `GET /small` with `ok` (kept alive), and echoing what starts with
 * `PRI` (`echo:` and the bytes) on a connection whose bytes `h2` records; `bigSocket` is the last /big answer's.
 */
async function startServer() {
  const state = { h2: [] as string[], h2Ended: [] as boolean[], bigSocket: undefined as net.Socket | undefined };
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    let pending = '';
    let h2: number | undefined;
    socket.on('error', () => undefined);
    // A FIN from the client: recorded for an HTTP/2 connection, answered with ours.
    socket.on('end', () => {
      if (h2 !== undefined) state.h2Ended[h2] = true;
      socket.end();
    });
    socket.on('data', (chunk: Buffer) => {
      if (h2 !== undefined) {
        state.h2[h2] += chunk.toString('latin1');
        socket.write(Buffer.concat([Buffer.from('echo:'), chunk]));
        return;
      }
      pending += chunk.toString('latin1');
      for (;;) {
        if (pending.startsWith('PRI')) {
          h2 = state.h2.push(pending) - 1;
          state.h2Ended[h2] = false;
          socket.write(`echo:${pending}`, 'latin1');
          return;
        }
        const end = pending.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        if (head.startsWith('GET /big ')) {
          state.bigSocket = socket;
          socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BIG}\r\n\r\n`);
          socket.write(Buffer.alloc(BIG, 0x61));
        } else {
          socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { state, port: (server.address() as net.AddressInfo).port, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

const isH2Decision = (port: number) => (l: LogLine) => l.event === 'decision' && l.port === port && /where an HTTP\/1\.1 request was due/.test(String(l.message));
const h2Decisions = (guard: EgressGuardProcess, port: number) => guard.lines.filter(isH2Decision(port));
/** The decision on the preface after the `seen` ones of earlier tests. */
async function h2Decision(guard: EgressGuardProcess, port: number, seen: number): Promise<LogLine> {
  return (await guard.waitForCount(isH2Decision(port), seen + 1))[seen]!;
}

/** startServer() and egress-guard in `mode`, started before the suite's tests and stopped after them. */
function withGuard(mode: 'audit' | 'block'): { guard: EgressGuardProcess; server: Awaited<ReturnType<typeof startServer>> } {
  const ctx = {} as ReturnType<typeof withGuard>;
  before(async () => {
    ctx.server = await startServer();
    ctx.guard = await startEgressGuard(['--resolve', 'allowed.test=127.0.0.1'], {
      EGRESS_MODE: mode,
      EGRESS_ALLOWED_ENDPOINTS: 'allowed.test:*',
      EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    });
  });
  after(async () => {
    await ctx.guard?.stop();
    ctx.server?.state.bigSocket?.destroy();
    await ctx.server?.close();
  });
  return ctx;
}

describe('audit mode: HTTP/2 after HTTP/1.1 requests whose answers are still due', () => {
  const ctx = withGuard('audit');

  test('the preface sent with a FIN (after an answered request) is relayed, FIN included', { timeout: 30_000 }, async () => {
    ctx.server.state.h2.length = 0;
    ctx.server.state.h2Ended.length = 0;
    const seen = h2Decisions(ctx.guard, ctx.server.port).length;
    const tunnel = await openTunnel(ctx.guard.port, `allowed.test:${ctx.server.port}`);
    assert.equal(tunnel.status, 200);
    const socket = tunnel.socket;
    socket.on('error', () => undefined);
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.write(`GET /small HTTP/1.1\r\nHost: allowed.test:${ctx.server.port}\r\n\r\n`);
    for (let i = 0; i < 100 && !received.endsWith('ok'); i++) await sleep(50);
    assert.match(received, /^HTTP\/1\.1 200 /);
    socket.end(H2C_PREFACE, 'latin1');
    for (let i = 0; i < 100 && !received.includes('echo:'); i++) await sleep(50);
    socket.destroy();
    const decision = await h2Decision(ctx.guard, ctx.server.port, seen);
    assert.equal(decision.decision, 'would-block');
    const close = await ctx.guard.waitFor((l) => l.event === 'close' && l.id === decision.id, 10_000);
    assert.deepEqual(ctx.server.state.h2, [H2C_PREFACE], `the preface went upstream (close: ${JSON.stringify(close)})`);
    assert.deepEqual(ctx.server.state.h2Ended, [true], 'and the FIN after it');
    assert.equal(close.bytes_out, H2C_PREFACE.length);
    assert.equal(close.error, undefined);
  });

  test('what the client sends after the preface while a queued answer drains is relayed with it', { timeout: 60_000 }, async () => {
    const seen = h2Decisions(ctx.guard, ctx.server.port).length;
    const tunnel = await openTunnel(ctx.guard.port, `allowed.test:${ctx.server.port}`);
    assert.equal(tunnel.status, 200);
    const socket = tunnel.socket;
    socket.on('error', () => undefined);
    let received = 0;
    let tail = '';
    let gotHead!: () => void;
    const headSeen = new Promise<void>((resolve) => (gotHead = resolve));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      tail = (tail + chunk.toString('latin1')).slice(-4096);
      if (received > 0) gotHead();
    });
    socket.write(`GET /big HTTP/1.1\r\nHost: allowed.test:${ctx.server.port}\r\n\r\n`);
    await headSeen;
    socket.pause();
    // The proxy stops reading the big answer once its client socket is full: the server's unsent bytes stop shrinking.
    let last = -1;
    for (let i = 0; i < 100; i++) {
      await sleep(100);
      const left = ctx.server.state.bigSocket?.writableLength ?? 0;
      if (left > 0 && left === last) break;
      last = left;
    }
    // A request whose answer queues behind the big one (the reader stops reading for it), and the preface behind that.
    socket.write(`GET /small HTTP/1.1\r\nHost: allowed.test:${ctx.server.port}\r\n\r\n${H2C_PREFACE}`, 'latin1');
    await sleep(300);
    socket.write(PING, 'latin1');
    await sleep(300);
    socket.resume();
    for (let i = 0; i < 200 && !tail.includes('pingpong'); i++) await sleep(50);
    socket.destroy();
    const decision = await h2Decision(ctx.guard, ctx.server.port, seen);
    assert.equal(decision.decision, 'would-block');
    assert.deepEqual(ctx.server.state.h2.slice(-1), [H2C_PREFACE + PING], 'the preface and the frame after it went upstream, whole');
    const close = await ctx.guard.waitFor((l) => l.event === 'close' && l.id === decision.id, 10_000);
    assert.equal(close.bytes_out, H2C_PREFACE.length + PING.length);
  });
});

describe('block mode: HTTP/2 after HTTP/1.1 requests, their answers still going out', () => {
  const ctx = withGuard('block');

  test('the preface pipelined behind an allowed request is refused, and that request still gets its whole answer', { timeout: 60_000 }, async () => {
    const seen = h2Decisions(ctx.guard, ctx.server.port).length;
    const tunnel = await openTunnel(ctx.guard.port, `allowed.test:${ctx.server.port}`);
    assert.equal(tunnel.status, 200);
    const socket = tunnel.socket;
    let received = 0;
    let ended = '';
    // A client that reads more slowly than the proxy writes: its last bytes are still in the proxy's send queue when
    // the answer is out on the proxy's side.
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      socket.pause();
      setTimeout(() => socket.resume(), 2);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => (ended ||= err.code ?? 'error'));
    socket.on('close', () => (ended ||= 'close'));
    socket.write(`GET /big HTTP/1.1\r\nHost: allowed.test:${ctx.server.port}\r\n\r\n${H2C_PREFACE}`, 'latin1');
    const head = `HTTP/1.1 200 OK\r\nContent-Length: ${BIG}\r\n`.length;
    for (let i = 0; i < 600 && !ended; i++) await sleep(50);
    socket.destroy();
    const decision = await h2Decision(ctx.guard, ctx.server.port, seen);
    assert.equal(decision.decision, 'blocked');
    assert.deepEqual(ctx.server.state.h2, [], 'nothing of it reached the server');
    assert.ok(received >= head + BIG, `the answer came whole before the connection ended (${received} bytes, ${BIG} of body; ${ended})`);
  });
});
