import type { HttpParser } from './llhttp.js';

const LF = 0x0a;
const CR = 0x0d;
const SEMICOLON = 0x3b;

/** Where in a chunked body the scan is, as llhttp reads it with bare line ends (request-leniency.ts). */
const enum At {
  /** In a chunk-size line, its hex digits so far. */
  Size,
  /** A chunk-size line ended by a bare LF right after its digits: llhttp takes an LF that follows for a CR's. */
  AfterBareSizeLf,
  /** In a chunk-size line past its digits (an extension, or a CR): to its LF. */
  SizeLineRest,
  /** After the CR of a chunk-size line: an LF ends it, any other byte is the line ended by the CR alone. */
  SizeLineCr,
  /** In a chunk's data, `dataLeft` bytes to go. */
  Data,
  /** After a chunk's data: its line end (CR LF, or LF alone). */
  DataEnd,
  /** Past the last chunk's line, or at bytes llhttp refuses: nothing more to find in this body. */
  Done,
}

/**
 * Finds, in a chunked body read by llhttp 9 with bare line ends (AUDIT_MODE_LENIENCY), where it eats the blank line that
 * ends the body: after `0\n` (the last chunk, its line ended by a bare LF with no extension) llhttp takes the next LF
 * for the one a CR waits for, so `0\n\n` leaves it waiting for one more line, and what the client sends next (its next
 * request) is read as a trailer line. The same llhttp behaviour as request-reader.ts `blankLineEaten` after a request
 * line. Fed every byte of the body as it comes, from the first after the head, before llhttp reads it: `scan` says
 * where that LF is, so the caller has llhttp read up to it and then a blank line of its own, once.
 *
 * Only the framing is read (a chunk's data is skipped by its size), and only as far as llhttp reads it alike: at a
 * byte llhttp refuses the scan stops, and llhttp's error answers the body as before.
 */
export class LastChunkBlankLine {
  private at = At.Size;
  private size = 0;
  private digits = 0;
  private dataLeft = 0;

  /**
   * Read `bytes`, the next of the body: the offset just past the LF llhttp eats after the last chunk's line, or -1.
   * Once it is found, nothing more is looked for.
   */
  scan(bytes: Buffer): number {
    for (let i = 0; i < bytes.length && this.at !== At.Done; i++) {
      const byte = bytes[i]!;
      switch (this.at) {
        case At.Size: {
          const digit = hexValue(byte);
          if (digit >= 0) {
            // Only whether it is 0 and how much data follows matter; a size past 2^53 is never reached anyway.
            this.size = this.size * 16 + digit;
            this.digits++;
          } else if (this.digits === 0) {
            this.at = At.Done;
          } else if (byte === LF) {
            this.at = At.AfterBareSizeLf;
          } else if (byte === CR) {
            this.at = At.SizeLineCr;
          } else if (byte === SEMICOLON) {
            this.at = At.SizeLineRest;
          } else {
            this.at = At.Done;
          }
          break;
        }
        case At.AfterBareSizeLf:
          if (this.size === 0) {
            // The last chunk: an LF here is the blank line llhttp eats.
            this.at = At.Done;
            if (byte === LF) return i + 1;
          } else {
            // A chunk's data beginning with an LF: llhttp eats it too, and reads the data from the next byte.
            this.startData();
            if (byte !== LF) i--;
          }
          break;
        case At.SizeLineRest:
          if (byte === CR) this.at = At.SizeLineCr;
          else if (byte === LF) this.lineEnded();
          break;
        case At.SizeLineCr:
          // A CR alone ends the line too (kLenientOptionalLFAfterCR): the byte after it is the chunk's first.
          if (byte !== LF) i--;
          this.lineEnded();
          break;
        case At.Data: {
          const skip = Math.min(this.dataLeft, bytes.length - i);
          this.dataLeft -= skip;
          i += skip - 1;
          if (this.dataLeft === 0) this.at = At.DataEnd;
          break;
        }
        case At.DataEnd:
          if (byte === LF) this.startSize();
          else if (byte !== CR) this.at = At.Done;
          break;
      }
    }
    return -1;
  }

  /** A chunk-size line ended otherwise than by a bare LF after its digits: no blank line is eaten after it. */
  private lineEnded(): void {
    if (this.size === 0) this.at = At.Done;
    else this.startData();
  }

  private startData(): void {
    this.dataLeft = this.size;
    this.at = At.Data;
  }

  private startSize(): void {
    this.size = 0;
    this.digits = 0;
    this.at = At.Size;
  }
}

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  const lower = byte | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/**
 * llhttp's HPE_PAUSED, returned from the head callback to stop the parse at the head's end (node's binding reports the
 * offset as the error's `bytesParsed`; `resume()` goes on from there): where a chunked body begins.
 */
