import net from 'node:net';

export class UpstreamConnectError extends Error {
  constructor(
    message: string,
    readonly status: 502 | 504,
    readonly code: string,
  ) {
    super(message);
  }
}

/** Open a TCP connection to an exact, already-checked address, failing after timeoutMs with 504. */
export function connectUpstream(address: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: address, port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new UpstreamConnectError(`connecting to ${net.isIPv6(address) ? `[${address}]` : address}:${port} timed out after ${timeoutMs} ms`, 504, 'upstream-timeout'));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const code = err.code === 'ECONNREFUSED' ? 'upstream-refused' : `upstream-${(err.code ?? 'error').toLowerCase()}`;
      reject(new UpstreamConnectError(`connecting to ${address}:${port} failed: ${err.code ?? err.message}`, 502, code));
    });
  });
}
