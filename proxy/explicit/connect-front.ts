import type net from 'node:net';
import { parseConnectHead } from './connect-head.js';
import { headSweep } from './head-timeout.js';

/** A socket error or a head refused, handed to the server's clientError handler as node's HTTP server would. */
function clientError(code: string, message: string): NodeJS.ErrnoException {
  return Object.assign(new Error(message), { code });
}

function destroyOnError(this: net.Socket): void {
  this.destroy();
}

interface InHead {
  since: number;
  data: (chunk: Buffer) => void;
  end: () => void;
  error: (err: Error) => void;
}

export interface ConnectFrontHandlers {
  /** A complete CONNECT head: `target` as written, `rest` the bytes that came after the head (the tunnel's first). */
  connect(socket: net.Socket, target: string, rest: Buffer): void;
  /** The same errors node's HTTP server reports with 'clientError' (the caller answers them alike). */
  clientError(err: NodeJS.ErrnoException, socket: net.Socket): void;
  /**
   * Any other connection, its first bytes put back: read as HTTP by the caller, its requests with `lenientFlags` (those
   * of the connection's start: `lenientFlags()`).
   */
  other(socket: net.Socket, lenientFlags: number): void;
  /** How the requests of a connection beginning now are read (request-leniency.ts): a CONNECT head too. */
  lenientFlags(): number;
}

/** A listener whose connections can be closed when idle, or all at once (what node's HTTP server offered). */
export interface ClosableServer extends net.Server {
  closeIdleConnections(): void;
  closeAllConnections(): void;
}

/**
 * Put a lean CONNECT reader in front of a server's connections: a new connection whose first bytes are
 * `CONNECT ` has its head read by connect-head.ts, not by an HTTP parser (node's server cost its parser,
 * IncomingMessage, per-socket listeners and the hand-back of an upgraded socket: about 6% of the main thread's busy
 * time per tunnel in a profile, docs/benchmark.md "Lean CONNECT reader"); any other connection goes to
 * `handlers.other` unchanged (its bytes put back first), so absolute-URI requests, keep-alive and later CONNECTs on
 * such a connection are the request reader's. Connections still sending their head are closed by the server's
 * closeIdleConnections (when nothing came yet) and closeAllConnections (set them before calling this); so are those
 * whose head was refused and that the client keeps open.
 */
export function frontConnects(server: ClosableServer, handlers: ConnectFrontHandlers, headTimeoutMs?: number): void {
  /** Connections still in their head: when each was accepted (ms) and the listeners to take off it. */
  const pending = new Map<net.Socket, InHead>();
  const sweep = headSweep((startedBefore) => {
    for (const [socket, head] of pending) if (head.since <= startedBefore) fail(socket, clientError('ERR_HTTP_REQUEST_TIMEOUT', 'Request timeout'));
    return pending.size > 0;
  }, headTimeoutMs);
  const release = (socket: net.Socket) => {
    const head = pending.get(socket);
    if (!head) return;
    pending.delete(socket);
    socket.removeListener('data', head.data);
    socket.removeListener('end', head.end);
    socket.removeListener('error', head.error);
  };
  /** Refused heads whose sockets are still open (a 400 ends only our side): closed by closeAllConnections. */
  const refused = new Set<net.Socket>();
  /** Answered by the clientError handler, which may write a 400: an error while writing it only destroys the socket. */
  const fail = (socket: net.Socket, err: NodeJS.ErrnoException) => {
    release(socket);
    socket.on('error', destroyOnError);
    if (!socket.destroyed) {
      refused.add(socket);
      socket.once('close', () => refused.delete(socket));
    }
    handlers.clientError(err, socket);
  };

  server.on('connection', (socket: net.Socket) => {
    let received: Buffer | undefined;
    const lenientFlags = handlers.lenientFlags();
    const data = (chunk: Buffer) => {
      received = received ? Buffer.concat([received, chunk]) : chunk;
      const head = parseConnectHead(received, lenientFlags !== 0);
      if (head.kind === 'incomplete') return;
      if (head.kind === 'malformed') return fail(socket, clientError(head.code, `Parse Error: ${head.code}`));
      release(socket);
      // As node's HTTP server leaves an upgraded socket: not flowing, reading until its buffer is full.
      (socket as { readableFlowing: boolean | null }).readableFlowing = null;
      if (head.kind === 'other' || head.kind === 'bare-line-ends') {
        socket.unshift(received);
        return handlers.other(socket, lenientFlags);
      }
      handlers.connect(socket, head.target, received.subarray(head.headBytes));
    };
    // A client that closes mid-head is answered as node's parser answers an unexpected end (its FIN is half a close).
    const end = () => {
      if (received) return fail(socket, clientError('HPE_INVALID_EOF_STATE', 'Parse Error: HPE_INVALID_EOF_STATE'));
      release(socket);
      socket.end();
    };
    const error = (err: Error) => fail(socket, err);
    pending.set(socket, { since: Date.now(), data, end, error });
    socket.on('data', data);
    socket.on('end', end);
    socket.on('error', error);
    sweep.arm();
  });

  const destroyInHead = (socket: net.Socket) => {
    release(socket);
    socket.destroy();
  };
  const closeIdle = server.closeIdleConnections.bind(server);
  server.closeIdleConnections = () => {
    for (const socket of [...pending.keys()]) if (socket.bytesRead === 0) destroyInHead(socket);
    closeIdle();
  };
  const closeAll = server.closeAllConnections.bind(server);
  server.closeAllConnections = () => {
    for (const socket of [...pending.keys()]) destroyInHead(socket);
    for (const socket of [...refused]) socket.destroy();
    closeAll();
  };
  server.on('close', sweep.stop);
}
