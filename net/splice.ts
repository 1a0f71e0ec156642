import type { Socket } from 'node:net';
import type { CloseError } from '../events/schema.js';
import {
  attachKernelRelay,
  cancelKernelUpstream,
  kernelRelayAfterBytes,
  kernelRelayUsable,
  releaseKernelRelay,
  resumeReading,
  startKernelRelay,
  stopReading,
  takeKernelUpstream,
  writesFlushed,
  type KernelRelayEnd,
  type RelayCancel,
} from './kernel-relay.js';

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

/** The half-close timeout of options that may leave it out (SpliceOptions, the request reader's): the idle timeout. */
export function halfCloseTimeoutOf(options: { idleTimeoutMs: number; halfCloseTimeoutMs?: number | undefined }): number {
  return options.halfCloseTimeoutMs ?? options.idleTimeoutMs;
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
   * A `relay` with an `onClose` of its own goes on under another decision (the late first bytes named the host the
   * tunnel is for): `onClose` above is called at once (no bytes, `error: handed-over`), and the relay's end, with
   * every byte it moved (what the server sent before the gate settled too), goes to the outcome's `onClose`. A gate
   * (or a `hand-over` under another decision) that settles after the splice has ended (the client reset right after its
   * first bytes, a timeout) still has the outcome's `onClose` called, once, with no bytes (they are in the close above)
   * and the splice's error.
   */
  clientGate?: Promise<ClientGateOutcome>;
}

export type ClientGateOutcome =
  | { action: 'relay'; onClose?: (result: SpliceResult) => void }
  | { action: 'refuse' }
  /** `onClose`: the close of the decision the client is handed over under, called here only if the splice ended first (`to` is then not called). */
  | HandOver;

/**
 * The client socket goes to `to`. `reuseUpstream`: the tunnel's upstream goes with it (the second argument, its owner from
 * then on), as a plain node socket with none of the splice's listeners or timeouts, when nothing has been read from it
 * or written to it and it has not ended (issue 14: a plain-HTTP tunnel's first request is sent on it); else it is closed
 * as without, and `to` gets undefined.
 */
export interface HandOver {
  action: 'hand-over';
  to: (client: Socket, upstream?: Socket) => void;
  onClose?: (result: SpliceResult) => void;
  reuseUpstream?: boolean;
}

export const RELAY: ClientGateOutcome = { action: 'relay' };
export const REFUSE: ClientGateOutcome = { action: 'refuse' };

/**
 * Relay client <-> upstream, half-close included: a FIN from either side is passed on as a FIN (the other
 * direction goes on: a client may send its request, shut down its sending side and read the reply). The
 * relay ends when both sockets have closed, when either fails, or after idleTimeoutMs without a byte
 * (halfCloseTimeoutMs once a side has half-closed); then both are destroyed and bytes reported once.
 * `bytesIn`/`bytesOut` start at what was already relayed (e.g. a peeked ClientHello).
 *
 * A decided tunnel (no clientGate, or once it has settled on `relay`) of two plain TCP sockets goes to the kernel
 * relay (net/kernel-relay.ts) where the setting `relay` is `kernel` and the addon is there: same semantics, bytes
 * moved by splice(2) off the JS thread.
 */
