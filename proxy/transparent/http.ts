import http from 'node:http';
import type net from 'node:net';
import type { CloseError } from '../../events/schema.js';
import { canonicalHost } from '../../policy/index.js';
import { parseAuthority } from '../../policy/host-port.js';
import type { Authorization, Forward } from '../../decision/authorize.js';
import { connectUpstream, UpstreamConnectError } from '../../net/connect.js';
import { createHttpForwarder, originForm } from '../relay/http-forwarder.js';
import { describeRequest, type PeekedHttpRequest } from '../../net/sniffing/http-head.js';
import { sendProxyError, writeRawError } from '../relay/error-response.js';
import type { OriginalDestination } from './original-destination.js';
import { splice } from '../../net/splice.js';
import { answerHalfClosedClients } from '../relay/half-close.js';
import { relayTimeouts } from '../relay/tunnel.js';
import { requestHead, serveWithoutUpgrade } from '../relay/request-head.js';
import { authorizeTransparent, type TransparentAuthorizeContext } from '../../decision/attribution.js';

export interface TransparentHttpOptions extends TransparentAuthorizeContext {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  halfCloseTimeoutMs?: number;
}

export interface RedirectedConnection {
  client: string;
  destination: OriginalDestination;
}

export interface TransparentHttp {
  /**
   * Serve a redirected connection whose first bytes are an HTTP/1 request (left unread on the socket): every
   * request on it, not only the first, is decided on its own host and forwarded to the original destination.
   */
  adopt(socket: net.Socket, connection: RedirectedConnection): void;
  /** Close the adopted connections that are between requests (shutdown). */
  closeIdle(): void;
}

/** The largest upstream response head read before a WebSocket upgrade is relayed. */
const MAX_UPGRADE_RESPONSE_HEAD = 16 * 1024;

/** `path`: the origin-form target (an absolute-form one reduced to its path). */
type Target = { ok: true; request: PeekedHttpRequest; path: string; authority?: string } | { ok: false; message: string };

function sameHost(a: string, b: string): boolean {
  const x = canonicalHost(a);
  const y = canonicalHost(b);
  if (x.type === 'name' && y.type === 'name') return x.name === y.name;
  if (x.type === 'ip' && y.type === 'ip') return x.text === y.text;
  return false;
}

/**
 * What a request names, refusing what could name two hosts: more than one Host header, a Host that is not
 * an authority, an absolute-form target whose host differs from the Host header. `authority` is what is sent
 * upstream as Host: the very host that is decided on.
 */
function targetOf(req: http.IncomingMessage): Target {
  const hostHeaders = req.rawHeaders.filter((_, i) => i % 2 === 0 && req.rawHeaders[i]!.toLowerCase() === 'host').length;
  if (hostHeaders > 1) return { ok: false, message: 'more than one Host header' };
  const hostHeader = req.headers.host?.trim();
  const fromHeader = hostHeader !== undefined ? parseAuthority(hostHeader, 80) : undefined;
  if (fromHeader === null) return { ok: false, message: `the Host header "${hostHeader}" is not host[:port]` };
  const url = req.url ?? '/';
  let authority = hostHeader;
  let path = url;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) {
    let absolute: URL;
    try {
      absolute = new URL(url);
    } catch {
      return { ok: false, message: 'the request target is not a valid URL' };
    }
    const host = absolute.hostname.replace(/^\[|\]$/g, '');
    if (fromHeader && !sameHost(host, fromHeader.host)) return { ok: false, message: `the request target names ${host} and the Host header ${fromHeader.host}` };
    authority = absolute.host;
    // The path as it is sent upstream (the forwarder's origin form of the target), not URL's reading of it: URL
    // takes `\` for `/` and resolves dot-segments, so `/elsewhere\..\allowed` was decided as /allowed and sent as
    // written; the policy's normaliser refuses what it cannot make canonical, as for an origin-form target.
    path = originForm(url);
    return { ok: true, request: describeRequest(req.method ?? 'GET', path, authority), path, authority };
  }
  return { ok: true, request: describeRequest(req.method ?? 'GET', url, hostHeader), path, ...(authority !== undefined && { authority }) };
}

