import { STATUS_CODES, type OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';

/**
 * One response of a connection read by request-reader.ts, written as raw bytes on the client socket: what node's
 * `ServerResponse` did for the calls the inspector and the forwarder make (writeHead with a header list or
 * object, write, end, destroy), byte for byte, without its streams and per-request objects. The head is node's
 * `_storeHeader` (headers in the order given, then `Date`, the keep-alive lines and the framing header node adds);
 * a body is chunked when the head frames it so; responses queue behind the one being written (pipelining), their
 * bytes kept until their turn. Not ported, because nothing here calls it: setHeader and the other progressive
 * calls, trailers, strict content length, `maxRequestsPerSocket`.
 */

/** What the response tells its connection (node's server did this in `resOnFinish` and `updateOutgoingData`). */
export interface ResponseOwner {
  /** The response's last bytes were written to the socket (node's 'finish'). */
  finished(res: RawResponse): void;
  /** Bytes kept for a queued response changed by `delta` (node's `updateOutgoingData`). */
  pendingData(delta: number): void;
  /** Stop reading the connection while a body pump writes to it; the returned call reads on (request-reader.ts). */
  holdReads?(): () => void;
}

/** A response's client socket, lent to a body pump (upstream-connection.ts): its reads held until the pump ends. */
export interface BodyPumpTarget {
  readonly socket: Socket;
  holdReads(): () => void;
}

/** node's `common.chunkExpression` and `RE_CONN_CLOSE`. */
const CHUNKED = /(?:^|\W)chunked(?:$|\W)/i;
const CONNECTION_CLOSE = /(?:^|\W)close(?:$|\W)/i;
/** node's `checkIsHttpToken` and `checkInvalidHeaderChar`. */
const HTTP_TOKEN = /^[\^_`a-zA-Z\-0-9!#$%&'*+.|~]+$/;
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;
const CRLF = Buffer.from('\r\n');

/** node's `utcDate()`: the Date header's text, made once per second. */
let utcCache: string | undefined;
function utcDate(): string {
  if (utcCache === undefined) {
    const now = new Date();
    utcCache = now.toUTCString();
    setTimeout(() => (utcCache = undefined), 1000 - now.getMilliseconds()).unref();
  }
  return utcCache;
}

function httpError(code: string, message: string): Error {
  return Object.assign(new Error(message), { code });
}

/** What `_storeHeader` finds among the headers it writes (node's `state` object), as bits. */
const SEEN_CONNECTION = 1;
const SEEN_CONTENT_LENGTH = 2;
const SEEN_TRANSFER_ENCODING = 4;
const SEEN_DATE = 8;
const SEEN_EXPECT = 16;
const SEEN_TRAILER = 32;

/** How a string goes on the wire: node writes a head and its own framing as latin1, a string body as UTF-8. */
type Encoding = 'latin1' | 'utf8';
type Pending = { data: string | Buffer; encoding: Encoding; callback: (() => void) | undefined };

export class RawResponse {
  statusCode = 200;
  statusMessage = '';
  /** node's `shouldKeepAlive`: set by the reader from the request (llhttp's answer), false to close after this response. */
  shouldKeepAlive: boolean;
  /** node's `_last`: the connection ends after this response. */
  last = false;
  /** node's `finished`: end() was called. */
  finished = false;
  destroyed = false;
  /** `Expect: 100-continue` was answered with a 100 (node's `_expect_continue`, `_sent100`). */
  expectContinue = false;
  private sent100 = false;
  private hasBody: boolean;
  private chunkedEncoding = false;
  private contentLength: number | undefined;
  private defaultKeepAlive = true;
  /** The head, once made (node's `_header`), and whether it has gone to the socket or the queue. */
  private header: string | undefined;
  private headerSent = false;
  /** This response's turn on the socket (node: `socket._httpMessage === this`). */
  private active = false;
  /** Bytes kept until this response's turn. */
  private output: Pending[] = [];
  private outputSize = 0;
  private needDrain = false;
  private closed = false;
  private drainListeners: (() => void)[] | undefined;
  private closeListeners: (() => void)[] | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly owner: ResponseOwner,
    options: { head: boolean; keepAlive: boolean; http10: boolean; teChunked: boolean; keepAliveTimeoutMs: number },
    private readonly keepAliveTimeoutMs = options.keepAliveTimeoutMs,
  ) {
    this.hasBody = !options.head;
    this.shouldKeepAlive = options.keepAlive;
    // An HTTP/1.0 client reads chunked only if it said so (TE); node's ServerResponse, then its server's keep-alive.
    this.useChunkedEncodingByDefault = options.http10 ? options.teChunked : true;
  }

  private readonly useChunkedEncodingByDefault: boolean;

  get headersSent(): boolean {
    return this.header !== undefined;
  }

  get writableFinished(): boolean {
    return this.finished && this.outputSize === 0 && (!this.active || this.socket.writableLength === 0);
  }

  once(event: 'drain' | 'close', listener: () => void): this {
    if (event === 'drain') (this.drainListeners ??= []).push(listener);
    else (this.closeListeners ??= []).push(listener);
    return this;
  }

  /** `HTTP/1.1 100 Continue`, in this response's turn. */
  writeContinue(): void {
    this.writeRaw('HTTP/1.1 100 Continue\r\n\r\n', 'latin1', undefined);
    this.sent100 = true;
  }

  writeHead(statusCode: number, reason?: string | OutgoingHttpHeaders | readonly string[], headers?: OutgoingHttpHeaders | readonly string[]): this {
    if (this.header !== undefined) throw httpError('ERR_HTTP_HEADERS_SENT', 'Cannot write headers after they are sent to the client');
    const original = statusCode;
    statusCode |= 0;
    if (statusCode < 100 || statusCode > 999) throw httpError('ERR_HTTP_INVALID_STATUS_CODE', `Invalid status code: ${original}`);
    if (typeof reason === 'string') {
      this.statusMessage = reason;
    } else {
      if (!this.statusMessage) this.statusMessage = STATUS_CODES[statusCode] ?? 'unknown';
      headers ??= reason;
    }
    this.statusCode = statusCode;
    if (INVALID_HEADER_CHAR.test(this.statusMessage)) throw httpError('ERR_INVALID_CHAR', 'Invalid character in statusMessage');
    if (statusCode === 204 || statusCode === 304 || (statusCode >= 100 && statusCode <= 199)) this.hasBody = false;
    // A final answer to a client that waits for 100 Continue, never sent: it may send its body anyway.
    if (this.expectContinue && !this.sent100) this.shouldKeepAlive = false;
    this.storeHeader(`HTTP/1.1 ${statusCode} ${this.statusMessage}\r\n`, headers);
    return this;
  }

  /** node's `_storeHeader`, for headers given to writeHead only. */
  private storeHeader(firstLine: string, headers: OutgoingHttpHeaders | readonly string[] | undefined): void {
    let header = firstLine;
    let seen = 0;
    if (Array.isArray(headers)) {
      if (headers.length % 2 !== 0) throw httpError('ERR_INVALID_ARG_VALUE', "The argument 'headers' is invalid");
      for (let n = 0; n < headers.length; n += 2) {
        const key = headers[n] as string;
        const value = headers[n + 1] as unknown;
        // The forwarder's lists are strings (node's parser's); anything else goes node's longer way.
        if (typeof value === 'string' && typeof key === 'string') {
          header += this.headerLine(key, value);
          seen |= this.seen;
        } else {
          [header, seen] = this.processHeader(header, seen, key, value);
        }
      }
    } else if (headers) {
      for (const key in headers) if (Object.hasOwn(headers, key)) [header, seen] = this.processHeader(header, seen, key, (headers as OutgoingHttpHeaders)[key]);
    }
    if (!(seen & SEEN_DATE)) header += `Date: ${utcDate()}\r\n`;
    // A 204 or 304 said to be chunked: no zero chunk, and the connection closes (node's rule).
    if (this.chunkedEncoding && (this.statusCode === 204 || this.statusCode === 304)) {
      this.chunkedEncoding = false;
      this.shouldKeepAlive = false;
    }
    if (!(seen & SEEN_CONNECTION)) {
      const sendKeepAlive = this.shouldKeepAlive && (seen & SEEN_CONTENT_LENGTH || this.useChunkedEncodingByDefault);
      if (sendKeepAlive) {
        header += 'Connection: keep-alive\r\n';
        if (this.keepAliveTimeoutMs && this.defaultKeepAlive) header += `Keep-Alive: timeout=${Math.floor(this.keepAliveTimeoutMs / 1000)}\r\n`;
      } else {
        this.last = true;
        header += 'Connection: close\r\n';
      }
    }
    if (!(seen & (SEEN_CONTENT_LENGTH | SEEN_TRANSFER_ENCODING))) {
      if (!this.hasBody) {
        this.chunkedEncoding = false;
      } else if (!this.useChunkedEncodingByDefault) {
        this.last = true;
      } else if (!(seen & SEEN_TRAILER) && this.contentLength !== undefined) {
        header += `Content-Length: ${this.contentLength}\r\n`;
      } else {
        header += 'Transfer-Encoding: chunked\r\n';
        this.chunkedEncoding = true;
      }
    }
    if (this.chunkedEncoding !== true && seen & SEEN_TRAILER) throw httpError('ERR_HTTP_TRAILER_INVALID', 'Trailers are invalid with this transfer encoding');
    this.header = `${header}\r\n`;
    this.headerSent = false;
    if (seen & SEEN_EXPECT) this.send('', 'latin1', undefined);
  }

  /** A header given as anything but a string pair (an object's values, arrays, numbers): node's `processHeader`. */
  private processHeader(header: string, seen: number, key: string, value: unknown): [string, number] {
    if (typeof key !== 'string') throw httpError('ERR_INVALID_HTTP_TOKEN', `Header name must be a valid HTTP token ["${String(key)}"]`);
    for (const item of Array.isArray(value) ? (value as unknown[]) : [value]) {
      if (item === undefined) throw httpError('ERR_HTTP_INVALID_HEADER_VALUE', `Invalid value "undefined" for header "${key}"`);
      header += this.headerLine(key, String(item));
      seen |= this.seen;
    }
    return [header, seen];
  }

  /** What the last `headerLine` found (a SEEN_ flag, or 0). */
  private seen = 0;

  /** One header line, checked as node checks it, and what it says about framing and keep-alive (in `seen`). */
  private headerLine(key: string, value: string): string {
    if (!key || !HTTP_TOKEN.test(key)) throw httpError('ERR_INVALID_HTTP_TOKEN', `Header name must be a valid HTTP token ["${key}"]`);
    // node's RFC 6266 step: a Content-Disposition after a Content-Length goes through latin1 and back as UTF-8.
    if (this.contentLength && key.length === 19 && key.toLowerCase() === 'content-disposition') value = Buffer.from(value, 'latin1').toString();
    if (INVALID_HEADER_CHAR.test(value)) throw httpError('ERR_INVALID_CHAR', `Invalid character in header content ["${key}"]`);
    this.seen = 0;
    if (key.length >= 4 && key.length <= 17) {
      switch (key.toLowerCase()) {
        case 'connection':
          this.seen = SEEN_CONNECTION;
          if (CONNECTION_CLOSE.test(value)) this.last = true;
          else this.shouldKeepAlive = true;
          break;
        case 'transfer-encoding':
          this.seen = SEEN_TRANSFER_ENCODING;
          if (CHUNKED.test(value)) this.chunkedEncoding = true;
          break;
        case 'content-length':
          this.seen = SEEN_CONTENT_LENGTH;
          this.contentLength = +value;
          break;
        case 'date':
          this.seen = SEEN_DATE;
          break;
        case 'expect':
          this.seen = SEEN_EXPECT;
          break;
        case 'trailer':
          this.seen = SEEN_TRAILER;
          break;
        case 'keep-alive':
          this.defaultKeepAlive = false;
          break;
      }
    }
    return `${key}: ${value}\r\n`;
  }

  write(chunk: Buffer): boolean {
    if (this.finished || this.destroyed) return false;
    if (this.header === undefined) this.writeHead(this.statusCode);
    if (!this.hasBody) return true;
    // Every write of this turn goes out together (node corks until the next tick, or until end()).
    if (this.active && !this.socket.writableCorked) {
      this.socket.cork();
      process.nextTick(uncork, this.socket);
    }
    const more = this.sendBody(chunk, 'latin1', chunk.length);
    if (!more) this.needDrain = true;
    return more;
  }

  /**
   * write(view) for a piece whose buffer is reused once this returns (upstream-connection.ts's own read buffer), when
   * the bytes go straight to the socket: this response's turn, its head out, a body not chunked, nothing kept, queued
   * or corked before them. True: the socket took them whole (the buffer is free again); false: they are being written
   * from that buffer, `written` is called once they are. Undefined: not so (the caller writes a copy with write()).
   * Unlike write(), not corked until the next tick: whether the socket took it all is known here.
   */
  writeThrough(view: Buffer, written: () => void): boolean | undefined {
    if (!this.bodyGoesStraight()) return undefined;
    this.socket.write(view, written);
    return this.socket.writableLength === 0;
  }

  /**
   * The client's socket, lent to a pump of the rest of this response's body in native code (upstream-connection.ts),
   * when the body's bytes may go to it as they are now (as for writeThrough) and its reader can hold its reads;
   * undefined otherwise. The pump's bytes are not written here: end() then ends a response whose body went whole.
   */
  pumpTarget(): BodyPumpTarget | undefined {
    const owner = this.owner;
    if (!owner.holdReads || !this.bodyGoesStraight()) return undefined;
    return { socket: this.socket, holdReads: () => owner.holdReads!() };
  }

  /** This response's turn, its head out, a body not chunked, nothing kept, queued or corked before it, a plain socket. */
  private bodyGoesStraight(): boolean {
    const socket = this.socket;
    if (!this.active || !this.headerSent || !this.hasBody || this.chunkedEncoding || this.finished || this.destroyed || this.output.length > 0) return false;
    return !socket.writableCorked && socket.writableLength === 0 && socket.writable && !('encrypted' in socket);
  }

  /**
   * The end of the response; `chunk`, a last piece of its body first (a string: the whole body, its length the
   * response's Content-Length when the head is not made yet; a Buffer: as write(chunk) then end() would send it).
   */
  end(chunk?: string | Buffer): this {
    if (this.finished) return this;
    if (typeof chunk !== 'string' && chunk !== undefined) return this.endWith(chunk);
    if (chunk) {
      if (this.active) this.socket.cork();
      if (this.header === undefined) {
        this.contentLength = Buffer.byteLength(chunk);
        this.writeHead(this.statusCode);
      }
      if (this.hasBody) this.sendBody(chunk, 'utf8', Buffer.byteLength(chunk));
    } else if (this.header === undefined) {
      if (this.active) this.socket.cork();
      this.contentLength = 0;
      this.writeHead(this.statusCode);
    }
    if (this.hasBody && this.chunkedEncoding) this.send('0\r\n\r\n', 'latin1', this.onFinish);
    else if (!this.headerSent || this.outputSize > 0 || (this.active && this.socket.writableLength > 0) || chunk) this.send('', 'latin1', this.onFinish);
    else process.nextTick(this.onFinish);
    if (this.active) while (this.socket.writableCorked) this.socket.uncork();
    this.finished = true;
    return this;
  }

  /**
   * write(chunk) then end(): the bytes those send. When the head is made and not sent, nothing waits before it (its
   * turn, nothing queued or corked) and the body is not chunked, head and piece go to the socket as one buffer in one
   * write (not a corked head, piece and empty end that node writes as one writev): the same bytes, the same 'finish'.
   */
  private endWith(chunk: Buffer): this {
    const socket = this.socket;
    const head = this.header;
    const alone = head !== undefined && !this.headerSent && this.hasBody && !this.chunkedEncoding && !this.destroyed && this.active && this.output.length === 0;
    if (!alone || socket.destroyed || !socket.writable || socket.writableCorked) {
      this.write(chunk);
      return this.end();
    }
    const whole = Buffer.allocUnsafe(head.length + chunk.length);
    whole.write(head, 0, 'latin1');
    chunk.copy(whole, head.length);
    this.headerSent = true;
    this.finished = true;
    socket.write(whole, this.onFinish);
    return this;
  }

  /** The connection goes (at once if this is its turn, else when its turn comes: node's 'socket' event). */
  destroy(): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    if (this.active) this.socket.destroy();
    return this;
  }

  /** This response's turn on the socket: what it kept goes out (node's `assignSocket`, `_flush`). */
  assign(): void {
    this.active = true;
    if (this.destroyed) return void this.socket.destroy();
    let more = true;
    if (this.output.length > 0) more = this.flushOutput();
    if (!this.finished && more && this.needDrain) this.emitDrain();
  }

  /** The turn is over (node's `detachSocket`). */
  detach(): void {
    this.active = false;
  }

  /** The socket can take more (node's `socketOnDrain` for the response being written). */
  socketDrained(): void {
    if (this.active && !this.finished && this.needDrain) this.emitDrain();
  }

  /** 'close', once: after the response finished, or when the socket closes in its turn (node's `emitCloseNT`: destroyed from then on). */
  emitClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.destroyed = true;
    const listeners = this.closeListeners;
    this.closeListeners = undefined;
    if (listeners) for (const listener of listeners) listener();
  }

  private emitDrain(): void {
    this.needDrain = false;
    const listeners = this.drainListeners;
    this.drainListeners = undefined;
    if (listeners) for (const listener of listeners) listener();
  }

  private readonly onFinish = (): void => {
    if ((this.socket as Socket & { _hadError?: boolean })._hadError) return;
    this.owner.finished(this);
  };

  /** A piece of the body, `bytes` long: framed as a chunk when the response is chunked (an empty one is not: it would end it). */
  private sendBody(data: string | Buffer, encoding: Encoding, bytes: number): boolean {
    if (!this.chunkedEncoding || bytes === 0) return this.send(data, encoding, undefined);
    this.send(bytes.toString(16), 'latin1', undefined);
    this.send(CRLF, 'latin1', undefined);
    this.send(data, encoding, undefined);
    return this.send(CRLF, 'latin1', undefined);
  }

  /** node's `_send`: the head goes with the first bytes (in their encoding, when they are a string). */
  private send(data: string | Buffer, encoding: Encoding, callback: (() => void) | undefined): boolean {
    if (!this.headerSent && this.header !== undefined) {
      this.headerSent = true;
      if (typeof data === 'string') data = this.header + data;
      else this.writeRaw(this.header, 'latin1', undefined);
    }
    return this.writeRaw(data, encoding, callback);
  }

  /** node's `_writeRaw`: to the socket in this response's turn, kept until then otherwise. */
  private writeRaw(data: string | Buffer, encoding: Encoding, callback: (() => void) | undefined): boolean {
    const socket = this.socket;
    if (socket.destroyed) return false;
    if (this.active && socket.writable) {
      if (this.output.length > 0) this.flushOutput();
      return typeof data === 'string' ? socket.write(data, encoding, callback) : socket.write(data, callback);
    }
    this.output.push({ data, encoding, callback });
    this.outputSize += data.length;
    this.owner.pendingData(data.length);
    return this.outputSize < socket.writableHighWaterMark;
  }

  private flushOutput(): boolean {
    const socket = this.socket;
    const output = this.output;
    this.output = [];
    const size = this.outputSize;
    this.outputSize = 0;
    socket.cork();
    let more = true;
    for (const { data, encoding, callback } of output) more = typeof data === 'string' ? socket.write(data, encoding, callback) : socket.write(data, callback);
    socket.uncork();
    this.owner.pendingData(-size);
    return more;
  }
}

function uncork(socket: Socket): void {
  socket.uncork();
}
