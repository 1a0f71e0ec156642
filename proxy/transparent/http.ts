import type net from 'node:net';
import type { CloseError } from '../../events/schema.js';
import { canonicalHost, canonicalText, hostHeaderValue, parseAuthority } from '../../policy/index.js';
import { refuseMalformed, type Authorization, type Forward } from '../../decision/authorize.js';
import { connectUpstream, UpstreamConnectError } from '../../net/connect.js';
import { createHttpForwarder, originForm } from '../relay/http-forwarder.js';
import { ReservedUpstream, takeReserved } from '../relay/reserved-upstream.js';
import { describeRequest, type PeekedHttpRequest } from '../../net/sniffing/http-head.js';
import { answerWhenWritten, sendProxyError, writeRawError } from '../relay/error-response.js';
import type { OriginalDestination } from './original-destination.js';
import { halfCloseTimeoutOf, splice } from '../../net/splice.js';
import { relayTimeouts } from '../relay/tunnel.js';
import { readAgainWithoutUpgrade, requestHead } from '../relay/request-head.js';
import { dropClientBytes, endAfterAnswers, putBackAsWritten, relayOnItsOwn } from '../relay/handed-over-socket.js';
import { lingeringClose } from '../relay/lingering-close.js';
import type { RawResponse } from '../relay/raw-response.js';
import { isMalformedHead, RequestReader, type ClientError, type InspectedRequest, type RequestHandlers } from '../relay/request-reader.js';
import { requestLeniency } from '../relay/request-leniency.js';
import { methodOverrides } from '../relay/method-override.js';
import { readBodyOverride, withBodyOverride } from '../relay/body-override.js';
import { addressText, authorizeAmbiguous, authorizeTransparent, type TransparentAuthorizeContext } from '../../decision/attribution.js';

export interface TransparentHttpOptions extends TransparentAuthorizeContext {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  halfCloseTimeoutMs?: number;
}

export interface RedirectedConnection {
  client: string;
  destination: OriginalDestination;
}

/** The destination's address as events name it (`host` when no name is known, and `ip`). */
function destinationIp(connection: RedirectedConnection): string {
  return addressText(connection.destination.address);
}

export interface TransparentHttp {
  /**
   * Serve a redirected connection whose first bytes are an HTTP/1 request (left unread on the socket): every
   * request on it, not only the first, is decided on its own host and forwarded to the original destination.
   * `upstream`: a connection to that destination, connected and untouched (a silent client's tunnel), which carries the
   * first request if that is forwarded; otherwise it is closed.
   */
  adopt(socket: net.Socket, connection: RedirectedConnection, upstream?: net.Socket): void;
  /** Close the adopted connections that are between requests (shutdown). */
  closeIdle(): void;
}

/** The largest upstream response head read before a WebSocket upgrade is relayed. */
const MAX_UPGRADE_RESPONSE_HEAD = 16 * 1024;

/**
 * `reserved`: the connection's upstream for its first request (adopt's `upstream`), until that request takes it;
 * `lenientFlags`: how its requests are read (request-leniency.ts), from the policy's mode when it was adopted, for all
 * of them (read again after an h2c upgrade request too).
 */
type ServedConnection = RedirectedConnection & { busy: number; lenientFlags: number; reserved?: ReservedUpstream };

/**
 * `path`: the origin-form target (an absolute-form one reduced to its path). Not ok: a request that could name two hosts,
 * `host` what it names first as written (for its event), `request` its method and target as sent.
 */
type Target = { ok: true; request: PeekedHttpRequest; path: string } | { ok: false; message: string; host: string; request: PeekedHttpRequest };

function sameHost(a: string, b: string): boolean {
  const x = canonicalHost(a);
  const y = canonicalHost(b);
  if (x.type === 'name' && y.type === 'name') return x.name === y.name;
  if (x.type === 'ip' && y.type === 'ip') return x.text === y.text;
  return false;
}

