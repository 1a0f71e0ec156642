import type { PeekResult } from '../../net/sniffing/first-bytes.js';

/**
 * What a redirected connection's first bytes say it is, and so which handler takes it:
 * - `tls`: a ClientHello (its SNI, if readable, is the name decided on; an SSLv2-format one has none);
 * - `http`: an HTTP/1 request head (every request on the connection is decided on its own);
 * - `opaque`: bytes that are neither (ssh, a database protocol), or a head the client never finished (a first line
 *   still going: `ping` waiting for its answer would wait for the request reader's idle timeout), or a request line
 *   without a version (HTTP/0.9's `GET /x`, which the request reader would refuse and a server may serve): the last two
 *   are decided on the raw address (decision/attribution.ts);
 * - `silent`: nothing within the peek (server-speaks-first protocols): decided by DNS attribution now, and its
 *   first bytes checked when they come.
 */
export type Traffic = 'tls' | 'http' | 'opaque' | 'silent';

export function classify(peek: PeekResult): Traffic {
  if (peek.protocol === 'tls') return 'tls';
  if (peek.protocol === 'http') return peek.unfinishedLine ? 'opaque' : 'http';
  return peek.bytes === 0 ? 'silent' : 'opaque';
}
