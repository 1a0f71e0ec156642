import { LRUCache } from 'lru-cache';

/** The key a host name is stored under: lowercase, no trailing dot. */
export function nameKey(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/**
 * What egress-guard has learnt about names and addresses: name -> addresses (so the proxy reuses
 * answers the DNS server resolved) and address -> names (so a redirected connection with no SNI or Host
 * can be attributed to the name the job looked up). Bounded in entries; entries expire with their TTL, and each
 * name of an address with its own.
 */
export class AddressBook {
  private readonly byName: LRUCache<string, string[]>;
  /** address -> (name -> when that name's answer expires, Date.now() time). */
  private readonly byAddress: LRUCache<string, Map<string, number>>;

  constructor(options: { maxEntries?: number; maxTtlMs?: number } = {}) {
    const max = options.maxEntries ?? 10_000;
    const ttl = options.maxTtlMs ?? 3_600_000;
    this.byName = new LRUCache({ max, ttl, ttlAutopurge: false });
    this.byAddress = new LRUCache({ max, ttl, ttlAutopurge: false });
  }

  /** Record that `name` resolved to `addresses` for ttlMs (through egress-guard's own resolver). */
  record(name: string, addresses: readonly string[], ttlMs: number): void {
    const key = nameKey(name);
    if (addresses.length === 0) return;
    const ttl = Math.max(1, ttlMs);
    this.byName.set(key, [...addresses], { ttl });
    const now = Date.now();
    for (const address of addresses) {
      const names = this.byAddress.get(address) ?? new Map<string, number>();
      names.set(key, now + ttl);
      // Each name of an address lasts its own TTL, and the address as long as the longest-lived of them. Until hunt3 the
      // address took the TTL of the last name recorded for it, all of its names with it: allowed.test's address, shared
      // with a name of TTL 2 s, was no longer allowed.test's 2 s later (a git:// connection to it refused in block mode as
      // a raw address), and the other way round a name whose answer had expired stayed attributed to the address as long
      // as a later name kept it.
      let longest = ttl;
      for (const [other, expires] of names) {
        if (expires <= now) names.delete(other);
        else longest = Math.max(longest, expires - now);
      }
      this.byAddress.set(address, names, { ttl: longest });
    }
  }

  addressesOf(name: string): string[] | undefined {
    return this.byName.get(nameKey(name));
  }

  namesOf(address: string): string[] {
    const names = this.byAddress.get(address);
    if (names === undefined) return [];
    const now = Date.now();
    const current: string[] = [];
    for (const [name, expires] of names) if (expires > now) current.push(name);
    return current;
  }

  /** True when `name` resolved to `address` through egress-guard (the SNI/destination agreement check). */
  resolvedTo(name: string, address: string): boolean {
    return (this.byAddress.get(address)?.get(nameKey(name)) ?? 0) > Date.now();
  }
}
