/**
 * The body pump (net/kernel-relay.ts's startBodyPump, kernel_relay.c's pump()) when upstream resets once the whole
 * body has reached the proxy: while the pump's pipe still holds bytes for a client that is slow to take them (the
 * body's last byte read, or its last bytes still in upstream's socket, which the pump does not read while its pipe
 * is full), or before the pump began. The client is owed those bytes: the pump ends `done` once it has them all, with
 * the reset's errno (so that the caller does not pool the connection). Before, the reset ended the pump at once and
 * the answer was cut, or (the reset before the pump began) the pump ended `done` naming nothing, and the reset
 * connection went back to the pool.
 *
 * The client's end is a Unix socket: its buffer is small and fixed (no TCP autotuning), so a client that does not
 * read leaves the body's last bytes in the pump's pipe, and the race is the same on every run (see PIECE and FILL).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { holdReading, kernelRelayStats, kernelRelayUnavailable, resumeReading, startBodyPump, useRelay, writesFlushed, type BodyPumpEnd } from '../../net/kernel-relay.js';
import { loopbackSockets, sha256Hex } from '../helpers/loopback-sockets.js';
import { tempDir } from '../helpers/temp-dir.js';
import { waitFor } from '../helpers/wait-for.js';

const loopback = loopbackSockets();
after(() => loopback.closeAll());

/**
 * Bodies of one loopback segment each (under its 64 KiB MSS: each arrives whole, and one splice reads it), pumped one
 * after another as a keep-alive connection's answers are, until one of them no longer fits in what is left of the
 * client's buffer: that pump has read its last byte, and its pipe keeps what the client has no room for.
 */
const PIECE = 60_000;
/** A Unix socket's buffer is about 220 KiB: the loop needs 4 or 5 pieces; more means something else is wrong. */
const MAX_PIECES = 40;
/** The body's last bytes, sent once the pump has read its piece (under a loopback segment: they arrive whole). */
const TAIL = 1000;
/** node's writes that fill the client's buffer: each under half of it, so the kernel takes each whole or not at all. */
const FILL = 16_384;

/** Recv-Q and Send-Q of every established TCP socket on loopback with `port` at either end (ss(8)). */
function queues(port: number): { recv: number; send: number }[] {
  const out = execFileSync('ss', ['-tnH', 'state', 'established', `( sport = :${port} or dport = :${port} )`], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const [recv, send] = line.trim().split(/\s+/);
      return { recv: Number(recv), send: Number(send) };
    });
}

/**
 * Whether the Unix socket listening at `path` can take no more from its accepted end (ss(8)'s skmem: what its writes
 * hold, t, has reached its send buffer, tb): a write to it now is refused whole.
 */
function unixFull(path: string): boolean {
  const out = execFileSync('ss', ['-xmH', 'src', path], { encoding: 'utf8' });
  const skmem = /\bt(\d+),tb(\d+)\b/.exec(out);
  assert.ok(skmem, `ss -xm shows the accepted end of ${path}: ${out}`);
  return Number(skmem[1]) >= Number(skmem[2]);
}

/** A loopback upstream (node's side held, as a pump's caller holds it) and a client on a Unix socket that reads nothing yet. */
async function setUp(): Promise<{ port: number; upstream: net.Socket; serverSide: net.Socket; path: string; accepted: net.Socket; client: net.Socket }> {
  useRelay('kernel');
  let serverSide: net.Socket | undefined;
  const server = net.createServer((socket) => {
    serverSide = socket;
  });
  const port = await loopback.listen(server);
  const upstream = await loopback.connect(port);
  holdReading(upstream);
  await waitFor('the server to accept', () => serverSide !== undefined, 5000);

  const dir = tempDir('pump-reset-');
  const path = join(dir, 'client.sock');
  let accepted: net.Socket | undefined;
  const unixServer = net.createServer((socket) => {
    accepted = loopback.track(socket);
  });
  await new Promise<void>((resolve) => unixServer.listen(path, resolve));
  after(() => unixServer.close());
  const client = loopback.track(net.connect(path));
  holdReading(client);
  await waitFor('the Unix socket to be accepted', () => accepted !== undefined, 5000);
  return { port, upstream, serverSide: serverSide!, path, accepted: accepted!, client };
}

/** Every byte written has left upstream's socket and the proxy's: the pump has read them. */
function allRead(port: number): boolean {
  const q = queues(port);
  return q.length === 2 && q.every(({ recv, send }) => recv === 0 && send === 0);
}

/** What `client` receives from now on (it reads once `start` is called). */
function collect(client: net.Socket): { start(): void; size(): number; got(): Buffer } {
  const received: Buffer[] = [];
  let size = 0;
  client.on('data', (chunk: Buffer) => {
    received.push(chunk);
    size += chunk.length;
  });
  return {
    start() {
      resumeReading(client);
      client.resume();
    },
    size: () => size,
    got: () => Buffer.concat(received),
  };
}

