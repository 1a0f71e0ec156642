/**
 * Loopback sockets for tests that relay bytes: every server listened on and socket made is kept, so one call in the
 * file's `after` closes them all (a leaked socket must not hold the run open).
 */
import { createHash } from 'node:crypto';
import net from 'node:net';

export interface LoopbackSockets {
  /** Keep `socket` until it closes (errors are the test's to assert, not the process's to crash on). */
  track(socket: net.Socket): net.Socket;
  /** Listen on an ephemeral port of `host`; the server's sockets are tracked. */
  listen(server: net.Server, host?: string): Promise<number>;
  /** A connected client to host:port, half-open allowed. */
  connect(port: number, host?: string): Promise<net.Socket>;
  /** Destroy every tracked socket and close every server. */
  closeAll(): void;
}

export function loopbackSockets(): LoopbackSockets {
  const servers: net.Server[] = [];
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => sockets.delete(socket));
    return socket;
  };
  return {
    track,
    listen(server, host = '127.0.0.1') {
      servers.push(server);
      server.on('connection', (socket) => track(socket));
      return new Promise((resolve) => server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port)));
    },
    connect(port, host = '127.0.0.1') {
      return new Promise((resolve, reject) => {
        const socket = track(net.connect({ port, host, allowHalfOpen: true }, () => resolve(socket)));
        socket.once('error', reject);
      });
    },
    closeAll() {
      for (const s of sockets) s.destroy();
      for (const s of servers) s.close();
    },
  };
}

/** Everything `socket` sends until its FIN. */
export function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
  });
}

export const sha256Hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** `p`, or a rejection naming the bound when it takes longer than `ms`. */
export function bounded<T>(p: Promise<T>, ms = 10_000): Promise<T> {
  return Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms).unref())]);
}
