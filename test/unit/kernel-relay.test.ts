/**
 * The kernel relay of decided tunnels (net/kernel-relay.ts, native/kernel_relay.c) on real loopback sockets:
 * bytes and counts, integrity of a large transfer, timeouts, resets, the drain's destroy, bytes node had read
 * before the hand-over, and idle relays holding no pipes. Half-close is in net-splice.test.ts (both relays).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../config/load-config.js';
import { connectUpstream } from '../../net/connect.js';
import { kernelRelayStats, kernelRelayUnavailable, RELAY_THREAD_AFTER_DEFAULT, useRelay } from '../../net/kernel-relay.js';
import { splice, type SpliceOptions, type SpliceResult } from '../../net/splice.js';
import { bounded, loopbackSockets, readAll, sha256Hex as sha } from '../helpers/loopback-sockets.js';
import { waitFor } from '../helpers/wait-for.js';

const loopback = loopbackSockets();
const { track, listen, connect } = loopback;
after(() => loopback.closeAll());

/** A relay on loopback: each accepted client goes through `prepare`, then is spliced to 127.0.0.1:upstreamPort. */
async function relay(upstreamPort: number, options: Partial<SpliceOptions> = {}, prepare?: (client: net.Socket, upstream: net.Socket) => Promise<unknown>) {
  const results: SpliceResult[] = [];
  const accepted: net.Socket[] = [];
  const waiting: Array<(r: SpliceResult) => void> = [];
  const server = net.createServer({ allowHalfOpen: true }, async (client) => {
    accepted.push(client);
    const upstream = track(await connectUpstream('127.0.0.1', upstreamPort, 2000));
    if (prepare) await prepare(client, upstream);
    splice(client, upstream, {
      idleTimeoutMs: 10_000,
      ...options,
      onClose: (result) => {
        results.push(result);
        waiting.shift()?.(result);
      },
    });
  });
  const port = await listen(server);
  const next = () => new Promise<SpliceResult>((resolve) => waiting.push(resolve));
  return { port, results, accepted, next: () => bounded(next()), bounded };
}

/** `size` random bytes each way through one relayed tunnel (the client and the server each send theirs and a FIN): both arrive intact, and the close counts exactly that, with no error. */
async function bothWaysIntact(size: number): Promise<void> {
  const down = randomBytes(size);
  const up = randomBytes(size);
  let upReceived: Promise<Buffer> | undefined;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    upReceived = readAll(socket);
    socket.end(down);
  });
  const r = await relay(await listen(server));
  const closed = r.next();
  const client = await connect(r.port);
  const downReceived = readAll(client);
  client.end(up);
  const got = await r.bounded(downReceived, 60_000);
  await waitFor('the server to get everything', () => upReceived !== undefined, 5000);
  const gotUp = await r.bounded(upReceived!, 60_000);
  assert.equal(got.length, size);
  assert.equal(sha(got), sha(down));
  assert.equal(gotUp.length, size);
  assert.equal(sha(gotUp), sha(up));
  const result = await r.bounded(closed, 60_000);
  assert.deepEqual([result.bytesIn, result.bytesOut, result.error], [size, size, undefined]);
}

