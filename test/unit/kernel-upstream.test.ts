/**
 * The upstream of a decided tunnel opened by the kernel relay (net/connect.ts connectUpstreamInKernel, net/splice.ts
 * spliceKernelUpstream, native/kernel_relay.c connect/attach/release) on real loopback sockets: connect failures and
 * timeouts mapped as connectUpstream's, IPv6, bytes and counts, half-close, the first-bytes gate (server bytes flow
 * while it is open, the client's after it), idle timeout, a client gone before or during the relay.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { connectUpstreamInKernel, UpstreamConnectError } from '../../net/connect.js';
import { cancelKernelUpstream, kernelRelayStats, kernelRelayUnavailable, kernelUpstreamUsable, useRelay } from '../../net/kernel-relay.js';
import { REFUSE, RELAY, spliceKernelUpstream, type ClientGateOutcome, type SpliceOptions, type SpliceResult } from '../../net/splice.js';
import { bounded, loopbackSockets, readAll, sha256Hex as sha } from '../helpers/loopback-sockets.js';
import { waitFor } from '../helpers/wait-for.js';

const loopback = loopbackSockets();
const { track, listen, connect } = loopback;
const children: ChildProcess[] = [];
after(() => {
  loopback.closeAll();
  for (const c of children) c.kill('SIGKILL');
});

/**
 * A proxy on loopback: each accepted client gets an upstream opened by the kernel relay to host:upstreamPort, then
 * is spliced to it (`gate` makes the client gate of each tunnel).
 */
async function proxy(host: string, upstreamPort: number, options: Partial<SpliceOptions> = {}, gate?: (client: net.Socket) => Promise<ClientGateOutcome>) {
  const waiting: Array<(r: SpliceResult) => void> = [];
  const accepted: net.Socket[] = [];
  let closes = 0;
  const closed = (result: SpliceResult) => {
    closes++;
    waiting.shift()?.(result);
  };
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    accepted.push(client);
    assert.ok(kernelUpstreamUsable(client, host));
    void connectUpstreamInKernel(host, upstreamPort, 2000).then((upstream) => {
      // As the explicit proxy: a client gone while its upstream connected has the upstream closed, one close.
      if (client.destroyed) {
        cancelKernelUpstream(upstream);
        return closed({ bytesIn: 0, bytesOut: 0, durationMs: 0, error: 'client-aborted' });
      }
      spliceKernelUpstream(client, upstream, {
        idleTimeoutMs: 10_000,
        ...options,
        ...(gate && { clientGate: gate(client) }),
        onClose: closed,
      });
    });
  });
  const port = await listen(server, host);
  return { port, accepted, closes: () => closes, next: () => bounded(new Promise<SpliceResult>((resolve) => waiting.push(resolve))) };
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

/**
 * A port whose SYNs go unanswered: a listener (python3: node accepts at once) that never accepts, its queue filled.
 * Linux drops a SYN to a listener with a full accept queue, so a connect to it stalls until its own timeout.
 */
async function stalledPort(): Promise<number> {
  const child = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const port = await bounded(new Promise<number>((resolve) => child.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))));
  // Fill the accept queue (backlog 0 holds one): connect until one does not complete.
  for (let i = 0; i < 8; i++) {
    const connected = await new Promise<boolean>((resolve) => {
      const s = track(net.connect({ port, host: '127.0.0.1' }, () => resolve(true)));
      setTimeout(() => resolve(false), 300).unref();
    });
    if (!connected) return port;
  }
  throw new Error('the accept queue never filled');
}

/** A server that says `hello` on each connection; ended(): its (last) connection got the FIN. */
async function helloServer(): Promise<{ port: number; ended: () => Promise<void> }> {
  let ended: Promise<void> | undefined;
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    ended = new Promise((resolve) => socket.once('end', () => resolve()));
    socket.resume();
    socket.write('hello');
  });
  const port = await listen(server);
  return {
    port,
    ended: async () => {
      await waitFor('the server to get a connection', () => ended !== undefined, 5000);
      await bounded(ended!);
    },
  };
}

