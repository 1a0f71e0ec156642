import ipaddr from 'ipaddr.js';
import type { Address } from './host.js';

const GLOBAL_UNICAST_V6 = ipaddr.parseCIDR('2000::/3');

export interface AddressClass {
  /** ipaddr.js range name of the address, or of the IPv4 address it embeds. */
  range: string;
  /** Public unicast: a host name may resolve to it without a trusted-ranges entry. */
  publicUnicast: boolean;
  /** The IPv4 address an IPv6 transition form carries (mapped, NAT64, 6to4, Teredo, SIIT). */
  embedded?: ipaddr.IPv4;
}

function ipv4FromBytes(bytes: number[]): ipaddr.IPv4 {
  return new ipaddr.IPv4(bytes.slice(0, 4));
}

/** The IPv4 address that an IPv6 transition address embeds, if any. */
export function embeddedIPv4(ip: ipaddr.IPv6): ipaddr.IPv4 | undefined {
  const bytes = ip.toByteArray();
  switch (ip.range()) {
    case 'ipv4Mapped':
    case 'rfc6145':
    case 'rfc6052':
      return ipv4FromBytes(bytes.slice(12, 16));
    case '6to4':
      return ipv4FromBytes(bytes.slice(2, 6));
    case 'teredo':
      // Teredo carries the client's IPv4 address obfuscated (bit-inverted) in the last 32 bits.
      return ipv4FromBytes(bytes.slice(12, 16).map((b) => b ^ 0xff));
    default:
      return undefined;
  }
}

/** Classify a resolved address: loopback, private, link-local, CGNAT, multicast, reserved... or public. */
export function classifyAddress(ip: Address): AddressClass {
  if (ip.kind() === 'ipv6') {
    const embedded = embeddedIPv4(ip as ipaddr.IPv6);
    if (embedded) {
      const inner = embedded.range();
      return { range: inner === 'unicast' ? (ip as ipaddr.IPv6).range() : inner, publicUnicast: inner === 'unicast', embedded };
    }
  }
  const range = ip.range();
  // ipaddr.js calls all unlisted IPv6 "unicast", but only 2000::/3 is allocated for global unicast;
  // the rest (IPv4-compatible ::a.b.c.d, 4000::/2, e000::/4, ...) is reserved by the IETF.
  if (range === 'unicast' && ip.kind() === 'ipv6' && !ip.match(GLOBAL_UNICAST_V6)) return { range: 'reserved', publicUnicast: false };
  return { range, publicUnicast: range === 'unicast' };
}
