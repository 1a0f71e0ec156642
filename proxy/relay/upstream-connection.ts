import type { Socket } from 'node:net';
import { bodyPumpUsable, startBodyPump, type BodyPumpEnd } from '../../net/kernel-relay.js';
import { BareLfChunkedReads, PAUSE_AT_BODY, pausedAtBody } from './last-chunk-blank-line.js';
import { chunkedBody, lastTransferEncoding } from './transfer-encoding.js';
import { HTTPParser, NativeRead, PARSER_RESOURCE } from './llhttp.js';
import { ownReadBufferUsable, readIntoOwnBuffer } from './own-read-buffer.js';
import type { BodyPumpTarget } from './raw-response.js';
import type { PooledSocket } from './upstream-pool.js';

/** llhttp's onHeadersComplete answers: parse the body, or skip it (HEAD, 1xx, 304), or stop (an upgrade). */
const READ_BODY = 0;
const SKIP_BODY = 1;
const STOP = 2;

/**
 * A Content-Length body this long or longer is read past llhttp, into the connection's own buffer (see `lengthBody`):
 * bulk, where a copy and a callback per 64 KiB read cost more than the relay's system calls. Smaller ones, and every
 * head, are llhttp's.
 */
const LENGTH_BODY_MIN = 256 * 1024;
/**
 * The connection's own read buffer, once it read a body past llhttp: four of libuv's 64 KiB reads in one when the
 * socket holds that much (fewer reads and writes per GB; CPU per GB of (b') down by about a third against 64 KiB,
 * docs/benchmark.md). Kept for the connection's life (OWN_BUFFERS_MAX of them at once).
 */
const OWN_BUFFER_BYTES = 256 * 1024;
/**
 * At most this many connections hold an own buffer at once (8 MiB), across every address: a buffer lives as long as
 * its connection, pooled ones too, and many addresses' pools would otherwise hold 16 MiB each. Past it, a bulk body
 * on a connection without one is llhttp's, as a smaller body is.
 */
const OWN_BUFFERS_MAX = 32;
let ownBuffers = 0;
/**
 * The rest of a bulk body is pumped in native code (`pumpBody`) when at least this much of it is left: less is a
 * read or two here, cheaper than handing two fds to the relay thread and back.
 */
const PUMP_MIN = 64 * 1024;

/**
 * The length of the body a response's head announces by one Content-Length and no Transfer-Encoding (llhttp has
 * checked it), or -1: framed otherwise (or a value written unusually: llhttp reads those).
 */
function contentLengthOf(raw: readonly string[]): number {
  let length = -1;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 14 && name.toLowerCase() === 'content-length') {
      const value = raw[i + 1]!;
      if (length !== -1 || !/^[0-9]{1,15}$/.test(value)) return -1;
      length = Number(value);
    } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') {
      return -1;
    }
  }
  return length;
}

