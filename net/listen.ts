import { isIPv4, isIPv6, type AddressInfo, type Server } from 'node:net';

/** Where a listener binds: an address (IPv6 without brackets) and a port (0: any free one). */
export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * Whether an IPv6 listen address binds IPv6 only (IPV6_V6ONLY): where the same list (`siblings`, the address itself
 * may be among them) has an IPv4 address with the same port. `0.0.0.0:P [::]:P` are then two listeners side by side
 * (the GitHub Action listens on both for containers on Docker bridges, each family redirected to its own), as
 * nginx's are; `[::]:P` taking IPv4 too would make the IPv4 one fail with EADDRINUSE. Alone, `[::]:P` takes both
 * families (Linux's default, net.ipv6.bindv6only=0), as it always has: a setting that listens on `[::]:P` for
 * IPv4 clients too (the explicit proxy reached over a Docker network, the collector, the DNS server) keeps working.
 * (For a while on 2026-12-02 every IPv6 address bound IPv6 only, and such a listener refused every IPv4 client.)
 */
export function ipv6OnlyFor(address: ListenAddress, siblings: readonly ListenAddress[] = []): boolean {
  return isIPv6(address.host) && address.port !== 0 && siblings.some((other) => isIPv4(other.host) && other.port === address.port);
}

/**
 * The one way a TCP listener starts: listen, and resolve with the bound address; rejects with a message
 * naming the setting (`listen`, `admin-listen`, ...) so the user knows which one to change. `siblings`: the other
 * addresses of the same setting (ipv6OnlyFor).
 */
export function listen(server: Server, address: ListenAddress, setting: string, siblings: readonly ListenAddress[] = []): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(new Error(`${setting}: cannot listen on ${address.host}:${address.port}: ${err.code ?? err.message}`));
    server.once('error', onError);
    server.listen({ port: address.port, host: address.host, ipv6Only: ipv6OnlyFor(address, siblings) }, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}
