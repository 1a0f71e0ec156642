import net from 'node:net';
import type { EventLog } from '../../events/event-log.js';
import { authorize, refuseAtCapacity, refuseMalformed, type AuthorizeContext, type Authorization, type AuthorizeRequest } from '../../decision/authorize.js';
import { NO_HOST } from '../../events/validate.js';
import { canonicalHost, canonicalText } from '../../policy/index.js';
import { formatHostPort, hostHeaderValue, parseAuthority } from '../../policy/host-port.js';
import { parseAbsoluteTarget, type AbsoluteTarget } from './absolute-target.js';
import { checkConnectSni } from './connect-sni-check.js';
import { frontConnects, type ClosableServer } from './connect-front.js';
import { HEAD_TIMEOUT_MS, headSweep } from './head-timeout.js';
import { UpstreamConnectError } from '../../net/connect.js';
import { halfCloseTimeoutOf } from '../../net/splice.js';
import { createHttpForwarder, type HttpForwarder } from '../relay/http-forwarder.js';
import type { Inspector } from '../relay/inspection.js';
import { answerWhenWritten, sendProxyError, writeRawError } from '../relay/error-response.js';
import { isMalformedHead, RequestReader, type ClientError, type InspectedRequest, type RequestHandlers } from '../relay/request-reader.js';
import { requestLeniency } from '../relay/request-leniency.js';
import { methodOverrides } from '../relay/method-override.js';
import { readBodyOverride, withBodyOverride } from '../relay/body-override.js';
import type { RawResponse } from '../relay/raw-response.js';
import { dropClientBytes } from '../relay/handed-over-socket.js';
import { closeTunnelUpstream, connectTunnelUpstream, runTunnel, type TunnelHandler, type TunnelUpstream } from '../relay/tunnel.js';
import { trackConnection, type TrafficCounters } from '../relay/traffic-counters.js';

export interface HttpProxyServerOptions extends AuthorizeContext {
  events: EventLog;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** See SpliceOptions.halfCloseTimeoutMs. */
  halfCloseTimeoutMs?: number;
  /** A request head still being read this long after it began is answered 408 (default HEAD_TIMEOUT_MS, 30 s). */
  headTimeoutMs?: number;
  maxTunnels: number;
  /** What to do with an authorized CONNECT tunnel: splice (default) or terminate and inspect. */
  tunnel: TunnelHandler;
  counters: TrafficCounters;
  /** TLS inspection for hosts with method or path rules; without, CONNECTs to them are refused (inspection-required). */
  inspector?: Inspector;
  /** Shared with the inspector (one upstream pool); made here when not given. */
  forwarder?: HttpForwarder;
}

function clientOf(socket: net.Socket): string {
  return formatHostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0);
}

/** The port an absolute URI of a scheme the proxy does not forward names by default (for its event). */
const DEFAULT_PORTS: Record<string, number> = { 'https:': 443, 'wss:': 443, 'ws:': 80, 'ftp:': 21 };

/** The path and query of an absolute request target, as it would go upstream ('/' for none). */
function pathOf(url: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(url)?.[1] || '/';
}

/** The port an absolute target names: as written, or its scheme's default. */
function portOf(target: AbsoluteTarget): number {
  if (target.port) return Number(target.port);
  return target.protocol === 'http:' ? 80 : (DEFAULT_PORTS[target.protocol] ?? 0);
}

/** What a request refused unread names (for its event): its absolute URI's host and port, else its Host's. */
function namedBy(req: InspectedRequest): { host: string; port: number } | undefined {
  try {
    const target = parseAbsoluteTarget(req.url);
    return { host: target.hostname, port: portOf(target) };
  } catch {
    return parseAuthority(req.headers.host?.trim() ?? '', 80) ?? undefined;
  }
}

/** A host a refused request names, as events spell hosts (canonical), or NO_HOST where it names none that is valid. */
function eventHost(host: string | undefined): string {
  return (host === undefined || host === '' ? undefined : canonicalText(canonicalHost(host))) ?? NO_HOST;
}

/** What node's HTTP server gave the sidecar: a listener whose connections can be closed when idle, or all at once. */
export type HttpProxyServer = ClosableServer;

/** node's server's keep-alive timeout (and the Keep-Alive header's), which the explicit listener kept at 30 s. */
const KEEP_ALIVE_TIMEOUT_MS = 30_000;

/**
 * The explicit proxy listener: absolute-URI HTTP requests (forwarded by relay/http-forwarder.ts) and CONNECT tunnels.
 * Every request goes through authorize(); every decision emits one event, every forward one close event.
 * A new connection's CONNECT head is read by connect-front.ts; any other connection is read by request-reader.ts
 * (node's llhttp, without node's HTTP server: no IncomingMessage or ServerResponse per request), with what node's
 * server did here kept: keep-alive 30 s, headersTimeout 30 s, answers to half-closed clients, a CONNECT after
 * requests handed over once their answers are out.
 */
