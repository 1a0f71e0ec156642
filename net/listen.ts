import { isIPv6, type AddressInfo, type Server } from 'node:net';

/** Where a listener binds: an address (IPv6 without brackets) and a port (0: any free one). */
export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * An IPv6 address binds IPv6 only (IPV6_V6ONLY), whatever the host's `net.ipv6.bindv6only`: `[::]:P` and
 * `0.0.0.0:P` are two listeners that can run side by side (the GitHub Action listens on both for containers on
 * Docker bridges, each family redirected to its own), as nginx does. Before 2026-12-02 `[::]` also took IPv4.
 */
export function ipv6OnlyFor(host: string): boolean {
  return isIPv6(host);
}

/**
 * The one way a TCP listener starts: listen, and resolve with the bound address; rejects with a message
 * naming the setting (`listen`, `admin-listen`, ...) so the user knows which one to change.
 */
export function listen(server: Server, address: ListenAddress, setting: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(new Error(`${setting}: cannot listen on ${address.host}:${address.port}: ${err.code ?? err.message}`));
    server.once('error', onError);
    server.listen({ port: address.port, host: address.host, ipv6Only: ipv6OnlyFor(address.host) }, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}