/** An HTTP server that is never bound: the transparent listener hands it the connections that speak HTTP. */
export function createTransparentHttp(options: TransparentHttpOptions): TransparentHttp {
  const { events } = options;
  const forwarder = createHttpForwarder(options);
  const connections = new Map<net.Socket, RedirectedConnection & { busy: number }>();
  const server = http.createServer({ keepAlive: true, requestTimeout: 0, headersTimeout: 30_000 });
  server.keepAliveTimeout = 30_000;
  answerHalfClosedClients(server);
  // Node enforces headersTimeout only on servers that listen; this bounds a request head that never ends,
  // and any silence, the way tunnels are bounded.
  server.timeout = options.idleTimeoutMs;

  const decideRequest = (request: PeekedHttpRequest, connection: RedirectedConnection): Promise<Authorization> =>
    authorizeTransparent(options, { client: connection.client, destination: connection.destination, peek: { protocol: 'http', request, bytes: 0 } });

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const connection = connections.get(req.socket);
    if (!connection) return void res.destroy();
    const target = targetOf(req);
    if (!target.ok) return sendProxyError(res, 400, target.message);
    connection.busy++;
    res.once('close', () => {
      connection.busy--;
    });
    decideRequest(target.request, connection)
      .then((auth) => {
        if (auth.action === 'reject') {
          res.shouldKeepAlive = false;
          return sendProxyError(res, 403, auth.decision.message, auth.event.id);
        }
        if (auth.action === 'fail') return sendProxyError(res, auth.status, auth.message, auth.event.id);
        forwarder.forward({ req, res, auth, ...(target.authority !== undefined && { authority: target.authority }) });
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client: connection.client }, 'transparent HTTP request handling failed');
        sendProxyError(res, 502, 'egress-guard could not handle this request');
      });
  });

  // WebSocket: decided like any request; the connection becomes a byte relay only once upstream answers 101.
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const connection = connections.get(socket);
    if (!connection) return void socket.destroy();
    const target = targetOf(req);
    if (!target.ok) return writeRawError(socket, 400, target.message);
    if (req.headers.upgrade?.trim().toLowerCase() !== 'websocket') {
      // h2c and the like: served as the plain HTTP/1.1 request it also is, parsed again without the upgrade headers.
      return serveWithoutUpgrade(server, req, socket, head);
    }
    connection.busy++; // for good: an upgraded connection is never idle between requests
    decideRequest(target.request, connection)
      .then(async (auth) => {
        if (auth.action !== 'forward')
          return writeRawError(socket, auth.action === 'fail' ? auth.status : 403, auth.action === 'fail' ? auth.message : auth.decision.message, auth.event.id);
        await relayWebSocket(req, socket, head, auth, target);
      })
      .catch((err: Error) => {
        events.log.warn({ err: err.message, client: connection.client }, 'transparent WebSocket upgrade failed');
        writeRawError(socket, 502, 'egress-guard could not relay this upgrade');
      });
  });

  const relayWebSocket = async (req: http.IncomingMessage, socket: net.Socket, head: Buffer, auth: Forward, target: Extract<Target, { ok: true }>) => {
    const { authority } = target;
    const close = (bytesIn: number, bytesOut: number, error?: CloseError, status?: number) =>
      auth.connection.close({ bytesIn, bytesOut, ...(status !== undefined && { status }), ...(error && { error }) });
    let upstream: net.Socket;
    try {
      upstream = await connectUpstream(auth.address, auth.port, options.connectTimeoutMs);
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
    upstream.write(requestHead(req, target.path, (name, value) => (name.toLowerCase() === 'host' && authority !== undefined ? authority : value)));
    const response = await readResponseHead(upstream, options.idleTimeoutMs);
    if (!response) {
      upstream.destroy();
      writeRawError(socket, 502, `${auth.decision.host}: no upgrade answer from upstream`, auth.event.id);
      close(upstream.bytesRead, upstream.bytesWritten, 'upstream-no-answer', 502);
      return;
    }
    if (!/^HTTP\/1\.1 101 /.test(response.head.toString('latin1'))) {
      // Not upgraded: upstream's answer goes to the client, then the connection ends; the client's bytes
      // after its request are never relayed.
      socket.write(response.head);
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

  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    events.log.warn({ client: connections.get(socket)?.client, err: err.code ?? err.message }, 'malformed HTTP request on a redirected connection');
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    writeRawError(socket, 400, `malformed HTTP request (${err.code ?? 'parse error'})`);
  });

  return {
    adopt(socket, connection) {
      connections.set(socket, { ...connection, busy: 0 });
      socket.once('close', () => connections.delete(socket));
      server.emit('connection', socket);
      // The peek left the socket paused; a paused socket does not flow for the server's listeners by itself.
      socket.resume();
    },
    closeIdle() {
      for (const [socket, connection] of connections) if (connection.busy === 0) socket.destroy();
    },
  };
}

/**
 * A request head written again from what the parser read: the request line with `path`, then each header as
 * received, its value passed through `header` (undefined drops it).
 */
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
