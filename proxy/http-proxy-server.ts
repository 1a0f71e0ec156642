import http from 'node:http';
import net from 'node:net';
import httpProxy from 'http-proxy';
import type { EventLog } from '../events/event-log.js';
import { authorize, type AuthorizeContext, type Authorization } from './authorize.js';
import { formatHostPort, parseAuthority } from './authority.js';
import { checkConnectSni } from './connect-sni-check.js';
import { connectUpstream, UpstreamConnectError } from './connect-upstream.js';
import { stripHopByHop } from './hop-by-hop.js';
import { sendProxyError, writeRawError } from './http-response.js';
import type { TunnelHandler } from './tunnel.js';
import { trackConnection, type TrafficCounters } from './traffic-counters.js';

export interface HttpProxyServerOptions extends AuthorizeContext {
  events: EventLog;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  maxTunnels: number;
  /** What to do with an authorized CONNECT tunnel: splice (default) or terminate and inspect. */
  tunnel: TunnelHandler;
  counters: TrafficCounters;
}

function clientOf(socket: net.Socket): string {
  return formatHostPort(socket.remoteAddress ?? '?', socket.remotePort ?? 0);
}

/** An agent that connects to exactly the address it is given, with a connect timeout. */
class CheckedAddressAgent extends http.Agent {
  constructor(private readonly connectTimeoutMs: number, idleTimeoutMs: number) {
    super({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, timeout: idleTimeoutMs });
  }

