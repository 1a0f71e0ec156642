import type { Socket } from 'node:net';
import type { EventLog } from '../../events/event-log.js';
import type { RequestKind } from '../../events/schema.js';
import type { Authorization } from '../../decision/authorize.js';
import { splice, type ClientGateOutcome } from '../../net/splice.js';

export interface TunnelContext {
  client: Socket;
  upstream: Socket;
  authorization: Extract<Authorization, { action: 'forward' }>;
  idleTimeoutMs: number;
  events: EventLog;
  started: number;
  kind: RequestKind;
  clientAddress: string;
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
    onClose: (result) => {
      t.events.close({
        id: t.authorization.event.id, kind: t.kind, client: t.clientAddress, host: t.authorization.decision.host,
        port: t.authorization.port, ip: t.authorization.address, bytes_in: result.bytesIn, bytes_out: result.bytesOut,
        duration_ms: Date.now() - t.started, ...(result.error && { error: result.error }),
      });
    },
  });
};
