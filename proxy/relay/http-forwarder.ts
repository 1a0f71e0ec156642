import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import httpProxy from 'http-proxy';
import type { Forward } from '../../decision/authorize.js';
import type { EventLog } from '../../events/event-log.js';
import type { CloseError } from '../../events/schema.js';
import { upstreamFailure } from '../../net/connect.js';
import { connectTcp } from '../../net/socket-mark.js';
import { formatHostPort } from '../../policy/index.js';
import { stripHopByHop } from './hop-by-hop.js';
import { sendProxyError } from './error-response.js';

/** Destroy `socket` with ETIMEDOUT unless `connected` comes within `ms` (the agents' own connect timeout). */
function withConnectTimeout<T extends net.Socket>(socket: T, connected: 'connect' | 'secureConnect', ms: number): T {
  const timer = setTimeout(() => socket.destroy(Object.assign(new Error(`connect timed out after ${ms} ms`), { code: 'ETIMEDOUT' })), ms);
  socket.once(connected, () => clearTimeout(timer));
  socket.once('close', () => clearTimeout(timer));
  return socket;
}

/** An agent that connects to exactly the address it is given, with a connect timeout. */
class CheckedAddressAgent extends http.Agent {
  constructor(
    private readonly connectTimeoutMs: number,
    idleTimeoutMs: number,
  ) {
    super({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, timeout: idleTimeoutMs });
  }

  override createConnection(options: net.NetConnectOpts): net.Socket {
    const { host, port } = options as net.TcpNetConnectOpts;
    return withConnectTimeout(connectTcp({ host: host ?? 'localhost', port, noDelay: true }), 'connect', this.connectTimeoutMs);
  }
}

/**
 * The TLS twin for inspected requests: connects to the checked address and verifies the server for the name
 * that was decided (the Host sent upstream is that name, from which node takes the servername), never less.
 */
class CheckedAddressTlsAgent extends https.Agent {
  constructor(
    private readonly connectTimeoutMs: number,
    idleTimeoutMs: number,
    /** Roots to verify upstream servers with, parsed once (a `ca` list per connect costs ~100 ms of blocked loop). */
    private readonly trust: (() => tls.SecureContext) | undefined,
  ) {
    super({ keepAlive: true, maxSockets: 256, maxFreeSockets: 64, timeout: idleTimeoutMs });
  }

  override createConnection(options: http.ClientRequestArgs & { servername?: string }): Duplex {
    const { host, port } = options as net.TcpNetConnectOpts;
    const servername = options.servername;
    const tcp = connectTcp({ host: host ?? 'localhost', port, noDelay: true });
    if (!servername) {
      tcp.destroy(Object.assign(new Error('no server name to verify the upstream certificate for'), { code: 'ERR_TLS_NO_SERVERNAME' }));
      return tcp;
    }
    const socket = tls.connect({ socket: tcp, servername, ALPNProtocols: ['http/1.1'], ...(this.trust && { secureContext: this.trust() }) });
    return withConnectTimeout(socket, 'secureConnect', this.connectTimeoutMs);
  }
}

export interface ForwardRequest {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  auth: Forward;
  /** The Host header to send upstream; absent: the client's own (already decided on) is kept. */
  authority?: string;
  /** An inspected request: upstream is TLS, verified for the name in `authority`. */
  tls?: boolean;
}

export interface HttpForwarder {
  /** Relay one authorized request to the checked address; one close event when the response ends. */
  forward(request: ForwardRequest): void;
}

/**
 * Why a request cannot be forwarded as it is, or undefined. http-proxy sends DELETE/OPTIONS without
 * Content-Length as `content-length: 0` and drops Transfer-Encoding, yet still streams the body:
 * upstream would read it as a second request.
 */
export function unforwardableBody(req: http.IncomingMessage): string | undefined {
  if ((req.method === 'DELETE' || req.method === 'OPTIONS') && req.headers['transfer-encoding'] !== undefined) {
    return `egress-guard does not forward a chunked ${req.method} body; send it with Content-Length`;
  }
  return undefined;
}

/** Plain-HTTP forwarding (http-proxy over a keep-alive agent), shared by the explicit and transparent listeners. */
export function createHttpForwarder(options: { events: EventLog; connectTimeoutMs: number; idleTimeoutMs: number; upstreamTrust?: () => tls.SecureContext }): HttpForwarder {
  const { events } = options;
  const agent = new CheckedAddressAgent(options.connectTimeoutMs, options.idleTimeoutMs);
  const tlsAgent = new CheckedAddressTlsAgent(options.connectTimeoutMs, options.idleTimeoutMs, options.upstreamTrust);
  const proxy = httpProxy.createProxyServer({ agent, xfwd: false, ws: false, proxyTimeout: options.idleTimeoutMs });
  // Errors are handled per request through the callback of web(); this keeps a stray one from crashing us.
  proxy.on('error', (err) => events.log.debug({ err: err.message }, 'forwarder error'));
  const onResponse = new WeakMap<http.IncomingMessage, (proxyRes: http.IncomingMessage) => void>();
  proxy.on('proxyRes', (proxyRes, req) => onResponse.get(req)?.(proxyRes));
  const timedOut = new WeakSet<http.IncomingMessage>();
  proxy.on('proxyReq', (proxyReq, req) => proxyReq.once('timeout', () => timedOut.add(req)));

  return {
    forward({ req, res, auth, authority, tls: inspected }) {
      // The client left while the request was being decided: its 'close' has been and gone.
      if (res.destroyed) {
        auth.connection.close({ error: 'client-aborted' });
        return;
      }
      let bytesOut = 0;
      let bytesIn = 0;
      let status: number | undefined;
      let error: CloseError | undefined;
      req.on('data', (chunk: Buffer) => {
        bytesOut += chunk.length;
      });
      stripHopByHop(req.headers);
      onResponse.set(req, (proxyRes) => {
        status = proxyRes.statusCode;
        stripHopByHop(proxyRes.headers);
        // Our connection with the client, as the client asked for it. Left empty, http-proxy fills in
        // `keep-alive` (the client's own Connection header is gone by now), and node then keeps a connection
        // open that the client asked to close.
        proxyRes.headers.connection = res.shouldKeepAlive ? 'keep-alive' : 'close';
        proxyRes.on('data', (chunk: Buffer) => {
          bytesIn += chunk.length;
        });
      });
      // A request pipelined behind a response that closes the connection was forwarded, but node never emits
      // 'close' on its response: the connection's end closes its record instead (once: a record closes once).
      const socket = req.socket;
      const finish = () => {
        socket.off('close', finish);
        if (!res.writableFinished) error ??= 'client-aborted';
        auth.connection.close({ bytesIn, bytesOut, ...(status !== undefined && { status: res.statusCode }), ...(error && { error }) });
      };
      res.once('close', finish);
      socket.once('close', finish);
      const target = `${inspected ? 'https' : 'http'}://${formatHostPort(auth.address, auth.port)}`;
      const via = inspected ? { agent: tlsAgent, secure: true } : {};
      proxy.web(req, res, { target, ...via, ...(authority !== undefined && { headers: { host: authority } }) }, (err: NodeJS.ErrnoException) => {
        // ETIMEDOUT here is the agent's own connect timeout (CheckedAddressAgent).
        const timeout = err.code === 'ETIMEDOUT' || timedOut.has(req);
        ({ status, error } = upstreamFailure(err, timeout));
        sendProxyError(
          res,
          status,
          `${formatHostPort(auth.decision.host, auth.port)}: ${timeout ? 'upstream timed out' : `upstream failed (${err.code ?? err.message})`}`,
          auth.event.id,
        );
      });
    },
  };
}
