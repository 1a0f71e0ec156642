import ipaddr from 'ipaddr.js';
import { type Address, parseIPv6, unmapped } from './host.js';

export interface CidrRule {
  /** The entry as written, for events and errors. */
  source: string;
  range: [Address, number];
  origin: Origin;
}

export interface Origin {
  file: string;
  line: number;
}

/** Parse "10.0.0.0/8", "2001:db8::/32" or a single address; null if not a range. */
export function parseCidr(text: string): [Address, number] | null {
  const t = text.trim();
  try {
    if (t.includes('/')) {
      const [ip, bits] = ipaddr.parseCIDR(t);
      // `::a.b.c.d/n` as the IPv4-compatible range it names (parseIPv6), not the mapped one ipaddr.js reads.
      return ip.kind() === 'ipv6' ? [parseIPv6(t.slice(0, t.lastIndexOf('/'))), bits] : [ip, bits];
    }
    if (ipaddr.isValid(t)) {
      const ip = t.includes(':') ? parseIPv6(t) : ipaddr.parse(t);
      return [ip, ip.kind() === 'ipv4' ? 32 : 128];
    }
  } catch {
    return null;
  }
  return null;
}

/**
 * The first rule whose range holds `address`. An IPv4-mapped IPv6 address is its IPv4 address (policy/host.ts
 * canonicalHost), so it is matched as that IPv4 address, by IPv4 ranges and by ranges written in mapped form
 * (`::ffff:10.0.0.0/104` holds 10.1.2.3 and ::ffff:10.1.2.3 alike), and by no other IPv6 range: a wider one (`::/0`)
 * is read as the IPv6 it names. Until 2026-12-03 a mapped address was matched by both readings and an IPv4 address by
 * one, so `allowed-ips: ::/0` let `http://[::ffff:a.b.c.d]/` through where `http://a.b.c.d/` was refused.
 */
export function findCidr(rules: readonly CidrRule[], address: Address): CidrRule | undefined {
  const ip = unmapped(address);
  return rules.find(({ range }) => {
    const [base, bits] = range;
    if (base.kind() === ip.kind()) return ip.match(range);
    if (ip.kind() !== 'ipv4' || bits < 96 || !(base as ipaddr.IPv6).isIPv4MappedAddress()) return false;
    return ip.match((base as ipaddr.IPv6).toIPv4Address(), bits - 96);
  });
}
