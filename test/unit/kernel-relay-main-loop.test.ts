/**
 * The kernel relay's main loop (native/kernel_relay.c, "The main loop") at its edges: a relay moved to the thread
 * while it waited for a socket's writable edge keeps waiting for it there; what a full client did not take on the
 * main loop (recv/send, the rest kept) arrives whole and in order, also when the relay moves to the thread with that
 * rest still unsent; a held client's bytes and FIN, sent before release(), reach a full upstream in that order.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connectUpstreamInKernel } from '../../net/connect.js';
import { kernelRelayStats, kernelRelayUnavailable, useRelay } from '../../net/kernel-relay.js';
import { RELAY, splice, spliceKernelUpstream, type ClientGateOutcome, type SpliceResult } from '../../net/splice.js';
import { bounded, loopbackSockets, readAll, sha256Hex as sha } from '../helpers/loopback-sockets.js';
import { waitFor } from '../helpers/wait-for.js';

const loopback = loopbackSockets();
const { listen, connect, track } = loopback;
after(() => loopback.closeAll());

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A server whose one accepted socket keeps what it reads (paused at first when `paused`), and tells its FIN. */
async function keepingUpstream(paused: boolean): Promise<{ port: number; socket: () => net.Socket | undefined; got: () => Buffer; ended: Promise<void>; hasEnded: () => boolean }> {
  let accepted: net.Socket | undefined;
  let finished = false;
  let ended!: () => void;
  const chunks: Buffer[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    accepted = socket;
    if (paused) socket.pause();
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => {
      finished = true;
      ended();
    });
  });
  return {
    port: await listen(server),
    socket: () => accepted,
    got: () => Buffer.concat(chunks),
    ended: new Promise<void>((resolve) => (ended = resolve)),
    hasEnded: () => finished,
  };
}

/**
 * A proxy on loopback that relays each client to `upstreamPort`: `gated`, with an upstream the addon opens and the
 * client held until openGate() (spliceKernelUpstream, the CONNECT path); else with node's socket for the upstream
 * (splice). `result`: the relay's close.
 */
async function relayingProxy(upstreamPort: number, gated: boolean): Promise<{ port: number; result: Promise<SpliceResult>; openGate: () => void }> {
  let openGate!: (outcome: ClientGateOutcome) => void;
  const gate = new Promise<ClientGateOutcome>((resolve) => (openGate = resolve));
  let closed!: (r: SpliceResult) => void;
  const result = new Promise<SpliceResult>((resolve) => (closed = resolve));
  const proxy = net.createServer({ allowHalfOpen: true }, (client) => {
    if (gated) {
      void connectUpstreamInKernel('127.0.0.1', upstreamPort, 2000).then((upstream) =>
        spliceKernelUpstream(client, upstream, { idleTimeoutMs: 30_000, clientGate: gate, onClose: closed }),
      );
      return;
    }
    const upstream = track(net.connect(upstreamPort, '127.0.0.1'));
    upstream.once('connect', () => splice(client, upstream, { idleTimeoutMs: 30_000, onClose: closed }));
  });
  return { port: await listen(proxy), result, openGate: () => openGate(RELAY) };
}

