import type { AddressInfo, Server } from 'node:net';
import type { ListenAddress } from '../config/load-config.js';

/** Listen and resolve with the bound address; rejects with a message naming the setting on failure. */
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
