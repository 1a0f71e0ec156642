import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { connectUpstream } from '../../net/connect.js';
import { RELAY_MODES, kernelRelayUnavailable, useRelay } from '../../net/kernel-relay.js';
import { peekFirstBytes } from '../../net/sniffing/first-bytes.js';
import { splice, type ClientGateOutcome, type SpliceOptions, type SpliceResult } from '../../net/splice.js';
import { waitFor } from '../helpers/wait-for.js';

const servers: net.Server[] = [];
after(() => {
  for (const s of servers) s.close();
});

function listen(server: net.Server): Promise<number> {
  servers.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port)));
}

function withTimeout<T>(promise: Promise<T>, what: string, ms = 5000): Promise<T> {
  return Promise.race([promise, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms).unref())]);
}

/** A server that reads until the client's FIN, then answers how much it got and closes: only a relayed FIN gets a reply. */
async function replyAfterFinServer(): Promise<{ port: number; received: string[] }> {
  const received: string[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      received.push(text);
      socket.end(`received ${text.length} bytes\n`);
    });
  });
  return { port: await listen(server), received };
}

/** A relay on loopback: each accepted client goes through `prepare`, then is spliced to 127.0.0.1:upstreamPort. */
async function relay(upstreamPort: number, options: Partial<SpliceOptions> = {}, prepare?: (client: net.Socket) => Promise<unknown>) {
  const results: SpliceResult[] = [];
  let notify: (r: SpliceResult) => void = () => undefined;
  const server = net.createServer({ allowHalfOpen: true }, async (client) => {
    if (prepare) await prepare(client);
    const upstream = await connectUpstream('127.0.0.1', upstreamPort, 2000);
    splice(client, upstream, {
      idleTimeoutMs: 10_000,
      ...options,
      onClose: (result) => {
        results.push(result);
        notify(result);
      },
    });
  });
  const port = await listen(server);
  const closed = new Promise<SpliceResult>((resolve) => (notify = resolve));
  return { port, results, closed };
}

/** A client that sends `data`, half-closes, and reads until the relay's FIN. */
function halfClosingClient(port: number, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => socket.end(data));
    let reply = '';
    socket.on('data', (c: Buffer) => (reply += c));
    socket.on('end', () => resolve(reply));
    socket.on('error', reject);
    socket.setTimeout(5000, () => reject(new Error(`no FIN from the relay; got "${reply}"`)));
  });
}

