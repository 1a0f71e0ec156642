import { HTTPParser, NativeRead, PARSER_RESOURCE } from './llhttp.js';
import type { PooledSocket } from './upstream-pool.js';

/** llhttp's onHeadersComplete answers: parse the body, or skip it (HEAD, 1xx, 304), or stop (an upgrade). */
const READ_BODY = 0;
const SKIP_BODY = 1;
const STOP = 2;

/** One request's side of an upstream exchange: what the connection tells it. */
export interface UpstreamExchange {
  /** The request's method (a HEAD answer has no body, whatever its headers say). */
  readonly method: string;
  /**
   * The final response's head (1xx are skipped). False: the exchange gave up on it (it has already told its client
   * why): the connection is closed.
   */
  responseHead(status: number, statusMessage: string, rawHeaders: string[]): boolean;
  /** A piece of the body; false: pause the connection until `UpstreamConnection.resume(this)`. */
  responseBody(chunk: Buffer): boolean;
  /** The response is complete; `last`, the last piece of its body when it came in the read that completed it. */
  responseEnd(last?: Buffer): void;
  /**
   * The connection failed: before the head (the client gets a 502/504) or in the body (the client's answer is cut).
   * `timedOut`: the connection's idle timeout.
   */
  failed(err: NodeJS.ErrnoException, timedOut: boolean): void;
}

const connectionOf = Symbol('egress-guard upstream connection');
/** An upstream connection's reading is paused and resumed by its exchange alone (see NativeRead). */
const NEVER_HELD = (): boolean => false;
type Wired = PooledSocket & { [connectionOf]?: UpstreamConnection };

/**
 * A keep-alive upstream connection that carries one request at a time without node's `ClientRequest`, agent or
 * `IncomingMessage`: the forwarder writes the request head it built (the bytes node's client wrote for the same
 * header list) and its body; the response is read by node's own llhttp parser, its head and body handed to the
 * exchange. Listeners are added once per connection, not per request. When a response ends on a connection both
 * sides keep open, and the request was written whole, `release` hands the socket back to the pool.
 *
 * What node's client did and this keeps: HEAD and 304 answers without body; 1xx skipped; an upgrade (101) refused
 * (EPROTO: the proxy never asks for one); a second response to one request, or bytes while idle, close the
 * connection; a close-delimited body ends at the server's FIN; a connection that ends or closes before the
 * response is whole fails the exchange (ECONNRESET, 'socket hang up' or 'aborted'); a parse error fails it with
 * llhttp's code (HPE_*), unless the response was already whole (then the bytes after it only close the connection:
 * failing the exchange cut an answer the client had whole). A new parser state per request (node took a fresh
 * parser per request).
 */
export class UpstreamConnection {
  private readonly parser = new HTTPParser();
  private exchange: UpstreamExchange | undefined;
  /** The exchange has the final response's head. */
  private responded = false;
  /** The response being read is a 1xx: its end is not the exchange's. */
  private informational = false;
  /** The request (head and body) has been handed to the socket whole. */
  private requestWritten = false;
  /** Both sides keep the connection open after this response. */
  private keepAlive = false;
  /** The final response is complete (set inside a parse: the exchange is ended once the parse returns). */
  private completed = false;
  private timedOut = false;
  /** The final response's raw headers (the pool reads the server's Keep-Alive hint from them). */
  private responseHeaders: string[] | undefined;
  /** Header lines llhttp hands over in pieces (a head split across reads, or trailers). */
  private pendingHeaders: string[] = [];
  /** Pieces of the body the parse being run has read, handed to the exchange once it returns. */
  private readonly body: Buffer[] = [];
  /** The socket's handle, when the parser reads it natively. */
  private readonly nativeRead: NativeRead | undefined;

