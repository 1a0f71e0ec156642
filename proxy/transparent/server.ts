import net, { type AddressInfo } from 'node:net';
import type { EventLog } from '../../events/event-log.js';
import type { Policy } from '../../policy/index.js';
import type { AddressBook } from '../../decision/address-book.js';
import { formatHostPort } from '../../policy/index.js';
import { UpstreamConnectError } from '../../net/connect.js';
import { namesNoHost, peekFirstBytes, unfinished, type PeekResult } from '../../net/sniffing/first-bytes.js';
import { listen } from '../../net/listen.js';
import { assertOriginalDestinationAvailable, originalDestination, unmapAddress, type OriginalDestination } from './original-destination.js';
import type { Resolver } from '../../decision/resolver.js';
import { trackConnection, type TrafficCounters } from '../relay/traffic-counters.js';
import { classify, type Traffic } from './classify.js';
import { createTransparentHttp, type RedirectedConnection } from './http.js';
import { addressText, authorizeTransparent, silentClientAllowed, awaitFirstBytes } from '../../decision/attribution.js';
import { refuseAtCapacity, refuseNotRedirected, type Forward } from '../../decision/authorize.js';
import { REFUSE, RELAY, type ClientGateOutcome } from '../../net/splice.js';
import type { InspectedConnection, Inspector } from '../relay/inspection.js';
import { closeTunnelUpstream, connectTunnelUpstream, relayTimeouts, runTunnel, type TunnelHandler, type TunnelUpstream } from '../relay/tunnel.js';

/** How long a client whose first bytes were unfinished when the peek ended has to finish them. */
const UNFINISHED_HEAD_TIMEOUT_MS = 10_000;
/** The peek for a ClientHello or request head (see `peekTimeoutMs`). */
const PEEK_TIMEOUT_MS = 1000;
/**
 * The peek where a silent client would be let through by DNS attribution (attribution.ts `silentClientAllowed`): what
 * a client that speaks first sends comes within milliseconds of its connect, and what comes later is still checked.
 */
const ATTRIBUTED_PEEK_TIMEOUT_MS = 200;
/**
 * How long from its connect a client that was silent through the peek is waited for where a silent client would be
 * refused (block mode) or cannot pass uninspected (attribution.ts `awaitFirstBytes`): nothing is connected or relayed
 * meanwhile, so waiting costs no safety, and a client slowed down past the peek (a runner's CPU taken by the build) is
 * decided on the ClientHello or request it sends, not reset (or, in audit mode, reported would-block). A client still
 * silent then is decided as before.
 */
const FIRST_BYTES_WAIT_MS = 10_000;

export interface TransparentListenerOptions {
  listen: { host: string; port: number }[];
  policy: () => Policy;
  resolver: Resolver;
  events: EventLog;
  addressBook: AddressBook;
  counters: TrafficCounters;
  tunnel: TunnelHandler;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** See SpliceOptions.halfCloseTimeoutMs. */
  halfCloseTimeoutMs?: number;
  maxTunnels: number;
  /**
   * How long to wait for a ClientHello or HTTP request head before deciding without it (default 1000 ms; 200 ms where
   * a silent client would be let through by DNS attribution, so that a server that speaks first is heard sooner).
   */
  peekTimeoutMs?: number;
  /** TLS inspection for hosts with method or path rules; without, TLS to them is refused (inspection-required). */
  inspector?: Inspector;
}

export interface TransparentListeners {
  addresses: AddressInfo[];
  /** Stop accepting; resolves once every transparent connection has ended (destroy counters.tunnels to hurry). */
  close(): Promise<void>;
}

/** Hard close (RST) so a refused client fails at once instead of waiting for a timeout. */
function refuse(socket: net.Socket): void {
  if (!socket.destroyed) socket.resetAndDestroy();
}

/** A redirected connection `auth` decided for inspection, as the inspector takes it over. */
function inspectedConnection(client: string, auth: Forward): InspectedConnection {
  return { kind: 'transparent', client, host: auth.decision.host, port: auth.port, address: auth.address, outer: auth };
}

function isOwnListener(destination: OriginalDestination, socket: net.Socket, listeners: AddressInfo[]): boolean {
  const local = { address: unmapAddress(socket.localAddress ?? ''), port: socket.localPort };
  if (destination.address === local.address && destination.port === local.port) return true;
  return listeners.some((l) => l.port === destination.port && unmapAddress(l.address) === destination.address);
}

/**
 * Listeners for connections that iptables REDIRECTed here (egress-guard rules apply). Each connection is
 * decided on its original destination and the name its first bytes claim (see decision/attribution.ts),
 * then spliced to exactly that destination. Same events, policy and audit/block semantics as the explicit proxy.
 */
