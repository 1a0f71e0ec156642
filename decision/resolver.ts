import { promises as dns } from 'node:dns';
import { nameKey, type AddressBook } from './address-book.js';

export class ResolveError extends Error {
  constructor(
    message: string,
    /** `not-found` (NXDOMAIN/NODATA): 502; `timeout`: 504; `failed`: 502. */
    readonly kind: 'not-found' | 'timeout' | 'failed',
  ) {
    super(message);
  }
}

export interface ResolverOptions {
  /** name -> addresses overrides (--resolve), consulted first. */
  overrides: Map<string, string[]>;
  addressBook: AddressBook;
  timeoutMs?: number;
  /** Record answers this long in the address book (the system resolver gives no TTLs). */
  ttlMs?: number;
  /** Ask these DNS servers ("ip" or "ip:port") instead of the system resolver (dns-upstream). */
  servers?: string[];
  /**
   * Resolve with this instead of node's resolvers (whose sockets cannot carry a socket mark); errors with node's
   * codes (ENOTFOUND, ENODATA). The sidecar gives dns/'s own client when a socket mark is in use.
   */
  lookup?: (name: string) => Promise<string[]>;
}

async function lookupWith(resolver: dns.Resolver, name: string): Promise<string[]> {
  const [v4, v6] = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
  const addresses = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
  if (addresses.length > 0) return addresses;
  throw v4.status === 'rejected' ? v4.reason : v6.status === 'rejected' ? v6.reason : Object.assign(new Error('no address'), { code: 'ENODATA' });
}

/**
 * The proxy's own name resolution: overrides, then what the DNS server learnt (address book), then the
 * system resolver. Every answer is recorded in the address book so transparent connections can be attributed.
 */
export class Resolver {
  private readonly dnsResolver?: dns.Resolver;

  constructor(private readonly options: ResolverOptions) {
    if (!options.lookup && options.servers && options.servers.length > 0) {
      this.dnsResolver = new dns.Resolver({ timeout: options.timeoutMs ?? 10_000, tries: 2 });
      this.dnsResolver.setServers(options.servers);
    }
  }

  async resolve(name: string): Promise<string[]> {
    const key = nameKey(name);
    const override = this.options.overrides.get(key);
    if (override) {
      this.options.addressBook.record(key, override, this.options.ttlMs ?? 60_000);
      return override;
    }
    const known = this.options.addressBook.addressesOf(key);
    if (known) return known;
    const timeoutMs = this.options.timeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ResolveError(`resolving ${key} timed out after ${timeoutMs} ms`, 'timeout')), timeoutMs);
    });
    try {
      const lookup = this.options.lookup
        ? this.options.lookup(key)
        : this.dnsResolver
          ? lookupWith(this.dnsResolver, key)
          : dns.lookup(key, { all: true, verbatim: true }).then((answers) => answers.map((a) => a.address));
      const addresses = await Promise.race([lookup, timeout]);
      this.options.addressBook.record(key, addresses, this.options.ttlMs ?? 60_000);
      return addresses;
    } catch (err) {
      if (err instanceof ResolveError) throw err;
      this.dnsResolver?.cancel();
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA' || code === 'ENONAME') throw new ResolveError(`${key} does not resolve (${code})`, 'not-found');
      throw new ResolveError(`resolving ${key} failed: ${code ?? (err as Error).message}`, 'failed');
    } finally {
      clearTimeout(timer);
    }
  }
}
