import { IncomingMessage, type IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { holdReading, resumeReading } from '../../net/kernel-relay.js';
import { chunkExpression, continueExpression, HTTPParser, NativeRead, nodeParser, PARSER_RESOURCE, type HttpParser } from './llhttp.js';
import { markHalfCloseTimeout } from './half-close-timeout.js';
import { lingeringClose } from './lingering-close.js';
import { BareLfChunkedReads, PAUSE_AT_BODY, pausedAtBody } from './last-chunk-blank-line.js';
import { chunkedBody } from './transfer-encoding.js';
import { RawResponse, type ResponseOwner } from './raw-response.js';

/**
 * The requests of one client connection read without node's `http.Server`: node's own llhttp parser
 * (`_http_common`'s HTTPParser, REQUEST mode, strict unless told, node's header size limit), as upstream-connection.ts reads
 * responses, and for each request an `InspectedRequest` (its head, its body as a small stream) and a
 * `RawResponse` (raw-response.ts) instead of `IncomingMessage` and `ServerResponse`. What node's server did per
 * connection is kept, in its order (node 20's `_http_server.js`): every request is handed over as soon as its head
 * is read, pipelined ones too, and their answers go out in request order; an HTTP/1.1 request without Host gets
 * 400 (from the `malformed` handler, which writes its event first); `Expect: 100-continue` is answered 100 at once,
 * any other expectation 417; a request body the handler never reads is read and dropped once its answer is out; a
 * connection ends after an answer that says `close`; reading stops while queued answers hold more than the socket's
 * high-water mark; the socket's idle timeout is `idleTimeoutMs` while a request is under way and one second more
 * between requests (node's keep-alive buffer), then it is destroyed; an upgrade (or CONNECT) hands the socket over; a
 * parse error goes to `clientError` with node's `rawPacket`.
 */

/**
 * llhttp hands the method over as its index in node's list of all methods (`allMethods`, not exported): read once
 * from node's own head callback, fed each index until it names none.
 */
const METHODS: readonly string[] = (() => {
  const nodeHeadersComplete = nodeParser()[HTTPParser.kOnHeadersComplete] as (...args: unknown[]) => number;
  const names: string[] = [];
  for (let index = 0; index < 256; index++) {
    let method: string | undefined;
    const probe = { socket: null, maxHeaderPairs: 0, _headers: [], _url: '', onIncoming: (incoming: IncomingMessage) => ((method = incoming.method), 0) };
    nodeHeadersComplete.call(probe, 1, 1, [], index, '/', 0, '', false, true);
    if (method === undefined) break;
    names.push(method);
  }
  return names;
})();

/** node's `IncomingMessage.headers`, built by node's own `_addHeaderLine` (its joining and dropping of repeated headers). */
const addHeaderLine = (IncomingMessage.prototype as unknown as { _addHeaderLine(field: string, value: string, dest: IncomingHttpHeaders): void })._addHeaderLine;
const HEADER_JOINING = { joinDuplicateHeaders: undefined };
/**
 * node's `MAX_HEADER_PAIRS` (entries, not pairs): a head with more header lines than this allows is refused 400.
 * node's server built `headers` from this many only but kept up to 24 more lines in `rawHeaders`, which were sent
 * on: a Content-Length or Host there reached upstream unseen by the forwarder and the decision.
 */
const MAX_HEADER_ENTRIES = 2000;

function headersOf(raw: readonly string[]): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = {};
  for (let i = 0; i + 1 < raw.length; i += 2) addHeaderLine.call(HEADER_JOINING, raw[i]!, raw[i + 1]!, headers);
  return headers;
}

/** What a body's buffer may hold before the socket stops being read (node's readable high-water mark). */
const BODY_HIGH_WATER_MARK = 16 * 1024;
/** node's `HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER`: an idle keep-alive connection lasts this much past its advertised timeout. */
const KEEP_ALIVE_TIMEOUT_BUFFER_MS = 1000;

/** A request read by the reader: its head as node's IncomingMessage had it, its body as a minimal readable. */
export class InspectedRequest {
  readonly httpVersion: string;
  readonly headers: IncomingHttpHeaders;
  /** The whole message (head and body) has been read. */
  complete = false;
  /** An upgrade (or CONNECT): the socket is handed over after the head. */
  upgrade = false;
  private pending: Buffer[] = [];
  private pendingSize = 0;
  private dataListener: ((chunk: Buffer) => void) | undefined;
  private endListener: (() => void) | undefined;
  /** Read by someone (a 'data' listener or resume()): node's `_consuming`. */
  private consuming = false;
  private flowing = false;
  private paused = false;
  private ended = false;
  private flowScheduled = false;
  /** The body is dropped as it comes (node's `_dump`: its answer went out without reading it). */
  private dumped = false;
  /** What the body's buffer may hold before the socket stops being read: more while `bufferBody` waits. */
  private highWaterMark = BODY_HIGH_WATER_MARK;
  /** `bufferBody`'s check, called when a piece comes, at the body's end, and when the connection goes. */
  private bufferCheck: ((gone: boolean) => void) | undefined;

  constructor(
    readonly socket: Socket,
    private readonly reader: RequestReader,
    readonly method: string,
    readonly url: string,
    readonly httpVersionMajor: number,
    readonly httpVersionMinor: number,
    readonly rawHeaders: string[],
  ) {
    this.httpVersion = `${httpVersionMajor}.${httpVersionMinor}`;
    this.headers = headersOf(rawHeaders);
  }

