import type { Socket } from 'node:net';
import { canonicalHost, canonicalText, decide, ENCRYPTED_CLIENT_HELLO_REFUSED, formatHostPort, refusal, type Reason } from '../../policy/index.js';
import { decisionWritten, emitDecision, forwardTo, type AuthorizeContext, type AuthorizeRequest } from '../../decision/authorize.js';
import { peekFirstBytes, unfinished } from '../../net/sniffing/first-bytes.js';
import { REFUSE, RELAY, type ClientGateOutcome } from '../../net/splice.js';

/** How long a tunnel's first line of text is waited for to end (a request line cut across writes, say). */
const UNFINISHED_LINE_MS = 1000;
/** How long a ClientHello is waited for to end once its first byte has come (clients write it in one piece). */
const UNFINISHED_TLS_MS = 10_000;

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
 * exactly one readable host name (its SNI unreadable). A ClientHello that carries an encrypted inner one (ECH) names
 * its real server where only the server (a shared front, which routes on it) can read it: with `encrypted-client-hello:
 * refuse` (the default) the decision is `encrypted-client-hello`, refused alike. Plain HTTP names its host in the clear
 * too, in every request: the tunnel is handed to `readRequests`, which decides each request (its Host must name the CONNECT host), or, without
 * one, refused alike (so is text whose first line has not ended after a moment: it may yet become a request line, and a
 * request line without a version, HTTP/0.9's `GET /x`, which some servers still serve and which names no host); relayed, `CONNECT allowed.test:80` then `Host: attacker.test` reached whatever virtual host a
 * shared address (a CDN) serves under that name. Anything else (no SNI, another protocol, silence until the idle
 * timeout) is relayed: the tunnel goes to the checked address of the CONNECT host whatever the client says in it.
 */
export async function checkConnectSni(
  ctx: AuthorizeContext,
  socket: Socket,
  tunnel: ConnectTunnel,
  timeoutMs: number,
  readRequests?: (client: Socket, upstream?: Socket) => void,
): Promise<ClientGateOutcome> {
  let peek = await peekFirstBytes(socket, { timeoutMs, look: 'tls', finishWithinMs: UNFINISHED_TLS_MS });
  // Text whose first line has not ended (a request line cut across writes, or empty lines before one) gets a moment to
  // end it. Still unfinished then (a one-word text such as `ping` waiting for its answer, or empty lines only), it is
  // decided here: relayed unread, a request in it would go unchecked; handed to the request reader, a client of another
  // protocol waited for the reader's timeout, in audit mode too. Clients write a request line in one piece.
  if (peek.protocol === 'other' && peek.bytes > 0 && !peek.eof && peek.incomplete !== 'tls') peek = await peekFirstBytes(socket, { timeoutMs: UNFINISHED_LINE_MS });
  if (unfinished(peek) && !(peek.protocol === 'other' && peek.incomplete === 'tls')) {
    return refuse(ctx, tunnel, undefined, `text whose first line had not ended after ${UNFINISHED_LINE_MS} ms (no request can be read from it)`);
  }
  // HTTP/2 with prior knowledge names its host in frames the request reader does not read: refused here, so that audit
  // mode relays it (would-block) and block mode resets it, each with its decision (handed over, it was closed, no event).
  if (peek.protocol === 'http' && peek.http2) return refuse(ctx, tunnel, undefined, "HTTP/2 with prior knowledge (h2c), whose requests' :authority cannot be read here");
  if (peek.protocol === 'other' && peek.versionlessRequest) {
    return refuse(ctx, tunnel, undefined, 'a request line without an HTTP version (HTTP/0.9 style), which names no host that can be checked');
  }
  if (peek.protocol === 'http') {
    // The tunnel's upstream, connected already and untouched, goes along: the first request is sent on it (issue 14).
    return readRequests ? { action: 'hand-over', to: readRequests, reuseUpstream: true } : refuse(ctx, tunnel, undefined, 'plain HTTP, whose requests cannot be read here');
  }
  if (peek.protocol === 'tls' && peek.split) return refuse(ctx, tunnel, undefined, 'a ClientHello split across TLS records (its SNI cannot be read)');
  if (peek.protocol === 'other' && peek.incomplete === 'tls')
    return refuse(ctx, tunnel, undefined, `a ClientHello not finished within ${UNFINISHED_TLS_MS} ms of its first byte (its SNI cannot be read)`);
  if (peek.protocol === 'tls' && peek.unreadableSni) return refuse(ctx, tunnel, undefined, `a ClientHello whose server name cannot be read (${peek.unreadableSni})`);
  if (peek.protocol !== 'tls') return RELAY;
  // An SNI the policy refuses is reported as such, with or without ECH.
  const sniRefused = peek.sni === undefined ? undefined : refuseSniNotAllowed(ctx, tunnel, peek.sni);
  if (sniRefused) return sniRefused;
  if (peek.encryptedClientHello && ctx.policy().encryptedClientHello === 'refuse') {
    const claimed = peek.sni === undefined ? undefined : { sni: peek.sni, name: tunnel.host };
    return refuse(ctx, tunnel, claimed, ENCRYPTED_CLIENT_HELLO_REFUSED, 'encrypted-client-hello');
  }
  return RELAY;
}

/** A refusal when the SNI names another host than the tunnel's, one the policy does not allow; else undefined. */
function refuseSniNotAllowed(ctx: AuthorizeContext, tunnel: ConnectTunnel, sni: string): Promise<ClientGateOutcome> | undefined {
  // The SNI as the decision's host is written (nearly every tunnel): a canonical host is its own canonical form
  // (policy-properties.test.ts), so canonicalising it again would only give the same name back.
  if (sni === tunnel.host) return undefined;
  const canonical = canonicalHost(sni);
  const name = canonicalText(canonical) ?? sni;
  if (name === tunnel.host) return undefined;
  const byName = decide(ctx.policy(), { host: sni, port: tunnel.port });
  if (byName.permitted) return undefined;
  return refuse(ctx, tunnel, { sni, name }, `TLS SNI ${formatHostPort(name, tunnel.port)} is not allowed (${byName.message})`);
}

/**
 * One refusal event (sni-mismatch unless said); the tunnel is reset in block mode once its line is written. In audit mode
 * it is relayed as this decision's: its close event gets the tunnel's end (the CONNECT decision's close says
 * handed-over), so the bytes count for the host the client named.
 */
function refuse(
  ctx: AuthorizeContext,
  tunnel: ConnectTunnel,
  claimed: { sni: string; name: string } | undefined,
  why: string,
  reason: Reason = 'sni-mismatch',
): Promise<ClientGateOutcome> {
  const policy = ctx.policy();
  const host = claimed?.name ?? tunnel.host;
  const request: AuthorizeRequest = { kind: 'connect', client: tunnel.client, host, port: tunnel.port, ...(claimed && { sni: claimed.sni }) };
  const decision = refusal(policy, {
    reason,
    host,
    ip: tunnel.address,
    message: `inside the CONNECT tunnel to ${formatHostPort(tunnel.host, tunnel.port)}: ${why}`,
  });
  const event = emitDecision(ctx.events, policy, request, decision);
  if (policy.mode === 'block') return decisionWritten(ctx.events, REFUSE);
  const { connection } = forwardTo(ctx.events, request, decision, event, tunnel.address, tunnel.port);
  return decisionWritten(ctx.events, { action: 'relay', onClose: (result) => connection.close(result) });
}