// Both relays of a decided tunnel: node's streams, and the kernel relay (splice(2), net/kernel-relay.ts), taking
// the tunnel at once or mid-stream, after its first bytes moved in JavaScript.
for (const [mode, afterBytes] of [...RELAY_MODES.map((m) => [m, 0] as const), ['kernel', 1] as const])
  describe(`splice relays half-close (${mode} relay${afterBytes ? `, handed over after ${afterBytes} byte` : ''})`, () => {
    before(() => {
      useRelay(mode, afterBytes);
      if (mode === 'kernel') assert.equal(kernelRelayUnavailable(), undefined, 'the kernel_relay addon is built (npm run install)');
    });
    after(() => useRelay('kernel'));
    it('a client that sends, half-closes and reads gets the reply; the server saw the FIN; one close with byte counts', async () => {
      const upstream = await replyAfterFinServer();
      const r = await relay(upstream.port);
      assert.equal(await halfClosingClient(r.port, 'hello'), 'received 5 bytes\n');
      const result = await r.closed;
      assert.deepEqual(upstream.received, ['hello']);
      assert.equal(result.bytesOut, 5);
      assert.equal(result.bytesIn, 'received 5 bytes\n'.length);
      assert.equal(result.error, undefined);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(r.results.length, 1);
    });

    it('a server that half-closes first (banner, FIN) still gets what the client sends after it', async () => {
      const received: string[] = [];
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.end('banner\n');
        const chunks: Buffer[] = [];
        socket.on('data', (c: Buffer) => chunks.push(c));
        socket.on('end', () => received.push(Buffer.concat(chunks).toString()));
      });
      const r = await relay(await listen(server));
      const banner = await new Promise<string>((resolve, reject) => {
        const socket = net.connect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true });
        let text = '';
        socket.on('data', (c: Buffer) => (text += c));
        socket.on('end', () => {
          socket.end('after the banner');
          resolve(text);
        });
        socket.on('error', reject);
      });
      assert.equal(banner, 'banner\n');
      const result = await r.closed;
      // The server's own 'end' may come a moment after the relay's close.
      for (let i = 0; i < 50 && received.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.deepEqual(received, ['after the banner']);
      assert.equal(result.error, undefined);
    });

    it('a half-closed connection where nothing moves is closed after halfCloseTimeoutMs, not idleTimeoutMs', async () => {
      // Never answers and never closes.
      const server = net.createServer({ allowHalfOpen: true }, () => undefined);
      const r = await relay(await listen(server), { idleTimeoutMs: 60_000, halfCloseTimeoutMs: 300 });
      const socket = net.connect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true }, () => socket.end('x'));
      socket.on('error', () => undefined);
      const clientClosed = new Promise((resolve) => socket.once('close', resolve));
      const result = await Promise.race([r.closed, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('not closed within 5 s')), 5000))]);
      assert.equal(result.error, 'half-close-timeout');
      assert.equal(result.bytesOut, 1);
      await clientClosed;
    });

    it('a half-closed relay whose client socket is destroyed here (the drain at shutdown) ends at once, not after the half-close bound', async () => {
      // The server sees the FIN once the relay has passed it on (whichever relay has it).
      let finPassedOn = false;
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        socket.resume();
        socket.on('end', () => (finPassedOn = true));
      });
      let accepted: net.Socket | undefined;
      const r = await relay(await listen(server), { idleTimeoutMs: 60_000, halfCloseTimeoutMs: 60_000 }, async (client) => {
        accepted = client;
      });
      const socket = net.connect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true }, () => socket.end('x'));
      socket.on('error', () => undefined);
      for (let i = 0; i < 100 && !finPassedOn; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      assert.ok(finPassedOn, 'the relay has the FIN');
      const destroyedAt = Date.now();
      accepted!.destroy();
      const result = await Promise.race([r.closed, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the relay outlived its socket')), 3000))]);
      assert.ok(Date.now() - destroyedAt < 3000);
      assert.notEqual(result.error, 'half-close-timeout');
      socket.destroy();
    });

    it('a request and its FIN arriving together are peeked, put back and relayed, FIN included', async () => {
      const upstream = await replyAfterFinServer();
      let peeked: Awaited<ReturnType<typeof peekFirstBytes>> | undefined;
      const r = await relay(upstream.port, {}, async (client) => {
        // Let the request and the FIN both arrive before the peek reads.
        await new Promise((resolve) => setTimeout(resolve, 100));
        peeked = await peekFirstBytes(client, { timeoutMs: 1000 });
      });
      const request = 'GET / HTTP/1.1\r\nHost: example.test\r\n\r\n';
      assert.equal(await halfClosingClient(r.port, request), `received ${request.length} bytes\n`);
      assert.deepEqual(upstream.received, [request]);
      assert.equal(peeked?.protocol, 'http');
      assert.equal(peeked?.eof, true);
      assert.equal((await r.closed).bytesOut, request.length);
    });

    it('a gate that relays under another decision: the first close at once (handed-over, no bytes), the whole tunnel in the later one', async () => {
      let serverGot: Promise<string> | undefined;
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        serverGot = new Promise((resolve) => {
          let text = '';
          socket.on('data', (c: Buffer) => (text += c));
          socket.on('end', () => {
            socket.end('bye');
            resolve(text);
          });
        });
        socket.write('banner\n');
      });
      let settle!: (outcome: ClientGateOutcome) => void;
      const r = await relay(await listen(server), { clientGate: new Promise((resolve) => (settle = resolve)) });
      const socket = net.connect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true });
      socket.on('error', () => undefined);
      let received = '';
      const banner = new Promise<void>((resolve) => socket.on('data', (c: Buffer) => (received += c) === 'banner\n' && resolve()));
      const ended = new Promise<void>((resolve) => socket.once('end', () => resolve()));
      await withTimeout(banner, 'the banner, while the gate is open');
      socket.write('hello ');
      let later: SpliceResult | undefined;
      settle({ action: 'relay', onClose: (result) => (later = result) });
      const first = await withTimeout(r.closed, 'the first close');
      assert.deepEqual([first.bytesIn, first.bytesOut, first.error], [0, 0, 'handed-over']);
      socket.end('and the rest');
      assert.equal(await withTimeout(serverGot!, 'the server to get the FIN'), 'hello and the rest');
      await withTimeout(ended, 'the relayed FIN');
      assert.equal(received, 'banner\nbye');
      await waitFor('the later close', () => later !== undefined, 5000);
      assert.deepEqual([later!.bytesIn, later!.bytesOut, later!.error], [10, 18, undefined]);
      assert.equal(r.results.length, 1, 'the first onClose is called once');
    });

    /**
     * A tunnel whose client resets while its gate is open (the gate has read its first bytes, as a real one does):
     * `first` is the tunnel's own close; `settle` settles the gate after it.
     */
    async function resetWhileGateOpen() {
      const server = net.createServer((socket) => {
        socket.on('error', () => undefined);
        socket.write('banner\n');
      });
      let settle!: (outcome: ClientGateOutcome) => void;
      let peeked!: Promise<unknown>;
      const r = await relay(await listen(server), { clientGate: new Promise((resolve) => (settle = resolve)) }, async (client) => {
        peeked = peekFirstBytes(client, { timeoutMs: 5000 });
      });
      const socket = net.connect({ port: r.port, host: '127.0.0.1' });
      socket.on('error', () => undefined);
      await withTimeout(new Promise((resolve) => socket.once('data', resolve)), 'the banner, while the gate is open');
      socket.write('hello');
      await withTimeout(peeked, 'the peek');
      socket.resetAndDestroy();
      const first = await withTimeout(r.closed, "the tunnel's close");
      return { r, first, settle };
    }

    /** The later decision's closes, once the first has come and 50 ms more: exactly one, with no bytes. */
    async function assertOneLaterClose(later: SpliceResult[], first: SpliceResult, r: { results: SpliceResult[] }): Promise<void> {
      await waitFor('the later close', () => later.length > 0, 5000);
      assert.deepEqual([later[0]!.bytesIn, later[0]!.bytesOut, later[0]!.error], [0, 0, first.error ?? 'client-aborted']);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(later.length, 1, 'the later onClose is called once');
      assert.equal(r.results.length, 1, 'the first onClose is called once');
    }

    it('a gate that settles on relay under another decision after the splice ended (the client reset): that decision still gets one close, with no bytes', async () => {
      const { r, first, settle } = await resetWhileGateOpen();
      const later: SpliceResult[] = [];
      settle({ action: 'relay', onClose: (result) => later.push(result) });
      await assertOneLaterClose(later, first, r);
    });

    it('a gate that settles on hand-over under another decision after the splice ended (the client reset): not handed over, that decision gets one close, with no bytes', async () => {
      const { r, first, settle } = await resetWhileGateOpen();
      const later: SpliceResult[] = [];
      let handedOver = 0;
      settle({ action: 'hand-over', to: () => handedOver++, onClose: (result) => later.push(result) });
      await assertOneLaterClose(later, first, r);
      assert.equal(handedOver, 0, 'a client the splice has closed is not handed over');
    });

    it('a client that half-closes without a byte is relayed as a FIN (the server answers it)', async () => {
      const upstream = await replyAfterFinServer();
      const r = await relay(upstream.port, {}, async (client) => {
        await new Promise((resolve) => setTimeout(resolve, 100));
        const peek = await peekFirstBytes(client, { timeoutMs: 1000 });
        assert.equal(peek.bytes, 0);
        assert.equal(peek.eof, true);
      });
      assert.equal(await halfClosingClient(r.port, ''), 'received 0 bytes\n');
    });
  });

