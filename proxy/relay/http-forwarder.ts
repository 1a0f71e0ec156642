import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Forward } from '../../decision/authorize.js';
import type { EventLog } from '../../events/event-log.js';
import type { CloseError } from '../../events/schema.js';
import { upstreamFailure } from '../../net/connect.js';
import { connectTcp } from '../../net/socket-mark.js';
import { formatHostPort } from '../../policy/index.js';
import { endToEndHeaders } from './hop-by-hop.js';
import { sendProxyError } from './error-response.js';
import { UpstreamPool, type ConnectOptions } from './upstream-pool.js';

/** Destroy `socket` with ETIMEDOUT unless `connected` comes within `ms` (the agents' own connect timeout). */
function withConnectTimeout<T extends net.Socket>(socket: T, connected: 'connect' | 'secureConnect', ms: number): T {
  const timer = setTimeout(() => socket.destroy(Object.assign(new Error(`connect timed out after ${ms} ms`), { code: 'ETIMEDOUT' })), ms);
  socket.once(connected, () => clearTimeout(timer));
  socket.once('close', () => clearTimeout(timer));
  return socket;
}

/** Idle upstream connections kept per checked address (and server name); as many as the agents' `maxFreeSockets` were. */
const MAX_IDLE_PER_ADDRESS = 64;
/** Upstream connections per checked address (and server name) with a request on them; more wait (the agents' `maxSockets` were 256). */
const MAX_BUSY_PER_ADDRESS = 256;

/** An agent that connects to exactly the address it is given, with a connect timeout. */
class CheckedAddressAgent extends http.Agent {
  private readonly pool: UpstreamPool;
  private readonly connect = (options: ConnectOptions) => this.createConnection(options as net.NetConnectOpts);

  constructor(
    private readonly connectTimeoutMs: number,
    private readonly idleTimeoutMs: number,
  ) {
    super({ keepAlive: true, timeout: idleTimeoutMs });
    this.pool = new UpstreamPool({ idleTimeoutMs, maxIdlePerKey: MAX_IDLE_PER_ADDRESS, maxBusyPerKey: MAX_BUSY_PER_ADDRESS });
  }

  /** Node's client asks for every request's socket here: one of the pool's (node's own pool is not used). */
  addRequest(req: http.ClientRequest, options: ConnectOptions): void {
    this.pool.assign(req, `${options.host}:${options.port}`, this.connect, options);
  }

  override createConnection(options: net.NetConnectOpts): net.Socket {
    const { host, port } = options as net.TcpNetConnectOpts;
    // The agent's `timeout` is set by net.connect, which this replaces: a request on a new socket is bounded too.
    const socket = connectTcp({ host: host ?? 'localhost', port, noDelay: true }).setTimeout(this.idleTimeoutMs);
    return withConnectTimeout(socket, 'connect', this.connectTimeoutMs);
  }
}

/**
 * The TLS twin for inspected requests: connects to the checked address and verifies the server for the name
 * that was decided (the Host sent upstream is that name, from which node takes the servername), never less.
 */
class CheckedAddressTlsAgent extends https.Agent {
  private readonly pool: UpstreamPool;
  private readonly connect = (options: ConnectOptions) => this.createConnection(options);

  constructor(
    private readonly connectTimeoutMs: number,
    private readonly idleTimeoutMs: number,
    /** Roots to verify upstream servers with, parsed once (a `ca` list per connect costs ~100 ms of blocked loop). */
    private readonly trust: (() => tls.SecureContext) | undefined,
  ) {
    super({ keepAlive: true, timeout: idleTimeoutMs });
    this.pool = new UpstreamPool({ idleTimeoutMs, maxIdlePerKey: MAX_IDLE_PER_ADDRESS, maxBusyPerKey: MAX_BUSY_PER_ADDRESS });
  }

  /** As CheckedAddressAgent's: the pool's key is getName's (address, port, server name). */
  addRequest(req: http.ClientRequest, options: ConnectOptions): void {
    this.pool.assign(req, this.getName(options), this.connect, options);
  }