  /** How its connection's requests are read (request-leniency.ts), and so its response. */
  get lenientFlags(): number {
    return this.reader.lenientFlags;
  }

  on(event: 'data', listener: (chunk: Buffer) => void): this {
    if (event !== 'data') return this;
    this.dataListener = listener;
    if (!this.paused) this.resume();
    return this;
  }

  once(event: 'end', listener: () => void): this {
    if (event === 'end') this.endListener = listener;
    return this;
  }

  pause(): this {
    this.paused = true;
    this.flowing = false;
    return this;
  }

  /** Flow again (what arrived meanwhile first, in a later turn, as node's streams do). */
  resume(): this {
    this.paused = false;
    this.flowing = true;
    this.consuming = true;
    if (!this.flowScheduled) {
      this.flowScheduled = true;
      process.nextTick(this.flow);
    }
    return this;
  }

  /** A piece of the body from the parser; false: the buffer is full, the socket should stop being read. */
  push(chunk: Buffer): boolean {
    if (this.dumped) return true;
    if (this.flowing && this.pendingSize === 0 && !this.flowScheduled) {
      this.dataListener?.(chunk);
      return true;
    }
    this.pending.push(chunk);
    this.pendingSize += chunk.length;
    const more = this.pendingSize < this.highWaterMark;
    this.bufferCheck?.(false);
    return more;
  }

  /** The body is whole. */
  pushEnd(): void {
    this.complete = true;
    this.ended = true;
    this.bufferCheck?.(false);
    if (this.flowing && this.pendingSize === 0 && !this.flowScheduled) this.emitEnd();
  }

  /** The connection ended (closed, or a parse error in the body): the body will not end. */
  connectionGone(): void {
    this.bufferCheck?.(true);
  }

  /**
   * Hold the body unread until it is whole or more than `limit` bytes of it have come, before anyone reads it (the
   * request is decided on what it says): the pieces so far, left in the buffer for whoever reads the body next, as
   * if this never happened. `whole` false: more than `limit` came (the socket is read no further until the body is
   * read). 'stalled': no byte came for `idleMs`; 'gone': the connection ended first.
   */
  bufferBody(limit: number, idleMs: number): Promise<{ pieces: Buffer[]; whole: boolean } | 'stalled' | 'gone'> {
    return new Promise((resolve) => {
      const done = (result: { pieces: Buffer[]; whole: boolean } | 'stalled' | 'gone') => {
        clearTimeout(timer);
        this.bufferCheck = undefined;
        this.highWaterMark = BODY_HIGH_WATER_MARK;
        resolve(result);
      };
      const timer = setTimeout(() => done('stalled'), idleMs);
      this.bufferCheck = (gone) => {
        if (gone) return done('gone');
        if (this.complete || this.pendingSize > limit) return done({ pieces: this.pending.slice(), whole: this.complete });
        timer.refresh();
      };
      // A body of exactly `limit` bytes is read on to its end; one byte more stops the socket.
      this.highWaterMark = limit + 1;
      // The socket may have stopped for this body's buffer (16 KiB) already: read on.
      if (this.pendingSize < this.highWaterMark) this.reader.bodyRead();
      this.bufferCheck(false);
    });
  }

  /**
   * This request is decided asynchronously: the requests read behind it (pipelined) are not handed over until the
   * returned function is called, with true (they are, in order), or with false (this request is refused and its
   * answer ends the connection: they are neither decided nor sent, and nothing more is read).
   */
  holdFollowing(): (goOn: boolean) => void {
    return this.reader.hold();
  }

  /** Nobody read the body and its answer is out: what comes of it is dropped (node's `_dump`). */
  dumpUnread(): void {
    if (this.consuming || this.dumped) return;
    this.dumped = true;
    this.dataListener = undefined;
    this.pending = [];
    this.pendingSize = 0;
    this.reader.bodyRead();
  }

  private readonly flow = (): void => {
    this.flowScheduled = false;
    while (this.flowing && this.pending.length > 0) {
      const chunk = this.pending.shift()!;
      this.pendingSize -= chunk.length;
      this.dataListener?.(chunk);
    }
    if (!this.flowing) return;
    // The buffer is empty: a socket paused for it is read again, also when the body has ended meanwhile (what
    // follows it, the next request, comes in a later read).
    this.reader.bodyRead();
    if (this.ended) this.emitEnd();
  };

  private emitEnd(): void {
    const listener = this.endListener;
    this.endListener = undefined;
    this.ended = false;
    listener?.();
  }
}

function closeParser(parser: HttpParser): void {
  parser.close();
}

function emitClose(res: RawResponse): void {
  res.emitClose();
}

/**
 * A parse error as node's server handed it to 'clientError': llhttp's code and the bytes being parsed; `inBody` when it
 * came in the body of a request already handed over (and decided).
 */
export type ClientError = NodeJS.ErrnoException & { rawPacket?: Buffer; inBody?: boolean };

/**
 * An error of llhttp's reading a head (the bytes are not an HTTP/1 request), not one in the body of a request already
 * decided (its close event tells), of the socket, or a timeout: a request refused unread, which gets its own event.
 */