/** Upstream resets; the proxy's socket has taken the reset (it is no longer established). */
async function resetUpstream(serverSide: net.Socket, port: number): Promise<void> {
  serverSide.resetAndDestroy();
  await waitFor('the reset to reach the proxy', () => queues(port).length === 0, 5000);
  // The relay thread sees the reset at once; give it time to end the pump, as it did before the fix.
  await new Promise((resolve) => setTimeout(resolve, 300));
}

describe('body pump: upstream resets after the last byte', { skip: kernelRelayUnavailable() }, () => {
  test('the client still gets every byte; the pump ends done, naming the reset', async () => {
    const { port, upstream, serverSide, accepted, client } = await setUp();
    const sent: Buffer[] = [];
    let end: BodyPumpEnd | undefined;
    for (;;) {
      assert.ok(sent.length < MAX_PIECES, `${MAX_PIECES} pieces fit in the client's buffer`);
      const piece = randomBytes(PIECE);
      end = undefined;
      assert.ok(
        startBodyPump(upstream, accepted, PIECE, 10_000, (e) => (end = e)),
        'the addon starts a pump',
      );
      serverSide.write(piece);
      sent.push(piece);
      await waitFor('the pump to read the piece', () => allRead(port), 10_000);
      // stats() takes the relay's lock: the thread has finished the work that read the piece. A pump still open has
      // a client that took less than the piece, and the rest in its pipe.
      if (kernelRelayStats().relays > 0) break;
      await waitFor('the pump to end', () => end !== undefined, 10_000);
      assert.deepEqual(end, { outcome: 'done', bytes: PIECE });
    }
    const body = Buffer.concat(sent);
    await resetUpstream(serverSide, port);

    const reader = collect(client);
    reader.start();
    await waitFor('the pump to end', () => end !== undefined, 10_000);
    assert.deepEqual(end, { outcome: 'done', bytes: PIECE, code: 'ECONNRESET' });
    await waitFor('the client to get every byte', () => reader.size() >= body.length, 10_000);
    const got = reader.got();
    assert.equal(got.length, body.length);
    assert.equal(sha256Hex(got), sha256Hex(body));
  });

  test("a reset while the body's end still waits in the proxy's socket (the pipe full for a slow client): every byte, done naming it", async () => {
    const { port, upstream, serverSide, path, accepted, client } = await setUp();
    // The client's buffer filled by node's own writes, one small enough to be taken whole each, until it takes no
    // more: the pump's first write to it is refused, its piece stays in the pipe, and the pump reads nothing more.
    const sent: Buffer[] = [];
    while (!unixFull(path)) {
      assert.ok(sent.length < MAX_PIECES * 4, "the client's buffer fills");
      const chunk = randomBytes(FILL);
      accepted.write(chunk);
      sent.push(chunk);
      await waitFor('node to write the chunk', () => writesFlushed(accepted), 5000);
    }
    let end: BodyPumpEnd | undefined;
    assert.ok(
      startBodyPump(upstream, accepted, PIECE + TAIL, 10_000, (e) => (end = e)),
      'the addon starts a pump',
    );
    const piece = randomBytes(PIECE);
    serverSide.write(piece);
    sent.push(piece);
    await waitFor('the pump to read the piece', () => allRead(port), 10_000);
    // The body's last bytes, whole in the proxy's socket: the pump does not read them while its pipe holds the piece.
    const tail = randomBytes(TAIL);
    serverSide.write(tail);
    sent.push(tail);
    await waitFor("the tail to wait in the proxy's socket", () => queues(port).some(({ recv }) => recv === TAIL), 10_000);
    await resetUpstream(serverSide, port);

    const reader = collect(client);
    reader.start();
    await waitFor('the pump to end', () => end !== undefined, 10_000);
    assert.deepEqual(end, { outcome: 'done', bytes: PIECE + TAIL, code: 'ECONNRESET' });
    const body = Buffer.concat(sent);
    await waitFor('the client to get every byte', () => reader.size() >= body.length, 10_000);
    const got = reader.got();
    assert.equal(got.length, body.length);
    assert.equal(sha256Hex(got), sha256Hex(body));
  });

  test('a reset that came right behind the body, before the pump began: done naming it (the connection is not pooled)', async () => {
    const { port, upstream, serverSide, accepted, client } = await setUp();
    const reader = collect(client);
    reader.start();
    const body = randomBytes(PIECE);
    serverSide.write(body);
    await waitFor('the body to reach the proxy', () => queues(port).some(({ recv }) => recv === PIECE), 10_000);
    await resetUpstream(serverSide, port);

    let end: BodyPumpEnd | undefined;
    assert.ok(
      startBodyPump(upstream, accepted, PIECE, 10_000, (e) => (end = e)),
      'the addon starts a pump',
    );
    await waitFor('the pump to end', () => end !== undefined, 10_000);
    assert.deepEqual(end, { outcome: 'done', bytes: PIECE, code: 'ECONNRESET' });
    await waitFor('the client to get every byte', () => reader.size() >= body.length, 10_000);
    assert.equal(sha256Hex(reader.got()), sha256Hex(body));
  });
});
