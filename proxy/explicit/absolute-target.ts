/** The parts of an absolute request target the explicit listener decides on, as WHATWG `URL` gives them. */
export interface AbsoluteTarget {
  /** `http:`, `https:`, ... */
  protocol: string;
  /** The host, canonical (lower case; IPv6 in brackets). */
  hostname: string;
  /** The port as written, without a default port; '' for the scheme's default. */
  port: string;
  /** hostname[:port], the port only when it is not the default. */
  host: string;
}

/**
 * `http://` and a host that `URL` would give back as written: lower-case labels of letters, digits and hyphens,
 * the last starting with a letter (so never an IPv4 address in any of its spellings, which `URL` rewrites),
 * no userinfo, an optional port without leading zeros; then the path, query, fragment or the end. Anything
 * else (upper case, `xn--` labels, addresses, `\`, percent signs, ...) takes `URL`'s own parse.
 */
const PLAIN_HTTP = /^http:\/\/((?:[a-z0-9-]+\.)*[a-z][a-z0-9-]*)(?::([1-9][0-9]{0,4}))?(?=[/?#]|$)/;

/** `URL`'s answer for the usual `http://name[:port]/...` without building a URL; undefined for anything else. */
export function plainHttpTarget(target: string): AbsoluteTarget | undefined {
  const m = PLAIN_HTTP.exec(target);
  if (!m) return undefined;
  const hostname = m[1]!;
  // Punycode labels are checked (and may be refused) by URL's IDNA step.
  if (hostname.includes('xn--')) return undefined;
  const written = m[2];
  if (written !== undefined && Number(written) > 65535) return undefined;
  const port = written === undefined || written === '80' ? '' : written;
  return { protocol: 'http:', hostname, port, host: port === '' ? hostname : `${hostname}:${port}` };
}

/** An absolute request target's parts; throws (as `new URL`) when it is not an absolute URI. */
export function parseAbsoluteTarget(target: string): AbsoluteTarget {
  const plain = plainHttpTarget(target);
  if (plain) return plain;
  const { protocol, hostname, port, host } = new URL(target);
  return { protocol, hostname, port, host };
}