export const PAUSE_AT_BODY = 21;
const BLANK_LINE = Buffer.from('\n', 'latin1');
const CRLF_BLANK_LINE = Buffer.from('\r\n\r\n', 'latin1');
const NO_BYTES = Buffer.alloc(0);
/** A parse the head callback paused at a chunked body's start (PAUSE_AT_BODY). */
export function pausedAtBody(ret: number | Error): ret is Error & { bytesParsed: number } {
  return ret instanceof Error && (ret as NodeJS.ErrnoException).code === 'HPE_PAUSED';
}

type Executed = (ret: number | Error, piece: Buffer) => void;

/**
 * A parser's reads with bare line ends (AUDIT_MODE_LENIENCY) that gives back the blank line llhttp eats after a chunked
 * body's last chunk (LastChunkBlankLine). The owner's head callback returns PAUSE_AT_BODY for a message with a chunked
 * body (transfer-encoding.ts `chunkedBody`), and its message-complete callback calls `messageComplete`; `read` parses each read the owner
 * gets, and `pausedAtBody` goes on with a read the parser made itself (natively) that paused at such a body: while a
 * body is `watching`, its next bytes are to be seen before llhttp's, so the owner reads them itself.
 *
 * A body whose head ended in CRLF CRLF is not watched: its sender writes CRLF line ends (a server that mixes them is
 * not known), and the connection keeps its native reads, as in block mode.
 */
export class BareLfChunkedReads {
  private lastChunk: LastChunkBlankLine | undefined;

  constructor(private readonly parser: HttpParser) {}

  /** A chunked body is being read whose blank line may yet be eaten: the owner reads its bytes (`read`). */
  get watching(): boolean {
    return this.lastChunk !== undefined;
  }

  /** The message under way is complete: its body no longer watched. */
  messageComplete(): void {
    this.lastChunk = undefined;
  }

  /**
   * Parse `data`: each piece parsed goes to `executed`, as a parse of the whole read would (its result, the piece);
   * reading stops after an error or a parse that stopped short (an upgrade, or the owner's STOP), or when `goOn` says.
   * A chunked body's bytes are read by LastChunkBlankLine first, from the first after its head (the head callback
   * paused the parse there); where llhttp would eat its blank line, it reads up to there, then a blank line of ours
   * with what follows (the body's end and what comes after it are parsed in one piece, as they would have been).
   */
  read(data: Buffer, executed: Executed, goOn: () => boolean): void {
    let rest = data;
    while (rest.length > 0 && goOn()) {
      const cut = this.lastChunk ? this.lastChunk.scan(rest) : -1;
      const piece = cut === -1 ? rest : rest.subarray(0, cut);
      const ret = this.parser.execute(piece);
      // Paused, the piece is the whole rest: a body being watched (a cut) ends before the next head.
      if (pausedAtBody(ret)) {
        rest = this.bodyStart(ret, piece, executed, goOn);
        continue;
      }
      executed(ret, piece);
      if (cut === -1 || ret instanceof Error || ret < piece.length) return;
      this.lastChunk = undefined;
      rest = Buffer.concat([BLANK_LINE, rest.subarray(cut)]);
    }
  }

  /** `bytes`, a read the parser made itself, was paused at a chunked body's start (`paused`): the rest parsed as `read` does. */
  pausedAtBody(paused: Error & { bytesParsed: number }, bytes: Buffer, executed: Executed, goOn: () => boolean): void {
    this.read(this.bodyStart(paused, bytes, executed, goOn), executed, goOn);
  }

  /**
   * The head ended where the parse of `bytes` paused: it goes on, the body watched unless the head ended in CRLF CRLF
   * (read whole in `bytes`). What follows the head is returned.
   */
  private bodyStart(paused: Error & { bytesParsed: number }, bytes: Buffer, executed: Executed, goOn: () => boolean): Buffer {
    const headEnd = paused.bytesParsed;
    this.parser.resume();
    const crlfHead = headEnd >= CRLF_BLANK_LINE.length && bytes.compare(CRLF_BLANK_LINE, 0, CRLF_BLANK_LINE.length, headEnd - CRLF_BLANK_LINE.length, headEnd) === 0;
    this.lastChunk = crlfHead ? undefined : new LastChunkBlankLine();
    executed(headEnd, bytes.subarray(0, headEnd));
    // Nothing after the head in this read: llhttp goes on past the pause only when run again (a 204 that says chunked
    // ends there, and would wait for bytes that never come).
    if (headEnd === bytes.length && goOn()) executed(this.parser.execute(NO_BYTES), NO_BYTES);
    return bytes.subarray(headEnd);
  }
}
