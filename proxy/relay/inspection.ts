import type { Socket } from 'node:net';
import tls from 'node:tls';
import {
  authorizeOnAddresses,
  decisionWritten,
  emitDecision,
  forwardTo,
  refuseMalformed,
  type AuthorizeContext,
  type Authorization,
  type Forward,
} from '../../decision/authorize.js';
import type { CloseError, DecisionEvent, RequestKind } from '../../events/schema.js';
import { canonicalHost, canonicalText, formatHostPort, hostHeaderValue, parseAuthority, refusal } from '../../policy/index.js';
import { connectUpstream, UpstreamConnectError } from '../../net/connect.js';
import { peekFirstBytes } from '../../net/sniffing/first-bytes.js';
import { halfCloseTimeoutOf, splice } from '../../net/splice.js';
import { answerWhenWritten, errorFormatFor, sendProxyError, writeRawError } from './error-response.js';
import { lingeringClose } from './lingering-close.js';
import { relayUpgrade, type UpgradeRelayOptions } from './inspected-upgrade.js';
import { methodOverrides } from './method-override.js';
import { readBodyOverride, withBodyOverride, type BodyOverride } from './body-override.js';
import { readAgainWithoutUpgrade } from './request-head.js';
import { dropClientBytes, endAfterAnswers, putBackAsWritten, relayOnItsOwn, type OwnRelayOptions } from './handed-over-socket.js';
import type { HttpForwarder } from './http-forwarder.js';
import { ReservedUpstream, takeReserved } from './reserved-upstream.js';
import type { RawResponse } from './raw-response.js';
import { isMalformedHead, RequestReader, type ClientError, type InspectedRequest, type RequestHandlers } from './request-reader.js';
import { requestLeniency } from './request-leniency.js';

/**
 * TLS inspection of hosts with method or path rules (issue 13). A connection already decided (CONNECT, or a
 * redirected TLS connection) whose decision says `inspect` is terminated here with a leaf certificate for its
 * host; every HTTP request inside is decided on its own method and path (its own decision event and close
 * event) and forwarded over a fresh TLS connection verified for that host; an upgrade (WebSocket) is decided
 * alike and, allowed, relayed after the upstream's 101. The outer connection keeps its
 * decision and gets one close event when the client goes. The requests are read by request-reader.ts (node's
 * llhttp parser, answers written as raw bytes), not by node's `http.Server`: no IncomingMessage or
 * ServerResponse per request, with what node's server did per connection kept.
 */

/** Where leaf certificates come from (certs/, wired by the sidecar). */
export interface LeafSource {
  secureContextFor(host: string): Promise<tls.SecureContext>;
}

export interface InspectorOptions extends AuthorizeContext {
  leaves: LeafSource;
  forwarder: HttpForwarder;
  idleTimeoutMs: number;
  /** For upgrades (WebSocket), which have their own upstream connection: connect timeout (default 10 s) and roots. */
  connectTimeoutMs?: number;
  halfCloseTimeoutMs?: number;
  upstreamTrust?: () => tls.SecureContext;
}

/** A connection handed over for inspection. */
export interface InspectedConnection {
  kind: RequestKind;
  client: string;
  /** The decided host and port, and the checked address every request goes to. */
  host: string;
  port: number;
  address: string;
  /** The outer connection's authorization: its record is closed when the client goes. */
  outer: Forward;
  /** Plain HTTP inside the tunnel (a CONNECT to port 80): decided alike, forwarded without TLS. */
  plain?: boolean;
  /**
   * The tunnel's own upstream, connected to `address`:`port` before the tunnel was answered and never used (issue 14):
   * its first plain request is sent on it (no second connection to the server); closed if that request goes elsewhere,
   * or there is none. The inspector owns it.
   */
  upstream?: Socket;
}

/**
 * An inspected connection as the inspector keeps it: the Host header value last found to name the connection's
 * host, so a keep-alive connection's requests (which repeat it) are not parsed and canonicalised again; `lenientFlags`,
 * how its requests are read (request-leniency.ts), from the policy's mode when it was adopted, for all of them (read
 * again after an h2c upgrade request too).
 */
type ConnectionState = InspectedConnection & { lenientFlags: number; sameHostHeader?: string; addresses?: string[]; reserved?: ReservedUpstream };

/** What one request of an inspected connection comes to: authorize()'s answer, or a 421 for a Host of another site. */
/**
 * A request's authorization; `clientHost`: a request naming another Host than its connection's, relayed in audit mode
 * with that Host as the client sent it (to the connection's checked address), as it would have gone without egress-guard.
 */
