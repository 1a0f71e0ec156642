import { createRequire } from 'node:module';

/**
 * node's own HTTP/1 parser (llhttp, `_http_common`'s HTTPParser), driven without node's client or server: by
 * upstream-connection.ts for responses and request-reader.ts for requests. Strict (no lenient flags), node's
 * default header size limit; the callbacks are set by number (kOnHeaders...), as node's own code does.
 */
export interface HttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  execute(data: Buffer): number | Error;
  finish(): Error | undefined;
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