  override createConnection(options: net.NetConnectOpts): net.Socket {
    const socket = net.createConnection({ ...options, noDelay: true } as net.NetConnectOpts);
    const timer = setTimeout(() => {
      socket.destroy(Object.assign(new Error(`connect timed out after ${this.connectTimeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, this.connectTimeoutMs);
    socket.once('connect', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
    return socket;
  }
}

/**
 * The explicit proxy listener: absolute-URI HTTP requests (forwarded with http-proxy) and CONNECT tunnels.
 * Every request goes through authorize(); every decision emits one event, every forward one close event.
 */
export function createHttpProxyServer(options: HttpProxyServerOptions): http.Server {
  const { events, counters } = options;
  const agent = new CheckedAddressAgent(options.connectTimeoutMs, options.idleTimeoutMs);
  const forwarder = httpProxy.createProxyServer({ agent, xfwd: false, ws: false, proxyTimeout: options.idleTimeoutMs });
  // Errors are handled per request through the callback of web(); this keeps a stray one from crashing us.
  forwarder.on('error', (err) => events.log.debug({ err: err.message }, 'forwarder error'));
  const onResponse = new WeakMap<http.IncomingMessage, (proxyRes: http.IncomingMessage) => void>();
  forwarder.on('proxyRes', (proxyRes, req) => onResponse.get(req)?.(proxyRes));
  const timedOut = new WeakSet<http.IncomingMessage>();
  forwarder.on('proxyReq', (proxyReq, req) => proxyReq.once('timeout', () => timedOut.add(req)));

  const server = http.createServer({ keepAlive: true, requestTimeout: 0, headersTimeout: 30_000 });
  server.keepAliveTimeout = 30_000;

  const atCapacity = () => counters.open >= options.maxTunnels;

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const client = clientOf(req.socket);
    let target: URL;
    try {
      target = new URL(req.url ?? '');
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
    // http-proxy sends DELETE/OPTIONS without Content-Length as `content-length: 0` and drops
    // Transfer-Encoding, yet still streams the body: upstream would read it as a second request.
    if ((req.method === 'DELETE' || req.method === 'OPTIONS') && req.headers['transfer-encoding'] !== undefined) {
      sendProxyError(res, 400, `egress-guard does not forward a chunked ${req.method} body; send it with Content-Length`);
      return;
    }
    const port = target.port ? Number(target.port) : 80;
    const host = target.hostname;
    counters.open++;
    const started = Date.now();
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        counters.open--;
      }
    };
    res.once('close', release);
    void authorize(options, { kind: 'http', client, host, port, method: req.method ?? 'GET', path: target.pathname })
      .then((auth: Authorization) => {
        if (auth.action === 'reject') return sendProxyError(res, 403, auth.decision.message, auth.event.id);
        if (auth.action === 'fail') {
          sendProxyError(res, auth.status, auth.message, auth.event.id);
          events.close({ id: auth.event.id, kind: 'http', client, host: auth.decision.host, port, bytes_in: 0, bytes_out: 0, duration_ms: Date.now() - started, status: auth.status, error: auth.error });
          return;
        }
        forward(req, res, auth, target.host, started, client);
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client }, 'request handling failed');
        sendProxyError(res, 502, 'egress-guard could not handle this request');
      });
  });

  function forward(req: http.IncomingMessage, res: http.ServerResponse, auth: Extract<Authorization, { action: 'forward' }>, authority: string, started: number, client: string) {
    let bytesOut = 0;
    let bytesIn = 0;
    let status: number | undefined;
    let error: string | undefined;
    req.on('data', (chunk: Buffer) => { bytesOut += chunk.length; });
    stripHopByHop(req.headers);
    onResponse.set(req, (proxyRes) => {
      status = proxyRes.statusCode;
      stripHopByHop(proxyRes.headers);
      proxyRes.on('data', (chunk: Buffer) => { bytesIn += chunk.length; });
    });
    res.once('close', () => {
      if (!res.writableFinished) error ??= 'client-aborted';
      events.close({
        id: auth.event.id, kind: 'http', client, host: auth.decision.host, port: auth.port, ip: auth.address,
        bytes_in: bytesIn, bytes_out: bytesOut, duration_ms: Date.now() - started, ...(status !== undefined && { status: res.statusCode }), ...(error && { error }),
      });
    });
    // The Host sent upstream is the authority that was decided on (RFC 9112 3.2.2), never the client's own
    // Host header: `GET http://allowed.test/` with `Host: attacker.test` must not reach a virtual host it names.
    forwarder.web(req, res, { target: `http://${formatHostPort(auth.address, auth.port)}`, headers: { host: authority } }, (err: NodeJS.ErrnoException) => {
      const timeout = err.code === 'ETIMEDOUT' || timedOut.has(req);
      error = timeout ? 'upstream-timeout' : err.code === 'ECONNREFUSED' ? 'upstream-refused' : `upstream-${(err.code ?? 'error').toLowerCase()}`;
      status = timeout ? 504 : 502;
      sendProxyError(res, status, `${formatHostPort(auth.decision.host, auth.port)}: ${timeout ? 'upstream timed out' : `upstream failed (${err.code ?? err.message})`}`, auth.event.id);
    });
  }

  server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const client = clientOf(socket);
    socket.on('error', () => socket.destroy());
    const authority = parseAuthority(req.url ?? '');
    if (!authority) {
      writeRawError(socket, 400, `CONNECT needs host:port, got "${req.url}"`);
      events.log.warn({ client, url: req.url?.slice(0, 200) }, 'malformed CONNECT');
      return;
    }
    if (atCapacity()) {
      writeRawError(socket, 503, `egress-guard is at its limit of ${options.maxTunnels} open tunnels`);
      return;
    }
    trackConnection(counters, socket);
    const started = Date.now();
    void authorize(options, { kind: 'connect', client, host: authority.host, port: authority.port })
      .then(async (auth) => {
        if (auth.action === 'reject') return writeRawError(socket, 403, auth.decision.message, auth.event.id);
        if (auth.action === 'fail') {
          writeRawError(socket, auth.status, auth.message, auth.event.id);
          events.close({ id: auth.event.id, kind: 'connect', client, host: auth.decision.host, port: authority.port, bytes_in: 0, bytes_out: 0, duration_ms: Date.now() - started, status: auth.status, error: auth.error });
          return;
        }
        let upstream: net.Socket;
        try {
          upstream = await connectUpstream(auth.address, auth.port, options.connectTimeoutMs);
        } catch (err) {
          const failure = err instanceof UpstreamConnectError ? err : new UpstreamConnectError(String(err), 502, 'upstream-error');
          writeRawError(socket, failure.status, failure.message, auth.event.id);
          events.close({ id: auth.event.id, kind: 'connect', client, host: auth.decision.host, port: auth.port, ip: auth.address, bytes_in: 0, bytes_out: 0, duration_ms: Date.now() - started, status: failure.status, error: failure.code });
          return;
        }
        if (socket.destroyed) {
          upstream.destroy();
          return;
        }
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        // Bytes sent along with the CONNECT are the tunnel's first: checked with the rest, not relayed ahead.
        if (head.length > 0) socket.unshift(head);
        const clientGate = checkConnectSni(options, socket, { client, host: auth.decision.host, port: auth.port, address: auth.address }, options.idleTimeoutMs);
        options.tunnel({ client: socket, upstream, authorization: auth, idleTimeoutMs: options.idleTimeoutMs, events, started, kind: 'connect', clientAddress: client, clientGate });
      })
      .catch((err: Error) => {
        events.log.error({ err: err.message, client }, 'CONNECT handling failed');
        writeRawError(socket, 502, 'egress-guard could not handle this tunnel');
      });
  });

  server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
    events.log.warn({ client: clientOf(socket), err: err.code ?? err.message }, 'malformed HTTP request');
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    writeRawError(socket, 400, `malformed HTTP request (${err.code ?? 'parse error'})`);
  });

  return server;
}