type RequestAuthorization = Authorization | (Forward & { clientHost: string }) | { action: 'misdirected'; message: string; event: DecisionEvent };

export interface Inspector {
  adopt(socket: Socket, connection: InspectedConnection): void;
  /** Close idle keep-alive connections (shutdown). */
  closeIdle(): void;
}

/** OpenSSL alerts a client sends when it does not accept our certificate. */
const CERTIFICATE_ALERT = /ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|UNSUPPORTED_CERTIFICATE|DECRYPT_ERROR|ACCESS_DENIED)/;

export function createInspector(options: InspectorOptions): Inspector {
  const { events } = options;
  /** Why the client's handshake failed, as a close error, logged where the user has something to do. */
  const handshakeFailure = (err: NodeJS.ErrnoException, connection: InspectedConnection): CloseError => {
    const where = { client: connection.client, host: connection.host };
    if (CERTIFICATE_ALERT.test(err.code ?? '') || CERTIFICATE_ALERT.test(err.message)) {
      events.log.warn(where, 'the client does not trust the inspection CA (docs/inspection.md)');
      return 'client-rejected-certificate';
    }
    // ALPN offered without http/1.1 (an HTTP/2-only client): node answers no_application_protocol.
    if (err.code === 'ERR_SSL_NO_APPLICATION_PROTOCOL') {
      events.log.warn(where, 'an HTTP/2-only client on an inspected connection: inspected hosts speak HTTP/1.1');
      return 'client-http2-only';
    }
    return `client-tls-${(err.code ?? 'error').toLowerCase()}`;
  };
  /** The reader of each inspected connection still read as HTTP (closeIdle). */
  const readers = new Map<Socket, RequestReader>();
  /** For what is relayed in audit mode over a connection of its own (an h2c preface, a CONNECT; inside TLS, with `tls`). */
  const ownRelayOptions: OwnRelayOptions = {
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    idleTimeoutMs: options.idleTimeoutMs,
    halfCloseTimeoutMs: options.halfCloseTimeoutMs,
  };
  const upgradeOptions: UpgradeRelayOptions = {
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    idleTimeoutMs: options.idleTimeoutMs,
    ...(options.halfCloseTimeoutMs !== undefined && { halfCloseTimeoutMs: options.halfCloseTimeoutMs }),
    ...(options.upstreamTrust && { upstreamTrust: options.upstreamTrust }),
  };

  /**
   * Decide one request of an inspected connection on its own method and path. The Host inside the TLS is what
   * the upstream routes on: it must be the host decided (and certified) for this connection, or a request for
   * another site would ride on this one's decision (domain fronting): 421 then. Synchronous: the address is the
   * connection's, checked already, so nothing is looked up. The decision's event is emitted, not yet written: the
   * caller acts on it once `events.decisionsWritten()` settles (decision/authorize.ts emitDecision).
   */
  const decideRequest = (req: InspectedRequest, connection: ConnectionState, body?: BodyOverride): RequestAuthorization => {
    const policy = options.policy();
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    // No Host at all (HTTP/1.0; HTTP/1.1 without one got 400) names no other site: the request goes upstream with the
    // connection's authority as its Host (http-forwarder.ts, inspected-upgrade.ts), as any request here does.
    const host = req.headers.host;
    const sameHost = host === undefined || host === connection.sameHostHeader || namesConnectionHost(host, connection);
    // The checked address as the list authorize takes, made once per connection (nothing changes it).
    const addresses = (connection.addresses ??= [connection.address]);
    const asked = {
      kind: connection.kind,
      client: connection.client,
      host: connection.host,
      port: connection.port,
      method,
      path,
      methodOverrides: methodOverrides(req.headers, path),
      addresses,
    };
    const request = body ? withBodyOverride(asked, body) : asked;
    if (sameHost) return authorizeOnAddresses(options, request);
    const decision = refusal(policy, {
      reason: 'sni-mismatch',
      host: connection.host,
      ip: connection.address,
      message: `the request names Host "${host}" inside a connection to ${connection.host}`,
    });
    const event = emitDecision(events, policy, request, decision);
    // Audit mode never breaks a job: reported, and relayed with the client's own Host (421 until 2026-12-02).
    if (decision.outcome === 'would-block') return { ...forwardTo(events, request, decision, event, connection.address, connection.port), clientHost: host };
    return { action: 'misdirected', message: decision.message, event };
  };
  /** Whether a Host header names the connection's own host and port (remembered, when it does, for the connection's next requests). */
  const namesConnectionHost = (header: string | undefined, connection: ConnectionState): boolean => {
    const named = parseAuthority(header ?? '', connection.port);
    // An address (a plain tunnel to one of allowed-ips) is named by its text, as the decision's host is.
    const namedText = named ? canonicalText(canonicalHost(named.host)) : undefined;
    const same = namedText === connection.host && named!.port === connection.port;
    if (same) connection.sameHostHeader = header;
    return same;
  };
  const authorityOf = (connection: InspectedConnection) => hostHeaderValue(connection.host, connection.port, connection.plain ? 80 : 443);

  /** Read `socket`'s requests (terminated TLS, or plain HTTP inside a tunnel) for `connection`. */
  const serve = (socket: Socket, connection: ConnectionState): void => {
    const handlers: RequestHandlers = {
      request: (req, res) => onRequest(req, res, connection),
      upgrade: (req, upgraded, head) => onUpgrade(req, upgraded, head, connection),
      http2Preface: (upgraded, bytes) => onHttp2Preface(upgraded, bytes, connection),
      // A CONNECT pipelined behind requests not yet answered is neither decided nor sent: those answers go out, then
      // the connection ends (as the transparent listener's).
      connect: (req, tunnel, head) => (reader.answerInFlight ? endAfterAnswers(reader, tunnel, options.idleTimeoutMs) : onConnect(req, tunnel, head, connection)),
      clientError: (err, failed) => onClientError(err, failed, connection),
      malformed: (req, res, why) => onMalformed(req, res, why, connection),
    };
    // A plain tunnel's client may send its request and its FIN together (`nc -N`, HTTP/1.0 clients), as to the proxy itself.
    const reader = new RequestReader(socket, handlers, {
      idleTimeoutMs: options.idleTimeoutMs,
      answerHalfClosed: connection.plain === true,
      halfCloseTimeoutMs: halfCloseTimeoutOf(options),
      lenientFlags: connection.lenientFlags,
    });
    readers.set(socket, reader);
    socket.once('close', () => {
      readers.delete(socket);
      takeReserved(connection)?.close();
    });
  };

  const onRequest = (req: InspectedRequest, res: RawResponse, connection: ConnectionState): void => {
    // The tunnel's upstream goes to its first request (or is closed with it): never to a later one, decided after.
    const reserved = takeReserved(connection);
    // A POST whose body may name another method (a `_method` field) is decided once that body is read (body-override.ts);
    // the requests pipelined behind it wait, and are dropped if it is refused.
    const body = readBodyOverride(req, options.policy(), connection.host, connection.port, req.url, options.idleTimeoutMs);
    if (body === undefined) return void decideAndAct(req, res, connection, reserved);
    const goOn = req.holdFollowing();
    body
      .then((read) => {
        if (read === 'gone') reserved?.close();
        goOn(read !== 'gone' && decideAndAct(req, res, connection, reserved, read));
      })
      .catch((err: Error) => {
        reserved?.close();
        goOn(false);
        requestFailed(err, res, connection);
      });
  };
  /**
   * Decide one request and act on the decision once it is written (`reserved`: its connection's upstream, for its
   * forward); false when it is refused (the connection's last).
   */
  const decideAndAct = (req: InspectedRequest, res: RawResponse, connection: ConnectionState, reserved: ReservedUpstream | undefined, body?: BodyOverride): boolean => {
    let auth: RequestAuthorization;
    try {
      auth = decideRequest(req, connection, body);
    } catch (err) {
      reserved?.close();
      requestFailed(err as Error, res, connection);
      return true;
    }
    // A refused request is the connection's last, known now though answered after the write below: the reader reads
    // nothing behind it, so a request pipelined after it is neither decided nor sent upstream (it was, and its answer
    // never came: the connection ends after the refusal).
    const refused = auth.action === 'misdirected' || auth.action === 'reject';
    if (refused) {
      res.shouldKeepAlive = false;
      res.last = true;
    }
    // One promise for every decision of this turn (the events file's end-of-turn write); the request moves after it.
    void events.decisionsWritten().then(() => actOn(auth, req, res, connection, reserved));
    return !refused;
  };
  /** Answer or forward one decided request of an inspected connection (`reserved`: its connection's upstream, for a forward). */
  const actOn = (auth: RequestAuthorization, req: InspectedRequest, res: RawResponse, connection: ConnectionState, reserved?: ReservedUpstream): void => {
    // Nothing undecided goes on the reserved connection, which was opened under the CONNECT's decision: only a request
    // forwarded for the CONNECT host (to its address and port, the forwarder checks); not a Host of another site relayed
    // in audit mode under its own would-block decision.
    if (reserved && (auth.action !== 'forward' || 'clientHost' in auth)) {
      reserved.close();
      reserved = undefined;
    }
    try {
      if (auth.action === 'misdirected' || auth.action === 'reject') {
        // The connection ends after the refusal (onRequest made it the last: no keep-alive, nothing read behind it).
        const [status, message] = auth.action === 'reject' ? [403, auth.decision.message] : [421, auth.message];
        return sendProxyError(res, status, message, auth.event.id, errorFormatFor(req.headers));
      }
      if (auth.action === 'fail') {
        sendProxyError(res, auth.status, auth.message, auth.event.id);
        auth.connection.close({ status: auth.status, error: auth.error });
        return;
      }
      // The decided authority as Host; a mismatch relayed in audit mode keeps the client's (forward's `authority` absent).
      const onReserved = reserved && { reserved };
      reserved = undefined;
      options.forwarder.forward({ req, res, auth, ...('clientHost' in auth ? {} : { authority: authorityOf(connection) }), tls: !connection.plain, ...onReserved });
    } catch (err) {
      reserved?.close();
      requestFailed(err as Error, res, connection);
    }
  };
  const requestFailed = (err: Error, res: RawResponse, connection: ConnectionState): void => {
    events.log.error({ err: err.message, client: connection.client }, 'inspected request handling failed');
    sendProxyError(res, 502, 'egress-guard could not handle this request');
  };

  // A WebSocket upgrade is decided on its method and path like any request; allowed, it becomes a relay once
  // upstream answers 101 (inspected-upgrade.ts); refused, it gets the 403 and the connection ends.
  const onUpgrade = (req: InspectedRequest, socket: Socket, head: Buffer, connection: ConnectionState): void => {
    readers.delete(socket);
    if (req.headers.upgrade?.trim().toLowerCase() !== 'websocket') {
      // h2c and the like: served as the plain request it also is, read again without the upgrade headers (the reserved
      // upstream left for it: until 2026-12-03 it was closed here and the request connected again).
      return readAgainWithoutUpgrade(req, socket, head, () => serve(socket, connection));
    }
    // A plain tunnel's upstream goes to a WebSocket upgrade as to a plain request (onRequest): the first request only.
    const reserved = takeReserved(connection);
    void Promise.resolve()
      .then(() => decisionWritten(events, decideRequest(req, connection)))
      .then((auth) => {
        if (auth.action === 'forward') {
          // Not a Host of another site relayed in audit mode under its own decision (actOn says why).
          const hostHeader = 'clientHost' in auth ? { hostHeader: auth.clientHost } : {};
          const upstream = 'clientHost' in auth ? void reserved?.close() : reserved?.claim(auth.address, auth.port);
          return relayUpgrade(upgradeOptions, { req, client: socket, head, auth, host: connection.host, ...hostHeader, tls: !connection.plain, ...(upstream && { upstream }) });
        }
        reserved?.close();
        if (auth.action === 'fail') auth.connection.close({ status: auth.status, error: auth.error });
        const [status, message] = auth.action === 'reject' ? [403, auth.decision.message] : auth.action === 'fail' ? [auth.status, auth.message] : [421, auth.message];
        writeRawError(socket, status, message, auth.event.id);
      })
      .catch((err: Error) => {
        reserved?.close();
        events.log.error({ err: err.message, client: connection.client }, 'inspected upgrade handling failed');
        writeRawError(socket, 502, 'egress-guard could not handle this upgrade');
      });
  };

  /**
   * The HTTP/2 preface where a request was due. Inside terminated TLS (whose ALPN said http/1.1) it ends the connection,
   * whose close event says `client-http2-only`. In a plain tunnel, whose own close was written at the hand-over, it is
   * decided as the tunnel's gate decides h2c at its start (connect-sni-check.ts): its requests name their host in frames
   * not read here, so one refusal event (`sni-mismatch`); closed in block mode (a lingering close: the answers due before
   * it reach the client whole, which a reset cut), and in audit mode relayed from the preface on over a connection of
   * its own to the checked address (the requests before it went through the forwarder's), as this decision's, so that
   * its bytes are counted and audit mode breaks nothing.
   */
  const onHttp2Preface = (socket: Socket, bytes: Buffer, connection: ConnectionState): void => {
    readers.delete(socket);
    takeReserved(connection)?.close();
    if (!connection.plain) return onClientError(Object.assign(new Error('HTTP/2 preface'), { code: 'HPE_PAUSED_H2_UPGRADE', rawPacket: bytes }), socket, connection);
    // Put back at once, not once upstream is connected: a FIN read with them ends the socket's reading in the next tick
    // (its 'end' emitted: unshift() then fails, and the preface and the FIN never went upstream).
    if (!socket.readableEnded) socket.unshift(bytes);
    const policy = options.policy();
    const request = { kind: connection.kind, client: connection.client, host: connection.host, port: connection.port };
    const decision = refusal(policy, {
      reason: 'sni-mismatch',
      host: connection.host,
      ip: connection.address,
      message: `inside the connection to ${formatHostPort(connection.host, connection.port)}: HTTP/2 with prior knowledge (h2c) where an HTTP/1.1 request was due, whose requests' :authority cannot be read here`,
    });
    const event = emitDecision(events, policy, request, decision);
    const forward = decision.outcome === 'would-block' ? forwardTo(events, request, decision, event, connection.address, connection.port) : undefined;
    void decisionWritten(events, forward)
      .then((relayed) => {
        // Refused: closed after the answers due, not reset (a reset discards what of them the client has not read yet).
        if (!relayed) return lingeringClose(socket);
        return relayOnItsOwn(socket, relayed, ownRelayOptions);
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client: connection.client }, 'relaying HTTP/2 after HTTP/1.1 failed');
        socket.destroy();
      });
  };

  /**
   * A CONNECT inside an inspected connection (the tunnel's host a proxy of the job's own, asked for a tunnel to the host
   * it names): it names two hosts, the connection's and its own, and what goes through its tunnel cannot be read here,
   * so it is decided as `ambiguous-host`, as on the transparent path (proxy/transparent/http.ts onConnect). Block mode
   * answers 400. Audit mode sends it to the checked address as written over a connection of its own and relays both
   * ways, reported would-block: in a plain tunnel over TCP; inside terminated TLS over a TLS connection of egress-guard's
   * own for the connection's decided name, verified as its requests' upstreams are (a certificate that does not verify:
   * no answer, `upstream-tls`), the plaintext relayed between the two TLS connections. Until 2026-12-03 the reader
   * closed the connection with no answer and no event, in audit mode too; until later that day a CONNECT inside
   * terminated TLS was refused in audit mode too (no TLS connection of its own upstream was built for it).
   */
  const onConnect = (req: InspectedRequest, socket: Socket, head: Buffer, connection: ConnectionState): void => {
    readers.delete(socket);
    takeReserved(connection)?.close();
    socket.on('error', () => socket.destroy());
    const target = req.url ?? '';
    // The CONNECT as written and what followed it (as the h2c preface): relayed in audit mode, dropped when refused.
    putBackAsWritten(socket, req, head);
    const policy = options.policy();
    const request = { kind: connection.kind, client: connection.client, host: connection.host, port: connection.port, method: 'CONNECT', path: target };
    const fields = {
      reason: 'ambiguous-host' as const,
      host: parseAuthority(target, 443)?.host ?? target,
      ip: connection.address,
      message: `CONNECT ${target.slice(0, 200)} inside the connection to ${formatHostPort(connection.host, connection.port)}: a tunnel to another host, which egress-guard cannot decide`,
    };
    const decision = refusal(policy, fields);
    const event = emitDecision(events, policy, request, decision);
    const forward = decision.outcome === 'would-block' ? forwardTo(events, request, decision, event, connection.address, connection.port) : undefined;
    void decisionWritten(events, forward)
      .then((relayed) => {
        if (!relayed) {
          writeRawError(socket, 400, decision.message, event.id);
          return dropClientBytes(socket, options.idleTimeoutMs);
        }
        return relayOnItsOwn(socket, relayed, connection.plain ? ownRelayOptions : { ...ownRelayOptions, tls: { servername: connection.host, trust: options.upstreamTrust } });
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client: connection.client }, 'inspected CONNECT handling failed');
        socket.destroy();
      });
  };

  const onClientError = (err: ClientError, socket: Socket, connection: ConnectionState): void => {
    takeReserved(connection)?.close();
    if (err.rawPacket?.subarray(0, 14).toString('latin1') === 'PRI * HTTP/2.0') {
      events.log.warn({ client: connection.client, host: connection.host }, 'an HTTP/2-only client on an inspected connection');
      connection.outer.connection.close({ error: 'client-http2-only' });
      return void socket.destroy();
    }
    if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
    const message = `malformed HTTP request (${err.code ?? 'parse error'})`;
    if (!isMalformedHead(err)) return writeRawError(socket, 400, message);
    // Refused in audit mode too, as a server refuses what it cannot parse: its event names the connection's host.
    const refused = { kind: connection.kind, client: connection.client, host: connection.host, port: connection.port };
    answerWhenWritten(refuseMalformed(options, refused, message, connection.address), (eventId) => writeRawError(socket, 400, message, eventId));
  };

  /** A request the reader refuses whole (HTTP/1.1 without Host, too many header lines): its event, then the 400, in either mode. */
  const onMalformed = (req: InspectedRequest, res: RawResponse, why: string, connection: ConnectionState): void => {
    takeReserved(connection)?.close();
    const message = `malformed HTTP request: ${why}`;
    const refused = { kind: connection.kind, client: connection.client, host: connection.host, port: connection.port, method: req.method, path: req.url };
    answerWhenWritten(refuseMalformed(options, refused, message, connection.address), (eventId) => sendProxyError(res, 400, message, eventId, errorFormatFor(req.headers)));
  };

  return {
    adopt(socket, { upstream, ...connection }) {
      // The mode now, when the connection begins, says how all its requests are read (a reload changes their decisions).
      const lenientFlags = requestLeniency(options.policy().mode);
      // Until it is known to carry plain HTTP (read as the pool reads its connections from then on), unread and closed on error.
      upstream?.on('error', () => upstream.destroy());
      // The outer connection's bytes are the client socket's, encrypted; each request counts its own.
      const close = (error?: CloseError) => connection.outer.connection.close({ bytesIn: socket.bytesWritten, bytesOut: socket.bytesRead, ...(error && { error }) });
      socket.on('error', () => socket.destroy());
      // What the client speaks decides the layer: TLS is terminated, plain HTTP read as it is, anything else
      // cannot be decided per request and is closed.
      const sniffed = peekFirstBytes(socket, { timeoutMs: options.idleTimeoutMs }).then((peek) => {
        if (peek.protocol === 'http') {
          socket.once('close', () => close());
          const reserved = upstream && !socket.destroyed ? ReservedUpstream.reserve(upstream, connection.address, connection.port) : undefined;
          if (upstream && !reserved) upstream.destroy();
          serve(socket, { ...connection, lenientFlags, plain: true, ...(reserved && { reserved }) });
          return false;
        }
        // Not plain HTTP (the tunnel's gate hands over only that): its requests would go over TLS connections of their own.
        upstream?.destroy();
        if (peek.protocol === 'tls') return true;
        events.log.warn({ client: connection.client, host: connection.host }, 'neither TLS nor HTTP to an inspected host: closed');
        socket.destroy();
        close('client-not-http');
        return false;
      });
      const context = sniffed.then((tls) => (tls ? options.leaves.secureContextFor(connection.host) : undefined));
      context.then(
        (secureContext) => {
          if (!secureContext) return;
          if (socket.destroyed) return void close('client-aborted');
          const secure = new tls.TLSSocket(socket, { isServer: true, secureContext, ALPNProtocols: ['http/1.1'] });
          let handshaken = false;
          secure.once('secure', () => {
            handshaken = true;
            serve(secure, { ...connection, lenientFlags });
          });
          secure.on('error', (err: NodeJS.ErrnoException) => {
            if (!handshaken) close(handshakeFailure(err, connection));
            secure.destroy();
          });
          // A client that closes in the handshake, after our certificate and without an alert: node (npm, yarn...)
          // verifies the certificate after the handshake and rejects one it does not trust by closing, no alert.
          // Left alone, the socket would wait half-open, with no close event, until the idle timeout.
          secure.once('end', () => {
            if (handshaken) return;
            events.log.warn(
              { client: connection.client, host: connection.host },
              'the client closed in the TLS handshake: it does not trust the inspection CA (docs/inspection.md)',
            );
            close('client-rejected-certificate');
            secure.destroy();
          });
          secure.once('close', () => close());
        },
        (err: Error) => {
          events.log.error({ err: err.message, host: connection.host }, 'no certificate for an inspected connection');
          socket.destroy();
          close('inspection-failed');
        },
      );
    },
    closeIdle() {
      for (const [socket, reader] of readers) if (reader.idle) socket.destroy();
    },
  };
}
