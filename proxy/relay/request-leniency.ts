import type { Mode } from '../../policy/index.js';
import { HTTPParser } from './llhttp.js';

/**
 * What the request reader's parser (llhttp) accepts beyond its strict grammar on a connection that began in audit mode:
 * lines ended by a bare LF (`GET / HTTP/1.1\nHost: x\n\n`, hand-written clients, `printf ... | nc`), which nginx and
 * Python's http.server answer (RFC 9112 2.2 lets a recipient take a lone LF for a line end; Apache refuses them).
 * Refused 400 in audit mode too until 2026-12-03: such a job broke under egress-guard. Safe to read, in audit mode: each
 * request goes upstream as the forwarder writes it (its own head, CRLF; a chunked body re-framed), so the server gets
 * the request its decision event names, however its lines ended, and nothing the reader did not read as one.
 *
 * llhttp 9 (node 20's 9.3, unchanged in 9.4) needs both flags: with the first alone, a bare LF ending the request line
 * or a chunk size leaves it waiting for a CR's LF, and refuses the next line. With both, an LF right after that bare
 * LF is still taken for the CR's: a blank line there is eaten (request-reader.ts `blankLineEaten` after a request
 * line, last-chunk-blank-line.ts after a chunked body's last chunk). The second also takes a lone CR for the end of
 * the request line, of the head or of a chunk size (no server does); a CR anywhere in a header line is still refused,
 * and what goes upstream is CRLF.
 *
 * Still refused in audit mode, each a way for servers to read one message two ways (a request smuggled past the
 * decision): Content-Length with Transfer-Encoding, a Transfer-Encoding not ending in chunked, chunk data without its
 * line end, bytes after `close` (never read: RFC 9112 9.6), and llhttp's lenient headers (a space before the colon,
 * obs-fold, control bytes in a value, which nginx or http.server take). So are an HTTP version llhttp does not know
 * (HTTP/1.2, which all three answer: the reader's rules, Host required of HTTP/1.1, are written for the versions it
 * knows) and spaces after a chunk size (nginx and Apache take them; no client is known to send them). Block mode stays
 * strict: a 400 fails closed.
 */
export const AUDIT_MODE_LENIENCY = HTTPParser.kLenientOptionalCRBeforeLF | HTTPParser.kLenientOptionalLFAfterCR;

/**
 * The lenient flags for the requests of a connection beginning now under a policy of `mode`, and for their responses
 * (upstream-connection.ts: a server answering with bare line ends, which curl and Python take, was a 502 until
 * 2026-12-03; block mode keeps responses strict, its framing read by one rule: docs/policy.md). Read once, at the
 * connection's start: a policy reloaded in between applies to its later requests' decisions, not to how it is read.
 */
export function requestLeniency(mode: Mode): number {
  return mode === 'audit' ? AUDIT_MODE_LENIENCY : HTTPParser.kLenientNone;
}
