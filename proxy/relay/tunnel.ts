import type { Socket } from 'node:net';
import type { Forward } from '../../decision/authorize.js';
import { connectUpstream, connectUpstreamInKernel } from '../../net/connect.js';
import { cancelKernelUpstream, kernelUpstreamUsable } from '../../net/kernel-relay.js';
import { splice, spliceKernelUpstream, type ClientGateOutcome } from '../../net/splice.js';

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

/**
 * The upstream of a decided tunnel: a node socket, or (a number) the id of an upstream the kernel relay opened: no
 * node socket at all (issue 14: the upstream's socket, its connect, listeners and close were a good part of a
 * tunnel's main-thread CPU). The kernel relay opens it when the handler only splices (`spliceTunnel`) and the
 * kernel relay takes the tunnel from the start (net/kernel-relay.ts kernelUpstreamUsable: setting `relay` kernel,
 * the addon there, a plain IP address); otherwise (an inspecting handler, no addon, relay `js`) it is a node socket.
 */
export type TunnelUpstream = Socket | number;

/** connectUpstream for the tunnel `handler` will take; rejects as connectUpstream does (UpstreamConnectError). */
export function connectTunnelUpstream(handler: TunnelHandler, client: Socket, address: string, port: number, timeoutMs: number): Promise<TunnelUpstream> {
  if (handler === spliceTunnel && kernelUpstreamUsable(client, address)) return connectUpstreamInKernel(address, port, timeoutMs);
  return connectUpstream(address, port, timeoutMs);
}

/** Close an upstream no tunnel will use (the client went away while it connected). */
export function closeTunnelUpstream(upstream: TunnelUpstream): void {
  if (typeof upstream === 'number') cancelKernelUpstream(upstream);
  else upstream.destroy();
}

/** Hand the tunnel to `handler`, or splice it in the kernel relay when its upstream is the kernel relay's. */
export function runTunnel(handler: TunnelHandler, tunnel: Omit<TunnelContext, 'upstream'> & { upstream: TunnelUpstream }): void {
  const { upstream } = tunnel;
  if (typeof upstream !== 'number') return handler({ ...tunnel, upstream });
  // Options read with `??` and truthiness (net/splice.ts): an absent timeout or gate may be passed as undefined.
  const { connection } = tunnel.authorization;
  spliceKernelUpstream(tunnel.client, upstream, {
    idleTimeoutMs: tunnel.idleTimeoutMs,
    halfCloseTimeoutMs: tunnel.halfCloseTimeoutMs,
    clientGate: tunnel.clientGate,
    onClose: (result) => connection.close(result),
  });
}
