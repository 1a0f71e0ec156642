import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';

/**
 * node's own HTTP/1 parser (llhttp, `_http_common`'s HTTPParser), driven without node's client or server: by
 * upstream-connection.ts for responses and request-reader.ts for requests. Strict (no lenient flags) but for the
 * requests of an audit-mode connection and their responses (request-leniency.ts), node's default header size limit;
 * the callbacks are set by number (kOnHeaders...), as node's own code does.
 */
export interface HttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): Error | undefined;
  /** Go on after the head callback paused the parse (returned HPE_PAUSED). */
  resume(): void;
  close(): void;
  /** Read a stream handle natively (node's server does for the sockets it reads first): `kOnExecute` gets each result. */
  consume(handle: object): void;
  unconsume(): void;
  /** The bytes of the last native read (a parse error's `rawPacket`, an upgrade's bytes after the head). */
  getCurrentBuffer(): Buffer;
  [callback: number]: unknown;
}

interface HttpParserClass {
  new (): HttpParser;
  readonly REQUEST: number;
  readonly RESPONSE: number;
  readonly kOnMessageBegin: number;
  readonly kOnHeaders: number;
  readonly kOnHeadersComplete: number;
  readonly kOnBody: number;
  readonly kOnMessageComplete: number;
  readonly kOnExecute: number;
  readonly kLenientNone: number;
  readonly kLenientOptionalCRBeforeLF: number;
  readonly kLenientOptionalLFAfterCR: number;
}

const httpCommon = createRequire(import.meta.url)('_http_common') as {
  HTTPParser: HttpParserClass;
  continueExpression: RegExp;
  chunkExpression: RegExp;
  parsers: { alloc(): HttpParser };
};

export const { HTTPParser, continueExpression, chunkExpression } = httpCommon;

/** The async resource every parser is initialised with (node's is per message; nothing here reads it). */
export const PARSER_RESOURCE = {};

/** A parser node's own code set up (its callbacks node's), for reading what node's callbacks do. */
export function nodeParser(): HttpParser {
  return httpCommon.parsers.alloc();
}

/** A socket's native stream handle, as node's server used it. */
interface StreamHandle {
  isStreamBase?: boolean;
  _consumed?: boolean;
  reading?: boolean;
  readStart(): number;
  readStop(): number;
}

/**
 * A socket's handle read natively by a parser, as node's server read the sockets it was first to read (a socket
 * whose JavaScript side was read before may hold bytes there: not consumed, `start` answers undefined). No 'data'
 * event, stream buffer or Buffer per read: each read's parse result goes to `executed` (the bytes, when needed, are
 * the parser's `getCurrentBuffer()`); pause and resume stop and start the handle's reads (node's `onSocketPause`,
 * `onSocketResume`: a resume while `held()` says so pauses again). Bytes the socket's JavaScript side already holds
 * still come as 'data' events, before any native read.
 */
export class NativeRead {
  private constructor(
    private readonly socket: Duplex,
    private readonly handle: StreamHandle,
    private readonly parser: HttpParser,
    private readonly held: () => boolean,
  ) {
    socket.on('pause', this.onPause);
    socket.on('resume', this.onResume);
  }

  static start(socket: Duplex, parser: HttpParser, executed: (ret: number | Error) => void, held: () => boolean): NativeRead | undefined {
    const handle = (socket as Duplex & { _handle?: StreamHandle | null })._handle;
    if (!handle?.isStreamBase || handle._consumed) return undefined;
    handle._consumed = true;
    parser.consume(handle);
    parser[HTTPParser.kOnExecute] = (ret: number | Error) => {
      // Native reads do not touch the socket's idle timer: a read is activity (node's onParserExecute).
      (socket as Duplex & { _unrefTimer(): void })._unrefTimer();
      executed(ret);
    };
    return new NativeRead(socket, handle, parser, held);
  }

  /**
   * The parser stops reading the handle, which reads into a buffer of its own from now on (own-read-buffer.ts); pause
   * and resume still stop and start the handle's reads.
   */
  detachParser(): void {
    this.parser.unconsume();
  }

  /** Back to 'data' events (an upgrade hands the socket over; a parser is freed). */
  stop(): void {
    this.parser.unconsume();
    this.socket.off('pause', this.onPause);
    this.socket.off('resume', this.onResume);
    // Reads stopped here (a pause) stay stopped under a stream that still waits for the read it asked for before the
    // handle was consumed: it never asks again, so a resume would read nothing more (a lingering close then reset the
    // client's unread bytes all the same). The handle reads again, into the stream, which stops it itself when paused.
    if (!this.handle.reading && this.socket.readable && !this.socket.destroyed) {
      this.handle.reading = true;
      this.handle.readStart();
    }
  }

  private readonly onPause = (): void => {
    if (this.handle.reading) {
      this.handle.reading = false;
      this.handle.readStop();
    }
  };

  private readonly onResume = (): void => {
    if (this.held()) return void this.socket.pause();
    if (!this.handle.reading) {
      this.handle.reading = true;
      this.handle.readStart();
    }
  };
}