  /**
   * The pool key: the address, port and server name. node's own key also strings together every TLS option a
   * request may carry (ca, cert, ciphers, ...: about twenty, per request); this agent's requests carry none (the
   * roots are the agent's), so the name to verify is the only TLS setting that tells two upstream connections apart.
   */
  override getName(options: http.ClientRequestArgs & { servername?: string }): string {
    return `${options.host}:${options.port}:${options.servername ?? ''}`;
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
    return withConnectTimeout(socket.setTimeout(this.idleTimeoutMs), 'secureConnect', this.connectTimeoutMs);
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

/** Methods node's client would send chunked when no length is given: a request of theirs without a body gets `Content-Length: 0`. */
const BODYLESS_BY_DEFAULT = new Set(['GET', 'HEAD', 'TRACE']);

/** A Transfer-Encoding value whose last coding is chunked (the message is framed by its chunks). */
const CHUNKED_LAST = /(?:^|,)[ \t]*chunked[ \t]*$/i;

/**
 * Whether a message's body ends where its connection does: its (last) Transfer-Encoding does not end in chunked.
 * Read from the raw headers: `IncomingMessage.headers` is built on first use, a copy per response we need not make.
 */
function framedByClose(raw: readonly string[]): boolean {
  let last: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i]!.length === 17 && raw[i]!.toLowerCase() === 'transfer-encoding') last = raw[i + 1]!;
  return last !== undefined && !CHUNKED_LAST.test(last);
}

/** Whether a request carries a body (its framing headers say so; the parser has refused conflicting ones). */
function hasBody(req: http.IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * The request target to send upstream: the client's own, as it was decided, in origin form (an absolute-form
 * target loses its scheme and authority, which the Host header carries), without a fragment.
 */
export function originForm(target: string): string {
  let path = target;
  if (path.charCodeAt(0) !== 0x2f /* / */) {
    const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(path);
    if (!absolute) return path; // `*` (OPTIONS *), or what node's client will refuse
    path = path.slice(absolute[0].length);
    if (path.charCodeAt(0) !== 0x2f) path = `/${path}`;
  }
  const hash = path.indexOf('#');
  return hash === -1 ? path : path.slice(0, hash);
}

/**
 * Client connections with requests in flight. A request pipelined behind a response that closes the connection
 * was forwarded, but node never emits 'close' on its response: the connection's 'close' ends its record instead.
 * One listener per connection, not one per request.
 */
const inFlight = Symbol('egress-guard requests in flight');
type ClientSocket = net.Socket & { [inFlight]?: Set<() => void> };

function untilClientCloses(socket: ClientSocket, finish: () => void): void {
  let pending = socket[inFlight];
  if (!pending) {
    const requests = (pending = socket[inFlight] = new Set());
    socket.once('close', () => {
      for (const end of requests) end();
    });
  }
  pending.add(finish);
}

/**
 * Plain-HTTP forwarding over node's own client and a keep-alive agent (one upstream pool per checked address),
 * shared by the explicit, transparent and inspecting listeners. Headers go through as the raw lists node
 * parsed (no per-header copies), hop-by-hop ones left out; no Via or X-Forwarded-* is added. An upstream that
 * fails before answering gets the client a 502 (504 for a timeout) naming the failure.
 */
