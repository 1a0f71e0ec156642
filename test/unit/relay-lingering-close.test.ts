/**
 * lingering-close.ts on real loopback sockets: the server's answer is written and its FIN sent, what the client still
 * sends is read and dropped, and the socket goes when the client ends or at the first of its bounds (bytes, quiet
 * time, total time). Short bounds here; the reader uses LINGER_LIMITS.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { lingeringClose, type LingerLimits } from '../../proxy/relay/lingering-close.js';
import { loopbackSockets } from '../helpers/loopback-sockets.js';

const sockets = loopbackSockets();
after(() => sockets.closeAll());

/** A server whose first connection is answered `answer` then closed lingering with `limits`; the client end and when the server's socket closed. */
async function lingeringPair(answer: string, limits: LingerLimits) {
  let serverSocket: net.Socket | undefined;
  let serverClosed: (at: number) => void = () => undefined;
  const closed = new Promise<number>((resolve) => (serverClosed = resolve));
  const port = await sockets.listen(
    net.createServer((socket) => {
      serverSocket = socket;
      socket.once('close', () => serverClosed(Date.now()));
      // As the request reader does: its own reading is over, the answer written, then the lingering close.
      socket.write(answer);
      lingeringClose(socket, limits);
    }),
  );
  const client = await sockets.connect(port);
  let received = '';
  client.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
  const clientSawEnd = new Promise<void>((resolve) => client.once('end', resolve));
  return { client, closed, clientSawEnd, received: () => received, server: () => serverSocket };
}

/** Write `total` bytes to `socket` in pieces of `piece`, waiting for drain; resolves with what was written before an error. */
function writeAll(socket: net.Socket, total: number, piece = 64 * 1024): Promise<{ written: number; error?: string }> {
  return new Promise((resolve) => {
    let written = 0;
    const chunk = Buffer.alloc(piece, 0x78);
    socket.once('error', (err: NodeJS.ErrnoException) => resolve({ written, error: err.code }));
    const pump = () => {
      while (written < total) {
        if (socket.destroyed) return resolve({ written, error: 'destroyed' });
        written += piece;
        if (!socket.write(chunk)) return void socket.once('drain', pump);
      }
      socket.end(() => resolve({ written }));
    };
    pump();
  });
}

const LONG: LingerLimits = { maxMs: 10_000, idleMs: 5_000, maxBytes: 1024 * 1024 * 1024 };

describe('lingering close', () => {
  test('a client that writes 16 MiB before reading gets every byte of the answer; the socket closes once it ends', async () => {
    const pair = await lingeringPair('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n', LONG);
    const started = Date.now();
    const result = await writeAll(pair.client, 16 * 1024 * 1024);
    assert.equal(result.error, undefined, 'nothing reset the client while it wrote');
    await pair.clientSawEnd;
    assert.match(pair.received(), /^HTTP\/1\.1 403 Forbidden\r\n/);
    const closedAt = await pair.closed;
    // The client's end, not a bound, closed it (the bounds here are 5 s and more).
    assert.ok(closedAt - started < 4_000, `closed after ${closedAt - started} ms`);
  });

  test('a client that stops sending but never ends: closed after the quiet time', async () => {
    const pair = await lingeringPair('answer', { ...LONG, idleMs: 300 });
    const started = Date.now();
    pair.client.write('a few bytes after the answer');
    await pair.clientSawEnd;
    const closedAt = await pair.closed;
    assert.equal(pair.received(), 'answer');
    assert.ok(pair.server()!.destroyed);
    // It lingered: the bytes after the answer did not close it at once.
    assert.ok(closedAt - started >= 250, `closed after ${closedAt - started} ms`);
  });

  test('a client that keeps trickling bytes: closed at the total bound', async () => {
    const pair = await lingeringPair('answer', { ...LONG, maxMs: 800, idleMs: 300 });
    const started = Date.now();
    const trickle = setInterval(() => pair.client.writable && pair.client.write('x'), 50);
    try {
      const closedAt = await pair.closed;
      // The quiet time never passed (a byte every 50 ms): only the total bound ends it.
      assert.ok(closedAt - started >= 700, `closed after ${closedAt - started} ms`);
    } finally {
      clearInterval(trickle);
    }
  });

  test('a client that has ended and never reads the answer: closed at the total bound, not kept waiting for the last write', async () => {
    // Its FIN seen before the lingering close (the reader's socket went on reading to it): destroySoon alone waited
    // for the answer's last write, which a client that reads nothing never lets finish, and nothing else timed it.
    let closed: (at: number) => void = () => undefined;
    const closedAt = new Promise<number>((resolve) => (closed = resolve));
    const port = await sockets.listen(
      net.createServer((socket) => {
        socket.once('close', () => closed(Date.now()));
        // More than the loopback's buffers hold: never all written while the client reads nothing.
        socket.write(Buffer.alloc(64 * 1024 * 1024, 0x61));
        socket.resume();
        socket.once('end', () => {
          assert.ok(socket.readableEnded);
          lingeringClose(socket, { ...LONG, maxMs: 800, idleMs: 300 });
        });
      }),
    );
    const client = await sockets.connect(port);
    client.pause();
    const started = Date.now();
    client.end('the last bytes');
    const result = await Promise.race([closedAt.then((at) => at - started), new Promise<string>((resolve) => setTimeout(resolve, 5_000, 'open'))]);
    assert.notEqual(result, 'open', 'the server socket was still open 5 s after its lingering close began (bound: 0.8 s)');
    assert.ok((result as number) >= 700, `closed after ${result as number} ms`);
  });

  test('a client that sends more than the byte bound: closed before it has sent it all', async () => {
    const pair = await lingeringPair('answer', { ...LONG, maxBytes: 256 * 1024 });
    const result = await writeAll(pair.client, 64 * 1024 * 1024);
    await pair.closed;
    assert.ok(result.error !== undefined || result.written < 64 * 1024 * 1024, `the client wrote ${result.written} bytes, error ${result.error}`);
  });
});
