import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { kernelRelayStats, kernelRelayUnavailable, useRelay } from '../../net/kernel-relay.js';
import { splice, type SpliceResult } from '../../net/splice.js';

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];
after(() => {
  for (const s of sockets) s.destroy();
  for (const s of servers) s.close();
  useRelay('kernel');
});

function listen(server: net.Server): Promise<number> {
  servers.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A proxy on loopback: each client it accepts gets its own connection to 127.0.0.1:upstreamPort, and `connected(client, upstream)` once that is up. */
function proxyTo(upstreamPort: number, connected: (client: net.Socket, upstream: net.Socket) => unknown): Promise<number> {
  return listen(
    net.createServer({ allowHalfOpen: true }, (client) => {
      sockets.push(client);
      const upstream = net.connect({ port: upstreamPort, host: '127.0.0.1', allowHalfOpen: true });
      sockets.push(upstream);
      upstream.on('connect', () => void connected(client, upstream));
    }),
  );
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`timed out: ${what}`)))]);
}

for (const mode of ['kernel', 'js'] as const)
  describe(`relay ${mode}: hand-over edge cases`, { skip: mode === 'kernel' && kernelRelayUnavailable() }, () => {
    it('a hand-over that falls back to the JS relay (the server half-closed while node still had bytes to write) still relays the client bytes', async () => {
      useRelay(mode);
      // The server sends a banner and its FIN at once, then waits for the client's bytes.
      let gotHello!: () => void;
      const hello = new Promise<void>((resolve) => (gotHello = resolve));
      const upstreamPort = await listen(
        net.createServer({ allowHalfOpen: true }, (socket) => {
          sockets.push(socket);
          socket.end('banner');
          let text = '';
          socket.on('data', (c: Buffer) => {
            text += c;
            if (text.includes('hello')) gotHello();
          });
        }),
      );
      let closed!: (r: SpliceResult) => void;
      const result = new Promise<SpliceResult>((resolve) => (closed = resolve));
      const proxyPort = await proxyTo(upstreamPort, async (client, upstream) => {
        // node reads the banner and the FIN (not yet delivered), and has bytes queued for a client that does not read yet.
        client.write(Buffer.alloc(8 << 20, 1));
        await sleep(100);
        splice(client, upstream, { idleTimeoutMs: 10_000, onClose: closed });
      });
      const peer = net.connect({ port: proxyPort, host: '127.0.0.1', allowHalfOpen: true });
      sockets.push(peer);
      peer.pause();
      await new Promise((resolve) => peer.once('connect', resolve));
      await sleep(300);
      let received = 0;
      peer.on('data', (c: Buffer) => (received += c.length));
      peer.resume();
      while (received < (8 << 20) + 6) await within(new Promise((r) => peer.once('data', r)), 3000, 'the queued bytes');
      peer.write('hello');
      await within(hello, 3000, "the client's bytes at the server");
      peer.end();
      const r = await within(result, 5000, 'the close');
      assert.equal(r.bytesOut, 5);
    });
    it('bytes the caller writes right after splice() (relayUpgrade: the head behind the request) reach upstream before the client bytes relayed after them', async () => {
      useRelay(mode);
      const head = 4 << 20;
      let upPeer!: net.Socket;
      const upstreamPort = await listen(
        net.createServer((socket) => {
          sockets.push(socket);
          socket.pause();
          upPeer = socket;
        }),
      );
      const proxyPort = await proxyTo(upstreamPort, async (client, upstream) => {
        await sleep(200); // the client's bytes wait in the kernel
        splice(client, upstream, { idleTimeoutMs: 10_000, onClose: () => undefined });
        upstream.write(Buffer.alloc(head, 0x78));
      });
      const peer = net.connect({ port: proxyPort, host: '127.0.0.1' });
      sockets.push(peer);
      await new Promise((resolve) => peer.once('connect', resolve));
      peer.write(Buffer.alloc(100_000, 0x42));
      await sleep(600);
      let seen = 0;
      let firstClientByte = -1;
      const all = new Promise<void>((resolve) =>
        upPeer.on('data', (d: Buffer) => {
          const at = d.indexOf(0x42);
          if (at >= 0 && firstClientByte < 0) firstClientByte = seen + at;
          seen += d.length;
          if (seen >= head + 100_000) resolve();
        }),
      );
      upPeer.resume();
      await within(all, 5000, 'every byte at upstream');
      assert.equal(firstClientByte, head);
    });

    it("idle and half-close timeouts of 0 mean none (as node's setTimeout(0)), not 1 ms: a tunnel quiet for 300 ms still relays", async () => {
      useRelay(mode);
      const upstreamPort = await listen(
        net.createServer((socket) => {
          sockets.push(socket);
          socket.on('data', (c: Buffer) => socket.write(c));
        }),
      );
      let closed: SpliceResult | undefined;
      const proxyPort = await proxyTo(upstreamPort, (client, upstream) => splice(client, upstream, { idleTimeoutMs: 0, halfCloseTimeoutMs: 0, onClose: (r) => (closed = r) }));
      const peer = net.connect({ port: proxyPort, host: '127.0.0.1' });
      sockets.push(peer);
      await new Promise((resolve) => peer.once('connect', resolve));
      await sleep(300);
      peer.write('ping');
      const echo = await within(new Promise<Buffer>((resolve) => peer.once('data', resolve)), 3000, 'the echo');
      assert.equal(echo.toString(), 'ping');
      assert.equal(closed, undefined);
    });

    it("a destroy racing the relay's own idle-timeout end: exactly one close per tunnel, no relay left open", async () => {
      useRelay(mode);
      const baseline = kernelRelayStats().relays;
      const upstreamPort = await listen(
        net.createServer((socket) => {
          sockets.push(socket);
          socket.resume();
        }),
      );
      const closes = new Map<number, number>();
      let accepted = 0;
      const proxyPort = await proxyTo(upstreamPort, (client, upstream) => {
        const n = accepted++;
        closes.set(n, 0);
        splice(client, upstream, { idleTimeoutMs: 60, onClose: () => closes.set(n, closes.get(n)! + 1) });
        setTimeout(() => (n % 2 ? client : upstream).destroy(), 55 + (n % 11));
      });
      const peers = await Promise.all(
        Array.from({ length: 60 }, () => {
          const peer = net.connect({ port: proxyPort, host: '127.0.0.1' });
          peer.on('error', () => undefined);
          sockets.push(peer);
          return new Promise((resolve) => peer.once('connect', resolve));
        }),
      );
      assert.equal(peers.length, 60);
      await sleep(1500);
      assert.equal(closes.size, 60);
      assert.deepEqual(
        [...closes.values()].filter((c) => c !== 1),
        [],
      );
      if (mode === 'kernel') assert.equal(kernelRelayStats().relays, baseline);
    });

    it('a client that never reads: the relay ends at the idle timeout, once, and holds no pipe afterwards', async () => {
      useRelay(mode);
      const baseline = kernelRelayStats();
      const upstreamPort = await listen(
        net.createServer((socket) => {
          sockets.push(socket);
          socket.on('error', () => undefined);
          socket.write(Buffer.alloc(32 << 20, 7));
        }),
      );
      let closes = 0;
      let result: SpliceResult | undefined;
      const proxyPort = await proxyTo(upstreamPort, (client, upstream) =>
        splice(client, upstream, {
          idleTimeoutMs: 300,
          onClose: (r) => {
            closes++;
            result = r;
          },
        }),
      );
      const peer = net.connect({ port: proxyPort, host: '127.0.0.1' });
      peer.on('error', () => undefined);
      sockets.push(peer);
      peer.pause();
      await sleep(2000);
      assert.equal(closes, 1);
      assert.equal(result?.error, 'idle-timeout');
      if (mode === 'kernel') {
        const stats = kernelRelayStats();
        assert.equal(stats.relays, baseline.relays);
        assert.equal(stats.pipes - stats.sparePipes, baseline.pipes - baseline.sparePipes);
      }
    });
  });