describe('upstream opened by the kernel relay', () => {
  before(() => {
    useRelay('kernel');
    assert.equal(kernelRelayUnavailable(), undefined, 'the kernel_relay addon is built (npm run install)');
  });

  const failures = [
    { what: 'a refused connect', port: closedPort, status: 502, error: 'upstream-refused', message: 'failed: ECONNREFUSED' },
    { what: 'a connect that stalls (its timeout 300 ms)', port: stalledPort, status: 504, error: 'upstream-timeout', message: 'timed out after 300 ms' },
  ];
  for (const f of failures) {
    it(`${f.what} rejects as connectUpstream does: ${f.status} ${f.error}; nothing left open`, async () => {
      const before = kernelRelayStats().relays;
      const port = await f.port();
      const err = await bounded(
        connectUpstreamInKernel('127.0.0.1', port, 300).then(
          () => undefined,
          (e: unknown) => e,
        ),
      );
      assert.ok(err instanceof UpstreamConnectError);
      assert.deepEqual([err.status, err.error], [f.status, f.error]);
      assert.equal(err.message, `connecting to 127.0.0.1:${port} ${f.message}`);
      assert.equal(kernelRelayStats().relays, before);
    });
  }

  for (const host of ['127.0.0.1', '::1']) {
    it(`${host}: 4 MiB each way intact, FINs passed on, one close with exact counts and no error`, async () => {
      const size = 4 << 20;
      const down = randomBytes(size);
      const up = randomBytes(size);
      let upReceived: Promise<Buffer> | undefined;
      const server = net.createServer({ allowHalfOpen: true }, (socket) => {
        upReceived = readAll(socket);
        socket.end(down);
      });
      const p = await proxy(host, await listen(server, host));
      const closed = p.next();
      const client = await connect(p.port, host);
      const downReceived = readAll(client);
      client.end(up);
      const got = await bounded(downReceived, 60_000);
      await waitFor('the server to get everything', () => upReceived !== undefined, 5000);
      const gotUp = await bounded(upReceived!, 60_000);
      assert.equal(sha(got), sha(down));
      assert.equal(sha(gotUp), sha(up));
      const result = await closed;
      assert.deepEqual([result.bytesIn, result.bytesOut, result.error], [size, size, undefined]);
    });
  }

  it('half-close: the client sends its request and FIN, reads the reply after it', async () => {
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      void readAll(socket).then((request) => socket.end(Buffer.concat([Buffer.from('reply to '), request])));
    });
    const p = await proxy('127.0.0.1', await listen(server));
    const closed = p.next();
    const client = await connect(p.port);
    const reply = readAll(client);
    client.end('request');
    assert.equal((await bounded(reply)).toString(), 'reply to request');
    const result = await closed;
    assert.deepEqual([result.bytesIn, result.bytesOut, result.error], [16, 7, undefined]);
  });

  it('while the gate is open the server speaks first (its bytes reach the client); the client bytes node held go first once it settles', async () => {
    let settle!: (outcome: ClientGateOutcome) => void;
    let serverGot: Promise<Buffer> | undefined;
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      serverGot = readAll(socket);
      void serverGot.then(() => socket.end());
      socket.write('banner\n');
    });
    const p = await proxy('127.0.0.1', await listen(server), {}, (client) => {
      // Node reads the client's first bytes meanwhile (as the SNI check does): held, not relayed.
      client.once('readable', () => undefined);
      return new Promise((resolve) => (settle = resolve));
    });
    const closed = p.next();
    const client = await connect(p.port);
    const banner = await bounded(new Promise<string>((resolve) => client.once('data', (d: Buffer) => resolve(d.toString()))));
    assert.equal(banner, 'banner\n');
    client.write('first bytes ');
    await waitFor('node to hold the first bytes', () => serverGot !== undefined, 5000);
    settle(RELAY);
    client.end('and the rest');
    assert.equal((await bounded(serverGot!)).toString(), 'first bytes and the rest');
    const result = await closed;
    assert.deepEqual([result.bytesIn, result.bytesOut, result.error], [7, 24, undefined]);
  });

  it('a gate that relays under another decision: the first close at once (handed-over, no bytes), the whole tunnel in the later one', async () => {
    let serverGot: Promise<Buffer> | undefined;
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      serverGot = readAll(socket);
      void serverGot.then(() => socket.end('bye'));
      socket.write('banner\n');
    });
    let later!: Promise<SpliceResult>;
    const p = await proxy('127.0.0.1', await listen(server), {}, async (client) => {
      await new Promise((resolve) => client.once('readable', resolve));
      return { action: 'relay', onClose: (result) => (later = Promise.resolve(result)) };
    });
    const first = p.next();
    const client = await connect(p.port);
    const banner = await bounded(new Promise<string>((resolve) => client.once('data', (d: Buffer) => resolve(d.toString()))));
    assert.equal(banner, 'banner\n');
    client.write('hello ');
    const handedOver = await first;
    assert.deepEqual([handedOver.bytesIn, handedOver.bytesOut, handedOver.error], [0, 0, 'handed-over']);
    const rest = readAll(client);
    client.end('and the rest');
    assert.equal((await bounded(serverGot!)).toString(), 'hello and the rest');
    assert.equal((await bounded(rest)).toString(), 'bye');
    await waitFor('the later close', () => later !== undefined, 5000);
    const result = await later;
    assert.deepEqual([result.bytesIn, result.bytesOut, result.error], [10, 18, undefined]);
    assert.equal(p.closes(), 1, 'the first onClose is called once');
  });

  it('a gate that settles on relay under another decision after the client reset: that decision still gets one close, with no bytes', async () => {
    const server = net.createServer((socket) => {
      socket.on('error', () => undefined);
      socket.write('banner\n');
    });
    let settle!: (outcome: ClientGateOutcome) => void;
    const p = await proxy('127.0.0.1', await listen(server), {}, () => new Promise((resolve) => (settle = resolve)));
    const first = p.next();
    const client = await connect(p.port);
    client.on('error', () => undefined);
    await bounded(new Promise((resolve) => client.once('data', resolve)));
    await new Promise<void>((resolve) => client.write('hello', () => resolve()));
    client.resetAndDestroy();
    const ended = await first;
    const later: SpliceResult[] = [];
    settle({ action: 'relay', onClose: (result) => later.push(result) });
    await waitFor('the later close', () => later.length > 0, 5000);
    assert.deepEqual([later[0]!.bytesIn, later[0]!.bytesOut, later[0]!.error], [0, 0, ended.error ?? 'client-aborted']);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(later.length, 1, 'the later onClose is called once');
    assert.equal(p.closes(), 1, 'the first onClose is called once');
  });

  it('a gate that refuses resets the client and closes upstream: refused-after-first-bytes', async () => {
    let upstreamClosed: Promise<void> | undefined;
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      upstreamClosed = new Promise((resolve) => socket.once('end', () => resolve()));
      socket.resume();
    });
    const p = await proxy('127.0.0.1', await listen(server), {}, async (client) => {
      await new Promise((resolve) => client.once('readable', resolve));
      return REFUSE;
    });
    const closed = p.next();
    const client = await connect(p.port);
    const reset = new Promise<string | undefined>((resolve) => client.once('error', (e: NodeJS.ErrnoException) => resolve(e.code)));
    client.write('forged hello');
    assert.equal(await bounded(reset), 'ECONNRESET');
    assert.equal((await closed).error, 'refused-after-first-bytes');
    await waitFor('the server to get its FIN', () => upstreamClosed !== undefined, 5000);
    await bounded(upstreamClosed!);
  });

  /** A gate that hands the client over once its first bytes are in, with reuseUpstream; `taken` gets what `to` was given. */
  const handOverReusing =
    (taken: (upstream: net.Socket | undefined) => void) =>
    async (client: net.Socket): Promise<ClientGateOutcome> => {
      await new Promise((resolve) => client.once('readable', resolve));
      return { action: 'hand-over', reuseUpstream: true, to: (_client, upstream) => taken(upstream) };
    };

  it('a hand-over with reuseUpstream of an untouched tunnel: the taker gets that very connection as a node socket (the server sees one)', async () => {
    const accepted: net.Socket[] = [];
    const server = net.createServer((socket) => {
      accepted.push(socket);
      socket.on('data', (d: Buffer) => socket.write(`got ${d.toString()}`));
    });
    let given!: (upstream: net.Socket | undefined) => void;
    const takenUpstream = new Promise<net.Socket | undefined>((resolve) => (given = resolve));
    const p = await proxy('127.0.0.1', await listen(server), {}, handOverReusing(given));
    const closed = p.next();
    const client = await connect(p.port);
    client.write('GET / HTTP/1.1\r\n\r\n');
    const upstream = await bounded(takenUpstream);
    assert.ok(upstream, 'the untouched upstream is handed over');
    track(upstream);
    assert.equal((await closed).error, 'handed-over');
    upstream.write('ping');
    assert.equal((await bounded(new Promise<Buffer>((resolve) => upstream.once('data', resolve)))).toString(), 'got ping');
    assert.equal(accepted.length, 1);
    assert.equal(kernelRelayStats().relays, 0);
  });

  it('a hand-over with reuseUpstream after the server spoke first: nothing handed over, the connection closed', async () => {
    let upstreamEnded: Promise<void> | undefined;
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      upstreamEnded = new Promise((resolve) => socket.once('end', () => resolve()));
      socket.resume();
      socket.write('banner\n');
    });
    let given!: (upstream: net.Socket | undefined) => void;
    const takenUpstream = new Promise<net.Socket | undefined>((resolve) => (given = resolve));
    const p = await proxy('127.0.0.1', await listen(server), {}, handOverReusing(given));
    const closed = p.next();
    const client = await connect(p.port);
    assert.equal((await bounded(new Promise<Buffer>((resolve) => client.once('data', resolve)))).toString(), 'banner\n');
    client.write('GET / HTTP/1.1\r\n\r\n');
    assert.equal(await bounded(takenUpstream), undefined);
    assert.deepEqual([(await closed).error, (await closed).bytesIn], ['handed-over', 7]);
    await waitFor('the server to get a connection', () => upstreamEnded !== undefined, 5000);
    await bounded(upstreamEnded!);
  });

  it('an idle tunnel ends with idle-timeout; the client gets its FIN', async () => {
    const server = net.createServer({ allowHalfOpen: true }, () => undefined);
    const p = await proxy('127.0.0.1', await listen(server), { idleTimeoutMs: 300 });
    const closed = p.next();
    const client = await connect(p.port);
    const ended = readAll(client);
    assert.equal((await closed).error, 'idle-timeout');
    await bounded(ended);
  });

  it('a client reset mid-tunnel ends it once with client-ECONNRESET; its upstream is closed, no relay left', async () => {
    const before = kernelRelayStats().relays;
    const hello = await helloServer();
    const p = await proxy('127.0.0.1', hello.port);
    const closed = p.next();
    const client = await connect(p.port);
    await bounded(new Promise((resolve) => client.once('data', resolve)));
    client.resetAndDestroy();
    assert.equal((await closed).error, 'client-ECONNRESET');
    await hello.ended();
    await waitFor('no relay left open', () => kernelRelayStats().relays === before, 5000);
  });

  it('destroying the client socket (the drain at shutdown) cancels the relay: one close with the counts so far, upstream closed, no relay left', async () => {
    const before = kernelRelayStats().relays;
    const hello = await helloServer();
    const p = await proxy('127.0.0.1', hello.port);
    let closes = 0;
    const closed = p.next().then((r) => {
      closes++;
      return r;
    });
    const client = await connect(p.port);
    await bounded(new Promise((resolve) => client.once('data', resolve)));
    p.accepted[0]!.destroy();
    const result = await closed;
    assert.deepEqual([result.bytesIn, result.bytesOut, result.error], [5, 0, undefined]);
    await hello.ended();
    assert.equal(kernelRelayStats().relays, before);
    assert.equal(closes, 1);
  });

  it('200 clients that reset at once or within a few ms (while connecting, before or after the relay started): one close each, no relay left', async () => {
    const before = kernelRelayStats().relays;
    const hello = await helloServer();
    const p = await proxy('127.0.0.1', hello.port);
    const count = 200;
    const closes = Array.from({ length: count }, () => p.next());
    for (let i = 0; i < count; i++) {
      const client = track(net.connect({ port: p.port, host: '127.0.0.1' }));
      setTimeout(() => client.resetAndDestroy(), i % 4);
    }
    const results = await bounded(Promise.all(closes), 30_000);
    assert.equal(results.length, count);
    await waitFor('no relay left open', () => kernelRelayStats().relays === before, 5000);
    assert.equal(p.closes(), count, 'one close per tunnel, none twice');
  });
});

