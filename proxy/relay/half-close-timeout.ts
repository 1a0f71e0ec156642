import type { Duplex } from 'node:stream';

const timedOut = Symbol('egress-guard half-close timeout');
type Marked = Duplex & { [timedOut]?: true };

/**
 * A client connection the request reader closed for its half-close timeout (request-reader.ts `halfCloseTimeoutMs`):
 * marked before it is destroyed, so that the close events of the answers it cut say `half-close-timeout`, not that the
 * client went (http-forwarder.ts).
 */
export function markHalfCloseTimeout(socket: Duplex): void {
  (socket as Marked)[timedOut] = true;
}

export function closedByHalfCloseTimeout(socket: Duplex): boolean {
  return (socket as Marked)[timedOut] === true;
}
