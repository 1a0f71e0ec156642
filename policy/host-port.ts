/**
 * The one host:port parser and formatter. Every listener, event and message spells a destination through
 * these two, so an IPv6 address is bracketed the same way everywhere.
 */

/** Split a CONNECT authority or Host header into host and port; null when it is not host:port. */
export function parseAuthority(authority: string, defaultPort?: number): { host: string; port: number } | null {
  const m = /^\[([^\]]*)\](?::(\d{1,5}))?$/.exec(authority) ?? /^([^:\[\]]*)(?::(\d{1,5}))?$/.exec(authority);
  if (!m || !m[1]) return null;
  const port = m[2] !== undefined ? Number(m[2]) : defaultPort;
  if (port === undefined || port < 1 || port > 65535) return null;
  return { host: m[1], port };
}

/** host:port as people write it, IPv6 addresses bracketed. */
export function formatHostPort(host: string, port: number): string {
  return `${bracketed(host)}:${port}`;
}

/**
 * A Host header's value for host and port (RFC 9110 7.2): the host, an IPv6 address bracketed, and the port unless it
 * is the scheme's default. What the forwarders send upstream for the host they decided on.
 */
export function hostHeaderValue(host: string, port: number, defaultPort: number): string {
  return port === defaultPort ? bracketed(host) : formatHostPort(host, port);
}

/** A host as it stands in a URL or an authority: IPv6 addresses bracketed. */
export function bracketed(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