/** The request's method override headers and `_method` query parameters, judged with its method (proxy/relay/method-override.ts). */
function withOverrides(request: PeekedHttpRequest, req: InspectedRequest): PeekedHttpRequest {
  const overrides = methodOverrides(req.headers, req.url);
  return overrides ? { ...request, methodOverrides: overrides } : request;
}

/**
 * What a request names, unless it could name two hosts: more than one Host header, a Host that is not an authority,
 * an absolute-form target that is no URL or whose host differs from the Host header. Servers differ in which of them
 * they read (the first Host or the last, the target or the Host), so such a request is decided as `ambiguous-host`
 * (decision/attribution.ts authorizeAmbiguous), never on one of its hosts.
 */
function targetOf(req: InspectedRequest): Target {
  const ambiguous = (host: string, message: string): Target => ({ ok: false, message, host, request: { method: req.method, path: req.url } });
  const hostValues = req.rawHeaders.filter((_, i) => i % 2 === 1 && req.rawHeaders[i - 1]!.toLowerCase() === 'host').map((value) => value.trim());
  if (hostValues.length > 1) return ambiguous(hostValues[0]!, `more than one Host header (${hostValues.map((h) => `"${h}"`).join(', ')})`);
  const hostHeader = req.headers.host?.trim();
  const fromHeader = hostHeader !== undefined ? parseAuthority(hostHeader, 80) : undefined;
  if (fromHeader === null) return ambiguous(hostHeader!, `the Host header "${hostHeader}" is not host[:port]`);
  const url = req.url;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    let absolute: URL;
    try {
      absolute = new URL(url);
    } catch {
      return ambiguous(hostHeader ?? url, 'the request target is not a valid URL');
    }
    const host = absolute.hostname.replace(/^\[|\]$/g, '');
    if (fromHeader && !sameHost(host, fromHeader.host)) return ambiguous(host, `the request target names ${host} and the Host header ${fromHeader.host}`);
    // The path as it is sent upstream (the forwarder's origin form of the target), not URL's reading of it: URL
    // takes `\` for `/` and resolves dot-segments, so `/elsewhere\..\allowed` was decided as /allowed and sent as
    // written; the policy's normaliser refuses what it cannot make canonical, as for an origin-form target.
    const path = originForm(url);
    return { ok: true, request: withOverrides(describeRequest(req.method, path, absolute.host), req), path };
  }
  return { ok: true, request: withOverrides(describeRequest(req.method, url, hostHeader), req), path: url };
}

/**
 * The Host sent upstream: the host decided on, as the policy read it, with the destination's port unless it is 80. Not
 * the client's spelling: canonicalHost() reads a Host as WHATWG URL does, so `\xaallowed.test` (ª, which IDNA maps to
 * `a`), `all\xadowed.test` (a soft hyphen, which it drops) or `allowed.test.` was decided as allowed.test and, until
 * hunt3, sent upstream as written, and a request without Host (HTTP/1.0), decided on the name the destination was
 * attributed to, went with the address as its Host: a server at that address routes such a Host to a site of its
 * own choosing (its default one), not the one decided on. As the explicit proxy and the inspector send theirs.
 */
function decidedAuthority(auth: Forward): string | undefined {
  // A Host that is no host name, or a request that could name two hosts, relayed in audit mode (decision/attribution.ts):
  // as the client sent it.
  if (relayedAsSent(auth)) return undefined;
  return hostHeaderValue(auth.decision.host, auth.port, 80);
}

/** A request relayed undecided in audit mode, its Host (and, when it could name two hosts, its target) as the client sent them. */
function relayedAsSent(auth: Forward): boolean {
  return auth.decision.reason === 'invalid-host' || auth.decision.reason === 'ambiguous-host';
}

/**
 * node's keepAliveTimeout, which the transparent HTTP server kept at 30 s while its idle timeout is the tunnels'
 * (idle-timeout): the Keep-Alive header's timeout, and how long a connection may idle between requests (plus a second).
 */
const KEEP_ALIVE_TIMEOUT_MS = 30_000;

