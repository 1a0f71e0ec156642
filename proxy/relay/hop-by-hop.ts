const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'upgrade']);

/**
 * Headers that frame or address the message. A client may list any header in Connection, but removing one
 * of these would let a body be read upstream as a second request (request smuggling past the decision).
 */
const NEVER_STRIPPED = new Set(['content-length', 'transfer-encoding', 'host']);

/** The headers a Connection header's value names, lower-cased, beyond the hop-by-hop ones (never one of NEVER_STRIPPED). */
function addNamed(value: string, named: Set<string> | undefined): Set<string> | undefined {
  // The usual value names only a hop-by-hop header: nothing to split.
  if (value === 'keep-alive' || value === 'Keep-Alive') return named;
  for (const token of value.split(',')) {
    const name = token.trim().toLowerCase();
    if (name && !HOP_BY_HOP.has(name) && !NEVER_STRIPPED.has(name)) (named ??= new Set()).add(name);
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
  let named: Set<string> | undefined;
  let out: string[] = [];
  let hostWritten = options.host === undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    if (lower === 'connection') named = addNamed(raw[i + 1]!, named);
    if (HOP_BY_HOP.has(lower) || lower === options.drop) continue;
    if (lower === 'host' && options.host !== undefined) {
      if (!hostWritten) out.push(name, options.host);
      hostWritten = true;
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  // Only when Connection names more than hop-by-hop headers (`close` counts: a header of that name goes too).
  if (named) {
    const kept: string[] = [];
    for (let i = 0; i + 1 < out.length; i += 2) if (!named.has(out[i]!.toLowerCase())) kept.push(out[i]!, out[i + 1]!);
    out = kept;
  }
  if (!hostWritten) out.unshift('Host', options.host!);
  if (options.add) out.push(...options.add);
  return out;
}