export function isMalformedHead(err: ClientError): boolean {
  return err.code?.startsWith('HPE_') === true && err.inBody !== true;
}

export interface RequestHandlers {
  /** A request to answer on `res` (answers go out in request order). */
  request(req: InspectedRequest, res: RawResponse): void;
  /**
   * An upgrade: the socket is the handler's from now on, `head` what followed the request's head. Without this
   * handler an upgrade request is read and answered as any other (node's server without an 'upgrade' listener).
   */
  upgrade?(req: InspectedRequest, socket: Socket, head: Buffer): void;
  /**
   * A CONNECT: the socket is the handler's from now on, `head` what followed its head; answers to earlier requests
   * may still be under way (`answerInFlight`). Without this handler the connection is closed (node's server without
   * a 'connect' listener).
   */
  connect?(req: InspectedRequest, socket: Socket, head: Buffer): void;
  /**
   * The HTTP/2 connection preface where a request was due (a client turning to h2c with prior knowledge on a
   * connection that began in HTTP/1.1): the socket is the handler's from now on, once the answers due are out;
   * `bytes` are the preface and what followed it. Without this handler, a parse error as node's server had it.
   */
  http2Preface?(socket: Socket, bytes: Buffer): void;
  /** A parse error or a socket error (node's 'clientError'). */
  clientError(err: ClientError, socket: Socket): void;
  /**
   * A request read whole but refused as node's server refused it (HTTP/1.1 without Host, more header lines than node
   * reads): to be answered 400 on `res` (which closes the connection), once its event is written. Without this handler
   * the reader answers it at once, with no body.
   */
  malformed?(req: InspectedRequest, res: RawResponse, message: string): void;
}

/** A blank line, for a head whose own llhttp ate (`blankLineEaten`). */
const BLANK_LINE = Buffer.from('\n', 'latin1');

/** The HTTP/2 client connection preface (RFC 9113 3.4), which llhttp reads whole before it pauses on it. */
const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export interface RequestReaderOptions {
  /** node's server `timeout` and `keepAliveTimeout` (the Keep-Alive header's timeout). */
  idleTimeoutMs: number;
  /**
   * node's server with `timeout` 0 and `keepAliveTimeout` `idleTimeoutMs`: the connection is closed for inactivity
   * only between requests, never while a head, a body or an answer is under way (the explicit proxy).
   */
  idleOnlyBetweenRequests?: boolean;
  /**
   * node's `httpAllowHalfOpen`: a client's FIN ends the connection after the answers to what it sent (a client that
   * sends its request, shuts its sending side and reads the reply: HTTP/1.0 clients, `nc -N`); without, the
   * connection's side is ended at once.
   */
  answerHalfClosed?: boolean;
  /**
   * With `answerHalfClosed`: once the client's FIN has come with answers still due, the connection is closed (the
   * answers cut, their upstream exchanges aborted, as for any client that goes) when nothing is written to it for this
   * long. The client may still be reading, and then the answer keeps coming; but after the FIN node no longer reads the
   * socket, so a client that has gone since (closed, even reset) cannot be told from one that waits, and an upstream
   * that went silent was held until the idle timeout (300 s). As a tunnel's half-close timeout (net/splice.ts).
   */
  halfCloseTimeoutMs?: number;
  /**
   * node's server `keepAliveTimeout` where it differs from `timeout` (`idleTimeoutMs`), as on the transparent listener
   * (30 s, idle 300 s): the Keep-Alive header's timeout, and between requests the socket's timeout is this plus a
   * second, set when the last answer is out and put back to `idleTimeoutMs` once the next head is whole (node's
   * `keepAliveTimeoutSet`, reset in parserOnIncoming). Without it, `idleTimeoutMs` is both.
   */
  keepAliveTimeoutMs?: number;
  /**
   * llhttp's lenient flags for this connection's requests (request-leniency.ts: the bare line ends audit mode reads);
   * strict without.
   */
  lenientFlags?: number;
}

