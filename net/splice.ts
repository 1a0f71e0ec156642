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
 * Pipe client <-> upstream until either side ends, errs or is idle for idleTimeoutMs; destroy both and
 * report bytes once. `bytesIn`/`bytesOut` start at what was already relayed (e.g. a peeked ClientHello).
 */
export function splice(client: Socket, upstream: Socket, options: SpliceOptions): void {
  const started = Date.now();
  const baseIn = upstream.bytesRead;
  const baseOut = upstream.bytesWritten;
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
  const idle = () => {
    error ??= 'idle-timeout';
    finish();
  };
  const onClientError = (err: NodeJS.ErrnoException) => {
    error ??= relayError('client', err);
    finish();
  };
  client.setTimeout(options.idleTimeoutMs, idle);
  upstream.setTimeout(options.idleTimeoutMs, idle);
  client.on('error', onClientError);
  upstream.on('error', (err: NodeJS.ErrnoException) => {
    error ??= relayError('upstream', err);
    finish();
  });
  client.on('close', finish);
  upstream.on('close', finish);
  const release = (takeOver: (client: Socket) => void) => {
    done = true;
    upstream.unpipe(client);
    client.off('error', onClientError);
    client.off('close', finish);
    client.off('timeout', idle);
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
