import type { AddressInfo, Server } from 'node:net';

/** Where a listener binds: an address (IPv6 without brackets) and a port (0: any free one). */
export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * The one way a listener starts: listen, and resolve with the bound address; rejects with a message
 * naming the setting (`listen`, `admin-listen`, ...) so the user knows which one to change.
 */
export function listen(server: Server, address: ListenAddress, setting: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => reject(new Error(`${setting}: cannot listen on ${address.host}:${address.port}: ${err.code ?? err.message}`));
    server.once('error', onError);
    server.listen(address.port, address.host, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}
