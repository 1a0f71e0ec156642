import ipaddr from 'ipaddr.js';

export type Address = ipaddr.IPv4 | ipaddr.IPv6;

/** A destination host as a client wrote it, canonicalised the way WHATWG URL and inet_aton read it. */
export type CanonicalHost = { type: 'name'; name: string } | { type: 'ip'; ip: Address; text: string } | { type: 'invalid'; why: string };

/** A canonical host as events and decisions spell it (the name, or the address text); undefined when it is invalid. */
export function canonicalText(canonical: CanonicalHost): string | undefined {
  return canonical.type === 'name' ? canonical.name : canonical.type === 'ip' ? canonical.text : undefined;
}

const NAME_LABEL = /^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$/;

/** URL syntax, whitespace and controls: WHATWG parsing would quietly turn `a.com@evil.test` into another host. */
export const NOT_IN_A_HOST = /[/\\?#@%\s\x00-\x1f\x7f]/;

/**
 * Canonicalise a host: lowercase, trailing dot removed, IDN to punycode, every numeric IPv4 spelling
 * (2130706433, 0x7f000001, 127.1, 0177.0.0.1) and bracketed or bare IPv6 to its address. An IPv4-mapped IPv6
 * address (`[::ffff:a.b.c.d]`, in any of its spellings) is its IPv4 address: a socket connects to that very address,
 * so it is decided, matched against the destination and named in events as a.b.c.d. Until 2026-12-03 it stayed
 * IPv6, and a redirected request with `Host: [::ffff:a.b.c.d]` to a.b.c.d was refused as naming another address.
 */
export function canonicalHost(input: string): CanonicalHost {
  let host = input;
  if (NOT_IN_A_HOST.test(host)) return { type: 'invalid', why: `"${printable(input)}" is not a host name or address` };
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  if (host.includes(':')) {
    if (!ipaddr.IPv6.isValid(host)) return { type: 'invalid', why: `"${input}" is not a valid IPv6 address` };
    const ip = unmapped(parseIPv6(host));
    return { type: 'ip', ip, text: ip.toString() };
  }
  host = host.replace(/\.+$/, '');
  if (host === '') return { type: 'invalid', why: 'empty host' };
  const ascii = host.toLowerCase();
  // Fast path for plain ASCII names (the common case, on every DNS query): no URL parsing needed unless
  // the last label is numeric, which WHATWG reads as an IPv4 address.
  if (PLAIN_NAME.test(ascii) && !NUMERIC_LABEL.test(ascii.slice(ascii.lastIndexOf('.') + 1))) return checkLabels(ascii, input);
  let parsed: string;
  try {
    parsed = new URL(`http://${host}/`).hostname;
  } catch {
    return { type: 'invalid', why: `"${input}" is not a valid host name or address` };
  }
  if (ipaddr.IPv4.isValidFourPartDecimal(parsed)) {
    const ip = ipaddr.IPv4.parse(parsed);
    return { type: 'ip', ip, text: ip.toString() };
  }
  return checkLabels(parsed, input);
}

const PLAIN_NAME = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;
const NUMERIC_LABEL = /^(\d+|0x[0-9a-f]*)$/;

function checkLabels(name: string, input: string): CanonicalHost {
  if (name.length > 253) return { type: 'invalid', why: 'host name longer than 253 characters' };
  for (const label of name.split('.')) {
    if (label.length === 0) return { type: 'invalid', why: `"${input}" has an empty label` };
    if (label.length > 63) return { type: 'invalid', why: `"${input}" has a label longer than 63 characters` };
    if (!NAME_LABEL.test(label)) return { type: 'invalid', why: `"${input}" has an invalid label "${label}"` };
  }
  return { type: 'name', name };
}

function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 260);
}

/** Parse an address literal (no name resolution); IPv4-mapped IPv6 stays IPv6 here. */
export function parseAddress(text: string): Address | null {
  const t = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  // Without a colon it can only be IPv4: ipaddr.isValid then ipaddr.parse read such a text three times (IPv4.isValid
  // twice, then IPv4.parse), IPv4.parse reads it once and throws exactly where IPv4.isValid says false: a twentieth of
  // the main thread's instructions per tunnel went to these reads (docs/benchmark.md, "Issue 14, eighth round").
  if (!t.includes(':')) {
    try {
      return ipaddr.IPv4.parse(t);
    } catch {
      return null;
    }
  }
  return ipaddr.IPv6.isValid(t) ? parseIPv6(t) : null;
}

/** `::` then a dotted IPv4 address and nothing else (a zone aside): the deprecated IPv4-compatible spelling. */
const IPV4_COMPATIBLE = /^::[^:]*\./;

/**
 * An IPv6 address as inet_pton, WHATWG URL and so the socket read it. ipaddr.js reads `::a.b.c.d` (IPv4-compatible,
 * ::/96) as `::ffff:a.b.c.d` (IPv4-mapped): `CONNECT [::127.0.0.1]:80` was decided as 127.0.0.1 and connected there,
 * while `http://[::127.0.0.1]/` (URL writes it [::7f00:1]) was decided as ::7f00:1; one spelling, two addresses.
 * Until review43.
 */
export function parseIPv6(text: string): ipaddr.IPv6 {
  const ip = ipaddr.IPv6.parse(text);
  if (!IPV4_COMPATIBLE.test(text) || !ip.isIPv4MappedAddress()) return ip;
  const parts = ip.parts.slice();
  parts[5] = 0;
  const compatible = new ipaddr.IPv6(parts);
  if (ip.zoneId !== undefined) compatible.zoneId = ip.zoneId;
  return compatible;
}

/** The IPv4 address inside an IPv4-mapped IPv6 address, else the address itself. */
export function unmapped(ip: Address): Address {
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress()) return (ip as ipaddr.IPv6).toIPv4Address();
  return ip;
}
