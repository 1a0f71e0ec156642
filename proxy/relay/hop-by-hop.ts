import type { IncomingHttpHeaders } from 'node:http';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'upgrade'];

/**
 * Headers that frame or address the message. A client may list any header in Connection, but removing one
 * of these would let a body be read upstream as a second request (request smuggling past the decision).
 */
const NEVER_STRIPPED = new Set(['content-length', 'transfer-encoding', 'host']);

/** Remove hop-by-hop headers (RFC 9110 7.6.1), including any the Connection header names. */
export function stripHopByHop(headers: IncomingHttpHeaders): void {
  const named = String(headers.connection ?? '')
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
  for (const name of [...HOP_BY_HOP, ...named]) {
    if (!NEVER_STRIPPED.has(name) && name in headers) delete headers[name];
  }
}