describe('kernel relay: main loop to thread', () => {
  // Past what a paused loopback client and the relay's send buffer take, so that the main loop finds the client full.
  const threadAfter = 64 * 1024 * 1024;
  before(() => {
    useRelay('kernel', 0, threadAfter);
    assert.equal(kernelRelayUnavailable(), undefined, 'the kernel_relay addon is built (npm run install)');
  });
  after(() => useRelay('kernel'));

  it("a held relay (the client's first bytes not checked yet) that found the client full on the main loop and moved to the thread still gets the client's writable edge", async () => {
    // The server speaks first, to a client that does not read yet: 16 MiB in 64 KiB pieces, each relayed by its own
    // wake-up of the main loop (none fills ROUNDS), until the client is full (EPOLLOUT asked for in the main loop's
    // set). Then 8 MiB at once and the client reads: the relay moves to the thread, and finds the client full again
    // there. The gate stays open all along (the client is held).
    const pieces = Array.from({ length: 256 }, () => randomBytes(64 * 1024));
    const big = randomBytes(8 * 1024 * 1024);
    const all = Buffer.concat([...pieces, big]);
    const server = await keepingUpstream(false);
    const { port, result, openGate } = await relayingProxy(server.port, true);
    const before = kernelRelayStats().movedToThread;
    const client = await connect(port);
    client.pause();
    await waitFor('the relay to start', () => server.socket() !== undefined && kernelRelayStats().onMainLoop > 0, 5000);
    for (const piece of pieces) {
      server.socket()!.write(piece);
      await sleep(2);
    }
    assert.equal(kernelRelayStats().movedToThread, before, 'still on the main loop');
    server.socket()!.end(big);
    const chunks: Buffer[] = [];
    let received = 0;
    client.on('data', (c: Buffer) => {
      chunks.push(c);
      received += c.length;
    });
    client.resume();
    await waitFor('every byte of the server', () => received === all.length, 10_000).catch((err: Error) => {
      throw new Error(`${err.message}: ${received} of ${all.length} bytes, ${JSON.stringify(kernelRelayStats())}`);
    });
    assert.equal(sha(Buffer.concat(chunks)), sha(all));
    assert.equal(kernelRelayStats().movedToThread, before + 1, 'moved to the thread');
    openGate();
    client.end();
    const r = await bounded(result, 10_000);
    assert.deepEqual([r.bytesIn, r.bytesOut, r.error], [all.length, 0, undefined]);
  });

  it('a client that stops reading while its relay is on the main loop gets every byte in order once it reads again; the counts are exact', async () => {
    // 8 MiB in 64 KiB pieces to a paused client: each piece one wake-up of the main loop, until the client is full
    // (~4 MiB here: its receive queue and the relay's send buffer) and the main loop keeps what it could not send (the
    // direction's head) and waits for the client's writable edge. The pieces are 10 ms apart: a wake-up that finds
    // several pieces moves the relay to the thread (by design), which, 2 ms apart, it did on a machine whose loopback
    // sockets took more before they were full (tcp_rmem max 32 MiB).
    const pieces = Array.from({ length: 128 }, () => randomBytes(64 * 1024));
    const down = Buffer.concat(pieces);
    const server = await keepingUpstream(false);
    const { port, result } = await relayingProxy(server.port, false);
    const before = kernelRelayStats().movedToThread;
    const client = await connect(port);
    client.pause();
    await waitFor('the relay to start on the main loop', () => server.socket() !== undefined && kernelRelayStats().onMainLoop > 0, 5000);
    client.end('go');
    for (const piece of pieces) {
      server.socket()!.write(piece);
      await sleep(10);
    }
    server.socket()!.end();
    assert.equal(kernelRelayStats().movedToThread, before, 'still on the main loop');
    // The client is full: the relay's socket to it holds bytes it has not sent (ss: Send-Q of the proxy's accepted
    // socket, in CLOSE-WAIT once the client's FIN came).
    const queued = execFileSync('ss', ['-Htn', `( sport = :${port} )`], { encoding: 'utf8' });
    assert.ok(Number(queued.trim().split(/\s+/)[2]) > 0, `the client is full (ss: ${queued.trim()})`);
    const received = readAll(client);
    client.resume();
    const got = await bounded(received, 10_000);
    assert.equal(got.length, down.length);
    assert.equal(sha(got), sha(down));
    const r = await bounded(result, 10_000);
    assert.deepEqual([r.bytesIn, r.bytesOut, r.error], [down.length, 2, undefined]);
  });
  it("what the main loop kept for a full client (the direction's head) is written first once the other direction's bytes move the relay to the thread; the counts are exact", async () => {
    // 16 MiB down to a paused client in 32 KiB pieces: the main loop keeps a head for it. Then 13 MiB up: past
    // relay-thread-after (24 MiB both ways together) the relay moves to the thread with that head still unsent.
    useRelay('kernel', 0, 24 * 1024 * 1024);
    try {
      const down = Array.from({ length: 512 }, () => randomBytes(32 * 1024 - 7));
      const up = Array.from({ length: 400 }, () => randomBytes(32 * 1024 + 3));
      const server = await keepingUpstream(false);
      const { port, result } = await relayingProxy(server.port, false);
      const before = kernelRelayStats().movedToThread;
      const client = await connect(port);
      client.pause();
      await waitFor('the relay to start on the main loop', () => server.socket() !== undefined && kernelRelayStats().onMainLoop > 0, 5000);
      for (const piece of down) {
        server.socket()!.write(piece);
        await sleep(1);
      }
      server.socket()!.end();
      await sleep(50);
      assert.equal(kernelRelayStats().movedToThread, before, 'still on the main loop');
      for (const [i, piece] of up.entries()) {
        client.write(piece);
        if (i % 8 === 0) await sleep(1);
      }
      client.end();
      await waitFor('the relay to move to the thread', () => kernelRelayStats().movedToThread === before + 1, 10_000);
      const received = readAll(client);
      client.resume();
      const got = await bounded(received, 10_000);
      assert.equal(got.length, Buffer.concat(down).length);
      assert.equal(sha(got), sha(Buffer.concat(down)));
      await bounded(server.ended, 10_000);
      assert.equal(sha(server.got()), sha(Buffer.concat(up)));
      const r = await bounded(result, 10_000);
      assert.deepEqual([r.bytesIn, r.bytesOut, r.error], [Buffer.concat(down).length, Buffer.concat(up).length, undefined]);
    } finally {
      useRelay('kernel', 0, threadAfter);
    }
  });

  it('a held relay whose client sent all its bytes and its FIN before release(): a paused upstream gets every byte (what node read first, then the kept heads), then the FIN; the counts are exact', async () => {
    const first = randomBytes(8 * 1024 * 1024);
    const server = await keepingUpstream(true);
    const { port, result, openGate } = await relayingProxy(server.port, true);
    const client = await connect(port);
    await waitFor('the relay to start on the main loop', () => server.socket() !== undefined && kernelRelayStats().onMainLoop > 0, 5000);
    // Sent while the gate is shut: what node read of it is release()'s head, the rest waits in the socket with the FIN.
    client.end(first);
    await sleep(300);
    openGate();
    await sleep(200);
    assert.equal(server.hasEnded(), false, 'no FIN before the head is written');
    server.socket()!.resume();
    await bounded(server.ended, 10_000);
    const got = server.got();
    assert.equal(got.length, first.length);
    assert.equal(sha(got), sha(first));
    server.socket()!.end();
    const r = await bounded(result, 10_000);
    assert.deepEqual([r.bytesIn, r.bytesOut, r.error], [0, first.length, undefined]);
  });
});