  private constructor(
    readonly socket: Wired,
    private readonly release: (socket: PooledSocket, responseHeaders: readonly string[] | undefined) => void,
  ) {
    const parser = this.parser;
    parser[HTTPParser.kOnHeaders] = (headers: string[]) => {
      for (const h of headers) this.pendingHeaders.push(h);
    };
    parser[HTTPParser.kOnHeadersComplete] = (
      _major: number,
      _minor: number,
      headers: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      statusMessage: string,
      upgrade: boolean,
      keepAlive: boolean,
    ) => this.onHeadersComplete(headers, status, statusMessage, upgrade, keepAlive);
    // Kept until the parse returns (executed): read natively, each of the parser's body callbacks ends in node's
    // callback scope, which runs the process's next-tick queue, so a piece written to the client at once would go
    // out on its own (RawResponse uncorks on the next tick) before the end that follows in the same read.
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
      if (this.exchange && this.responded) this.body.push(chunk);
    };
    parser[HTTPParser.kOnMessageComplete] = () => {
      this.pendingHeaders = []; // trailers: not forwarded (node's client kept them apart too)
      if (this.informational) this.informational = false;
      else if (this.exchange && this.responded) this.completed = true;
    };
    socket.on('data', (data: Buffer) => this.onData(data));
    // The socket's handle read by the parser itself, as request-reader.ts reads its clients: no 'data' event, stream
    // buffer or Buffer per read (a fresh socket: nothing was read on its JavaScript side; without a stream handle,
    // 'data' events as above). The socket's 'end', 'error' and 'close' still come as events.
    this.nativeRead = NativeRead.start(socket, parser, (ret) => this.executed(ret), NEVER_HELD);
    socket.on('end', () => this.onEnd());
    socket.on('error', (err: NodeJS.ErrnoException) => this.fail(err));
    socket.on('timeout', () => {
      if (!this.exchange) return; // idle: the pool closes it
      this.timedOut = true;
      socket.destroy(Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' }));
    });
    socket.once('close', () => {
      this.fail(Object.assign(new Error(this.responded ? 'aborted' : 'socket hang up'), { code: 'ECONNRESET' }));
      this.nativeRead?.stop();
      this.parser.close();
    });
  }

  /** A new connection's socket, wired to a connection of its own (once: its listeners live as long as it). */
  static wire(socket: PooledSocket, release: (socket: PooledSocket, responseHeaders: readonly string[] | undefined) => void): PooledSocket {
    (socket as Wired)[connectionOf] = new UpstreamConnection(socket as Wired, release);
    return socket;
  }

  /** The connection of a socket `wire` made. */
  static of(socket: PooledSocket): UpstreamConnection {
    return (socket as Wired)[connectionOf]!;
  }

  /** Start `exchange` on this connection: its request head goes out now (a body, if any, through `write`/`end`). */
  start(exchange: UpstreamExchange, head: string, hasBody: boolean): void {
    this.exchange = exchange;
    this.responded = this.informational = this.completed = this.timedOut = false;
    this.requestWritten = !hasBody;
    this.responseHeaders = undefined;
    this.pendingHeaders = [];
    this.parser.initialize(HTTPParser.RESPONSE, PARSER_RESOURCE, 0, HTTPParser.kLenientNone);
    this.socket.write(head, 'latin1');
  }

  /** Whether `exchange` is still the one on this connection. */
  carries(exchange: UpstreamExchange): boolean {
    return this.exchange === exchange;
  }

  /**
   * A piece of the request body, `chunked`: framed as one chunk (as node's client framed each write; an empty
   * piece is not sent, it would end the body); false: wait for the socket's 'drain'. Dropped once the exchange
   * is over (its response came, or the connection failed).
   */
  write(exchange: UpstreamExchange, data: Buffer, chunked: boolean): boolean {
    if (this.exchange !== exchange) return true;
    if (!chunked) return this.socket.write(data);
    if (data.length === 0) return true;
    const socket = this.socket;
    socket.cork();
    socket.write(`${data.length.toString(16)}\r\n`, 'latin1');
    socket.write(data);
    const more = socket.write('\r\n', 'latin1');
    socket.uncork();
    return more;
  }

  /** The request body is whole (`chunked`: the last chunk goes out). */
  end(exchange: UpstreamExchange, chunked: boolean): void {
    if (this.exchange !== exchange) return;
    if (chunked) this.socket.write('0\r\n\r\n', 'latin1');
    this.requestWritten = true;
  }

  /** Go on reading for `exchange`, paused because its client could not take more. */
  resume(exchange: UpstreamExchange): void {
    if (this.exchange === exchange) this.socket.resume();
  }

  /** `exchange`'s client went away: the connection closes with it (its response may be half read). */
  abort(exchange: UpstreamExchange): void {
    if (this.exchange !== exchange) return;
    this.exchange = undefined;
    this.socket.destroy();
  }