export function createHttpProxyServer(options: HttpProxyServerOptions): HttpProxyServer {
  const { events, counters } = options;
  const forwarder = options.forwarder ?? createHttpForwarder(options);

  // As node's http.Server made its net.Server: clients may half-close, no Nagle delay, TCP keep-alive.
  const server = net.createServer({ allowHalfOpen: true, noDelay: true, keepAlive: true }) as HttpProxyServer;

  const atCapacity = () => counters.open >= options.maxTunnels;

  /** A request refused as malformed (400, in audit mode too: nothing to forward), answered once its event is written. */
  const refuseRequest = (res: RawResponse, request: AuthorizeRequest, message: string) => {
    refuseMalformed(options, request, message)
      .then((refused) => sendProxyError(res, 400, refused.decision.message, refused.event.id))
      .catch((err: Error) => {
        events.log.error({ err: err.message, client: request.client }, 'request handling failed');
        sendProxyError(res, 400, message);
      });
  };

  const onRequest = (req: InspectedRequest, res: RawResponse) => {
    const client = clientOf(req.socket);
    let target: AbsoluteTarget;
    try {
      target = parseAbsoluteTarget(req.url);
    } catch {
      // Sent to the proxy as to an origin server (no proxy set, a health check): named by its Host, if any. The
      // message (in the event) leaves the query out, which may carry a token (log-query).
      const named = parseAuthority(req.headers.host?.trim() ?? '', 80);
      const request = { kind: 'http' as const, client, host: eventHost(named?.host), port: named?.port ?? 0, method: req.method, path: req.url };
      return refuseRequest(res, request, `egress-guard is a forward proxy: "${req.url.split('?')[0]!.slice(0, 200)}" is not an absolute URI (set HTTP_PROXY, or use CONNECT)`);
    }
    if (target.protocol !== 'http:') {
      // `GET https://host/` (a client that will not CONNECT): the host it names is in the event, so audit mode shows it.
      const request = { kind: 'http' as const, client, host: eventHost(target.hostname), port: portOf(target), method: req.method, path: pathOf(req.url) };
      return refuseRequest(res, request, `egress-guard forwards http:// URIs; use CONNECT for ${target.protocol}`);
    }
    if (atCapacity()) {
      const message = `egress-guard is at its limit of ${options.maxTunnels} open connections`;
      const request = { kind: 'http' as const, client, host: eventHost(target.hostname), port: portOf(target), method: req.method, path: pathOf(req.url) };
      answerWhenWritten(refuseAtCapacity(options, request, message), (eventId) => sendProxyError(res, 503, message, eventId));
      return;
    }
    const port = portOf(target);
    const host = target.hostname;
    counters.open++;
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        counters.open--;
      }
    };
    res.once('close', release);
    // Decided on the target as written, which is what goes upstream (method and path rules judge it).
    const path = pathOf(req.url);
    const asked: AuthorizeRequest = { kind: 'http', client, host, port, method: req.method, path, methodOverrides: methodOverrides(req.headers, req.url) };
    // A POST whose body may name another method (a `_method` field) is decided once that body is read.
    const body = readBodyOverride(req, options.policy(), host, port, path, options.idleTimeoutMs);
    if (body === undefined) return decideAndForward(req, res, asked);
    body
      .then((read) => {
        if (read !== 'gone') decideAndForward(req, res, withBodyOverride(asked, read));
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client }, 'request handling failed');
        sendProxyError(res, 502, 'egress-guard could not handle this request');
      });
  };

  const decideAndForward = (req: InspectedRequest, res: RawResponse, asked: AuthorizeRequest) => {
    const { client } = asked;
    void authorize(options, asked)
      .then((auth: Authorization) => {
        if (auth.action === 'reject') {
          // A body too large to judge is not read on to its end for a next request: the connection ends after the 403.
          if (asked.unreadBody !== undefined) res.shouldKeepAlive = false;
          return sendProxyError(res, 403, auth.decision.message, auth.event.id);
        }
        if (auth.action === 'fail') {
          sendProxyError(res, auth.status, auth.message, auth.event.id);
          auth.connection.close({ status: auth.status, error: auth.error });
          return;
        }
        // The Host sent upstream is the authority that was decided on (RFC 9112 3.2.2), never the client's own
        // Host header: `GET http://allowed.test/` with `Host: attacker.test` must not reach a virtual host it names.
        // And the host as decided, not as the target spelt it: `http://allowed.test./` went with `Host: allowed.test.`
        // and `http://[::ffff:127.0.0.1]/` with `[::ffff:7f00:1]` (URL keeps both; the policy reads allowed.test and
        // 127.0.0.1), as the transparent path and the inspector send theirs.
        forwarder.forward({ req, res, auth, authority: hostHeaderValue(auth.decision.host, auth.port, 80) });
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client }, 'request handling failed');
        sendProxyError(res, 502, 'egress-guard could not handle this request');
      });
  };

  /**
   * A CONNECT (or a head that could not be read) answered with an error: what the client sent along with it is read
   * and dropped, so that its FIN is seen and the socket closes. Left unread, those bytes keep the FIN from being read:
   * the socket stays half-open for good and, once counted, holds a place against maxTunnels. A client that never ends
   * its side is closed after the idle timeout (until 2026-12-03 it held the socket, and its descriptor, for good).
   */
  const refuseOnSocket = (socket: net.Socket, status: number, message: string, eventId?: string) => {
    writeRawError(socket, status, message, eventId);
    dropClientBytes(socket, options.idleTimeoutMs);
  };

  /** A request refused before it named a host that can be trusted: its malformed-request event, then `status` on the socket. */
  const refuseNamingNone = (socket: net.Socket, kind: 'http' | 'connect', status: number, message: string) => {
    const refused = refuseMalformed(options, { kind, client: clientOf(socket), host: NO_HOST, port: 0 }, message);
    answerWhenWritten(refused, (eventId) => refuseOnSocket(socket, status, message, eventId));
  };

  /** A CONNECT head read (by connect-front.ts, or by the request reader on a connection that began otherwise). */
  const onConnect = (socket: net.Socket, target: string, head: Buffer) => {
    const client = clientOf(socket);
    socket.on('error', () => socket.destroy());
    // Bytes sent along with the CONNECT are the tunnel's first: put back at once, before a FIN that came with
    // them ends the socket's reading (then they could not be put back); checked with the rest, not relayed ahead.
    if (head.length > 0) socket.unshift(head);
    const authority = parseAuthority(target);
    if (!authority) {
      const message = `CONNECT needs host:port, got "${target.slice(0, 200)}"`;
      return refuseNamingNone(socket, 'connect', 400, message);
    }
    if (atCapacity()) {
      const message = `egress-guard is at its limit of ${options.maxTunnels} open tunnels`;
      const refused = refuseAtCapacity(options, { kind: 'connect', client, host: eventHost(authority.host), port: authority.port }, message);
      answerWhenWritten(refused, (eventId) => refuseOnSocket(socket, 503, message, eventId));
      return;
    }
    trackConnection(counters, socket);
    void authorize(options, { kind: 'connect', client, host: authority.host, port: authority.port, inspectable: options.inspector !== undefined })
      .then(async (auth) => {
        if (auth.action === 'reject') return refuseOnSocket(socket, 403, auth.decision.message, auth.event.id);
        if (auth.action === 'fail') {
          refuseOnSocket(socket, auth.status, auth.message, auth.event.id);
          auth.connection.close({ status: auth.status, error: auth.error });
          return;
        }
        if (auth.decision.inspect && options.inspector) {
          // Each request inside is decided and connected on its own; nothing connects upstream for the tunnel.
          socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
          options.inspector.adopt(socket, { kind: 'connect', client, host: auth.decision.host, port: auth.port, address: auth.address, outer: auth });
          return;
        }
        let upstream: TunnelUpstream;
        try {
          upstream = await connectTunnelUpstream(options.tunnel, socket, auth.address, auth.port, options.connectTimeoutMs);
        } catch (err) {
          const failure = UpstreamConnectError.from(err);
          refuseOnSocket(socket, failure.status, failure.message, auth.event.id);
          auth.connection.close({ status: failure.status, error: failure.error });
          return;
        }
        if (socket.destroyed) {
          closeTunnelUpstream(upstream);
          auth.connection.close({ error: 'client-aborted' });
          return;
        }
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        // Plain HTTP inside is read request by request, as in a tunnel to a host with method or path rules (inspection.ts).
        const inspector = options.inspector;
        const tunnelled = { kind: 'connect' as const, client, host: auth.decision.host, port: auth.port, address: auth.address };
        const readRequests =
          inspector && ((tunnelClient: net.Socket, upstream?: net.Socket) => inspector.adopt(tunnelClient, { ...tunnelled, outer: auth, ...(upstream && { upstream }) }));
        const clientGate = checkConnectSni(options, socket, tunnelled, options.idleTimeoutMs, readRequests);
        runTunnel(options.tunnel, {
          client: socket,
          upstream,
          authorization: auth,
          idleTimeoutMs: options.idleTimeoutMs,
          halfCloseTimeoutMs: options.halfCloseTimeoutMs,
          clientGate,
        });
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client }, 'CONNECT handling failed');
        refuseOnSocket(socket, 502, 'egress-guard could not handle this tunnel');
      });
  };

  const onClientError = (err: ClientError, socket: net.Socket) => {
    const client = clientOf(socket);
    events.log.warn({ client, err: err.code ?? err.message }, 'malformed HTTP request');
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // A head still unfinished at head-timeout: 408 as node's server answered, with its event (until 2026-12-03 none),
      // so that a job whose tool stalls mid-request finds why in its report. It named no host yet. A connection that
      // sent nothing at all is timed from its accept (as node's server did): its event says so (until review45 it
      // said a head was not complete).
      const what = socket.bytesRead === 0 ? 'no request' : 'request head not complete';
      const timedOut = `${what} within ${options.headTimeoutMs ?? HEAD_TIMEOUT_MS} ms (head-timeout)`;
      return refuseNamingNone(socket, 'http', 408, timedOut);
    }
    const message = `malformed HTTP request (${err.code ?? 'parse error'})`;
    if (!isMalformedHead(err)) return refuseOnSocket(socket, 400, message);
    // A head the parser cannot read names no host that can be trusted: its event says what was refused, and why.
    refuseNamingNone(socket, 'http', 400, message);
  };

  /** A request the reader refuses whole (HTTP/1.1 without Host, too many header lines): its event, then the 400. */
  const onMalformed = (req: InspectedRequest, res: RawResponse, why: string) => {
    const named = namedBy(req);
    const request = { kind: 'http' as const, client: clientOf(req.socket), host: eventHost(named?.host), port: named?.port ?? 0, method: req.method, path: pathOf(req.url) };
    refuseRequest(res, request, `malformed HTTP request: ${why}`);
  };

  /** The reader of each connection read as HTTP (not those handed over to a CONNECT). */
  const readers = new Map<net.Socket, RequestReader>();
  // node's headersTimeout for the heads the readers read (the front times those it reads), one timer for all.
  const heads = headSweep((startedBefore) => {
    for (const reader of readers.values()) if (reader.headStartedAt !== 0 && reader.headStartedAt <= startedBefore) reader.headTimedOut();
    return readers.size > 0;
  }, options.headTimeoutMs);
  const handlers: RequestHandlers = {
    request: onRequest,
    // node's server hands a CONNECT over as soon as it is parsed, though answers to requests pipelined ahead of it
    // may still be coming (it answers those in order, but not the CONNECT): its answer would be written in between,
    // and the request ahead cut. So it waits for them; its own first bytes are put back at once (see onConnect).
    connect: (req, socket, head) => {
      const reader = readers.get(socket);
      if (!reader?.answerInFlight) {
        readers.delete(socket);
        return onConnect(socket, req.url, head);
      }
      socket.on('error', () => socket.destroy());
      if (head.length > 0) socket.unshift(head);
      // Still among the readers while it waits (never idle: an answer is under way), so that closeAllConnections()
      // at the drain timeout reaches it; it is neither read as HTTP nor a tunnel yet.
      afterAnswers(reader, socket, () => {
        readers.delete(socket);
        onConnect(socket, req.url, NO_BYTES);
      });
    },
    clientError: onClientError,
    malformed: onMalformed,
  };
  const readRequests = (socket: net.Socket, lenientFlags: number) => {
    const reader = new RequestReader(socket, handlers, {
      idleTimeoutMs: KEEP_ALIVE_TIMEOUT_MS,
      idleOnlyBetweenRequests: true,
      answerHalfClosed: true,
      halfCloseTimeoutMs: halfCloseTimeoutOf(options),
      // The mode when the connection began says how all its requests are read (a reload changes their decisions).
      lenientFlags,
    });
    readers.set(socket, reader);
    socket.once('close', () => readers.delete(socket));
    heads.arm();
  };
  server.closeIdleConnections = () => {
    for (const [socket, reader] of readers) if (reader.idle) socket.destroy();
  };
  server.closeAllConnections = () => {
    for (const socket of readers.keys()) socket.destroy();
  };
  // node's http.Server.close() closed idle connections too (node 19 on).
  const close = server.close.bind(server);
  server.close = (callback?: (err?: Error) => void) => {
    server.closeIdleConnections();
    return close(callback);
  };
  frontConnects(server, { connect: onConnect, clientError: onClientError, other: readRequests, lenientFlags: () => requestLeniency(options.policy().mode) }, options.headTimeoutMs);
  server.on('close', heads.stop);

  return server;
}

const NO_BYTES = Buffer.alloc(0);

/** Call `then` once no answer of the reader is in flight on the socket (none if the socket closes first). */
function afterAnswers(reader: RequestReader, socket: net.Socket, then: () => void): void {
  const current = reader.answerInFlight;
  if (socket.destroyed) return;
  if (!current) return then();
  // 'close' comes a tick after the answer finished (or when the connection went), once the next one is assigned.
  current.once('close', () => afterAnswers(reader, socket, then));
}
