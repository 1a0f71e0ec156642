/** node's default headersTimeout, which the explicit proxy's HTTP server used: a head must be complete by then (head-timeout). */
export const HEAD_TIMEOUT_MS = 30_000;
/** How often unfinished heads are checked against HEAD_TIMEOUT_MS (one timer for all of a listener's connections). */
const HEAD_SWEEP_MS = 1_000;
/**
 * The sweep's shortest period, whatever head-timeout is: a head then ends at most this much after it (until review45
 * head-timeout 1 swept every millisecond, over every connection read as HTTP, while any was open).
 */
const HEAD_SWEEP_MIN_MS = 100;

export interface HeadSweep {
  /** Make sure the timer runs (a connection with a head to watch was added). */
  arm(): void;
  /** Stop the timer (the listener closed). */
  stop(): void;
}

/**
 * One timer that ends heads unfinished after `timeoutMs`: every HEAD_SWEEP_MS (or `timeoutMs`, if shorter, but not
 * under HEAD_SWEEP_MIN_MS) it calls `expire` with the time before which a head began too long ago; `expire` ends those
 * and answers whether any connection is left to watch (if not, the timer stops until the next `arm`).
 */
export function headSweep(expire: (startedBefore: number) => boolean, timeoutMs = HEAD_TIMEOUT_MS): HeadSweep {
  let timer: NodeJS.Timeout | undefined;
  const stop = () => {
    clearInterval(timer);
    timer = undefined;
  };
  const tick = () => {
    if (!expire(Date.now() - timeoutMs)) stop();
  };
  return {
    arm: () => {
      timer ??= setInterval(tick, Math.max(HEAD_SWEEP_MIN_MS, Math.min(HEAD_SWEEP_MS, timeoutMs))).unref();
    },
    stop,
  };
}