// Both places a native relay moves bytes: node's own event loop for a tunnel's first relay-thread-after bytes (the
// default), and the relay thread (relay-thread-after 0: every tunnel; otherwise bulk, after its first bytes).
for (const threadAfter of [RELAY_THREAD_AFTER_DEFAULT, 0])
  describe(`kernel relay (relay-thread-after ${threadAfter})`, () => {
    before(() => {
      useRelay('kernel', 0, threadAfter);
      assert.equal(kernelRelayUnavailable(), undefined, 'the kernel_relay addon is built (npm run install)');
    });
    after(() => useRelay('kernel'));

    it(threadAfter > 0 ? 'a small tunnel is relayed on the main loop, never by the thread' : 'every tunnel is relayed by the thread', async () => {
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.on('data', (c: Buffer) => socket.write(c));
        socket.on('end', () => socket.end());
      });
      const r = await relay(await listen(server));
      const before = kernelRelayStats();
      const closed = r.next();
      const client = await connect(r.port);
      const reply = readAll(client);
      client.write('ping');
      await waitFor('the relay to be native', () => kernelRelayStats().relays > before.relays, 5000);
      assert.equal(kernelRelayStats().onMainLoop, before.onMainLoop + (threadAfter > 0 ? 1 : 0));
      client.end('pong');
      assert.equal((await r.bounded(reply)).toString(), 'pingpong');
      const result = await closed;
      assert.deepEqual([result.bytesIn, result.bytesOut, result.error], [8, 8, undefined]);
      const after = kernelRelayStats();
      assert.deepEqual([after.onMainLoop, after.movedToThread], [before.onMainLoop, before.movedToThread], 'not moved to the thread');
    });

    it(threadAfter > 0 ? 'a tunnel past relay-thread-after moves to the thread mid-stream: 4 MiB each way intact, counts exact' : 'a bulk tunnel stays on the thread', async () => {
      const before = kernelRelayStats().movedToThread;
      await bothWaysIntact(4 * 1024 * 1024);
      assert.equal(kernelRelayStats().movedToThread, before + (threadAfter > 0 ? 1 : 0));
    });

    it('relays bytes both ways natively and counts them; one close, no error', async () => {
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.on('data', (c: Buffer) => socket.write(Buffer.concat([Buffer.from('echo:'), c])));
        socket.on('end', () => socket.end());
      });
      const r = await relay(await listen(server));
      const closed = r.next();
      const client = await connect(r.port);
      const reply = readAll(client);
      client.write('ping');
      await waitFor('the relay to be native', () => kernelRelayStats().relays > 0, 5000);
      await new Promise((resolve) => setTimeout(resolve, 50));
      client.end('pong');
      const text = (await r.bounded(reply)).toString();
      assert.ok(text === 'echo:pingecho:pong' || text === 'echo:pingpong', text);
      const result = await closed;
      assert.equal(result.bytesOut, 8);
      assert.equal(result.bytesIn, text.length);
      assert.equal(result.error, undefined);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(r.results.length, 1);
      assert.equal(kernelRelayStats().relays, 0);
    });

    it('64 MiB each way arrive intact, the counts are exact', async () => {
      await bothWaysIntact(64 * 1024 * 1024);
    });

    it('bytes node had read before the hand-over are sent first, and counted', async () => {
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.write('banner\n');
        const chunks: Buffer[] = [];
        socket.on('data', (c: Buffer) => chunks.push(c));
        socket.on('end', () => socket.end(`got ${Buffer.concat(chunks).toString()}`));
      });
      const r = await relay(await listen(server), {}, async (client, upstream) => {
        // Both sockets' first bytes sit in node's buffers when splice() is called.
        await waitFor('buffered bytes', () => client.readableLength >= 5 && upstream.readableLength >= 7, 5000);
      });
      const closed = r.next();
      const client = await connect(r.port);
      const reply = readAll(client);
      client.write('early');
      await waitFor('the relay to be native', () => kernelRelayStats().relays > 0, 5000);
      client.end('+late');
      assert.equal((await r.bounded(reply)).toString(), 'banner\ngot early+late');
      const result = await closed;
      assert.equal(result.bytesOut, 'early+late'.length);
      // As with the JS relay, bytesIn starts at what node had read from upstream when splice() was called.
      assert.equal(result.bytesIn, 'got early+late'.length);
      assert.equal(result.error, undefined);
    });

    it('handed over mid-stream (after 256 KiB relayed in JavaScript): 16 MiB each way intact, counts exact', async () => {
      useRelay('kernel', 256 * 1024, threadAfter);
      try {
        const started = kernelRelayStats().started;
        await bothWaysIntact(16 * 1024 * 1024);
        assert.equal(kernelRelayStats().started, started + 1, 'handed over');
      } finally {
        useRelay('kernel', 0, threadAfter);
      }
    });

    it('an idle tunnel is closed after idleTimeoutMs with idle-timeout; the client gets its FIN', async () => {
      const server = net.createServer({ allowHalfOpen: true }, () => undefined);
      const r = await relay(await listen(server), { idleTimeoutMs: 300 });
      const closed = r.next();
      const client = await connect(r.port);
      client.write('x');
      const clientGotFin = new Promise((resolve) => client.once('end', resolve));
      client.resume();
      const result = await closed;
      assert.equal(result.error, 'idle-timeout');
      assert.equal(result.bytesOut, 1);
      await r.bounded(clientGotFin);
    });

    for (const side of ['client', 'upstream'] as const) {
      it(`a reset from the ${side} ends the relay with ${side}-ECONNRESET`, async () => {
        let serverSocket: net.Socket | undefined;
        const server = net.createServer({ allowHalfOpen: true }, (socket) => {
          serverSocket = socket;
          socket.write('hi');
        });
        const r = await relay(await listen(server));
        const closed = r.next();
        const client = await connect(r.port);
        await new Promise((resolve) => client.once('data', resolve));
        await waitFor('the relay to be native', () => kernelRelayStats().relays > 0, 5000);
        (side === 'client' ? client : serverSocket!).resetAndDestroy();
        const result = await closed;
        assert.equal(result.error, `${side}-ECONNRESET`);
        assert.equal(result.bytesIn, 2);
      });
    }

    it('destroying a socket mid-transfer (the drain at shutdown) ends the relay once, with a close event; fds reused at once are not touched', async () => {
      const size = 32 * 1024 * 1024;
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.on('data', (c: Buffer) => socket.write(c));
        socket.on('end', () => socket.end());
      });
      const r = await relay(await listen(server));
      const closed = r.next();
      const client = await connect(r.port);
      client.on('data', () => undefined);
      client.write(randomBytes(size));
      await waitFor('the relay to be native', () => kernelRelayStats().relays > 0, 5000);
      const accepted = r.accepted.at(-1)!;
      const closeEvent = new Promise((resolve) => accepted.once('close', resolve));
      accepted.destroy();
      const result = await closed;
      await r.bounded(closeEvent);
      assert.ok(result.bytesOut < size, 'ended mid-transfer');
      assert.equal(kernelRelayStats().relays, 0);
      // The freed fd numbers go to the next connections at once: a stale native use would corrupt this transfer.
      const second = r.next();
      const payload = randomBytes(4 * 1024 * 1024);
      const again = await connect(r.port);
      const echoed = new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        let length = 0;
        again.on('data', (c: Buffer) => {
          chunks.push(c);
          length += c.length;
          if (length >= payload.length) resolve(Buffer.concat(chunks));
        });
      });
      again.write(payload);
      assert.equal(sha(await r.bounded(echoed, 30_000)), sha(payload));
      again.end();
      const secondResult = await second;
      assert.equal(secondResult.error, undefined);
      assert.equal(secondResult.bytesOut, payload.length);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(r.results.length, 2);
    });

    it('idle relays hold no pipes: 1000 tunnels cost their 4 sockets each and nothing more', async () => {
      // Four descriptors per tunnel in this one process: fewer tunnels where the limit would not allow them.
      const openFiles = Number(/^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? 1024);
      const count = Math.min(1000, Math.floor((openFiles - 200) / 4));
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.resume();
        socket.on('end', () => socket.end());
      });
      const r = await relay(await listen(server), { idleTimeoutMs: 60_000 });
      const fds = () => readdirSync('/proc/self/fd').length;
      const before = fds();
      const clients: net.Socket[] = [];
      for (let i = 0; i < count; i++) clients.push(await connect(r.port));
      await waitFor(`${count} native relays`, () => kernelRelayStats().relays === count, 20_000);
      const stats = kernelRelayStats();
      // client, accepted, upstream, the server's side of upstream; the pool may keep its few spare pipes.
      assert.ok(fds() - before <= count * 4 + 2 * stats.sparePipes, `${fds() - before} fds for ${count} relays`);
      assert.equal(stats.pipes, stats.sparePipes, 'no relay holds a pipe');
      const allClosed = Promise.all(clients.map((c) => new Promise((resolve) => c.once('close', resolve))));
      for (const c of clients) c.destroy();
      await r.bounded(allClosed, 20_000);
      await waitFor('every relay to end', () => r.results.length === count && kernelRelayStats().relays === 0, 20_000);
    });
  });