/** One request's side of an upstream exchange: what the connection tells it. */
export interface UpstreamExchange {
  /** The request's method (a HEAD answer has no body, whatever its headers say). */
  readonly method: string;
  /**
   * llhttp's lenient flags for the response: those its client's connection reads requests with (request-leniency.ts),
   * bare line ends on one that began in audit mode; strict otherwise.
   */
  readonly lenientFlags: number;
  /**
   * The final response's head (1xx are skipped). False: the exchange gave up on it (it has already told its client
   * why): the connection is closed.
   */
  responseHead(status: number, statusMessage: string, rawHeaders: string[]): boolean;
  /** A piece of the body; false: pause the connection until `UpstreamConnection.resume(this)`. */
  responseBody(chunk: Buffer): boolean;
  /**
   * A piece of a bulk Content-Length body in the connection's own read buffer: `view` is valid until this returns
   * (kept longer, it must be copied). False: the connection pauses until `written` is called (the piece is still being
   * written from that buffer) or `UpstreamConnection.resume(this)`.
   */
  responseBodyView(view: Buffer, written: () => void): boolean;
  /** The response is complete; `last`, the last piece of its body when it came in the read that completed it. */
  responseEnd(last?: Buffer): void;
  /**
   * The client's socket for a pump of the rest of a bulk body in native code (`UpstreamConnection.pumpBody`), when
   * nothing of the response waits to be written to it and its reads can be held; undefined: not now.
   */
  bodyPumpTarget?(): BodyPumpTarget | undefined;
  /** Bytes of the body a pump moved to the client (counted as pieces are), before the exchange ends or fails. */
  bodyPumped?(bytes: number): void;
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
  /**
   * The socket's handle, when the parser reads it natively (until the connection reads into `ownBuffer`, or carries a
   * chunked response read with bare line ends: `nativeExecuted`).
   */
  private nativeRead: NativeRead | undefined;
  /** Whether a bulk body may be read past llhttp (a plain TCP socket the parser reads natively, or that reads into `ownBuffer`). */
  private bulkReadable: boolean;
  /** The response under way is read with bare line ends (`UpstreamExchange.lenientFlags`). */
  private lenientReads: BareLfChunkedReads | undefined;
  private readonly executedPiece = (ret: number | Error, piece: Buffer): void => this.executed(ret, piece);
  private readonly parsingOn = (): boolean => !this.socket.destroyed;
  /** Bytes of a bulk Content-Length body still to come, read past llhttp (`lengthBody`); 0 otherwise. */
  private bodyLeft = 0;
  /**
   * The buffer the socket reads into since its first body read past llhttp (own-read-buffer.ts): for the rest of the
   * connection's life, heads parsed from it by `parser.execute`. Undefined: llhttp reads the handle itself.
   */
  private ownBuffer: Buffer | undefined;
  private readonly onOwnRead = (nread: number, buffer: Buffer): void => this.ownRead(buffer.subarray(0, nread));
  /** A piece `responseBodyView` kept is written: read on (a write that finished at once calls this too, a tick later). */
  private readonly viewWritten = (): void => {
    if (this.bodyLeft > 0 && this.exchange && !this.pumping && !this.pumpBody()) this.socket.resume();
  };
  /** The rest of the body is being pumped to the client in native code (`pumpBody`): the socket is not read meanwhile. */
  private pumping = false;

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
    ) => this.watchChunkedBody(this.onHeadersComplete(headers, status, statusMessage, upgrade, keepAlive));
    // Kept until the parse returns (executed): read natively, each of the parser's body callbacks ends in node's
    // callback scope, which runs the process's next-tick queue, so a piece written to the client at once would go
    // out on its own (RawResponse uncorks on the next tick) before the end that follows in the same read.
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
      if (this.exchange && this.responded) this.body.push(chunk);
    };
    parser[HTTPParser.kOnMessageComplete] = () => {
      this.pendingHeaders = []; // trailers: not forwarded (node's client kept them apart too)
      this.lenientReads?.messageComplete();
      if (this.informational) this.informational = false;
      // A head stopped for a bulk body (STOP, as for an upgrade: llhttp takes the message as complete): its body is still to come.
      else if (this.exchange && this.responded && this.bodyLeft === 0) this.completed = true;
    };
    socket.on('data', (data: Buffer) => this.onData(data));
    // The socket's handle read by the parser itself, as request-reader.ts reads its clients: no 'data' event, stream
    // buffer or Buffer per read (a fresh socket: nothing was read on its JavaScript side; without a stream handle,
    // 'data' events as above). The socket's 'end', 'error' and 'close' still come as events.
    this.nativeRead = NativeRead.start(socket, parser, (ret) => this.nativeExecuted(ret), NEVER_HELD);
    this.bulkReadable = this.nativeRead !== undefined && ownReadBufferUsable(socket);
    socket.on('end', () => this.onEnd());
    socket.on('error', (err: NodeJS.ErrnoException) => this.fail(err));
    socket.on('timeout', () => {
      if (!this.exchange) return; // idle: the pool closes it
      this.timeOut();
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
    this.bodyLeft = 0;
    this.parser.initialize(HTTPParser.RESPONSE, PARSER_RESOURCE, 0, exchange.lenientFlags);
    this.lenientReads = exchange.lenientFlags ? new BareLfChunkedReads(this.parser) : undefined;
    this.socket.write(head, 'latin1');
  }

  /**
   * After a native read's parse. A chunked response read with bare line ends (its client's connection began in audit
   * mode; a 502 until 2026-12-03, llhttp strict, where curl and Python take it directly), its head not ended in CRLF
   * CRLF: its bytes are to be seen before llhttp's (`lenientReads`), so the connection is read from 'data' events from
   * then on, for its life (its bulk bodies are llhttp's too). A CRLF server's connection keeps its native reads.
   */
  private nativeExecuted(ret: number | Error): void {
    if (!this.lenientReads || !pausedAtBody(ret)) return this.executed(ret);
    const lenientReads = this.lenientReads;
    lenientReads.pausedAtBody(ret, this.parser.getCurrentBuffer(), this.executedPiece, this.parsingOn);
    if (!lenientReads.watching || !this.nativeRead) return;
    this.nativeRead.stop();
    this.nativeRead = undefined;
    this.bulkReadable = false;
  }

  /** The head callback's answer to llhttp: a chunked body read with bare line ends is watched from its start. */
  private watchChunkedBody(ret: number): number {
    if (ret !== READ_BODY || !this.lenientReads || !this.responseHeaders) return ret;
    return chunkedBody(lastTransferEncoding(this.responseHeaders)) ? PAUSE_AT_BODY : ret;
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
    if (this.exchange === exchange && !this.pumping && !this.pumpBody()) this.socket.resume();
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
    if (exchange.method === 'HEAD' || status === 304) return SKIP_BODY;
    // A bulk body of known length: llhttp stops after the head, the body is read past it (`lengthBody`).
    if (this.bulkReadable && status !== 204 && (this.ownBuffer !== undefined || ownBuffers < OWN_BUFFERS_MAX)) {
      const length = contentLengthOf(raw);
      if (length >= LENGTH_BODY_MIN) {
        this.bodyLeft = length;
        return STOP;
      }
    }
    return READ_BODY;
  }

  /** Bytes the socket emitted (only when its handle is not read natively). */
  private onData(data: Buffer): void {
    if (!this.exchange) {
      // Bytes while idle: a response to no request.
      this.socket.destroy();
      return;
    }
    this.parse(data);
  }

  private parse(data: Buffer): void {
    if (this.lenientReads) return this.lenientReads.read(data, this.executedPiece, this.parsingOn);
    this.executed(this.parser.execute(data), data);
  }

  /**
   * After a parse of what the socket read (`data`; undefined: a native read, the parser has its bytes). Read natively,
   * bytes that came while idle were parsed too (a head among them found no exchange: the connection was closed then);
   * the connection is closed for them here either way.
   */
  private executed(result: number | Error, data?: Buffer): void {
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
    // A head stopped for a bulk body: what the read holds after the head is the body's start.
    if (this.bodyLeft > 0) return this.lengthBody((data ?? this.parser.getCurrentBuffer()).subarray(result));
    // Ended here, after the parse, never inside it: the pool may hand the connection on, and a new exchange
    // re-initialises the parser.
    if (this.completed && this.exchange) this.finishExchange(last);
  }

  /**
   * A bulk Content-Length body, `start` its first bytes: from here the socket reads into the connection's own buffer
   * (own-read-buffer.ts: no Buffer allocated and no copy per read, no llhttp callback) and each read goes to the
   * exchange as it is (`responseBodyView`), until the announced length. Once set, that buffer stays: the heads of the
   * connection's later responses are parsed from it (`ownRead`).
   */
  private lengthBody(start: Buffer): void {
    if (this.ownBuffer === undefined) {
      this.nativeRead!.detachParser();
      this.ownBuffer = Buffer.allocUnsafe(OWN_BUFFER_BYTES);
      ownBuffers++;
      this.socket.once('close', () => ownBuffers--);
      readIntoOwnBuffer(this.socket, this.ownBuffer, this.onOwnRead);
    }
    if (start.length > 0) this.bodyPiece(start);
  }

  /** A read into the connection's own buffer (`data` valid until this returns). */
  private ownRead(data: Buffer): void {
    if (this.bodyLeft > 0) return this.bodyPiece(data);
    this.parse(data);
  }

  /**
   * A piece of a bulk body (`view`, valid until this returns), with the bytes after it when the body ends here. The
   * last piece goes as a copy: the exchange ends with it, and the connection may read its next answer into the
   * buffer before that piece is written.
   */
  private bodyPiece(view: Buffer): void {
    const exchange = this.exchange;
    if (!exchange) return void this.socket.destroy();
    const left = this.bodyLeft;
    if (view.length < left) {
      this.bodyLeft = left - view.length;
      if (!exchange.responseBodyView(view, this.viewWritten)) this.socket.pause();
      else this.pumpBody();
      return;
    }
    this.bodyLeft = 0;
    // Bytes after the body answer nothing (a second response to one request): the connection is not trusted further.
    if (view.length > left) this.keepAlive = false;
    this.completed = true;
    this.finishExchange(Buffer.from(view.subarray(0, left)));
  }

  /**
   * The rest of a bulk body (`bodyLeft`, at least PUMP_MIN) to the client in native code (net/kernel-relay.ts's body
   * pump: splice(2) on the relay thread, bounded by length so that the next answer stays in the socket), once the
   * exchange's client has taken everything written to it so far; the request must be written whole (its body is not
   * read from the client meanwhile). Neither socket is read by node until the pump ends (`pumped`). True: started; the
   * socket is paused then. False: not now (nothing changed; the caller reads on).
   */
  private pumpBody(): boolean {
    const exchange = this.exchange;
    if (!exchange?.bodyPumpTarget || !this.requestWritten || this.bodyLeft < PUMP_MIN || this.socket.destroyed) return false;
    const target = exchange.bodyPumpTarget();
    // A net.Socket: a connection that reads a bulk body past llhttp is plain TCP (`bulkReadable`); checked again there.
    const upstream = this.socket as unknown as Socket;
    if (!target || !bodyPumpUsable(upstream, target.socket)) return false;
    const left = this.bodyLeft;
    const wasPaused = this.socket.isPaused();
    this.socket.pause();
    const readOn = target.holdReads();
    const started = startBodyPump(upstream, target.socket, left, this.socket.timeout ?? 0, (end) => this.pumped(exchange, target.socket, left, end, readOn));
    if (!started) {
      readOn();
      if (!wasPaused) this.socket.resume();
      return false;
    }
    this.pumping = true;
    return true;
  }

  /**
   * A body pump's end: its bytes counted, the client read again, and the exchange ends as the same body read here
   * would have: whole (the connection pooled or closed as usual), cut by upstream's FIN or an error (the exchange
   * fails as the connection closes), idle (as the socket's own timeout). A destroy of either socket (the pump
   * cancelled) goes on through that socket's 'close'.
   */
  private pumped(exchange: UpstreamExchange, client: Socket, left: number, end: BodyPumpEnd, readOn: () => void): void {
    this.pumping = false;
    exchange.bodyPumped?.(end.bytes);
    this.bodyLeft = left - end.bytes;
    if (!client.destroyed) readOn();
    if (end.outcome === 'destroyed') return;
    if (end.outcome === 'done') {
      this.completed = true;
      // Upstream reset after the body's last byte: the answer is whole, the connection is not pooled.
      if (end.code) this.keepAlive = false;
      return this.finishExchange();
    }
    if (end.outcome === 'client') return void client.destroy();
    if (end.outcome === 'idle') return this.timeOut();
    // Upstream's FIN before the body's end: as onEnd, the connection closes and its close fails the exchange.
    this.socket.destroy(end.outcome === 'upstream' ? Object.assign(new Error(`read ${end.code}`), { code: end.code }) : undefined);
  }

  /** The connection's idle timeout with an exchange on it: the socket is destroyed, the exchange fails as timed out. */
  private timeOut(): void {
    this.timedOut = true;
    this.socket.destroy(Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' }));
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
    // A bulk body cut short: the parser stopped at its head (its end fails the exchange as the connection closes).
    if (this.exchange && this.bodyLeft === 0) {
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
