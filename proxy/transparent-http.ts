import http from 'node:http';
import type net from 'node:net';
import type { Authorization } from './authorize.js';
import { connectUpstream } from './connect-upstream.js';
import { createHttpForwarder, unforwardableBody } from './http-forwarder.js';
import { describeRequest } from './http-host-peek.js';
import { sendProxyError, writeRawError } from './http-response.js';
import type { OriginalDestination } from './original-destination.js';
import { splice } from './splice.js';
import { authorizeTransparent, type TransparentAuthorizeContext } from './transparent-authorize.js';

export interface TransparentHttpOptions extends TransparentAuthorizeContext {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

export interface RedirectedConnection {
  client: string;
  destination: OriginalDestination;
}

export interface TransparentHttp {
  /**
   * Serve a redirected connection whose first bytes are an HTTP/1 request (left unread on the socket): every
   * request on it, not only the first, is decided on its own Host and forwarded to the original destination.
   */
  adopt(socket: net.Socket, connection: RedirectedConnection): void;
  /** Close the keep-alive connections that are between requests (shutdown). */
  closeIdle(): void;
}

type Forward = Extract<Authorization, { action: 'forward' }>;

/** An HTTP server that is never bound: the transparent listener hands it the connections that speak HTTP. */
export function createTransparentHttp(options: TransparentHttpOptions): TransparentHttp {
  const { events } = options;
  const forwarder = createHttpForwarder(options);
  const connections = new WeakMap<net.Socket, RedirectedConnection>();
  const server = http.createServer({ keepAlive: true, requestTimeout: 0, headersTimeout: 30_000 });
  server.keepAliveTimeout = 30_000;

  const decideRequest = (req: http.IncomingMessage, connection: RedirectedConnection): Promise<Authorization> => {
    const request = describeRequest(req.method ?? 'GET', req.url ?? '/', req.headers.host);
    return authorizeTransparent(options, { ...connection, peek: { protocol: 'http', request, bytes: 0 } });
  };

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const connection = connections.get(req.socket);
    if (!connection) return void res.destroy();
    const refusal = unforwardableBody(req);
    if (refusal) return sendProxyError(res, 400, refusal);
    const started = Date.now();
    decideRequest(req, connection)
      .then((auth) => {
        if (auth.action === 'reject') {
          res.shouldKeepAlive = false;
          return sendProxyError(res, 403, auth.decision.message, auth.event.id);
        }
        if (auth.action === 'fail') return sendProxyError(res, auth.status, auth.message, auth.event.id);
        forwarder.forward({ req, res, auth, started, client: connection.client, kind: 'transparent' });
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client: connection.client }, 'transparent HTTP request handling failed');
        sendProxyError(res, 502, 'egress-guard could not handle this request');
      });
  });

  // Upgrade (WebSocket over plain HTTP): decided like any request, then the connection is relayed as bytes.
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const connection = connections.get(socket);
    if (!connection) return void socket.destroy();
    const started = Date.now();
    decideRequest(req, connection)
      .then(async (auth) => {
        if (auth.action !== 'forward') return writeRawError(socket, auth.action === 'fail' ? auth.status : 403, auth.action === 'fail' ? auth.message : auth.decision.message, auth.event.id);
        await relayUpgrade(req, socket, head, auth, connection, started);
      })
      .catch((err: Error) => {
        events.log.warn({ err: err.message, client: connection.client }, 'transparent HTTP upgrade failed');
        writeRawError(socket, 502, 'egress-guard could not relay this upgrade');
      });
  });

  const relayUpgrade = async (req: http.IncomingMessage, socket: net.Socket, head: Buffer, auth: Forward, connection: RedirectedConnection, started: number) => {
    const upstream = await connectUpstream(auth.address, auth.port, options.connectTimeoutMs);
    const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`];
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length > 0) upstream.write(head);
    splice(socket, upstream, {
      idleTimeoutMs: options.idleTimeoutMs,
      onClose: (result) => events.close({
        id: auth.event.id, kind: 'transparent', client: connection.client, host: auth.decision.host, port: auth.port, ip: auth.address,
        bytes_in: result.bytesIn, bytes_out: result.bytesOut, duration_ms: Date.now() - started, ...(result.error && { error: result.error }),
      }),
    });
  };

  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    events.log.warn({ client: connections.get(socket)?.client, err: err.code ?? err.message }, 'malformed HTTP request on a redirected connection');
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    writeRawError(socket, 400, `malformed HTTP request (${err.code ?? 'parse error'})`);
  });

  return {
    adopt(socket, connection) {
      connections.set(socket, connection);
      server.emit('connection', socket);
      // The peek left the socket paused; a paused socket does not flow for the server's listeners by itself.
      socket.resume();
    },
    closeIdle: () => server.closeIdleConnections(),
  };
}