describe('upstream opened by the kernel relay: before the relay has the tunnel', () => {
  before(() => useRelay('kernel'));

  it('a client that never reads what node wrote to it (the 200 stays queued) ends with idle-timeout, as splice() does; its upstream closed, no relay left', async () => {
    const before = kernelRelayStats().relays;
    let upstreamEnded: Promise<void> | undefined;
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      upstreamEnded = new Promise((resolve) => socket.once('end', () => resolve()));
      socket.resume();
    });
    const upstreamPort = await listen(server);
    let closed!: Promise<SpliceResult>;
    let spliced!: () => void;
    const started = new Promise<void>((resolve) => (spliced = resolve));
    const proxyServer = net.createServer({ allowHalfOpen: true }, (client) => {
      closed = connectUpstreamInKernel('127.0.0.1', upstreamPort, 2000).then(
        (upstream) =>
          new Promise<SpliceResult>((resolve) => {
            // More than the loopback socket buffers hold: node keeps the rest queued while the client does not read.
            client.write(Buffer.alloc(64 << 20));
            spliceKernelUpstream(client, upstream, { idleTimeoutMs: 300, onClose: resolve });
            spliced();
          }),
      );
    });
    const port = await listen(proxyServer);
    const client = await connect(port);
    client.pause();
    await bounded(started);
    const result = await bounded(closed);
    assert.equal(result.error, 'idle-timeout');
    await waitFor('the server to get its FIN', () => upstreamEnded !== undefined, 5000);
    await bounded(upstreamEnded!);
    await waitFor('no relay left open', () => kernelRelayStats().relays === before, 5000);
  });
});