  private onHeadersComplete(headers: string[] | undefined, status: number, statusMessage: string, upgrade: boolean, keepAlive: boolean): number {
    const exchange = this.exchange;
    const raw = headers ?? this.pendingHeaders;
    this.pendingHeaders = [];
    // A response nobody asked for (a second one to this request): the connection is not trusted further; the
    // first one, complete, still ends its exchange (after this parse).
    if (!exchange || this.responded) {
      this.keepAlive = false;
      this.socket.destroy();
      return STOP;
    }
    if (upgrade || status === 101) {
      this.fail(Object.assign(new Error('upstream switched protocols unasked'), { code: 'EPROTO' }));
      this.socket.destroy();
      return STOP;
    }
    if (status < 200) {
      this.informational = true;
      return SKIP_BODY;
    }
    this.responded = true;
    this.keepAlive = keepAlive;
    this.responseHeaders = raw;
    if (!exchange.responseHead(status, statusMessage, raw)) {
      this.exchange = undefined;
      this.socket.destroy();
      return STOP;
    }
    return exchange.method === 'HEAD' || status === 304 ? SKIP_BODY : READ_BODY;
  }

  /** Bytes the socket emitted (only when its handle is not read natively). */
  private onData(data: Buffer): void {
    if (!this.exchange) {
      // Bytes while idle: a response to no request.
      this.socket.destroy();
      return;
    }
    this.executed(this.parser.execute(data));
  }

  /**
   * After a parse of what the socket read. Read natively, bytes that came while idle were parsed too (a head among
   * them found no exchange: the connection was closed then); the connection is closed for them here either way.
   */
  private executed(result: number | Error): void {
    // A response completed by this read: its last piece goes with its end (the client's answer in one write).
    const last = this.completed && this.exchange ? this.body.pop() : undefined;
    if (this.body.length > 0) this.handBody();
    if (!this.exchange) {
      // Bytes while idle: a response to no request.
      this.socket.destroy();
      return;
    }
    if (result instanceof Error) {
      // A whole response, then bytes that answer nothing (a HEAD, 204 or 304 answer with a body, junk after a
      // Content-Length): that response still goes to its client, whole; the connection is not trusted further.
      if (this.completed && this.exchange) {
        this.keepAlive = false;
        return this.finishExchange(last);
      }
      this.fail(result as NodeJS.ErrnoException);
      this.socket.destroy();
      return;
    }
    // Ended here, after the parse, never inside it: the pool may hand the connection on, and a new exchange
    // re-initialises the parser.
    if (this.completed && this.exchange) this.finishExchange(last);
  }

  /** The body this parse read, to the exchange, in order; the connection pauses if its client can take no more. */
  private handBody(): void {
    const body = this.body;
    for (let i = 0; i < body.length; i++) {
      const exchange = this.exchange;
      if (exchange && !exchange.responseBody(body[i]!)) this.socket.pause();
    }
    body.length = 0;
  }

  /**
   * The server's FIN: a close-delimited body ends here. Anything else unfinished fails as the connection closes
   * (ECONNRESET, as node's client said: not llhttp's HPE_INVALID_EOF_STATE).
   */
  private onEnd(): void {
    if (this.exchange) {
      this.parser.finish();
      if (this.completed) this.finishExchange();
    }
    this.socket.destroy();
  }

  /**
   * The response is whole: its exchange ends, and the connection goes back to the pool if both sides keep it and
   * the request was written whole (a response that came before its request body was all sent: the connection
   * closes, and the rest of that body is not sent; node's client waited for the body, then pooled the connection).
   */
  private finishExchange(last?: Buffer): void {
    const exchange = this.exchange!;
    this.exchange = undefined;
    exchange.responseEnd(last);
    if (this.keepAlive && this.requestWritten && !this.socket.destroyed) {
      // Paused by this exchange's client: the next one reads from the start.
      if (this.socket.isPaused()) this.socket.resume();
      this.release(this.socket, this.responseHeaders);
    } else {
      this.socket.destroy();
    }
  }

  private fail(err: NodeJS.ErrnoException): void {
    const exchange = this.exchange;
    if (!exchange) return;
    this.exchange = undefined;
    exchange.failed(err, this.timedOut);
  }
}