/** One client connection's requests, read and answered in order. */
export class RequestReader implements ResponseOwner {
  private readonly parser = new HTTPParser();
  /** The request whose body is being read (node's `parser.incoming`). */
  private incoming: InspectedRequest | undefined;
  /** Requests without a finished answer, oldest first, and the answers waiting for their turn. */
  private readonly requests: InspectedRequest[] = [];
  private readonly queued: RawResponse[] = [];
  /** The answer being written (node's `socket._httpMessage`). */
  private current: RawResponse | undefined;
  /** Bytes kept for queued answers (node's `state.outgoingData`). */
  private outgoingData = 0;
  /** Reading stopped for the queued answers (node's `socket._paused`) or for a full body buffer. */
  private pausedForOutput = false;
  private pausedForBody = false;
  /** Reading held while a body pump writes an answer to the socket in native code (`holdReads`). */
  private pausedForPump = false;
  /**
   * Between requests, every answer written: the idle timeout is a second longer then (node's keep-alive buffer).
   * Rather than set the socket's timeout twice per request as node's server did, the timeout stays `idleTimeoutMs`
   * and, when it fires between requests, waits that second more once (`keepAliveGrace`, ended by any read: then the
   * idle timeout and its second again); the same inactivity ends the connection. With `keepAliveTimeoutMs` (a
   * keep-alive timeout other than the idle one) the timeout is set as node's server set it, twice per request.
   */
  private betweenRequests = false;
  private keepAliveGrace = false;
  /** A message has begun and is not complete (the connection is not idle). */
  private midMessage = false;
  /** When the head being read began (`Date.now()`), 0 when no head is being read (node's headersTimeout checks it). */
  headStartedAt = 0;
  private failed = false;
  /** An upgrade came behind requests not yet answered: their answers go out, then the connection ends. */
  private closeWhenAnswered = false;
  /** The request just read is the connection's last (refused for its head): nothing after it is read. */
  private lastRead = false;
  /** This side has ended the connection (`endConnection`): what comes is dropped, never parsed. */
  private ending = false;
  /** Requests decided asynchronously whose followers wait (`hold`), and the followers read meanwhile, in order. */
  private holds = 0;
  private readonly held: { req: InspectedRequest; res: RawResponse; malformed?: string }[] = [];
  /** A parse error behind requests whose answers were due: reported once they are out (`parseFailed`). */
  private errorAfterAnswers: ClientError | undefined;
  /** The HTTP/2 preface (and what followed it) behind requests whose answers were due: handed over once they are out. */
  private http2AfterAnswers: Buffer | undefined;
  /** The socket's handle, when the parser reads it natively. */
  private nativeRead: NativeRead | undefined;
  private pendingHeaders: string[] = [];
  private pendingUrl = '';
  /** The last two bytes parsed, when reading bare line ends (`lenientFlags`), and whether a head was given its blank line. */
  private lastTwoBytes = '';
  private blankLineGiven = false;
  /** Reads with bare line ends (`lenientFlags`): a chunked body's blank line given back where llhttp eats it. */
  private readonly lenientReads: BareLfChunkedReads | undefined;
  private readonly onData = (data: Buffer) => this.read(data);
  private readonly executedPiece = (ret: number | Error, piece: Buffer): void => this.executed(ret, piece);
  private readonly readingOn = (): boolean => !this.failed;
  private readonly onEnd = () => this.ended();
  private readonly onClose = () => this.closed();
  private readonly onAnswersGone = () => this.answersGone();
  private readonly onDrain = () => this.drained();
  private readonly onError = (err: ClientError) => this.handlers.clientError(err, this.socket);
  /** The client's FIN came with answers due, and the half-close timeout runs (`halfCloseTimeoutMs`). */
  private halfClosedWithAnswers = false;
  private readonly onTimeout = () => {
    if (this.halfClosedWithAnswers) {
      markHalfCloseTimeout(this.socket);
      return void this.socket.destroy();
    }
    // Not idle: the timer starts again with the next byte read or written (node's socket timer is refreshed then).
    if (this.options.idleOnlyBetweenRequests && !this.betweenRequests) return;
    if (this.betweenRequests && !this.keepAliveGrace && this.options.keepAliveTimeoutMs === undefined) {
      this.keepAliveGrace = true;
      this.socket.setTimeout(KEEP_ALIVE_TIMEOUT_BUFFER_MS);
      return;
    }
    this.socket.destroy();
  };

  constructor(
    readonly socket: Socket,
    private readonly handlers: RequestHandlers,
    private readonly options: RequestReaderOptions,
  ) {
    const parser = this.parser;
    parser.initialize(HTTPParser.REQUEST, PARSER_RESOURCE, 0, options.lenientFlags ?? HTTPParser.kLenientNone);
    if (options.lenientFlags) this.lenientReads = new BareLfChunkedReads(parser);
    parser[HTTPParser.kOnMessageBegin] = () => {
      this.midMessage = true;
      this.headStartedAt = Date.now();
      this.blankLineGiven = false;
    };
    parser[HTTPParser.kOnHeaders] = (headers: string[], url: string) => {
      for (const h of headers) this.pendingHeaders.push(h);
      this.pendingUrl += url;
    };
    parser[HTTPParser.kOnHeadersComplete] = (
      major: number,
      minor: number,
      headers: string[] | undefined,
      method: number,
      url: string | undefined,
      _status: unknown,
      _statusMessage: unknown,
      upgrade: boolean,
      keepAlive: boolean,
    ) => this.watchChunkedBody(this.headersComplete(major, minor, headers, method, url, upgrade, keepAlive));
    parser[HTTPParser.kOnBody] = (chunk: Buffer) => {
      const req = this.incoming;
      if (req && !req.push(chunk) && !this.pausedForBody) {
        this.pausedForBody = true;
        this.socket.pause();
      }
    };
    parser[HTTPParser.kOnMessageComplete] = () => {
      this.midMessage = false;
      // Trailers: node kept them apart, the forwarder never sent them. Their flush also repeats this request's target
      // (llhttp's url is not reset after a head); node's parserOnMessageComplete drops both, else the next request
      // read in the same execute (its head flushed the slow way) would get this one's target as a prefix.
      this.pendingHeaders = [];
      this.pendingUrl = '';
      this.lenientReads?.messageComplete();
      const req = this.incoming;
      if (req) req.pushEnd();
    };
    if (options.idleTimeoutMs) socket.setTimeout(options.idleTimeoutMs);
    socket.on('timeout', this.onTimeout);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('close', this.onClose);
    socket.on('drain', this.onDrain);
    socket.on('error', this.onError);
    this.consume(socket);
  }

