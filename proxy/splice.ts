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
   * them, false resets the client, closes upstream and reports `error: refused-after-first-bytes`.
   */
  clientGate?: Promise<boolean>;
}

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
  const finish = () => {
    if (done) return;
    done = true;
    client.destroy();
    upstream.destroy();
    const result: SpliceResult = { bytesIn: upstream.bytesRead - baseIn, bytesOut: upstream.bytesWritten - baseOut, durationMs: Date.now() - started };
    if (error) result.error = error;
    options.onClose(result);
  };
  const idle = () => {
    error ??= 'idle-timeout';
    finish();
  };
  client.setTimeout(options.idleTimeoutMs, idle);
  upstream.setTimeout(options.idleTimeoutMs, idle);
  client.on('error', (err: NodeJS.ErrnoException) => { error ??= `client-${err.code ?? 'error'}`; finish(); });
  upstream.on('error', (err: NodeJS.ErrnoException) => { error ??= `upstream-${err.code ?? 'error'}`; finish(); });
  client.on('close', finish);
  upstream.on('close', finish);
  upstream.pipe(client);
  if (!options.clientGate) {
    client.pipe(upstream);
    return;
  }
  options.clientGate.then(
    (relay) => {
      if (done) return;
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
