import type { Socket } from 'node:net';
import type { Forward } from '../../decision/authorize.js';
import { splice, type ClientGateOutcome } from '../../net/splice.js';

export interface TunnelContext {
  client: Socket;
  upstream: Socket;
  /** The decision, and the connection record whose close event the tunnel's end writes. */
  authorization: Forward;
  idleTimeoutMs: number;
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

export const spliceTunnel: TunnelHandler = (t) => {
  splice(t.client, t.upstream, {
    idleTimeoutMs: t.idleTimeoutMs,
    ...(t.clientGate && { clientGate: t.clientGate }),
    onClose: (result) => t.authorization.connection.close(result),
  });
};
