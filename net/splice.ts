import type { Socket } from 'node:net';

export interface SpliceResult {
  /** Bytes from upstream to the client. */
  bytesIn: number;
  /** Bytes from the client to upstream. */
  bytesOut: number;
  durationMs: number;
  error?: string;
}

export interface SpliceOptions {
  idleTimeoutMs: number;
  onClose: (result: SpliceResult) => void;
  /**
   * Hold the client's bytes back (the server's still flow to the client) until this settles: true relays
   * them, false resets the client, closes upstream and reports `error: refused-after-first-bytes`, and a
   * function gets the client socket, released from this splice (upstream closed, `error: handed-over`).
   */
  clientGate?: Promise<ClientGateOutcome>;
}

export type ClientGateOutcome = boolean | ((client: Socket) => void);

/**
 * Pipe client <-> upstream until either side ends, errs or is idle for idleTimeoutMs; destroy both and
 * report bytes once. `bytesIn`/`bytesOut` start at what was already relayed (e.g. a peeked ClientHello).
 */
export function splice(client: Socket, upstream: Socket, options: SpliceOptions): void {
  const started = Date.now();
  const baseIn = upstream.bytesRead;
  const baseOut = upstream.bytesWritten;
  let error: string | undefined;
  let done = false;
  const result = (): SpliceResult => ({
    bytesIn: upstream.bytesRead - baseIn, bytesOut: upstream.bytesWritten - baseOut, durationMs: Date.now() - started, ...(error && { error }),
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
  const onClientError = (err: NodeJS.ErrnoException) => { error ??= `client-${err.code ?? 'error'}`; finish(); };
  client.setTimeout(options.idleTimeoutMs, idle);
  upstream.setTimeout(options.idleTimeoutMs, idle);
  client.on('error', onClientError);
  upstream.on('error', (err: NodeJS.ErrnoException) => { error ??= `upstream-${err.code ?? 'error'}`; finish(); });
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
    (relay) => {
      if (done) return;
      if (typeof relay === 'function') return release(relay);
      if (relay) return void client.pipe(upstream);
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