/**
 * The plain HTTP of redirected connections, read by request-reader.ts (node's llhttp, answers written as raw bytes
 * by raw-response.ts), as the explicit proxy and the inspector read theirs: no http.Server, IncomingMessage or
 * ServerResponse. What node's server did here is kept: keep-alive 30 s, the idle timeout while a request is under
 * way, answers to half-closed clients, no head timeout (node enforced headersTimeout only on servers that listen,
 * and this one never did: a head that never ends is bounded by the idle timeout).
 */
export function createTransparentHttp(options: TransparentHttpOptions): TransparentHttp {
  const { events } = options;
  const forwarder = createHttpForwarder(options);
  /** `busy`: answers under way (and for good once upgraded); a connection with none is closed at shutdown. */
  const connections = new Map<net.Socket, ServedConnection>();

  /** A request's decision: on the host it names, or (one that could name two hosts) as `ambiguous-host` on its destination. */
  const decideRequest = (target: Target, connection: RedirectedConnection): Promise<Authorization> => {
    const redirected = { client: connection.client, destination: connection.destination, peek: { protocol: 'http' as const, request: target.request, bytes: 0 } };
    return target.ok ? authorizeTransparent(options, redirected) : authorizeAmbiguous(options, redirected, target);
  };

  const onRequest = (req: InspectedRequest, res: RawResponse, connection: ServedConnection) => {
    // Only the first request may take the reserved upstream, and only to forward it; whatever else happens it is closed.
    let reserved = takeReserved(connection);
    const dropReserved = () => {
      reserved?.close();
      reserved = undefined;
    };
    const target = targetOf(req);
    connection.busy++;
    res.once('close', () => {
      connection.busy--;
    });
    // The decision is asynchronous: a request pipelined behind this one waits for it, and is dropped unread if this
    // one is refused (the connection ends after the 403), not decided and sent with its answer never delivered.
    const goOn = req.holdFollowing();
    // A POST whose body may name another method (a `_method` field) is decided once that body is read (body-override.ts).
    // (Not one that could name two hosts: it is decided on no host, its body changes nothing.)
    const asked = target.request;
    const body = target.ok ? readBodyOverride(req, options.policy(), asked.host, connection.destination.port, asked.path, options.idleTimeoutMs) : undefined;
    const decided =
      body === undefined
        ? decideRequest(target, connection)
        : body.then((read) => (read === 'gone' ? undefined : decideRequest({ ...target, request: withBodyOverride(asked, read) }, connection)));
    decided
      .then((auth) => {
        if (auth?.action !== 'forward') dropReserved();
        if (auth === undefined) return goOn(false);
        if (auth.action === 'reject') {
          res.shouldKeepAlive = false;
          goOn(false);
          // A request that could name two hosts is a bad request (400, as before it was decided); any other refusal 403.
          return sendProxyError(res, target.ok ? 403 : 400, auth.decision.message, auth.event.id);
        }
        goOn(true);
        if (auth.action === 'fail') return sendProxyError(res, auth.status, auth.message, auth.event.id);
        const authority = decidedAuthority(auth);
        // The forwarder sends on the reserved connection when it goes to the request's address and port (the original
        // destination's, which every request here goes to), else closes it.
        const taken = reserved && { reserved };
        reserved = undefined;
        forwarder.forward({ req, res, auth, ...(authority !== undefined && { authority }), ...(!target.ok && { targetAsSent: true }), ...taken });
      })
      .catch((err: Error) => {
        dropReserved();
        events.log.error({ err: err.message, client: connection.client }, 'transparent HTTP request handling failed');
        goOn(true);
        sendProxyError(res, 502, 'egress-guard could not handle this request');
      });
  };

  // WebSocket: decided like any request; the connection becomes a byte relay only once upstream answers 101.
  const onUpgrade = (req: InspectedRequest, socket: net.Socket, head: Buffer, connection: ServedConnection) => {
    if (req.headers.upgrade?.trim().toLowerCase() !== 'websocket') {
      // h2c and the like: served as the plain HTTP/1.1 request it also is, read again without the upgrade headers (the
      // reserved upstream left for it: until 2026-12-03 it was closed here and the request connected again).
      return readAgainWithoutUpgrade(req, socket, head, () => serve(socket, connection));
    }
    // The reserved upstream goes to a WebSocket upgrade as to a plain request (onRequest): the first request only.
    const reserved = takeReserved(connection);
    const target = targetOf(req);
    connection.busy++; // for good: an upgraded connection is never idle between requests
    decideRequest(target, connection)
      .then(async (auth) => {
        if (auth.action !== 'forward') {
          reserved?.close();
          return endUpgrade(socket, auth.action === 'fail' ? auth.status : target.ok ? 403 : 400, auth.action === 'fail' ? auth.message : auth.decision.message, auth.event.id);
        }
        // One that could name two hosts, relayed in audit mode: its target as the client sent it.
        await relayWebSocket(req, socket, head, auth, target.ok ? target.path : req.url, reserved);
      })
      .catch((err: Error) => {
        reserved?.close();
        events.log.warn({ err: err.message, client: connection.client }, 'transparent WebSocket upgrade failed');
        endUpgrade(socket, 502, 'egress-guard could not relay this upgrade');
      });
  };

  /**
   * A CONNECT (the destination a proxy of the job's own, asked for a tunnel to the host it names): a request that names
   * two hosts, that one and the destination, and whose tunnel egress-guard cannot read, so decided as `ambiguous-host`
   * on its destination (authorizeAmbiguous): block mode answers 400, audit mode sends it to the destination as written
   * and relays both ways, reported would-block. Until review43 the request reader, with no handler for it, closed the
   * connection with no answer and no event, in audit mode too.
   */
  const onConnect = (req: InspectedRequest, socket: net.Socket, head: Buffer, connection: ServedConnection) => {
    takeReserved(connection)?.close();
    socket.on('error', () => socket.destroy());
    // The CONNECT as written and what followed it: relayed in audit mode, and counted in its close event there (written
    // upstream ahead of the relay, they were not); read and dropped when refused.
    putBackAsWritten(socket, req, head);
    const target: Target = {
      ok: false,
      host: parseAuthority(req.url, 443)?.host ?? req.url,
      message: `CONNECT ${req.url}: a tunnel through the destination to another host, which egress-guard cannot decide`,
      request: { method: req.method, path: req.url },
    };
    connection.busy++; // for good: a tunnel is never idle between requests
    decideRequest(target, connection)
      .then(async (auth) => {
        if (auth.action !== 'forward')
          return endUpgrade(socket, auth.action === 'fail' ? auth.status : 400, auth.action === 'fail' ? auth.message : auth.decision.message, auth.event.id);
        // Its head as the client sent it (put back on the socket), then the bytes both ways (the proxy's answer included).
        await relayOnItsOwn(socket, auth, options);
      })
      .catch((err: Error) => {
        events.log.warn({ err: err.message, client: connection.client }, 'transparent CONNECT failed');
        endUpgrade(socket, 502, 'egress-guard could not relay this CONNECT');
      });
  };

  /**
   * HTTP/2 with prior knowledge (h2c) where an HTTP/1.1 request was due (the reader hands it over once the answers due
   * are out): its requests name their host in HPACK-coded `:authority`, which is not read here, so it is decided as
   * `ambiguous-host` on its destination, as the inspector decides one in a plain tunnel: block mode closes the
   * connection (an h2c client cannot read an HTTP/1.1 answer), audit mode relays the preface and what follows to the
   * destination as sent, reported would-block. Until 2026-12-03 it was a 400 in audit mode too (with a
   * malformed-request event since earlier that day).
   */
  const onHttp2Preface = (socket: net.Socket, bytes: Buffer, connection: ServedConnection) => {
    takeReserved(connection)?.close();
    socket.on('error', () => socket.destroy());
    // Put back at once: a FIN read with them would end the socket's reading first (as the inspector's).
    if (!socket.readableEnded) socket.unshift(bytes);
    const ip = destinationIp(connection);
    const target: Target = {
      ok: false,
      host: ip,
      message: "HTTP/2 with prior knowledge (h2c) where an HTTP/1.1 request was due, whose requests' :authority cannot be read here",
      request: { method: 'PRI', path: '*' },
    };
    connection.busy++; // for good: an h2c connection is never idle between requests here
    decideRequest(target, connection)
      .then(async (auth) => {
        // Refused: closed after the answers due, not reset (a reset discards what of them the client has not read yet).
        if (auth.action !== 'forward') return lingeringClose(socket);
        await relayOnItsOwn(socket, auth, options);
      })
      .catch((err: Error) => {
        events.log.warn({ err: err.message, client: connection.client }, 'transparent h2c relay failed');
        socket.destroy();
      });
  };

  /** An upgrade answered here (refused, or failed): the answer, then what the client sends is dropped until it ends. */
  const endUpgrade = (socket: net.Socket, status: number, message: string, eventId?: string) => {
    writeRawError(socket, status, message, eventId);
    dropClientBytes(socket, options.idleTimeoutMs);
  };

  const onClientError = (err: ClientError, socket: net.Socket, connection: ServedConnection) => {
    events.log.warn({ client: connection.client, err: err.code ?? err.message }, 'malformed HTTP request on a redirected connection');
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    const message = `malformed HTTP request (${err.code ?? 'parse error'})`;
    if (!isMalformedHead(err)) return writeRawError(socket, 400, message);
    // Refused in audit mode too (as a server refuses what it cannot parse): bytes that are not a request are not relayed.
    const port = connection.destination.port;
    const ip = destinationIp(connection);
    const refused = refuseMalformed(options, { kind: 'transparent', client: connection.client, host: ip, port }, message, ip);
    answerWhenWritten(refused, (eventId) => writeRawError(socket, 400, message, eventId));
  };

  /** A request the reader refuses whole (HTTP/1.1 without Host, too many header lines): its event, then the 400, in either mode. */
  const onMalformed = (req: InspectedRequest, res: RawResponse, why: string, connection: ServedConnection) => {
    takeReserved(connection)?.close();
    const port = connection.destination.port;
    const ip = destinationIp(connection);
    const named = parseAuthority(req.headers.host?.trim() ?? '', port);
    const request = {
      kind: 'transparent' as const,
      client: connection.client,
      host: (named && canonicalText(canonicalHost(named.host))) ?? ip,
      port,
      method: req.method,
      path: req.url,
    };
    const message = `malformed HTTP request: ${why}`;
    answerWhenWritten(refuseMalformed(options, request, message, ip), (eventId) => sendProxyError(res, 400, message, eventId));
  };

  /** Read the requests of `socket` (again, after an h2c upgrade request served as a plain one). */
  const serve = (socket: net.Socket, connection: ServedConnection) => {
    const handlers: RequestHandlers = {
      request: (req, res) => onRequest(req, res, connection),
      upgrade: (req, upgraded, head) => onUpgrade(req, upgraded, head, connection),
      // A CONNECT pipelined behind requests not yet answered is neither decided nor sent, as an upgrade there (the
      // reader's endAfterAnswers): those answers go out, then the connection ends.
      connect: (req, tunnel, head) => (reader.answerInFlight ? endAfterAnswers(reader, tunnel, options.idleTimeoutMs) : onConnect(req, tunnel, head, connection)),
      http2Preface: (upgraded, bytes) => onHttp2Preface(upgraded, bytes, connection),
      clientError: (err, failed) => onClientError(err, failed, connection),
      malformed: (req, res, why) => onMalformed(req, res, why, connection),
    };
    const reader = new RequestReader(socket, handlers, {
      idleTimeoutMs: options.idleTimeoutMs,
      keepAliveTimeoutMs: KEEP_ALIVE_TIMEOUT_MS,
      answerHalfClosed: true,
      halfCloseTimeoutMs: halfCloseTimeoutOf(options),
      lenientFlags: connection.lenientFlags,
    });
  };

  /** `reserved`: the connection's reserved upstream, sent on when it goes to the upgrade's address and port (else closed). */
  const relayWebSocket = async (req: InspectedRequest, socket: net.Socket, head: Buffer, auth: Forward, path: string, reserved: ReservedUpstream | undefined) => {
    const authority = decidedAuthority(auth);
    const close = (bytesIn: number, bytesOut: number, error?: CloseError, status?: number) =>
      auth.connection.close({ bytesIn, bytesOut, ...(status !== undefined && { status }), ...(error && { error }) });
    let upstream: net.Socket;
    try {
      upstream = reserved?.claim(auth.address, auth.port) ?? (await connectUpstream(auth.address, auth.port, options.connectTimeoutMs));
    } catch (err) {
      const failure = UpstreamConnectError.from(err);
      close(0, 0, failure.error, failure.status);
      throw err;
    }
    // Until splice takes over: an upstream reset must end this connection, not the process.
    const onUpstreamError = () => {
      upstream.destroy();
      socket.destroy();
    };
    upstream.on('error', onUpstreamError);
    upstream.write(requestHead(req, path, (name, value) => (name.toLowerCase() === 'host' ? (authority ?? value) : value)));
    const response = await readResponseHead(upstream, options.idleTimeoutMs);
    if (!response) {
      upstream.destroy();
      endUpgrade(socket, 502, `${auth.decision.host}: no upgrade answer from upstream`, auth.event.id);
      close(upstream.bytesRead, upstream.bytesWritten, 'upstream-no-answer', 502);
      return;
    }
    if (!/^HTTP\/1\.1 101 /.test(response.head.toString('latin1'))) {
      // Not upgraded: upstream's answer goes to the client, then the connection ends; the client's bytes
      // after its request are never relayed.
      socket.write(response.head);
      dropClientBytes(socket, options.idleTimeoutMs);
      upstream.pipe(socket);
      upstream.setTimeout(options.idleTimeoutMs, () => upstream.destroy());
      upstream.once('close', () => {
        socket.end();
        close(upstream.bytesRead, upstream.bytesWritten, 'not-upgraded');
      });
      return;
    }
    upstream.off('error', onUpstreamError);
    socket.write(response.head);
    if (head.length > 0) upstream.write(head);
    splice(socket, upstream, {
      ...relayTimeouts(options),
      onClose: (result) => close(result.bytesIn, result.bytesOut, result.error, 101),
    });
  };

  return {
    adopt(socket, connection, upstream) {
      const reserved = upstream && !socket.destroyed ? ReservedUpstream.reserve(upstream, connection.destination.address, connection.destination.port) : undefined;
      if (upstream && !reserved) upstream.destroy();
      const served: ServedConnection = { ...connection, busy: 0, lenientFlags: requestLeniency(options.policy().mode), ...(reserved && { reserved }) };
      connections.set(socket, served);
      socket.once('close', () => {
        connections.delete(socket);
        // A client that went (or was refused as malformed) before its first request took the reserved upstream.
        takeReserved(served)?.close();
      });
      serve(socket, served);
      // The peek left the socket paused; a paused socket does not flow for the reader's listeners by itself.
      socket.resume();
    },
    closeIdle() {
      for (const [socket, connection] of connections) if (connection.busy === 0) socket.destroy();
    },
  };
}

/** The response head (status line and headers, up to the blank line, with any bytes after it), or null. */
function readResponseHead(upstream: net.Socket, timeoutMs: number): Promise<{ head: Buffer } | null> {
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    const finish = (result: { head: Buffer } | null) => {
      clearTimeout(timer);
      upstream.off('data', onData);
      upstream.off('close', onClose);
      upstream.pause();
      resolve(result);
    };
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end !== -1) {
        finish({ head: received.subarray(0, end + 4) });
        const after = received.subarray(end + 4);
        if (after.length > 0) upstream.unshift(after);
        return;
      }
      if (received.length > MAX_UPGRADE_RESPONSE_HEAD) finish(null);
    };
    const onClose = () => finish(null);
    const timer = setTimeout(() => finish(null), timeoutMs);
    upstream.on('data', onData);
    upstream.once('close', onClose);
  });
}
