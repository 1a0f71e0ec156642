import type http from 'node:http';
import net from 'node:net';
import type tls from 'node:tls';
import type { Forward } from '../../decision/authorize.js';
import type { EventLog } from '../../events/event-log.js';
import type { CloseError } from '../../events/schema.js';
import { upstreamFailure } from '../../net/connect.js';
import { connectTcp } from '../../net/socket-mark.js';
import { verifiedTlsOver } from '../../net/upstream-tls.js';
import { formatHostPort } from '../../policy/index.js';
import { endToEndHeaders, type EndToEndOptions } from './hop-by-hop.js';
import { chunkedBody, lastTransferEncoding } from './transfer-encoding.js';
import { sendProxyError, type ErrorAnswer } from './error-response.js';
import { closedByHalfCloseTimeout } from './half-close-timeout.js';
import { UpstreamConnection, type UpstreamExchange } from './upstream-connection.js';
import { UpstreamPool, type ConnectOptions, type PooledSocket, type PoolRequest } from './upstream-pool.js';
import type { ReservedUpstream } from './reserved-upstream.js';
import type { BodyPumpTarget } from './raw-response.js';

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

/** Opens upstream connections to exactly the address it is given, with a connect timeout, pooled per address. */
class PlainUpstreams {
  readonly pool: UpstreamPool;
  readonly connect = (options: ConnectOptions): PooledSocket => {
    const socket = connectTcp({ host: options.host, port: options.port, noDelay: true }).setTimeout(this.idleTimeoutMs);
    return UpstreamConnection.wire(withConnectTimeout(socket, 'connect', this.connectTimeoutMs), this.release);
  };
  /** A socket connected elsewhere, wired as `connect` wires its own (a paused one reads again once wired). */
  readonly wireConnected = (socket: net.Socket): PooledSocket => {
    const wired = UpstreamConnection.wire(socket.setNoDelay(true).setTimeout(this.idleTimeoutMs), this.release);
    if (socket.isPaused()) socket.resume();
    return wired;
  };
  protected readonly release = (socket: PooledSocket, responseHeaders: readonly string[] | undefined) => this.pool.release(socket, responseHeaders);

  constructor(
    protected readonly connectTimeoutMs: number,
    protected readonly idleTimeoutMs: number,
  ) {
    this.pool = new UpstreamPool({ idleTimeoutMs, maxIdlePerKey: MAX_IDLE_PER_ADDRESS, maxBusyPerKey: MAX_BUSY_PER_ADDRESS });
  }
}

/**
 * The TLS twin for inspected requests: connects to the checked address and verifies the server for the name
 * that was decided, never less. The pool key is the address, port and server name (the name to verify is the
 * only TLS setting that tells two upstream connections apart: the roots are the same for all).
 */
class TlsUpstreams extends PlainUpstreams {
  override readonly connect = (options: ConnectOptions): PooledSocket => {
    const tcp = connectTcp({ host: options.host, port: options.port, noDelay: true });
    const servername = options.servername;
    if (!servername) {
      tcp.destroy(Object.assign(new Error('no server name to verify the upstream certificate for'), { code: 'ERR_TLS_NO_SERVERNAME' }));
      return UpstreamConnection.wire(tcp, this.release);
    }
    const socket = verifiedTlsOver(tcp, { servername, trust: this.trust });
    return UpstreamConnection.wire(withConnectTimeout(socket.setTimeout(this.idleTimeoutMs), 'secureConnect', this.connectTimeoutMs), this.release);
  };

  constructor(
    connectTimeoutMs: number,
    idleTimeoutMs: number,
    /** Roots to verify upstream servers with, parsed once (a `ca` list per connect costs ~100 ms of blocked loop). */
    private readonly trust: (() => tls.SecureContext) | undefined,
  ) {
    super(connectTimeoutMs, idleTimeoutMs);
  }
}

