import http from 'node:http';
import net from 'node:net';
import type { EventLog } from '../../events/event-log.js';
import { authorize, type AuthorizeContext, type Authorization } from '../../decision/authorize.js';
import { formatHostPort, parseAuthority } from '../../policy/host-port.js';
import { parseAbsoluteTarget, type AbsoluteTarget } from './absolute-target.js';
import { checkConnectSni } from './connect-sni-check.js';
import { frontConnects } from './connect-front.js';
import { UpstreamConnectError } from '../../net/connect.js';
import { createHttpForwarder, type HttpForwarder } from '../relay/http-forwarder.js';
import type { Inspector } from '../relay/inspection.js';
import { sendProxyError, writeRawError } from '../relay/error-response.js';
import { answerHalfClosedClients } from '../relay/half-close.js';
import { closeTunnelUpstream, connectTunnelUpstream, runTunnel, type TunnelHandler, type TunnelUpstream } from '../relay/tunnel.js';
import { trackConnection, type TrafficCounters } from '../relay/traffic-counters.js';

export interface HttpProxyServerOptions extends AuthorizeContext {
  events: EventLog;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** See SpliceOptions.halfCloseTimeoutMs. */
  halfCloseTimeoutMs?: number;
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

/**
 * The explicit proxy listener: absolute-URI HTTP requests (forwarded by relay/http-forwarder.ts) and CONNECT tunnels.
 * Every request goes through authorize(); every decision emits one event, every forward one close event.
 */
export function createHttpProxyServer(options: HttpProxyServerOptions): http.Server {
  const { events, counters } = options;
  const forwarder = options.forwarder ?? createHttpForwarder(options);

  const server = http.createServer({ keepAlive: true, requestTimeout: 0, headersTimeout: 30_000 });
  server.keepAliveTimeout = 30_000;
  answerHalfClosedClients(server);

  const atCapacity = () => counters.open >= options.maxTunnels;

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const client = clientOf(req.socket);
    let target: AbsoluteTarget;
    try {
      target = parseAbsoluteTarget(req.url ?? '');
    } catch {
      sendProxyError(res, 400, `egress-guard is a forward proxy: "${req.url}" is not an absolute URI (set HTTP_PROXY, or use CONNECT)`);
      events.log.warn({ client, url: req.url?.slice(0, 200) }, 'request without an absolute URI');
      return;
    }
    if (target.protocol !== 'http:') {
      sendProxyError(res, 400, `egress-guard forwards http:// URIs; use CONNECT for ${target.protocol}`);
      return;
    }
    if (atCapacity()) {
      sendProxyError(res, 503, `egress-guard is at its limit of ${options.maxTunnels} open connections`);
      return;
    }
    const port = target.port ? Number(target.port) : 80;
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
    const path = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/i.exec(req.url ?? '')?.[1] || '/';
    void authorize(options, { kind: 'http', client, host, port, method: req.method ?? 'GET', path })
      .then((auth: Authorization) => {
        if (auth.action === 'reject') return sendProxyError(res, 403, auth.decision.message, auth.event.id);
        if (auth.action === 'fail') {
          sendProxyError(res, auth.status, auth.message, auth.event.id);
          auth.connection.close({ status: auth.status, error: auth.error });
          return;
        }
        // The Host sent upstream is the authority that was decided on (RFC 9112 3.2.2), never the client's own
        // Host header: `GET http://allowed.test/` with `Host: attacker.test` must not reach a virtual host it names.
        forwarder.forward({ req, res, auth, authority: target.host });
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client }, 'request handling failed');
        sendProxyError(res, 502, 'egress-guard could not handle this request');
      });
  });

  /** A CONNECT head read (by connect-front.ts, or by node's server on a connection that began otherwise). */
  const onConnect = (socket: net.Socket, target: string, head: Buffer) => {
    const client = clientOf(socket);
    socket.on('error', () => socket.destroy());
    // Bytes sent along with the CONNECT are the tunnel's first: put back at once, before a FIN that came with
    // them ends the socket's reading (then they could not be put back); checked with the rest, not relayed ahead.
    if (head.length > 0) socket.unshift(head);
    const authority = parseAuthority(target);
    if (!authority) {
      writeRawError(socket, 400, `CONNECT needs host:port, got "${target}"`);
      events.log.warn({ client, url: target.slice(0, 200) }, 'malformed CONNECT');
      return;
    }
    if (atCapacity()) {
      writeRawError(socket, 503, `egress-guard is at its limit of ${options.maxTunnels} open tunnels`);
      return;
    }
    trackConnection(counters, socket);
    void authorize(options, { kind: 'connect', client, host: authority.host, port: authority.port, inspectable: options.inspector !== undefined })
      .then(async (auth) => {
        if (auth.action === 'reject') return writeRawError(socket, 403, auth.decision.message, auth.event.id);
        if (auth.action === 'fail') {
          writeRawError(socket, auth.status, auth.message, auth.event.id);
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
          writeRawError(socket, failure.status, failure.message, auth.event.id);
          auth.connection.close({ status: failure.status, error: failure.error });
          return;
        }
        if (socket.destroyed) {
          closeTunnelUpstream(upstream);
          auth.connection.close({ error: 'client-aborted' });
          return;
        }
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        const clientGate = checkConnectSni(options, socket, { client, host: auth.decision.host, port: auth.port, address: auth.address }, options.idleTimeoutMs);
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
        writeRawError(socket, 502, 'egress-guard could not handle this tunnel');
      });
  };

  const onClientError = (err: NodeJS.ErrnoException, socket: net.Socket) => {
    events.log.warn({ client: clientOf(socket), err: err.code ?? err.message }, 'malformed HTTP request');
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    writeRawError(socket, 400, `malformed HTTP request (${err.code ?? 'parse error'})`);
  };

  // node's server hands a CONNECT over as soon as it is parsed, though responses to requests pipelined ahead of it
  // may still be coming (it answers those in order, but not the CONNECT): its answer would be written in between,
  // and the request ahead cut. So it waits for them; its own first bytes are put back at once (see onConnect).
  server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    if (!responseInFlight(socket)) return onConnect(socket, req.url ?? '', head);
    // node took its own error listener off the socket with the hand-over: a reset while waiting must not throw.
    socket.on('error', () => socket.destroy());
    if (head.length > 0) socket.unshift(head);
    afterResponses(socket, () => onConnect(socket, req.url ?? '', NO_BYTES));
  });
  server.on('clientError', onClientError);
  frontConnects(server, { connect: onConnect, clientError: onClientError });

  return server;
}

const NO_BYTES = Buffer.alloc(0);

/** The response node's server is writing on this connection, if any (the next pipelined one is assigned when it ends). */
function responseInFlight(socket: net.Socket): http.ServerResponse | null | undefined {
  return (socket as net.Socket & { _httpMessage?: http.ServerResponse | null })._httpMessage;
}

/** Call `then` once no response of node's server is in flight on the socket (none if the socket closes first). */
function afterResponses(socket: net.Socket, then: () => void): void {
  const current = responseInFlight(socket);
  if (socket.destroyed) return;
  if (!current) return then();
  // 'close' comes a tick after the response ended (or when the connection went), once node has assigned the next one.
  current.once('close', () => afterResponses(socket, then));
}
