const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'upgrade']);

/**
 * Headers that frame or address the message. A client may list any header in Connection, but removing one
 * of these would let a body be read upstream as a second request (request smuggling past the decision).
 */
const NEVER_STRIPPED = new Set(['content-length', 'transfer-encoding', 'host']);

/** The headers a message's Connection headers name, lower-cased (never one of NEVER_STRIPPED), or undefined. */
function namedByConnection(raw: readonly string[]): Set<string> | undefined {
  let named: Set<string> | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.length !== 10 || raw[i]!.toLowerCase() !== 'connection') continue;
    for (const token of raw[i + 1]!.split(',')) {
      const name = token.trim().toLowerCase();
      if (name && !NEVER_STRIPPED.has(name)) (named ??= new Set()).add(name);
    }
  }
  return named;
}

export interface EndToEndOptions {
  /** The Host to send in place of the message's own (every Host line of it goes); added when it had none. */
  host?: string;
  /** One more header to leave out (lower-case), e.g. Transfer-Encoding towards an HTTP/1.0 client. */
  drop?: string;
  /** Headers to add at the end, as [name, value, ...]. */
  add?: readonly string[];
}

/**
 * A message's end-to-end headers, from its raw headers (`IncomingMessage.rawHeaders`: names as sent, repeated
 * headers kept apart) into a new flat [name, value, ...] list, which node's client and `writeHead` take as they
 * are: hop-by-hop headers (RFC 9110 7.6.1) and any the Connection header names are left out.
 */
export function endToEndHeaders(raw: readonly string[], options: EndToEndOptions = {}): string[] {
  const named = namedByConnection(raw);
  const out: string[] = [];
  let hostWritten = options.host === undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named?.has(lower) || lower === options.drop) continue;
    if (lower === 'host' && options.host !== undefined) {
      if (!hostWritten) out.push(name, options.host);
      hostWritten = true;
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  if (!hostWritten) out.unshift('Host', options.host!);
  if (options.add) out.push(...options.add);
  return out;
}