/**
 * The client's side of a forwarded request, as the forwarder reads it: request-reader.ts's `InspectedRequest` (the
 * explicit proxy's, the transparent listener's and inspected connections' requests), which has just these members
 * (node's `IncomingMessage` has them too).
 */
export interface ClientRequestSide {
  readonly method?: string | undefined;
  readonly url?: string | undefined;
  readonly httpVersion: string;
  readonly rawHeaders: string[];
  readonly headers: http.IncomingHttpHeaders;
  readonly complete: boolean;
  readonly socket: net.Socket;
  /** llhttp's lenient flags its connection's requests are read with (request-leniency.ts): its response is read alike. */
  readonly lenientFlags?: number;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  once(event: 'end', listener: () => void): unknown;
  pause(): unknown;
  resume(): unknown;
}

/** The answer to it: node's `ServerResponse` or the reader's `RawResponse` (raw-response.ts). */
export interface ClientResponseSide extends ErrorAnswer {
  readonly destroyed: boolean;
  readonly writableFinished: boolean;
  statusCode: number;
  statusMessage: string;
  shouldKeepAlive: boolean;
  writeHead(status: number, message: string | undefined, headers: string[]): unknown;
  writeHead(status: number, headers: http.OutgoingHttpHeaders): unknown;
  write(chunk: Buffer): boolean;
  /** RawResponse's write of a piece whose buffer is reused (see there); node's ServerResponse has none: a copy is written. */
  writeThrough?(view: Buffer, written: () => void): boolean | undefined;
  /** RawResponse's client socket for a body pump (see there); node's ServerResponse has none: no pump. */
  pumpTarget?(): BodyPumpTarget | undefined;
  end(): unknown;
  end(text: string): unknown;
  /** write(chunk) then end() (node's ServerResponse does just that; RawResponse in one write when it can). */
  end(chunk: Buffer): unknown;
  once(event: 'drain' | 'close', listener: () => void): unknown;
}

export interface ForwardRequest {
  req: ClientRequestSide;
  res: ClientResponseSide;
  auth: Forward;
  /** The Host header to send upstream; absent: the client's own (already decided on) is kept. */
  authority?: string;
  /**
   * Send the request target as the client wrote it, absolute form included, not reduced to origin form: a request
   * relayed undecided in audit mode (one that could name two hosts, proxy/transparent/http.ts), whose server is to
   * read it as it would have without egress-guard.
   */
  targetAsSent?: boolean;
  /** An inspected request: upstream is TLS, verified for the name in `authority`. */
  tls?: boolean;
  /**
   * A plain request: the connection's reserved upstream (reserved-upstream.ts), sent on when it goes to the request's
   * checked address and port (and is still open), else closed.
   */
  reserved?: ReservedUpstream;
}

export interface HttpForwarder {
  /** Relay one authorized request to the checked address; one close event when the response ends. */
  forward(request: ForwardRequest): void;
}

/** Methods node's client would send chunked when no length is given: a request of theirs without a body gets `Content-Length: 0`. */
const BODYLESS_BY_DEFAULT = new Set(['GET', 'HEAD', 'TRACE']);

/** The header added to a request of theirs without a body. */
const CONTENT_LENGTH_0: readonly string[] = ['Content-Length', '0'];

/** Whether a message's body ends where its connection does: its (last) Transfer-Encoding does not end in chunked. */
function framedByClose(raw: readonly string[]): boolean {
  const last = lastTransferEncoding(raw);
  return last !== undefined && !chunkedBody(last);
}

/** Whether a request carries a body (its framing headers say so; the parser has refused conflicting ones). */
function hasBody(req: ClientRequestSide): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * Whether a request's Transfer-Encoding (its lines joined) is a list of codings, none empty, the last chunked: the
 * framing the forwarder writes (the body re-framed in chunks). node's parser also takes an empty one
 * (`Transfer-Encoding:`, read as no body) and empty list members: sent on, the empty header would let upstream read
 * the last chunk (`0`) as a request of its own, answered on a pooled connection after the real answer; and an
 * upstream that reads only one of two lines could take the chunks for requests.
 */
