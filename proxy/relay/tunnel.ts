import type { Socket } from 'node:net';
import type { Forward } from '../../decision/authorize.js';
import { splice, type ClientGateOutcome } from '../../net/splice.js';

export interface TunnelContext {
  client: Socket;
  upstream: Socket;
  /** The decision, and the connection record whose close event the tunnel's end writes. */
  authorization: Forward;
  idleTimeoutMs: number;
  halfCloseTimeoutMs?: number;
  /** The SNI the decision was made on, when there was one (an inspecting handler needs it). */
  sni?: string;
  /** See SpliceOptions.clientGate: a check of the client's first bytes that was still open at authorization. */
  clientGate?: Promise<ClientGateOutcome>;
}

/**
 * What happens to an authorized tunnel. The default splices bytes through untouched; an inspecting handler
 * (opt-in TLS inspection, certs/) can terminate TLS instead and decide per request.
 */
export type TunnelHandler = (tunnel: TunnelContext) => void;

/** The timeouts of a relay, as options of a listener or tunnel carry them (SpliceOptions). */
export function relayTimeouts(o: { idleTimeoutMs: number; halfCloseTimeoutMs?: number | undefined }): { idleTimeoutMs: number; halfCloseTimeoutMs?: number } {
  return { idleTimeoutMs: o.idleTimeoutMs, ...(o.halfCloseTimeoutMs !== undefined && { halfCloseTimeoutMs: o.halfCloseTimeoutMs }) };
}

export const spliceTunnel: TunnelHandler = (t) => {
  splice(t.client, t.upstream, {
    ...relayTimeouts(t),
    ...(t.clientGate && { clientGate: t.clientGate }),
    onClose: (result) => t.authorization.connection.close(result),
  });
};
