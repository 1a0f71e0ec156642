import type { Socket } from 'node:net';

/**
 * A server's lingering close (RFC 9112 9.6, what nginx's `lingering_close` and Apache do): when the server ends a
 * connection while the client may still be sending (a request refused before its body was read, bytes pipelined
 * behind a request that said `close`), closing the socket with unread bytes makes the kernel answer them with a
 * reset, and a reset that reaches the client before it has read the answer discards that answer. A client that
 * writes its whole body before reading (Python's http.client, so `requests` and `twine upload`) then reports a
 * broken pipe instead of the 403 that says why. So the server's side is ended (its FIN after the answers), and what
 * the client still sends is read and dropped, never parsed, until the client ends too or a bound is reached.
 */
export interface LingerLimits {
  /** The longest the connection lingers in all. */
  maxMs: number;
  /** The longest without a byte from the client. */
  idleMs: number;
  /** The most bytes read and dropped. */
  maxBytes: number;
}

export const LINGER_LIMITS: LingerLimits = { maxMs: 10_000, idleMs: 2_000, maxBytes: 128 * 1024 * 1024 };

/**
 * End `socket` after what is written to it, dropping what the client still sends within `limits`; then it is
 * destroyed (at once on a bound, after the last write once the client has ended). The caller has stopped reading
 * the socket for itself: every 'data', 'end' and 'timeout' listener of its own is removed beforehand.
 */
export function lingeringClose(socket: Socket, limits: LingerLimits = LINGER_LIMITS): void {
  if (socket.destroyed) return;
  let dropped = 0;
  const stop = () => {
    clearTimeout(bound);
    socket.destroy();
  };
  // On every path: destroySoon waits for the last write to go out, which a client that no longer reads never lets
  // happen (a TLS socket's close_notify is such a write), and the caller's own timeout listener is gone.
  const bound = setTimeout(stop, limits.maxMs);
  socket.once('close', () => clearTimeout(bound));
  // The client has ended: nothing more can come, so nothing can be reset.
  if (socket.readableEnded) return void socket.destroySoon();
  socket.setTimeout(limits.idleMs, stop);
  socket.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > limits.maxBytes) stop();
  });
  // The client's FIN: our answers still going out finish first (within the bound: a client that no longer reads).
  socket.once('end', () => socket.destroySoon());
  socket.end();
  socket.resume();
}