function chunkedAsSent(transferEncoding: string): boolean {
  const codings = transferEncoding.split(',');
  for (const coding of codings) if (coding.trim() === '') return false;
  return codings[codings.length - 1]!.trim().toLowerCase() === 'chunked';
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

/** A request target node's client refused (ERR_UNESCAPED_CHARACTERS): refused here too, never altered. */
const UNSENDABLE_TARGET = /[^\u0021-\u00ff]/;

/**
 * The request head node's client wrote for a header list (`http.request` with an array of headers and a
 * keep-alive agent, byte for byte): the request line, each header as given, then `Connection: keep-alive`. Names
 * and values come from node's server parser (llhttp, strict: token names, no CR, LF or NUL in values) or are the
 * decided authority and `Content-Length: 0`: nothing to escape.
 */
export function requestHead(method: string, target: string, headers: readonly string[]): string {
  let head = `${method} ${target} HTTP/1.1\r\n`;
  for (let i = 0; i + 1 < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
  return `${head}Connection: keep-alive\r\n\r\n`;
}

/** One forwarded request: waits for a pooled connection, sends its request, relays the answer, closes its record. */
class ForwardedRequest implements PoolRequest, UpstreamExchange {
  private bytesIn = 0;
  private bytesOut = 0;
  private status: number | undefined;
  private error: CloseError | undefined;
  private upstream: UpstreamConnection | undefined;
  /** The client's response is full: a 'drain' listener is waiting to resume the upstream connection. */
  private awaitingDrain = false;

  constructor(
    private readonly req: ClientRequestSide,
    private readonly res: ClientResponseSide,
    private readonly auth: Forward,
    readonly method: string,
    /** The request head to send, or undefined: refused before it was sent. */
    private readonly head: string,
    /** The request body: none, as its Content-Length says, or chunked (re-framed in chunks of what arrives). */
    private readonly body: 'none' | 'length' | 'chunked',
  ) {}

  /** The record ends: the answer went out whole, or the client left (the upstream exchange is dropped then). */
  readonly finish = (): void => {
    const { auth, res } = this;
    if (auth.connection.closed) return;
    (this.req.socket as ClientSocket)[inFlight]?.delete(this.finish);
    if (!res.writableFinished) {
      this.error ??= closedByHalfCloseTimeout(this.req.socket) ? 'half-close-timeout' : 'client-aborted';
      this.upstream?.abort(this);
    }
    auth.connection.close({
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      ...(this.status !== undefined && { status: res.statusCode }),
      ...(this.error && { error: this.error }),
    });
  };

  /** Refused before it was sent (a target node's client would not write): 400. */
  refuse(code: string): void {
    this.status = 400;
    this.error = 'client-bad-request';
    sendProxyError(this.res, 400, `egress-guard cannot forward this request (${code})`, this.auth.event.id);
  }

  get lenientFlags(): number {
    return this.req.lenientFlags ?? 0;
  }

  get cancelled(): boolean {
    return this.auth.connection.closed || this.res.destroyed;
  }

  give(socket: PooledSocket | undefined, err?: Error): void {
    if (!socket) return this.failed(err as NodeJS.ErrnoException, false);
    const upstream = (this.upstream = UpstreamConnection.of(socket));
    upstream.start(this, this.head, this.body !== 'none');
    if (this.body === 'none') return;
    const chunked = this.body === 'chunked';
    const req = this.req;
    req.on('data', (chunk: Buffer) => {
      // Dropped once the exchange is over (dropRestOfBody): not sent, not counted.
      if (!upstream.carries(this)) return;
      this.bytesOut += chunk.length;
      if (!upstream.write(this, chunk, chunked)) {
        req.pause();
        upstream.socket.once('drain', () => req.resume());
      }
    });
    req.once('end', () => upstream.end(this, chunked));
  }

  responseHead(status: number, statusMessage: string, rawHeaders: string[]): boolean {
    const { req, res } = this;
    this.status = status;
    // A Transfer-Encoding that does not end in chunked: the body ends where upstream closes (RFC 9112 6.3), and
    // the client, which is sent that header, reads ours the same way: it must end with the connection, not be kept.
    if (framedByClose(rawHeaders)) res.shouldKeepAlive = false;
    try {
      // An HTTP/1.0 client cannot read chunked: the body is sent as it comes and the connection closed after it.
      res.writeHead(status, statusMessage || undefined, endToEndHeaders(rawHeaders, req.httpVersion === '1.0' ? { drop: 'transfer-encoding' } : {}));
    } catch (err) {
      // writeHead keeps the status text it refused: ours must not inherit it.
      res.statusMessage = '';
      this.failed(err as NodeJS.ErrnoException, false);
      return false;
    }
    return true;
  }

  responseBody(chunk: Buffer): boolean {
    this.bytesIn += chunk.length;
    if (this.res.write(chunk)) return true;
    // One 'drain' listener per wait: the connection pauses after this read, but llhttp hands over the rest of it
    // first (a read of tiny chunks: thousands of pieces, each written while the client is full).
    if (!this.awaitingDrain) {
      this.awaitingDrain = true;
      this.res.once('drain', this.onDrain);
    }
    return false;
  }

  /** A piece of a bulk body in the upstream connection's own buffer: written from there when the client takes it at once, else copied. */
  responseBodyView(view: Buffer, written: () => void): boolean {
    const through = this.res.writeThrough?.(view, written);
    if (through === undefined) return this.responseBody(Buffer.from(view));
    this.bytesIn += view.length;
    return through;
  }

  bodyPumpTarget(): BodyPumpTarget | undefined {
    return this.res.pumpTarget?.();
  }

  bodyPumped(bytes: number): void {
    this.bytesIn += bytes;
  }

  private readonly onDrain = (): void => {
    this.awaitingDrain = false;
    this.upstream?.resume(this);
  };

  /** Ended in the turn the last bytes came (node writes them together: one write, not two), `last` the last of them. */
  responseEnd(last?: Buffer): void {
    if (last) {
      this.bytesIn += last.length;
      this.res.end(last);
    } else this.res.end();
    this.dropRestOfBody();
  }

  /**
   * The exchange is over before the request body was all read (an early answer, a failure): the rest is read and
   * dropped (the connection no longer takes it). Left paused, waiting for a 'drain' of an upstream connection that
   * was closed, it would never be read: the client's next request on that connection never answered.
   */
  private dropRestOfBody(): void {
    if (this.body !== 'none' && !this.req.complete) this.req.resume();
  }

  failed(err: NodeJS.ErrnoException, timedOut: boolean): void {
    const { res, auth } = this;
    // The client went first: nobody to answer, the record is closed.
    if (res.destroyed) return;
    // ETIMEDOUT here is the connect timeout (withConnectTimeout) or the connection's idle timeout.
    const timeout = err.code === 'ETIMEDOUT' || timedOut;
    const failure = upstreamFailure(err, timeout);
    this.status = failure.status;
    this.error = failure.error;
    this.dropRestOfBody();
    // After the head (the body broke off): the client's answer is cut (sendProxyError destroys it).
    sendProxyError(
      res,
      failure.status,
      `${formatHostPort(auth.decision.host, auth.port)}: ${timeout ? 'upstream timed out' : `upstream failed (${err.code ?? err.message})`}`,
      auth.event.id,
    );
  }
}

/**
 * Plain-HTTP forwarding over egress-guard's own upstream connections (one keep-alive pool per checked address),
 * shared by the explicit, transparent and inspecting listeners: the request head is written here, the response
 * read by node's own parser (upstream-connection.ts), no `ClientRequest` or agent. Headers go through as the raw
 * lists node parsed (no per-header copies), hop-by-hop ones left out; no Via or X-Forwarded-* is added. An
 * upstream that fails before answering gets the client a 502 (504 for a timeout) naming the failure.
 */
export function createHttpForwarder(options: { events: EventLog; connectTimeoutMs: number; idleTimeoutMs: number; upstreamTrust?: () => tls.SecureContext }): HttpForwarder {
  const plain = new PlainUpstreams(options.connectTimeoutMs, options.idleTimeoutMs);
  const secure = new TlsUpstreams(options.connectTimeoutMs, options.idleTimeoutMs, options.upstreamTrust);
  // The server name to verify an inspected request's upstream for: the decided host, none for an address (SNI
  // carries names only). Remembered for the last host: an inspected connection's requests all have the same one,
  // and net.isIP's IPv6 expression is not free on a name.
  let lastHost: string | undefined;
  let lastServername = '';
  const servernameFor = (host: string): string => {
    if (host !== lastHost) [lastHost, lastServername] = [host, net.isIP(host) ? '' : host];
    return lastServername;
  };
  // The TLS pool key (address, port, server name) and connect options, remembered for the last of them: the requests
  // of an inspected connection go to one address, port and name (a new key string per request was hashed anew in
  // the pool's map).
  let lastTls: { key: string; options: Required<ConnectOptions> } | undefined;
  const tlsUpstreamFor = (host: string, port: number, servername: string) => {
    const last = lastTls?.options;
    if (last?.host !== host || last.port !== port || last.servername !== servername) lastTls = { key: `${host}:${port}:${servername}`, options: { host, port, servername } };
    return lastTls!;
  };

  return {
    forward({ req, res, auth, authority, targetAsSent, tls: inspected, reserved }) {
      // The client left while the request was being decided: its 'close' has been and gone.
      if (res.destroyed) {
        reserved?.close();
        auth.connection.close({ error: 'client-aborted' });
        return;
      }
      const method = req.method ?? 'GET';
      const chunked = req.headers['transfer-encoding'] !== undefined;
      const body = hasBody(req);
      // No Host decided and none from the client (HTTP/1.0): the address connected to, as node's client would write.
      const host = authority ?? (req.headers.host === undefined ? formatHostPort(auth.address, auth.port) : undefined);
      // The options built member by member (no spread of a conditional object per request).
      const edit: EndToEndOptions = {};
      if (host !== undefined) edit.host = host;
      if (!body && !BODYLESS_BY_DEFAULT.has(method) && req.headers['content-length'] === undefined) edit.add = CONTENT_LENGTH_0;
      const headers = endToEndHeaders(req.rawHeaders, edit);
      const target = targetAsSent === true && req.url ? req.url : originForm(req.url ?? '/');
      const forwarded = new ForwardedRequest(req, res, auth, method, requestHead(method, target, headers), chunked ? 'chunked' : body ? 'length' : 'none');
      res.once('close', forwarded.finish);
      untilClientCloses(req.socket as ClientSocket, forwarded.finish);
      const key = inspected ? undefined : `${auth.address}:${auth.port}`;
      // A reserved connection to another address or port than this request's is none of its business (claim closes it).
      if (inspected) reserved?.close();
      const claimed = inspected ? undefined : reserved?.claim(auth.address, auth.port);
      const ready = claimed && plain.wireConnected(claimed);
      if (UNSENDABLE_TARGET.test(target)) {
        ready?.destroy();
        return forwarded.refuse('ERR_UNESCAPED_CHARACTERS');
      }
      if (chunked && !chunkedAsSent(req.headers['transfer-encoding']!)) {
        ready?.destroy();
        return forwarded.refuse('INVALID_TRANSFER_ENCODING');
      }
      if (key === undefined) {
        const servername = servernameFor(auth.decision.host);
        const upstream = tlsUpstreamFor(auth.address, auth.port, servername);
        secure.pool.acquire(forwarded, upstream.key, secure.connect, upstream.options);
      } else {
        plain.pool.acquire(forwarded, key, plain.connect, { host: auth.address, port: auth.port }, ready);
      }
    },
  };
}