describe("first bytes larger than the relay's pipes", () => {
  // An unprivileged user (a uid of its own, no account) whose pipe quota another process of it has used up: the
  // kernel gives that user's new pipes two pages (8 KiB) and refuses to grow them. Held for the test, then released.
  const uid = 64_998;
  const skip = process.getuid?.() !== 0 ? 'needs root to run as another user' : kernelRelayUnavailable();

  it('what node held of the client (48 KiB, over an 8 KiB pipe) reaches upstream whole and first', { skip, timeout: 60_000 }, async (t) => {
    const helper = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/kernel-upstream-first-bytes.js');
    // The uid must be able to load the checkout (a clone under a directory only root may enter cannot be tested so).
    const relayModule = pathToFileURL(path.join(path.dirname(helper), '../../net/kernel-relay.js')).href;
    const probe = `fs.accessSync(${JSON.stringify(helper)}, fs.constants.R_OK); import(${JSON.stringify(relayModule)}).then((m) => process.exit(m.kernelRelayUnavailable() ? 8 : 0), () => process.exit(9));`;
    const readable = spawnSync(process.execPath, ['-e', probe], {
      uid,
      gid: uid,
      stdio: 'ignore',
      timeout: 10_000,
    });
    if (readable.status !== 0) return t.skip(`the checkout (or its addon) is not readable by uid ${uid}`);
    const hog = spawn(
      'python3',
      [
        '-c',
        [
          'import fcntl, os, sys',
          'held = []',
          'for _ in range(80):',
          '    r, w = os.pipe()',
          '    held.append((r, w))',
          '    try: fcntl.fcntl(w, 1031, 1 << 20)',
          '    except OSError: pass',
          'r, w = os.pipe()',
          'print(fcntl.fcntl(w, 1032), flush=True)',
          'sys.stdin.read()',
        ].join('\n'),
      ],
      { uid, gid: uid, stdio: ['pipe', 'pipe', 'inherit'] },
    );
    children.push(hog);
    try {
      const pipeBytes = await bounded(new Promise<number>((resolve) => hog.stdout!.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))));
      assert.ok(pipeBytes <= 16_384, `a new pipe of the user over its quota holds ${pipeBytes} bytes (fs.pipe-user-pages-soft must be set)`);
      const run = spawn(process.execPath, [helper], { uid, gid: uid, stdio: ['ignore', 'pipe', 'inherit'] });
      children.push(run);
      let output = '';
      run.stdout!.on('data', (d: Buffer) => (output += d.toString()));
      const code = await bounded(new Promise<number | null>((resolve) => run.once('exit', resolve)), 20_000);
      assert.equal(code, 0, output);
      assert.deepEqual(JSON.parse(output), { length: 48 * 1024, same: true, bytesOut: 48 * 1024, error: null });
    } finally {
      hog.stdin!.end();
      hog.kill('SIGKILL');
    }
  });
});