  /** llhttp's lenient flags for this connection's requests (`RequestReaderOptions.lenientFlags`). */
  get lenientFlags(): number {
    return this.options.lenientFlags ?? HTTPParser.kLenientNone;
  }

  /** The answer being written, if any (node's `socket._httpMessage`; the next one is assigned when it finishes). */
  get answerInFlight(): RawResponse | undefined {
    return this.current;
  }

  /**
   * A head unfinished for too long (node's headersTimeout): answered as node's server did, with 'clientError'. Nothing
   * is parsed after it: the answer waits for its event to be written (since 2026-12-03), and the rest of the head read
   * meanwhile must not become a request that is decided and sent, nor a FIN a second refusal (review45).
   */
  headTimedOut(): void {
    if (this.failed) return;
    this.headStartedAt = 0;
    this.stopParsing();
    this.handlers.clientError(Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), this.socket);
  }

  /** Idle: between requests, every answer written, or lingering after its last (what `closeIdleConnections` closes). */
  get idle(): boolean {
    if (this.ending) return true;
    return !this.midMessage && (this.current === undefined || this.current.finished);
  }

  /** Bytes the socket emitted (the reads before the handle was consumed, or all of them when it is not). */
  private read(data: Buffer): void {
    // Behind the HTTP/2 preface (waiting for the answers due): kept for whoever the socket is handed to, not dropped.
    if (this.http2AfterAnswers) return this.keepAfterHttp2(data);
    if (this.failed) return;
    // With bare line ends, a request whose chunked body ends `0\n\n` ends there (last-chunk-blank-line.ts). Until
    // 2026-12-03 it waited for a line that never came (its client for its answer), and a request pipelined behind it
    // was read as a trailer line and refused 400.
    if (this.lenientReads) return this.lenientReads.read(data, this.executedPiece, this.readingOn);
    this.executed(this.parser.execute(data), data);
  }

  /** The head callback's answer to llhttp: a chunked body read with bare line ends is watched from its start (`lenientReads`). */
  private watchChunkedBody(ret: number): number {
    if (ret !== 0 || !this.lenientReads) return ret;
    return chunkedBody(this.incoming?.headers['transfer-encoding']) ? PAUSE_AT_BODY : ret;
  }

  /**
   * After a native read's parse. A chunked body read with bare line ends: its bytes are to be seen before llhttp's
   * (`lenientReads`), so the connection is read from 'data' events from then on (a TLS connection inspected in audit
   * mode that sends one; the others keep their native reads).
   */
  private nativeExecuted(ret: number | Error): void {
    if (!this.lenientReads || !pausedAtBody(ret)) return this.executed(ret, undefined);
    this.lenientReads.pausedAtBody(ret, this.parser.getCurrentBuffer(), this.executedPiece, this.readingOn);
    if (this.lenientReads.watching) this.unconsume();
  }

  /** After a parse of `data` (undefined: a native read, the parser has its bytes). */
  private executed(ret: number | Error, data: Buffer | undefined): void {
    if (this.failed) return;
    if (this.keepAliveGrace && this.options.keepAliveTimeoutMs === undefined) this.endGrace();
    if (ret instanceof Error) {
      // Bytes after a request that said `close` (llhttp, strict: an error): RFC 9112 9.6 has the server assume nothing
      // follows it, so they are neither read nor answered 400 (node's server did, and the request's own answer was lost).
      if ((ret as ClientError).code === 'HPE_CLOSED_CONNECTION') return this.endAfterAnswers();
      const err = ret as ClientError & { bytesParsed?: number };
      err.rawPacket = data ?? this.parser.getCurrentBuffer();
      if (err.code === 'HPE_PAUSED_H2_UPGRADE' && this.handlers.http2Preface) {
        return this.http2PrefaceFound(Buffer.concat([HTTP2_PREFACE, err.rawPacket.subarray(err.bytesParsed ?? err.rawPacket.length)]));
      }
      return this.parseFailed(err);
    }
    if (this.options.lenientFlags && this.blankLineEaten(data ?? this.parser.getCurrentBuffer())) return this.executed(this.parser.execute(BLANK_LINE), BLANK_LINE);
    if (this.lastRead) return this.endAfterAnswers();
    const req = this.incoming;
    if (req?.upgrade) return this.handOver(req, (data ?? this.parser.getCurrentBuffer()).subarray(ret));
    if (req?.method === 'PRI') this.socket.destroy();
  }

  /**
   * llhttp 9, reading bare line ends, takes the LF after a request line's bare LF for the one a CR waits for: a head
   * without header lines (`GET / HTTP/1.0\n\n`, `printf ... | nc`) never ended, and the client waited for its answer.
   * True when that happened (a head is under way and the bytes so far end in two LFs, which end any head otherwise):
   * the blank line is to be given again, once.
   */
  private blankLineEaten(bytes: Buffer): boolean {
    this.lastTwoBytes = (this.lastTwoBytes + bytes.toString('latin1', Math.max(0, bytes.length - 2))).slice(-2);
    if (this.headStartedAt === 0 || this.blankLineGiven || this.lastTwoBytes !== '\n\n') return false;
    this.blankLineGiven = true;
    return true;
  }

  /**
   * A parse error (or an end mid-message): reported to `clientError`, whose 400 ends the connection. Requests read
   * whole before it whose answers are still due get them first, then the error is reported: node's server reported
   * it at once, and its 400 went out ahead of those answers, which the client took for the 400 (the requests were
   * decided and sent upstream all the same). An error in the body of a request handed over is reported at once, as
   * before: that request never ends, its answer would never come. One in the body of a request still held behind one
   * being decided (`hold`), never handed over, is a head's: that request is dropped (never decided nor sent) and the
   * error reported after the answers due. Until review44 it was taken for a handed-over one's: a 400 at once, ahead
   * of the answer due (the client's first request's, decided and sent all the same), and no event.
   */
  private parseFailed(err: ClientError): void {
    const incoming = this.incoming;
    const inBody = incoming !== undefined && !incoming.complete;
    if (inBody) incoming.connectionGone();
    const heldAt = inBody ? this.held.findIndex((held) => held.req === incoming) : -1;
    if (heldAt >= 0) {
      const held = this.held.splice(heldAt, 1)[0]!;
      this.forget(held.req, held.res);
    } else if (inBody) {
      err.inBody = true;
    }
    if (this.requests.length === 0 || err.inBody) {
      this.failed = true;
      this.handlers.clientError(err, this.socket);
      return;
    }
    this.errorAfterAnswers = err;
    this.endAfterAnswers();
  }

  /**
   * Bytes came in the grace second: inactivity is measured from the idle timeout again, its second to follow again
   * (node's keep-alive timeout plus a second was restarted by every read until the next head was whole).
   */
  private endGrace(): void {
    this.keepAliveGrace = false;
    this.socket.setTimeout(this.options.idleTimeoutMs);
  }

  /**
   * Read the socket's handle natively, as node's server did with every socket it read first (a fresh TLS socket
   * here; not a socket read before, such as a plain connection peeked at or an h2c request read again).
   */
  private consume(socket: Socket): void {
    this.nativeRead = NativeRead.start(
      socket,
      this.parser,
      (ret) => this.nativeExecuted(ret),
      () => this.pausedForOutput || this.pausedForBody || this.pausedForPump,
    );
  }

  private unconsume(): void {
    this.nativeRead?.stop();
    this.nativeRead = undefined;
  }

  private headersComplete(major: number, minor: number, headers: string[] | undefined, methodIndex: number, url: string | undefined, upgrade: boolean, keepAlive: boolean): number {
    const raw = headers ?? this.pendingHeaders;
    this.pendingHeaders = [];
    this.headStartedAt = 0;
    const target = url ?? this.pendingUrl;
    this.pendingUrl = '';
    const req = (this.incoming = new InspectedRequest(this.socket, this, METHODS[methodIndex] ?? 'GET', target, major, minor, raw));
    this.betweenRequests = false;
    // The keep-alive timeout lasts until the next head is whole (node's resetSocketTimeout in parserOnIncoming).
    if (this.keepAliveGrace) this.endGrace();
    const tooManyHeaders = raw.length > MAX_HEADER_ENTRIES;
    // node's server: a CONNECT is always handed over (closed without a handler), other upgrades only to a handler.
    if (upgrade && !tooManyHeaders && (req.method === 'CONNECT' || this.handlers.upgrade)) {
      req.upgrade = true;
      return 2;
    }
    this.requests.push(req);
    // Queued answers hold as much as the socket may: no more requests are read until they drain.
    if (!this.pausedForOutput && (this.socket.writableNeedDrain || this.outgoingData >= this.socket.writableHighWaterMark)) {
      this.pausedForOutput = true;
      this.socket.pause();
    }
    const http10 = major < 1 || minor < 1;
    const res = new RawResponse(this.socket, this, {
      head: req.method === 'HEAD',
      keepAlive,
      http10,
      teChunked: http10 && chunkExpression.test((req.headers.te as string | undefined) ?? ''),
      keepAliveTimeoutMs: this.options.keepAliveTimeoutMs ?? this.options.idleTimeoutMs,
    });
    if (this.current) this.queued.push(res);
    else this.assign(res);
    const http11 = major === 1 && minor === 1;
    if (tooManyHeaders || (http11 && req.headers.host === undefined)) {
      // The connection ends after this answer: what is pipelined behind it is not read (node's server decided and
      // sent it upstream, its answer never delivered). 2 stops the parse here, as for an upgrade.
      this.lastRead = true;
      res.shouldKeepAlive = false;
      const message = tooManyHeaders ? `more than ${MAX_HEADER_ENTRIES / 2} header lines` : 'an HTTP/1.1 request without a Host header';
      // Behind a request still being decided it waits as any request does (`hold`): refused, with its event, once that
      // one goes on; never when that one is refused. Until review44 it was refused at once: its malformed-request
      // event was written for a request dropped unanswered behind a 403.
      if (this.holds > 0) this.held.push({ req, res, malformed: message });
      else this.refuseMalformed(req, res, message);
      return 2;
    }
    if (http11) {
      const expect = req.headers.expect;
      if (expect !== undefined) {
        if (continueExpression.test(expect)) {
          res.expectContinue = true;
          res.writeContinue();
        } else {
          res.writeHead(417);
          res.end();
          return 0;
        }
      }
    }
    // Behind a request still being decided: handed over once it is (`hold`), or never if it is refused.
    if (this.holds > 0) {
      this.held.push({ req, res });
      return 0;
    }
    return this.dispatch(req, res) ? 2 : 0;
  }

  /**
   * Hand a request to the handler. True when its answer, given at once, ends the connection (with `close`: the
   * transparent listener's 400 for a Host that could name two hosts): RFC 9112 9.6, nothing after it is read, as after
   * the 400 for a missing Host (node's server decided and forwarded what was pipelined behind it, its answer never
   * delivered). `malformed`: a request refused whole that was held (headersComplete), refused now, the connection's last.
   */
  private dispatch(req: InspectedRequest, res: RawResponse, malformed?: string): boolean {
    if (malformed !== undefined) {
      this.refuseMalformed(req, res, malformed);
      return true;
    }
    this.handlers.request(req, res);
    if (!res.last) return false;
    this.lastRead = true;
    return true;
  }

  /** A request refused whole (HTTP/1.1 without Host, too many header lines): 400, from the `malformed` handler if any. */
  private refuseMalformed(req: InspectedRequest, res: RawResponse, message: string): void {
    if (this.handlers.malformed) return this.handlers.malformed(req, res, message);
    res.writeHead(400, ['Connection', 'close']);
    res.end();
  }

  /** See `InspectedRequest.holdFollowing`. */
  hold(): (goOn: boolean) => void {
    this.holds++;
    let released = false;
    return (goOn) => {
      if (released) return;
      released = true;
      this.holds--;
      if (!goOn) return this.dropHeld();
      // Requests held were read before anything that stopped the reading (a 400 for a missing Host): all are due.
      while (this.holds === 0 && this.held.length > 0 && !this.ending) {
        const { req, res, malformed } = this.held.shift()!;
        if (this.dispatch(req, res, malformed)) this.dropHeld();
      }
    };
  }

  /** The requests waiting behind a refusal (or an answer that ends the connection) are never handed over or answered. */
  private dropHeld(): void {
    for (const { req, res } of this.held.splice(0)) this.forget(req, res);
    this.endAfterAnswers();
  }

  /** A request held (never handed over) that never will be: no longer due, its answer never written. */
  private forget(req: InspectedRequest, res: RawResponse): void {
    const index = this.requests.indexOf(req);
    if (index >= 0) this.requests.splice(index, 1);
    const at = this.queued.indexOf(res);
    if (at >= 0) this.queued.splice(at, 1);
    if (this.current === res) {
      this.current = undefined;
      res.detach();
    }
  }

  private assign(res: RawResponse): void {
    this.current = res;
    res.assign();
  }

  /** A response's last bytes are out (node's `resOnFinish`): the next one's turn, or the connection ends or idles. */
  finished(res: RawResponse): void {
    const req = this.requests.shift();
    req?.dumpUnread();
    if (this.current === res) this.current = undefined;
    res.detach();
    process.nextTick(emitClose, res);
    if (!res.last && this.http2AfterAnswers && this.requests.length === 0) {
      this.handOverHttp2(this.http2AfterAnswers);
    } else if (!res.last && this.errorAfterAnswers && this.requests.length === 0) {
      this.handlers.clientError(this.errorAfterAnswers, this.socket);
      this.errorAfterAnswers = undefined;
    } else if (res.last || (this.closeWhenAnswered && this.requests.length === 0)) {
      this.endConnection();
    } else if (this.queued.length === 0) {
      this.betweenRequests = true;
      if (this.options.keepAliveTimeoutMs !== undefined) {
        // The keep-alive timeout from now, refreshed by activity, until the next head is whole.
        this.keepAliveGrace = true;
        this.socket.setTimeout(this.options.keepAliveTimeoutMs + KEEP_ALIVE_TIMEOUT_BUFFER_MS);
      }
    } else {
      this.assign(this.queued.shift()!);
    }
  }

  pendingData(delta: number): void {
    this.outgoingData += delta;
    this.drained();
  }

  /**
   * A body pump (upstream-connection.ts) writes the answer under way to the socket in native code: nothing is read
   * until the returned call, so that a pipelined request, or the client's FIN, waits in the kernel (a pipelined
   * request read meanwhile would be decided and sent upstream behind an answer the proxy is not reading). The
   * returned call reads on as before, unless the socket was paused already (then whoever paused it resumes it).
   */
  holdReads(): () => void {
    const socket = this.socket;
    const wasPaused = socket.isPaused();
    this.pausedForPump = true;
    holdReading(socket);
    return () => {
      if (!this.pausedForPump) return;
      this.pausedForPump = false;
      resumeReading(socket);
      if (!wasPaused && !socket.destroyed) socket.resume();
    };
  }

  /** Nothing more is parsed: the reads stop, and what the socket still brings waits there (or a handler drops it). */
  private stopParsing(): void {
    this.failed = true;
    this.unconsume();
    this.socket.pause();
  }

  /** A request's body was read from its buffer: read the socket again if it stopped for that body. */
  bodyRead(): void {
    if (!this.pausedForBody) return;
    this.pausedForBody = false;
    if (!this.pausedForOutput && this.socket.readable && !this.http2AfterAnswers) this.socket.resume();
  }

  /** node's `socketOnDrain`: reading resumes once queued answers fit, and the current answer may write again. */
  private drained(): void {
    if (this.pausedForOutput && this.outgoingData <= this.socket.writableHighWaterMark) {
      this.pausedForOutput = false;
      // Not behind the HTTP/2 preface: what follows it stays in the socket for its handler.
      if (!this.pausedForBody && !this.http2AfterAnswers) this.socket.resume();
    }
    this.current?.socketDrained();
  }

  /** The client's FIN: what is unread is a parse error, else the connection ends (node: no half-open HTTP). */
  private ended(): void {
    if (this.failed) return;
    const err = this.parser.finish();
    if (err instanceof Error) return this.parseFailed(err as ClientError);
    if (this.options.answerHalfClosed) {
      // node's socketOnEnd with httpAllowHalfOpen: the last answer due ends the connection (finished()).
      const last = this.queued.at(-1) ?? this.current;
      if (last) {
        last.last = true;
        // Nothing more is read: the socket's timer runs on the answers' writes alone (node refreshes it on each).
        if (this.options.halfCloseTimeoutMs) {
          this.halfClosedWithAnswers = true;
          this.socket.setTimeout(this.options.halfCloseTimeoutMs);
        }
        return;
      }
    }
    if (this.socket.writable) this.socket.end();
  }

  private closed(): void {
    if (this.incoming && !this.incoming.complete) this.incoming.connectionGone();
    this.unconsume();
    this.closeParser();
    this.answersGone();
  }

  /**
   * The connection is gone: the answer under way and those waiting for their turn never go out. Each gets 'close'
   * (node gave it only to the one under way), so what their handlers hold (the explicit proxy's count of open
   * connections) is let go rather than kept for good.
   */
  private answersGone(): void {
    this.current?.emitClose();
    for (const res of this.queued) res.emitClose();
  }

  /** An upgrade (or CONNECT, which has no handler here: the connection is closed, as node's server did). */
  private handOver(req: InspectedRequest, head: Buffer): void {
    // A CONNECT with a handler (the explicit proxy) is handed over at once; the handler waits for the answers.
    if (this.requests.length > 0 && !(req.method === 'CONNECT' && this.handlers.connect)) return this.endAfterAnswers();
    this.detachSocket();
    // A CONNECT handed over while answers are still due: they still learn of the connection's end.
    if (this.requests.length > 0) this.socket.once('close', this.onAnswersGone);
    this.unconsume();
    // What follows the head waits in the socket for the handler (node: flowing reset, nothing read meanwhile).
    (this.socket as { readableFlowing: boolean | null }).readableFlowing = null;
    this.parser.finish();
    this.closeParser();
    const handler = req.method === 'CONNECT' ? this.handlers.connect : this.handlers.upgrade;
    if (!handler) return void this.socket.destroy();
    handler(req, this.socket, head);
  }

  /** The HTTP/2 preface: handed over now, or once the answers due are out (nothing more is read meanwhile). */
  private http2PrefaceFound(bytes: Buffer): void {
    if (this.requests.length === 0) return this.handOverHttp2(bytes);
    this.http2AfterAnswers = bytes;
    this.stopParsing();
  }

  /** Bytes read behind the HTTP/2 preface (the socket read again meanwhile): kept with it, and reading stops. */
  private keepAfterHttp2(data: Buffer): void {
    this.http2AfterAnswers = Buffer.concat([this.http2AfterAnswers!, data]);
    this.socket.pause();
  }

  private handOverHttp2(bytes: Buffer): void {
    this.http2AfterAnswers = undefined;
    this.failed = true;
    this.detachSocket();
    this.unconsume();
    (this.socket as { readableFlowing: boolean | null }).readableFlowing = null;
    this.closeParser();
    this.handlers.http2Preface!(this.socket, bytes);
  }

  /**
   * An upgrade pipelined behind requests not yet answered is not handed over: what it became (a 101, or an h2c
   * request read again and answered at once) would be written before their answers, which the client would take for
   * its own. Nothing more is read (the upgrade is neither decided nor sent); the connection ends after those answers.
   * The same after the connection's last request (a 400 for its head, or bytes after a `close`).
   */
  private endAfterAnswers(): void {
    this.closeWhenAnswered = true;
    this.stopParsing();
    // Every answer is out already (the `close` one's end is under way): nothing to wait for.
    if (this.requests.length === 0) this.endConnection();
  }

  /**
   * The connection ends on this side, the answers due written (a refusal, an answer that says `close`, bytes after a
   * `close`): nothing more is parsed, and what the client still sends is dropped for a while (lingering-close.ts) so
   * that its unread bytes do not reset the connection before the client has read the last answer.
   */
  private endConnection(): void {
    if (this.ending) return;
    this.ending = true;
    this.failed = true;
    this.unconsume();
    const socket = this.socket;
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('timeout', this.onTimeout);
    lingeringClose(socket);
  }

  /**
   * The parser's native side is freed in a later turn: this may run inside its own callback (an upgrade found by a
   * native read), and freeing it there would pull the parser from under the read that called us.
   */
  private closeParser(): void {
    setImmediate(closeParser, this.parser);
  }

  private detachSocket(): void {
    const socket = this.socket;
    socket.off('data', this.onData);
    socket.off('end', this.onEnd);
    socket.off('close', this.onClose);
    socket.off('drain', this.onDrain);
    socket.off('error', this.onError);
    socket.off('timeout', this.onTimeout);
  }
}
