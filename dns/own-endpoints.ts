import net from 'node:net';
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';
import { ipv6OnlyFor } from '../net/listen.js';
import type { Upstream } from './upstream.js';

/** A DNS listen address of egress-guard (setting dns-listen). */
export interface ListenEndpoint {
  host: string;
  port: number;
}

/** The addresses of this network namespace's interfaces (loopback's included), as normaliseAddress spells them. */
export function localInterfaceAddresses(): Set<string> {
  const addresses = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const entry of list ?? []) addresses.add(normaliseAddress(entry.address.split('%')[0]!));
  return addresses;
}

/** One spelling per address (ipaddr.js's normalised form; an IPv4-mapped IPv6 address as its IPv4 one). */
export function normaliseAddress(address: string): string {
  return ipaddr.isValid(address) ? ipaddr.process(address).toNormalizedString() : address;
}

/**
 * Whether a query sent to `upstream` would come back to egress-guard's own listener at `listen`: the same address and
 * port, or, for a wildcard listener (0.0.0.0, ::), the same port on an address of this host (127.0.0.0/8, ::1, an
 * interface's; `localAddresses` as normaliseAddress spells them). Such an upstream would have every forwarded query decided again, and forwarded again.
 * `siblings`: the other addresses of dns-listen, which decide whether `::` takes IPv4 too (net/listen.ts ipv6OnlyFor).
 */
export function reachesListener(upstream: Upstream, listen: ListenEndpoint, localAddresses: ReadonlySet<string>, siblings: readonly ListenEndpoint[] = []): boolean {
  if (upstream.port !== listen.port) return false;
  const host = normaliseAddress(upstream.host);
  if (listen.host === '0.0.0.0' || listen.host === '::') {
    // `0.0.0.0` takes IPv4 only; `::` both families (dual stack), but IPv6 only beside an IPv4 address with its port
    // (an IPv4-mapped upstream is IPv4 here, normaliseAddress).
    if (listen.host === '0.0.0.0' ? !net.isIPv4(host) : ipv6OnlyFor(listen, siblings) && !net.isIPv6(host)) return false;
    return localAddresses.has(host) || ipaddr.process(host).range() === 'loopback';
  }
  return host === normaliseAddress(listen.host);
}

/**
 * The upstreams that do not lead back to any of egress-guard's DNS listeners (`listens`: every address of
 * dns-listen, not only the one being started: with resolv.conf naming 127.0.0.1, the [::1]:53 listener would
 * forward to the 127.0.0.1:53 one, which decides the same query a second time), and those left out.
 */
export function withoutOwnListeners(
  upstreams: readonly Upstream[],
  listens: readonly ListenEndpoint[],
  localAddresses: ReadonlySet<string> = localInterfaceAddresses(),
): { kept: Upstream[]; dropped: Upstream[] } {
  const kept: Upstream[] = [];
  const dropped: Upstream[] = [];
  for (const upstream of upstreams) (listens.some((listen) => reachesListener(upstream, listen, localAddresses, listens)) ? dropped : kept).push(upstream);
  return { kept, dropped };
}