export function createHttpForwarder(options: { events: EventLog; connectTimeoutMs: number; idleTimeoutMs: number; upstreamTrust?: () => tls.SecureContext }): HttpForwarder {
  const agent = new CheckedAddressAgent(options.connectTimeoutMs, options.idleTimeoutMs);
  const tlsAgent = new CheckedAddressTlsAgent(options.connectTimeoutMs, options.idleTimeoutMs, options.upstreamTrust);
  // The server name to verify an inspected request's upstream for: the decided host, none for an address (SNI
  // carries names only). Remembered for the last host: an inspected connection's requests all have the same one,
  // and net.isIP's IPv6 expression is not free on a name.
  let lastHost: string | undefined;
  let lastServername = '';
  const servernameFor = (host: string): string => {
    if (host !== lastHost) [lastHost, lastServername] = [host, net.isIP(host) ? '' : host];
    return lastServername;
  };

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
      let timedOut = false;
      let upstream: http.ClientRequest | undefined;
      const socket = req.socket as ClientSocket;
      const finish = () => {
        if (auth.connection.closed) return;
        socket[inFlight]?.delete(finish);
        if (!res.writableFinished) {
          error ??= 'client-aborted';
          upstream?.destroy();
        }
        auth.connection.close({ bytesIn, bytesOut, ...(status !== undefined && { status: res.statusCode }), ...(error && { error }) });
      };
      res.once('close', finish);
      untilClientCloses(socket, finish);
      const fail = (err: NodeJS.ErrnoException) => {
        // The client went first (finish destroyed the upstream request): nobody to answer, the record is closed.
        if (res.destroyed) return;
        // ETIMEDOUT here is the agent's own connect timeout (CheckedAddressAgent).
        const timeout = err.code === 'ETIMEDOUT' || timedOut;
        ({ status, error } = upstreamFailure(err, timeout));
        sendProxyError(
          res,
          status,
          `${formatHostPort(auth.decision.host, auth.port)}: ${timeout ? 'upstream timed out' : `upstream failed (${err.code ?? err.message})`}`,
          auth.event.id,
        );
      };

      const body = hasBody(req);
      // No Host decided and none from the client (HTTP/1.0): the address connected to, as node's client would write.
      const host = authority ?? (req.headers.host === undefined ? formatHostPort(auth.address, auth.port) : undefined);
      const headers = endToEndHeaders(req.rawHeaders, {
        ...(host !== undefined && { host }),
        ...(!body && !BODYLESS_BY_DEFAULT.has(req.method ?? 'GET') && req.headers['content-length'] === undefined && { add: ['Content-Length', '0'] }),
      });
      try {
        upstream = (inspected ? https : http).request({
          agent: inspected ? tlsAgent : agent,
          host: auth.address,
          port: auth.port,
          method: req.method,
          path: originForm(req.url ?? '/'),
          headers,
          ...(inspected && { servername: servernameFor(auth.decision.host) }),
        });
      } catch (err) {
        // A target or header node's client will not write (control characters...): refused, never altered.
        status = 400;
        error = 'client-bad-request';
        sendProxyError(res, 400, `egress-guard cannot forward this request (${(err as NodeJS.ErrnoException).code ?? 'invalid'})`, auth.event.id);
        return;
      }
      const request = upstream;
      request.on('error', fail);
      // The agent's idle timeout on the upstream socket, while a request is on it.
      request.on('timeout', () => {
        timedOut = true;
        request.destroy(Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' }));
      });
      // A 101 to a request that asked for no upgrade (Upgrade is hop-by-hop, never sent): with no listener here, node
      // destroys the socket without an event of the request's, and the client would wait for an answer that never comes.
      request.on('upgrade', (_answer: http.IncomingMessage, upgraded: Duplex) => {
        upgraded.destroy();
        fail(Object.assign(new Error('upstream switched protocols unasked'), { code: 'EPROTO' }));
      });
      request.on('response', (answer: http.IncomingMessage) => {
        status = answer.statusCode ?? 502;
        // A Transfer-Encoding that does not end in chunked: the body ends where upstream closes (RFC 9112 6.3), and
        // the client, which is sent that header, reads ours the same way: it must end with the connection, not be kept.
        if (framedByClose(answer.rawHeaders)) res.shouldKeepAlive = false;
        try {
          // An HTTP/1.0 client cannot read chunked: the body is sent as it comes and the connection closed after it.
          res.writeHead(status, answer.statusMessage || undefined, endToEndHeaders(answer.rawHeaders, req.httpVersion === '1.0' ? { drop: 'transfer-encoding' } : {}));
        } catch (err) {
          // writeHead keeps the status text it refused: ours must not inherit it.
          res.statusMessage = '';
          request.destroy();
          return fail(err as NodeJS.ErrnoException);
        }
        answer.on('data', (chunk: Buffer) => {
          bytesIn += chunk.length;
          if (!res.write(chunk)) {
            answer.pause();
            res.once('drain', () => answer.resume());
          }
        });
        // Ended at 'end', in the turn the last bytes came (node writes them together: one write, not two).
        answer.once('end', () => res.end());
        // 'close' without the whole message: the upstream broke off mid-body, and the client's answer is cut too.
        answer.once('close', () => {
          if (answer.complete) return;
          error ??= upstreamFailure({ name: 'Error', message: 'aborted', code: 'ECONNRESET' }, timedOut).error;
          res.destroy();
        });
      });
      if (body) {
        req.on('data', (chunk: Buffer) => {
          bytesOut += chunk.length;
        });
        req.pipe(request);
      } else {
        request.end();
      }
    },
  };
}