describe('splice: a hand-over that takes the upstream along (reuseUpstream)', () => {
  /** A proxy whose gate hands each client over once its first bytes are in, reuseUpstream; `given` gets what `to` got. */
  async function handingOver(upstreamPort: number, given: (upstream: net.Socket | undefined) => void) {
    const closes: SpliceResult[] = [];
    const server = net.createServer(async (client) => {
      const upstream = await connectUpstream('127.0.0.1', upstreamPort, 2000);
      const gate = new Promise<ClientGateOutcome>((resolve) =>
        client.once('readable', () => resolve({ action: 'hand-over', reuseUpstream: true, to: (_client, taken) => given(taken) })),
      );
      splice(client, upstream, { idleTimeoutMs: 10_000, clientGate: gate, onClose: (result) => closes.push(result) });
    });
    return { port: await listen(server), closes };
  }

  it('an untouched upstream goes to the taker: the same server connection, none of the splice listeners, usable at once', async () => {
    const accepted: net.Socket[] = [];
    const upstreamServer = net.createServer((socket) => {
      accepted.push(socket);
      socket.on('data', (d: Buffer) => socket.write(`got ${d.toString()}`));
    });
    let given!: (upstream: net.Socket | undefined) => void;
    const taken = new Promise<net.Socket | undefined>((resolve) => (given = resolve));
    const proxy = await handingOver(await listen(upstreamServer), given);
    const client = net.connect(proxy.port, '127.0.0.1');
    client.write('GET / HTTP/1.1\r\n\r\n');
    const upstream = await withTimeout(taken, 'the hand-over');
    try {
      assert.ok(upstream, 'the untouched upstream is handed over');
      assert.equal(upstream.listenerCount('timeout'), 0);
      assert.ok(!upstream.timeout, 'no timeout left on it');
      assert.deepEqual(
        proxy.closes.map((c) => c.error),
        ['handed-over'],
      );
      // Paused as the splice left it (unpiped): read once its taker wants it.
      const replied = new Promise<Buffer>((resolve) => upstream.once('data', resolve));
      upstream.resume();
      upstream.write('ping');
      const reply = await withTimeout(replied, 'the reply');
      assert.equal(reply.toString(), 'got ping');
      assert.equal(accepted.length, 1);
    } finally {
      upstream?.destroy();
      client.destroy();
      for (const s of accepted) s.destroy();
      upstreamServer.close();
    }
  });

  it('an upstream that has spoken (a banner relayed to the client) is closed, not handed over', async () => {
    let ended: Promise<void> | undefined;
    const upstreamServer = net.createServer({ allowHalfOpen: true }, (socket) => {
      ended = new Promise((resolve) => socket.once('end', () => resolve()));
      socket.resume();
      socket.write('banner\n');
    });
    let given!: (upstream: net.Socket | undefined) => void;
    const taken = new Promise<net.Socket | undefined>((resolve) => (given = resolve));
    const proxy = await handingOver(await listen(upstreamServer), given);
    const client = net.connect(proxy.port, '127.0.0.1');
    try {
      assert.equal((await withTimeout(new Promise<Buffer>((resolve) => client.once('data', resolve)), 'the banner')).toString(), 'banner\n');
      client.write('GET / HTTP/1.1\r\n\r\n');
      assert.equal(await withTimeout(taken, 'the hand-over'), undefined);
      await waitFor('the server to get a connection', () => ended !== undefined, 5000);
      await withTimeout(ended!, 'the upstream closed');
    } finally {
      client.destroy();
      upstreamServer.close();
    }
  });
});
