import ipaddr from 'ipaddr.js';
import { type Address, unmapped } from './host.js';

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
    if (t.includes('/')) return ipaddr.parseCIDR(t);
    if (ipaddr.isValid(t)) {
      const ip = ipaddr.parse(t);
      return [ip, ip.kind() === 'ipv4' ? 32 : 128];
    }
  } catch {
    return null;
  }
  return null;
}

export function findCidr(rules: readonly CidrRule[], address: Address): CidrRule | undefined {
  const candidates = [address, unmapped(address)];
  return rules.find((rule) => candidates.some((ip) => ip.kind() === rule.range[0].kind() && ip.match(rule.range)));
}
