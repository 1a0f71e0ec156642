/**
 * A strict parser of the head of a CONNECT request (RFC 9110 9.3.6, RFC 9112 3 and 5), for the explicit proxy's
 * lean CONNECT path (connect-front.ts): the request line, header lines up to the blank line, nothing else. The
 * headers are checked and dropped (a CONNECT's handling reads none of them). Anything that is not a CONNECT is
 * left to node's HTTP server; a head this parser refuses is answered as node's parser would (400, an error code
 * of the same names). On a connection that began in audit mode, a CONNECT head with bare line ends is left to the
 * request reader too (`bare-line-ends`), which reads those as it reads any request.
 */

/** node's default limit for a request head (--max-http-header-size); a longer head is refused, not buffered. */
export const MAX_CONNECT_HEAD_BYTES = 16 * 1024;

const METHOD = Buffer.from('CONNECT ', 'latin1');
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');

export type ConnectHead =
  /** More bytes are needed to tell. */
  | { kind: 'incomplete' }
  /** Not a CONNECT: node's HTTP server takes the connection, these bytes included. */
  | { kind: 'other' }
  /**
   * A CONNECT head with a line ended by a bare LF (or a lone CR), on a connection that reads them (audit mode): read by
   * the request reader instead, these bytes included, which reads it as it reads any request (request-leniency.ts).
   */
  | { kind: 'bare-line-ends' }
  /** A CONNECT head that is malformed or too long; `code` names the error as llhttp would. */
  | { kind: 'malformed'; code: string }
  /** `target` as written on the request line; the head ends at `headBytes`, bytes after it are the tunnel's. */
  | { kind: 'connect'; target: string; headBytes: number };

const INCOMPLETE: ConnectHead = { kind: 'incomplete' };
const OTHER: ConnectHead = { kind: 'other' };
const BARE_LINE_ENDS: ConnectHead = { kind: 'bare-line-ends' };

/** RFC 9110 5.6.2 tchar. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A field value: visible ASCII, space, tab, obs-text; no CR, LF or other control bytes. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** CONNECT's request target is authority-form; checked for host:port by the caller (parseAuthority). */
const REQUEST_LINE = /^CONNECT ([\x21-\x7e]+) HTTP\/1\.[01]$/;

/**
 * What the bytes received so far on a new connection are. `readsBareLineEnds`: the connection began in audit mode, whose
 * requests may end their lines in a bare LF; a CONNECT head that does (the bytes before its first CRLF CRLF, or all of
 * them while there is none: a head ended by `\n\n` is followed by the tunnel's bytes) is left to the request reader,
 * whose llhttp reads it by the same rules as any request. Refused here until 2026-12-03, in audit mode too.
 */
export function parseConnectHead(bytes: Buffer, readsBareLineEnds = false): ConnectHead {
  const sniffed = Math.min(bytes.length, METHOD.length);
  if (bytes.compare(METHOD, 0, sniffed, 0, sniffed) !== 0) return OTHER;
  const end = bytes.indexOf(HEAD_END);
  if (readsBareLineEnds && hasBareLineEnd(end === -1 ? bytes : bytes.subarray(0, end + HEAD_END.length))) return BARE_LINE_ENDS;
  if (end === -1) {
    if (bytes.length >= MAX_CONNECT_HEAD_BYTES) return { kind: 'malformed', code: 'HPE_HEADER_OVERFLOW' };
    // A line ended by a bare LF is refused at once, as llhttp does, not waited on until the head timeout.
    return hasBareLf(bytes) ? { kind: 'malformed', code: 'HPE_CR_EXPECTED' } : INCOMPLETE;
  }
  const headBytes = end + HEAD_END.length;
  if (headBytes > MAX_CONNECT_HEAD_BYTES) return { kind: 'malformed', code: 'HPE_HEADER_OVERFLOW' };
  const lines = bytes.toString('latin1', 0, end).split('\r\n');
  const requestLine = REQUEST_LINE.exec(lines[0]!);
  if (!requestLine) return { kind: 'malformed', code: 'HPE_INVALID_REQUEST_LINE' };
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    // No obs-fold (a line starting with white space) and no white space before the colon (RFC 9112 5.1).
    if (colon <= 0 || !TOKEN.test(line.slice(0, colon))) return { kind: 'malformed', code: 'HPE_INVALID_HEADER_TOKEN' };
    if (!FIELD_VALUE.test(line.slice(colon + 1))) return { kind: 'malformed', code: 'HPE_INVALID_HEADER_TOKEN' };
  }
  return { kind: 'connect', target: requestLine[1]!, headBytes };
}

/** A bare LF, or a CR followed by another byte than LF (llhttp, reading bare line ends, takes a lone CR for some). */
function hasBareLineEnd(bytes: Buffer): boolean {
  if (hasBareLf(bytes)) return true;
  for (let cr = bytes.indexOf(0x0d); cr !== -1 && cr + 1 < bytes.length; cr = bytes.indexOf(0x0d, cr + 1)) if (bytes[cr + 1] !== 0x0a) return true;
  return false;
}

function hasBareLf(bytes: Buffer): boolean {
  for (let lf = bytes.indexOf(0x0a); lf !== -1; lf = bytes.indexOf(0x0a, lf + 1)) if (lf === 0 || bytes[lf - 1] !== 0x0d) return true;
  return false;
}
