import { LRUCache } from 'lru-cache';

/** The key a host name is stored under: lowercase, no trailing dot. */
export function nameKey(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

/**
 * What egress-guard has learnt about names and addresses: name -> addresses (so the proxy reuses
 * answers the DNS server resolved) and address -> names (so a redirected connection with no SNI or Host
 * can be attributed to the name the job looked up). Bounded in entries; entries expire with their TTL.
 */
export class AddressBook {
  private readonly byName: LRUCache<string, string[]>;
  private readonly byAddress: LRUCache<string, Set<string>>;

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
    this.byName.set(key, [...addresses], { ttl: Math.max(1, ttlMs) });
    for (const address of addresses) {
      const names = this.byAddress.get(address) ?? new Set<string>();
      names.add(key);
      // An address stays attributable at least as long as any name that points to it.
      this.byAddress.set(address, names, { ttl: Math.max(1, ttlMs) });
    }
  }

  addressesOf(name: string): string[] | undefined {
    return this.byName.get(nameKey(name));
  }

  namesOf(address: string): string[] {
    return [...(this.byAddress.get(address) ?? [])];
  }

  /** True when `name` resolved to `address` through egress-guard (the SNI/destination agreement check). */
  resolvedTo(name: string, address: string): boolean {
    return this.byAddress.get(address)?.has(nameKey(name)) ?? false;
  }
}
