import type { Socket } from 'node:net';
import type { CloseError } from '../events/schema.js';

export interface SpliceResult {
  /** Bytes from upstream to the client. */
  bytesIn: number;
  /** Bytes from the client to upstream. */
  bytesOut: number;
  durationMs: number;
  error?: CloseError;
}

/** The close error of a socket that failed while relaying: `client-<ERRNO>` or `upstream-<ERRNO>`. */
export function relayError(side: 'client' | 'upstream', err: NodeJS.ErrnoException): CloseError {
  return `${side}-${err.code ?? 'error'}`;
}

export interface SpliceOptions {
  idleTimeoutMs: number;
  /**
   * Once one side has half-closed (sent its FIN, relayed as a FIN to the other), the connection is closed
   * when nothing moves for this long (error `half-close-timeout`). Default: idleTimeoutMs.
   */
  halfCloseTimeoutMs?: number;
  onClose: (result: SpliceResult) => void;
  /**
   * Hold the client's bytes back (the server's still flow to the client) until this settles: `relay` relays
   * them, `refuse` resets the client, closes upstream and reports `error: refused-after-first-bytes`, and
   * `hand-over` gives the client socket to `to`, released from this splice (upstream closed, `error: handed-over`).
   */
  clientGate?: Promise<ClientGateOutcome>;
}

export type ClientGateOutcome = { action: 'relay' } | { action: 'refuse' } | { action: 'hand-over'; to: (client: Socket) => void };

export const RELAY: ClientGateOutcome = { action: 'relay' };
export const REFUSE: ClientGateOutcome = { action: 'refuse' };

/**
 * Relay client <-> upstream, half-close included: a FIN from either side is passed on as a FIN (the other
 * direction goes on: a client may send its request, shut down its sending side and read the reply). The
 * relay ends when both sockets have closed, when either fails, or after idleTimeoutMs without a byte
 * (halfCloseTimeoutMs once a side has half-closed); then both are destroyed and bytes reported once.
 * `bytesIn`/`bytesOut` start at what was already relayed (e.g. a peeked ClientHello).
 */
export function splice(client: Socket, upstream: Socket, options: SpliceOptions): void {
  const started = Date.now();
  const baseIn = upstream.bytesRead;
  const baseOut = upstream.bytesWritten;
  // A FIN ends only the direction it came in; node reads allowHalfOpen when the socket's 'end' comes.
  client.allowHalfOpen = true;
  upstream.allowHalfOpen = true;
  let error: CloseError | undefined;
  let done = false;
  const result = (): SpliceResult => ({
    bytesIn: upstream.bytesRead - baseIn,
    bytesOut: upstream.bytesWritten - baseOut,
    durationMs: Date.now() - started,
    ...(error && { error }),
  });
  const finish = () => {
    if (done) return;
    done = true;
    client.destroy();
    upstream.destroy();
    options.onClose(result());
  };
  const timedOut = () => {
    error ??= halfClosed ? 'half-close-timeout' : 'idle-timeout';
    finish();
  };
  let halfClosed = false;
  const onHalfClose = () => {
    if (halfClosed) return;
    halfClosed = true;
    const bound = options.halfCloseTimeoutMs ?? options.idleTimeoutMs;
    if (!client.destroyed) client.setTimeout(bound);
    if (!upstream.destroyed) upstream.setTimeout(bound);
  };
  const onClientError = (err: NodeJS.ErrnoException) => {
    error ??= relayError('client', err);
    finish();
  };
  // Done when both sockets have closed. A socket that closes without having had its FIN (destroyed: a reset,
  // the drain at shutdown) takes the relay down with it; one that closed cleanly waits for the other.
  const onCloseOf = (socket: Socket, other: Socket) => () => {
    // Closed cleanly means both directions done: its FIN came (readableEnded) and ours went (writableFinished).
    if (other.closed || !socket.readableEnded || !socket.writableFinished) finish();
  };
  const onClientClose = onCloseOf(client, upstream);
  const onUpstreamClose = onCloseOf(upstream, client);
  client.setTimeout(options.idleTimeoutMs, timedOut);
  upstream.setTimeout(options.idleTimeoutMs, timedOut);
  client.on('error', onClientError);
  upstream.on('error', (err: NodeJS.ErrnoException) => {
    error ??= relayError('upstream', err);
    finish();
  });
  client.once('end', onHalfClose);
  upstream.once('end', onHalfClose);
  client.once('close', onClientClose);
  upstream.once('close', onUpstreamClose);
  const release = (takeOver: (client: Socket) => void) => {
    done = true;
    upstream.unpipe(client);
    client.off('error', onClientError);
    client.off('close', onClientClose);
    client.off('end', onHalfClose);
    client.off('timeout', timedOut);
    client.setTimeout(0);
    upstream.destroy();
    error = 'handed-over';
    options.onClose(result());
    takeOver(client);
  };
  upstream.pipe(client);
  if (!options.clientGate) {
    client.pipe(upstream);
    return;
  }
  options.clientGate.then(
    (outcome) => {
      if (done) return;
      if (outcome.action === 'hand-over') return release(outcome.to);
      if (outcome.action === 'relay') return void client.pipe(upstream);
      error ??= 'refused-after-first-bytes';
      // A reset, as for any refused connection: the client must not read a clean end as a reply.
      client.resetAndDestroy();
      finish();
    },
    () => {
      error ??= 'gate-failed';
      finish();
    },
  );
}
