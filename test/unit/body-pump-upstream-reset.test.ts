/**
 * The body pump (net/kernel-relay.ts's startBodyPump, kernel_relay.c's pump()) when upstream resets after the pump
 * has read the body's last byte, while its pipe still holds bytes for a client that is slow to take them. The client
 * is owed those bytes: the pump ends `done` once it has them all, with the reset's errno (so that the caller does not
 * pool the connection). Before, the reset ended the pump at once and the answer was cut.
 *
 * The client's end is a Unix socket: its buffer is small and fixed (no TCP autotuning), so a client that does not
 * read leaves the body's last bytes in the pump's pipe, and the race is the same on every run (see FIRST and LAST).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { holdReading, kernelRelayStats, kernelRelayUnavailable, resumeReading, startBodyPump, useRelay, type BodyPumpEnd } from '../../net/kernel-relay.js';
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

describe('body pump: upstream resets after the last byte', { skip: kernelRelayUnavailable() }, () => {
  test('the client still gets every byte; the pump ends done, naming the reset', async () => {
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

    // Every byte written has left upstream's socket and the proxy's: the pump has read them.
    const allRead = () => {
      const q = queues(port);
      return q.length === 2 && q.every(({ recv, send }) => recv === 0 && send === 0);
    };
    const sent: Buffer[] = [];
    let end: BodyPumpEnd | undefined;
    for (;;) {
      assert.ok(sent.length < MAX_PIECES, `${MAX_PIECES} pieces fit in the client's buffer`);
      const piece = randomBytes(PIECE);
      end = undefined;
      assert.ok(
        startBodyPump(upstream, accepted!, PIECE, 10_000, (e) => (end = e)),
        'the addon starts a pump',
      );
      serverSide!.write(piece);
      sent.push(piece);
      await waitFor('the pump to read the piece', allRead, 10_000);
      // stats() takes the relay's lock: the thread has finished the work that read the piece. A pump still open has
      // a client that took less than the piece, and the rest in its pipe.
      if (kernelRelayStats().relays > 0) break;
      await waitFor('the pump to end', () => end !== undefined, 10_000);
      assert.deepEqual(end, { outcome: 'done', bytes: PIECE });
    }
    const body = Buffer.concat(sent);
    serverSide!.resetAndDestroy();
    await waitFor('the reset to reach the proxy', () => queues(port).length === 0, 5000);
    // The relay thread sees the reset at once; give it time to end the pump, as it did before the fix.
    await new Promise((resolve) => setTimeout(resolve, 300));

    const received: Buffer[] = [];
    let size = 0;
    client.on('data', (chunk: Buffer) => {
      received.push(chunk);
      size += chunk.length;
    });
    resumeReading(client);
    client.resume();
    await waitFor('the pump to end', () => end !== undefined, 10_000);
    assert.deepEqual(end, { outcome: 'done', bytes: PIECE, code: 'ECONNRESET' });
    await waitFor('the client to get every byte', () => size >= body.length, 10_000);
    const got = Buffer.concat(received);
    assert.equal(got.length, body.length);
    assert.equal(sha256Hex(got), sha256Hex(body));
  });
});