export async function startTransparentListeners(options: TransparentListenerOptions): Promise<TransparentListeners> {
  assertOriginalDestinationAvailable();
  const { events, counters } = options;
  const addresses: AddressInfo[] = [];
  const servers: net.Server[] = [];

  const plainHttp = createTransparentHttp(options);
  /**
   * Silent clients waited for past the peek (FIRST_BYTES_WAIT_MS) at once, and how many may be: each holds a slot of
   * max-tunnels ten times longer than the peek did, so past a quarter of them (clients that retry a refused
   * server-speaks-first service, say) a silent client is decided at the end of the peek, as before the wait.
   */
  let waiting = 0;
  const maxWaiting = Math.max(1, Math.floor(options.maxTunnels / 4));

  /**
   * A client that has started a ClientHello or a first line, or sent empty lines only, gets longer to finish: deciding
   * it by DNS attribution now would relay the SNI/Host it sends next unchecked. Still unfinished: a raw-address
   * decision (attribution.ts), not the request reader, which waited for its idle timeout (`ping` waiting for its answer).
   */
  const finishUnfinished = (socket: net.Socket, peek: PeekResult): Promise<PeekResult> | PeekResult =>
    unfinished(peek) ? peekFirstBytes(socket, { timeoutMs: UNFINISHED_HEAD_TIMEOUT_MS }) : peek;

  /**
   * The first bytes of a client that was silent through the peek (decided by DNS attribution, its tunnel
   * already open so that a server that speaks first is heard). A ClientHello is decided on its SNI (one for a host
   * with method or path rules hands the connection to the inspector, as within the peek); an HTTP request hands the
   * connection to the per-request HTTP server; anything else is relayed.
   */
  const checkLateFirstBytes = async (socket: net.Socket, connection: RedirectedConnection): Promise<ClientGateOutcome> => {
    // The gate opens only on bytes seen: a client kept from idling by a chatty server may stay silent for
    // longer than one wait, and still be checked when it speaks (or it ends or is closed, with nothing to relay).
    // Waited for as a ClientHello (text ends the wait at its first byte), then text gets the peek's time to finish its
    // first line: a line still going waited for the idle timeout, and a client waiting for its answer with it.
    // A ClientHello begun gets the peek's time from its first byte, then finishUnfinished's, as within the peek: it waited
    // for the idle timeout, and a client of another protocol whose first byte is 0x16 with it, in audit mode too.
    const lateTls = { timeoutMs: options.idleTimeoutMs, look: 'tls', finishWithinMs: PEEK_TIMEOUT_MS } as const;
    let late = await peekFirstBytes(socket, lateTls);
    while (classify(late) === 'silent' && !late.eof && !socket.destroyed && !socket.readableEnded) late = await peekFirstBytes(socket, lateTls);
    if (late.protocol === 'other' && late.bytes > 0 && !late.eof && late.incomplete !== 'tls') late = await peekFirstBytes(socket, { timeoutMs: PEEK_TIMEOUT_MS });
    late = await finishUnfinished(socket, late);
    const traffic = classify(late);
    // The tunnel's upstream, connected at the silent start and untouched (the server did not speak first), goes along:
    // the first request is sent on it if forwarded (issue 14: it was closed unused and the request opened another).
    if (traffic === 'http') return { action: 'hand-over', to: (client, upstream) => plainHttp.adopt(client, connection, upstream), reuseUpstream: true };
    // Ended mid-head even by a FIN (white space then FIN, say), or a request line without a version: decided as a raw
    // address, not relayed unread.
    if ((traffic === 'opaque' || traffic === 'silent') && !namesNoHost(late)) return RELAY;
    const inspector = options.inspector;
    const again = await authorizeTransparent(options, { ...connection, peek: late, ...(inspector && { inspectable: true }) });
    if (again.action === 'fail') again.connection.close({ error: again.error }); // not expected: the destination is given
    if (again.action !== 'forward') return REFUSE;
    if (again.decision.inspect && inspector) {
      // The ClientHello is still buffered on the socket (the peek puts its bytes back): the TLS server reads it first.
      const inspected = inspectedConnection(connection.client, again);
      // (The inspector closes this decision's record; if the tunnel ended before the hand-over, the splice does.)
      return { action: 'hand-over', to: (client) => inspector.adopt(client, inspected), onClose: (result) => again.connection.close(result) };
    }
    // From here the tunnel is this decision's: its close event gets the tunnel's end (the attributed one's says handed-over).
    return { action: 'relay', onClose: (result) => again.connection.close(result) };
  };

  /** Decide a connection that is relayed as bytes (tls, opaque, silent), connect to its destination, and splice. */
  const tunnel = async (socket: net.Socket, connection: RedirectedConnection, peek: PeekResult, started: number, late?: 'check-late-first-bytes') => {
    const { client, destination } = connection;
    const auth = await authorizeTransparent(options, { client, destination, peek, started, ...(options.inspector && { inspectable: true }) });
    if (auth.action === 'reject') return refuse(socket);
    if (auth.action === 'fail') {
      // Not expected: the destination is given, so nothing is looked up.
      auth.connection.close({ error: auth.error });
      return refuse(socket);
    }
    if (auth.decision.inspect && options.inspector) {
      // The ClientHello the peek read is still buffered on the socket: the TLS server reads it first.
      options.inspector.adopt(socket, inspectedConnection(client, auth));
      return;
    }
    // A socket of node's, or (kernel relay, a plain splice) an upstream the relay's addon opened: tunnel.ts.
    let upstream: TunnelUpstream;
    try {
      upstream = await connectTunnelUpstream(options.tunnel, socket, auth.address, auth.port, options.connectTimeoutMs);
    } catch (err) {
      auth.connection.close({ error: UpstreamConnectError.from(err).error });
      return refuse(socket);
    }
    if (socket.destroyed) {
      closeTunnelUpstream(upstream);
      auth.connection.close({ error: 'client-aborted' });
      return;
    }
    const sni = peek.protocol === 'tls' ? peek.sni : undefined;
    const clientGate = late ? checkLateFirstBytes(socket, connection) : undefined;
    runTunnel(options.tunnel, {
      client: socket,
      upstream,
      authorization: auth,
      ...relayTimeouts(options),
      ...(sni !== undefined && { sni }),
      ...(clientGate && { clientGate }),
    });
  };

  /** One handler per kind of traffic (see classify.ts). */
  const handlers: Record<Traffic, (socket: net.Socket, connection: RedirectedConnection, peek: PeekResult, started: number) => Promise<void> | void> = {
    http: (socket, connection) => plainHttp.adopt(socket, connection),
    tls: tunnel,
    opaque: tunnel,
    // Decided without its first bytes (by DNS attribution); if those turn out to be a ClientHello or an HTTP
    // request, the names in them are decided before they are relayed.
    silent: (socket, connection, peek, started) => tunnel(socket, connection, peek, started, 'check-late-first-bytes'),
  };

  /**
   * The event of a connection that reached this listener without a redirect (since 2026-12-03; before, a reset with a
   * log line only): most likely a job that names the transparent listener as its HTTP(S) proxy.
   */
  const refuseToListener = (socket: net.Socket, client: string, why: string) => {
    const ip = unmapAddress(socket.localAddress ?? '?');
    const port = socket.localPort ?? 0;
    const message = `a connection to egress-guard's transparent listener ${formatHostPort(ip, port)} that no redirect rule sent there (${why}): refused. HTTP_PROXY and HTTPS_PROXY name the proxy's own listener (listen), not this one`;
    return refuseNotRedirected(options, { kind: 'transparent', client, host: ip, port }, message, ip);
  };

  const handle = async (socket: net.Socket) => {
    const client = formatHostPort(unmapAddress(socket.remoteAddress ?? '?'), socket.remotePort ?? 0);
    socket.on('error', () => socket.destroy());
    let destination: OriginalDestination;
    try {
      destination = originalDestination(socket);
    } catch (err) {
      const why = (err as Error).message;
      events.log.warn({ client, err: why }, 'transparent: no original destination (connection not redirected); refusing');
      await refuseToListener(socket, client, `no original destination: ${why}`);
      return refuse(socket);
    }
    if (isOwnListener(destination, socket, addresses)) {
      const named = formatHostPort(destination.address, destination.port);
      events.log.warn({ client, destination: named }, 'transparent: connection addressed to the listener itself; refusing');
      await refuseToListener(socket, client, `its destination ${named} is the listener itself`);
      return refuse(socket);
    }
    if (counters.open >= options.maxTunnels) {
      events.log.warn({ client, open: counters.open }, `transparent: at the limit of ${options.maxTunnels} open connections; refusing`);
      // Refused unread, in audit mode too: the event names its destination (its first bytes are not waited for).
      const ip = addressText(destination.address);
      const message = `egress-guard is at its limit of ${options.maxTunnels} open connections`;
      await refuseAtCapacity(options, { kind: 'transparent', client, host: ip, port: destination.port }, message, ip);
      return refuse(socket);
    }
    trackConnection(counters, socket);
    const started = Date.now();
    const peekMs = options.peekTimeoutMs ?? (silentClientAllowed(options, destination) ? ATTRIBUTED_PEEK_TIMEOUT_MS : PEEK_TIMEOUT_MS);
    let peek = await finishUnfinished(socket, await peekFirstBytes(socket, { timeoutMs: peekMs }));
    if (classify(peek) === 'silent' && !peek.eof && !socket.destroyed && waiting < maxWaiting && awaitFirstBytes(options, destination)) {
      waiting++;
      try {
        peek = await finishUnfinished(socket, await peekFirstBytes(socket, { timeoutMs: Math.max(1, started + FIRST_BYTES_WAIT_MS - Date.now()) }));
      } finally {
        waiting--;
      }
    }
    return handlers[classify(peek)](socket, { client, destination }, peek, started);
  };

  try {
    for (const address of options.listen) {
      // allowHalfOpen: a client's FIN ends only its direction; the reply still reaches it (see net/splice.ts).
      const server = net.createServer({ noDelay: true, allowHalfOpen: true });
      server.on('connection', (socket) => {
        handle(socket).catch((err: Error) => {
          events.log.error({ err: err.message }, 'transparent connection handling failed');
          refuse(socket);
        });
      });
      servers.push(server);
      const bound = await listen(server, address, 'transparent-listen', options.listen);
      addresses.push(bound);
    }
  } catch (err) {
    for (const server of servers) server.close();
    throw err;
  }

  return {
    addresses,
    close: () => {
      const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      plainHttp.closeIdle();
      return closed.then(() => undefined);
    },
  };
}