export function splice(client: Socket, upstream: Socket, options: SpliceOptions): void {
  const started = Date.now();
  // Whose close the relay's end is: the tunnel's decision, or the one its late first bytes were decided on (clientGate).
  let onClose = options.onClose;
  const baseIn = upstream.bytesRead;
  const baseOut = upstream.bytesWritten;
  // A FIN ends only the direction it came in; node reads allowHalfOpen when the socket's 'end' comes.
  client.allowHalfOpen = true;
  upstream.allowHalfOpen = true;
  let error: CloseError | undefined;
  let done = false;
  // What the kernel relay moved, once it has ended; node's counters stop at the hand-over.
  let kernel: KernelRelayEnd | undefined;
  const result = (): SpliceResult => ({
    bytesIn: upstream.bytesRead - baseIn + (kernel?.bytesIn ?? 0),
    bytesOut: upstream.bytesWritten - baseOut + (kernel?.bytesOut ?? 0),
    durationMs: Date.now() - started,
    ...(error && { error }),
  });
  const finish = () => {
    if (done) return;
    done = true;
    client.destroy();
    upstream.destroy();
    onClose(result());
  };
  const timedOut = () => {
    error ??= halfClosed ? 'half-close-timeout' : 'idle-timeout';
    finish();
  };
  let halfClosed = false;
  const halfCloseTimeoutMs = halfCloseTimeoutOf(options);
  const onHalfClose = () => {
    if (halfClosed) return;
    halfClosed = true;
    if (!client.destroyed) client.setTimeout(halfCloseTimeoutMs);
    if (!upstream.destroyed) upstream.setTimeout(halfCloseTimeoutMs);
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
  const onUpstreamError = (err: NodeJS.ErrnoException) => {
    error ??= relayError('upstream', err);
    finish();
  };
  upstream.on('error', onUpstreamError);
  client.once('end', onHalfClose);
  upstream.once('end', onHalfClose);
  client.once('close', onClientClose);
  upstream.once('close', onUpstreamClose);
  const release = (handOver: HandOver) => {
    done = true;
    upstream.unpipe(client);
    for (const socket of [client, upstream]) {
      socket.off('end', onHalfClose);
      socket.off('timeout', timedOut);
      socket.setTimeout(0);
    }
    client.off('error', onClientError);
    client.off('close', onClientClose);
    let kept: Socket | undefined;
    if (handOver.reuseUpstream && !halfClosed && untouched(upstream)) {
      upstream.off('error', onUpstreamError);
      upstream.off('close', onUpstreamClose);
      kept = upstream;
    } else upstream.destroy();
    error = 'handed-over';
    options.onClose(result());
    handOver.to(client, kept);
  };
  /*
   * The kernel hand-over: node stops reading both sockets, what it had read already is written on by node, and
   * once node has nothing left to write the fds go to the native relay, which from then on owns the timeouts and
   * half-closes. A half-closed tunnel (a FIN seen by node) stays here. Errors and closes while waiting for node's
   * writes are this splice's as before.
   */
  const handOver = () => {
    if (done) return;
    upstream.unpipe(client);
    client.unpipe(upstream);
    const fromClient = stopReading(client);
    const fromUpstream = stopReading(upstream);
    if (fromClient) upstream.write(fromClient);
    if (fromUpstream) client.write(fromUpstream);
    // Polled, backing off to 100 ms: a peer that does not read keeps node's writes queued for as long as it likes.
    let pollMs = 1;
    const start = () => {
      if (done) return;
      if (!writesFlushed(client) || !writesFlushed(upstream)) {
        setTimeout(start, pollMs);
        pollMs = Math.min(pollMs * 2, 100);
        return;
      }
      const started =
        !halfClosed &&
        kernelRelayUsable(client, upstream) &&
        startKernelRelay(client, upstream, { idleTimeoutMs: options.idleTimeoutMs, halfCloseTimeoutMs }, (end, byDestroy) => {
          kernel = end;
          error ??= end.error;
          // A destroy (the drain, an error) goes on through the socket's 'close' listener.
          if (!byDestroy) finish();
        });
      if (!started) {
        resumeReading(client);
        resumeReading(upstream);
        upstream.pipe(client);
        client.pipe(upstream);
        return;
      }
      for (const socket of [client, upstream]) {
        socket.setTimeout(0);
        socket.off('timeout', timedOut);
        socket.off('end', onHalfClose);
      }
    };
    start();
  };
  // Decided: relayed here, and by the kernel relay at once (through `handOverNow`) or once kernelRelayAfterBytes() have moved here.
  const relayDecided = (handOverNow: () => void = handOver) => {
    const afterBytes = kernelRelayAfterBytes();
    // A tunnel half-closed already (the server's FIN came while the gate was open) stays here.
    const usable = !halfClosed && kernelRelayUsable(client, upstream);
    if (afterBytes === 0 && usable) return handOverNow();
    client.pipe(upstream);
    if (afterBytes === 0 || !usable) return;
    const base = client.bytesRead + upstream.bytesRead;
    const onData = () => {
      if (client.bytesRead + upstream.bytesRead - base < afterBytes) return;
      client.off('data', onData);
      upstream.off('data', onData);
      if (!done && !halfClosed && kernelRelayUsable(client, upstream)) handOver();
    };
    client.on('data', onData);
    upstream.on('data', onData);
  };
  upstream.pipe(client);
  // Without a gate the hand-over comes one turn later: what the caller writes right after splice() (relayUpgrade's
  // head) is node's, queued ahead of it and flushed before the native relay writes a byte; handed over at once, it
  // would race the relay.
  if (!options.clientGate) return relayDecided(() => void setImmediate(handOver));
  // Decided: the kernel relay takes over from here (the peeked bytes node holds are sent on first).
  awaitGate(options.clientGate, client, () => done, {
    relay: (next) => {
      if (next) onClose = handOverClose(options, started, next);
      relayDecided();
    },
    handOver: release,
    error: (why) => (error ??= why),
    finish,
    ended: (next) => next(endedBeforeGate(started, error)),
  });
}

/**
 * Whether a node socket is as its connect left it: open both ways, nothing read from it (or waiting in its buffer) or
 * written to it. A FIN read already but not yet emitted as 'end' (the stream paused) counts as read.
 */
function untouched(socket: Socket): boolean {
  const state = (socket as unknown as { _readableState?: { ended?: boolean } })._readableState;
  return !socket.destroyed && socket.writable && socket.readable && state?.ended !== true && socket.bytesRead === 0 && socket.readableLength === 0 && socket.bytesWritten === 0;
}

/** The close of a later decision whose gate settled after the splice had ended: nothing moved under it. */
function endedBeforeGate(started: number, error: CloseError | undefined): SpliceResult {
  return { bytesIn: 0, bytesOut: 0, durationMs: Date.now() - started, error: error ?? 'client-aborted' };
}

/** A gate's `relay` under another decision: the tunnel's own close now (handed-over, no bytes); `next` is the close from here on. */
function handOverClose(options: SpliceOptions, started: number, next: (result: SpliceResult) => void): (result: SpliceResult) => void {
  options.onClose({ bytesIn: 0, bytesOut: 0, durationMs: Date.now() - started, error: 'handed-over' });
  return next;
}

/**
 * Act on a client gate's outcome (unless the splice is `done` by then): `relay`, `handOver`, or a refusal (the
 * client reset: it must not read a clean end as a reply, as for any refused connection) or a failed gate, each
 * setting its `error` and ending the splice (`finish`). Done already, a `relay` or `hand-over` under another decision
 * has that decision's close written through `ended` (its decision event is out: it must not be left without a close).
 */
function awaitGate(
  gate: Promise<ClientGateOutcome>,
  client: Socket,
  done: () => boolean,
  on: {
    relay: (onClose: ((result: SpliceResult) => void) | undefined) => void;
    handOver: (handOver: HandOver) => void;
    error: (error: CloseError) => void;
    finish: () => void;
    ended: (onClose: (result: SpliceResult) => void) => void;
  },
): void {
  gate.then(
    (outcome) => {
      if (done()) {
        if (outcome.action !== 'refuse' && outcome.onClose) on.ended(outcome.onClose);
        return;
      }
      if (outcome.action === 'hand-over') return on.handOver(outcome);
      if (outcome.action === 'relay') return on.relay(outcome.onClose);
      on.error('refused-after-first-bytes');
      client.resetAndDestroy();
      on.finish();
    },
    () => {
      on.error('gate-failed');
      on.finish();
    },
  );
}

/**
 * splice() for a tunnel whose upstream the kernel relay opened (connectUpstreamInKernel: `upstream` is its id, the fd
 * the relay's own): the same relay, close result and gate outcomes, without a JavaScript socket for upstream. Once
 * node has flushed what it wrote to the client (the 200), the relay starts: upstream's bytes flow to the client at
 * once, the client's once the gate settles on `relay` (what node read of them meanwhile, the peeked ClientHello,
 * sent first). Timeouts, half-closes and errors are the relay's from the start.
 */
export function spliceKernelUpstream(client: Socket, upstream: number, options: SpliceOptions): void {
  const started = Date.now();
  let onClose = options.onClose; // as in splice()
  client.allowHalfOpen = true;
  let error: CloseError | undefined;
  let done = false;
  let attached = false;
  let cancelRelay: RelayCancel | undefined;
  let decided = false;
  let kernel: KernelRelayEnd | undefined;
  // Until the relay has the tunnel its idle timeout is node's, as in splice(): a client that does not read what node
  // wrote to it (the 200) keeps the relay from starting, and its upstream open, for as long as it likes.
  const timedOut = () => {
    error ??= 'idle-timeout';
    finish();
  };
  // Armed only while the relay waits for node's writes (nearly always it starts at once: no timer per tunnel then).
  let timerArmed = false;
  const stopTimer = () => {
    if (!timerArmed) return;
    timerArmed = false;
    client.setTimeout(0);
    client.off('timeout', timedOut);
  };
  const finish = () => {
    if (done) return;
    done = true;
    stopTimer();
    // Not attached yet: the upstream is still only the addon's. Attached: the client's destroy cancels the relay.
    if (!attached) cancelKernelUpstream(upstream);
    client.destroy();
    onClose({ bytesIn: kernel?.bytesIn ?? 0, bytesOut: kernel?.bytesOut ?? 0, durationMs: Date.now() - started, ...(error && { error }) });
  };
  const onClientError = (err: NodeJS.ErrnoException) => {
    error ??= relayError('client', err);
    finish();
  };
  client.on('error', onClientError);
  client.once('close', finish);
  const release = () => {
    if (done || !attached || !decided) return;
    // false (not released): the relay ended meanwhile, and its end comes through onEnd.
    try {
      releaseKernelRelay(upstream, stopReading(client));
    } catch (err) {
      error ??= relayError('upstream', err as NodeJS.ErrnoException);
      finish();
    }
  };
  const halfCloseTimeoutMs = halfCloseTimeoutOf(options);
  // Polled, backing off to 100 ms, as splice()'s hand-over: a client that does not read keeps the 200 queued.
  let pollMs = 1;
  const attach = () => {
    if (done) return;
    if (!writesFlushed(client)) {
      if (!timerArmed) {
        timerArmed = true;
        client.setTimeout(options.idleTimeoutMs, timedOut);
      }
      setTimeout(attach, pollMs);
      pollMs = Math.min(pollMs * 2, 100);
      return;
    }
    try {
      cancelRelay = attachKernelRelay(upstream, client, { idleTimeoutMs: options.idleTimeoutMs, halfCloseTimeoutMs }, (end, byDestroy) => {
        kernel = end;
        error ??= end.error;
        // A destroy (the drain, an error) goes on through the client's 'close' listener.
        if (!byDestroy) finish();
      });
    } catch (err) {
      error ??= relayError('client', err as NodeJS.ErrnoException);
      return finish();
    }
    attached = cancelRelay !== undefined;
    if (!attached) {
      error ??= 'upstream-error';
      return finish();
    }
    // From here on the relay's timeouts.
    stopTimer();
    release();
  };
  attach();
  const decide = () => {
    decided = true;
    release();
  };
  if (!options.clientGate) return decide();
  awaitGate(options.clientGate, client, () => done, {
    relay: (next) => {
      if (next) onClose = handOverClose(options, started, next);
      decide();
    },
    handOver: (handOver) => {
      done = true;
      stopTimer();
      client.off('error', onClientError);
      client.off('close', finish);
      // The relay (or the connected upstream) is cancelled, its upstream fd closed (or, untouched and wanted, made a node
      // socket for the taker); the client is left as it was.
      let kept: Socket | undefined;
      if (handOver.reuseUpstream) kept = cancelRelay ? cancelRelay.takeUpstream() : takeKernelUpstream(upstream);
      else if (cancelRelay) cancelRelay();
      else cancelKernelUpstream(upstream);
      error = 'handed-over';
      options.onClose({ bytesIn: kernel?.bytesIn ?? 0, bytesOut: kernel?.bytesOut ?? 0, durationMs: Date.now() - started, error });
      handOver.to(client, kept);
    },
    error: (why) => (error ??= why),
    finish,
    ended: (next) => next(endedBeforeGate(started, error)),
  });
}