describe('relay settings', () => {
  const load = (env: Record<string, string>) => loadConfig({ flags: new Map(), env, readFile: () => '' });
  it('relay defaults to kernel, handed over at once; EGRESS_RELAY=js and a byte count are taken; anything else is refused', () => {
    assert.deepEqual([load({}).relay, load({}).relayHandOverAfter], ['kernel', 0]);
    assert.deepEqual([load({ EGRESS_RELAY: 'js' }).relay, load({ EGRESS_RELAY_HAND_OVER_AFTER: '65536' }).relayHandOverAfter], ['js', 65536]);
    assert.throws(() => load({ EGRESS_RELAY: 'splice' }), ConfigError);
    assert.throws(() => load({ EGRESS_RELAY_HAND_OVER_AFTER: '-1' }), ConfigError);
  });
  it('relay-thread-after defaults to 64 KiB; a byte count (0 too) is taken; anything else is refused', () => {
    assert.equal(load({}).relayThreadAfter, RELAY_THREAD_AFTER_DEFAULT);
    assert.deepEqual([load({ EGRESS_RELAY_THREAD_AFTER: '0' }).relayThreadAfter, load({ EGRESS_RELAY_THREAD_AFTER: '1048576' }).relayThreadAfter], [0, 1048576]);
    assert.throws(() => load({ EGRESS_RELAY_THREAD_AFTER: '64k' }), ConfigError);
  });
});
