import type { Socket } from 'node:net';
import { canonicalHost, decide, formatHostPort, refusal } from '../../policy/index.js';
import { decisionWritten, emitDecision, forwardTo, type AuthorizeContext, type AuthorizeRequest } from '../../decision/authorize.js';
import { peekFirstBytes } from '../../net/sniffing/first-bytes.js';
import { REFUSE, RELAY, type ClientGateOutcome } from '../../net/splice.js';

export interface ConnectTunnel {
  client: string;
  /** The CONNECT authority as decided (canonical host) and the address the tunnel goes to. */
  host: string;
  port: number;
  address: string;
}

/**
 * The client's first bytes in an authorized CONNECT tunnel, held back until this settles. A ClientHello
 * whose SNI names another host than the CONNECT authority must be allowed on its own (SNI-based fronting
 * through an allowed CONNECT host, a forged SNI); if it is not, the decision is `sni-mismatch`: one event,
 * refused (reset) in block mode; so is a ClientHello split across records, or one whose server_name is not
 * exactly one readable host name (its SNI unreadable). Anything else (no SNI, not TLS, silence until the idle
 * timeout) is relayed: the tunnel goes to the checked address of the CONNECT host whatever the client says in it.
 */
export async function checkConnectSni(ctx: AuthorizeContext, socket: Socket, tunnel: ConnectTunnel, timeoutMs: number): Promise<ClientGateOutcome> {
  const peek = await peekFirstBytes(socket, { timeoutMs, look: 'tls' });
  if (peek.protocol === 'tls' && peek.split) return refuse(ctx, tunnel, undefined, 'a ClientHello split across TLS records (its SNI cannot be read)');
  if (peek.protocol === 'other' && peek.incomplete === 'tls') return refuse(ctx, tunnel, undefined, 'a ClientHello not finished within the idle timeout (its SNI cannot be read)');
  if (peek.protocol === 'tls' && peek.unreadableSni) return refuse(ctx, tunnel, undefined, `a ClientHello whose server name cannot be read (${peek.unreadableSni})`);
  if (peek.protocol !== 'tls' || peek.sni === undefined) return RELAY;
  // The SNI as the decision's host is written (nearly every tunnel): a canonical host is its own canonical form
  // (policy-properties.test.ts), so canonicalising it again would only give the same name back.
  if (peek.sni === tunnel.host) return RELAY;
  const canonical = canonicalHost(peek.sni);
  const name = canonical.type === 'name' ? canonical.name : canonical.type === 'ip' ? canonical.text : peek.sni;
  if (name === tunnel.host) return RELAY;
  const byName = decide(ctx.policy(), { host: peek.sni, port: tunnel.port });
  if (byName.permitted) return RELAY;
  return refuse(ctx, tunnel, { sni: peek.sni, name }, `TLS SNI ${formatHostPort(name, tunnel.port)} is not allowed (${byName.message})`);
}

/**
 * One sni-mismatch event; the tunnel is reset in block mode once its line is written. In audit mode it is relayed as
 * this decision's: its close event gets the tunnel's end (the CONNECT decision's close says handed-over), so the bytes
 * count for the host the client named.
 */
function refuse(ctx: AuthorizeContext, tunnel: ConnectTunnel, claimed: { sni: string; name: string } | undefined, why: string): Promise<ClientGateOutcome> {
  const policy = ctx.policy();
  const host = claimed?.name ?? tunnel.host;
  const request: AuthorizeRequest = { kind: 'connect', client: tunnel.client, host, port: tunnel.port, ...(claimed && { sni: claimed.sni }) };
  const decision = refusal(policy, {
    reason: 'sni-mismatch',
    host,
    ip: tunnel.address,
    message: `inside the CONNECT tunnel to ${formatHostPort(tunnel.host, tunnel.port)}: ${why}`,
  });
  const event = emitDecision(ctx.events, policy, request, decision);
  if (policy.mode === 'block') return decisionWritten(ctx.events, REFUSE);
  const { connection } = forwardTo(ctx.events, request, decision, event, tunnel.address, tunnel.port);
  return decisionWritten(ctx.events, { action: 'relay', onClose: (result) => connection.close(result) });
}
