import type net from 'node:net';

/**
 * A plain tunnel's own upstream (a plain CONNECT tunnel's, or a silent redirected client's), connected to its checked
 * address and never used, kept for the connection's first request so that the server is not connected to twice
 * (issue 14). Who reads it is that request's to say: a plain request sends it through the forwarder's pool
 * (http-forwarder.ts), a WebSocket upgrade relays on it (inspected-upgrade.ts, transparent/http.ts). Until then it is
 * watched, not read as the pool reads its connections: wired to the pool at once (until 2026-12-03), it could carry no
 * upgrade, which closed it and connected again. A FIN, bytes or an error before a request close it (a server that
 * speaks first is answering nothing we sent), as the pool's reading did.
 */
export class ReservedUpstream {
  private readonly drop = (): void => {
    this.socket.destroy();
  };

  private constructor(
    /** `address:port`, as the forwarder's pool keys its plain connections. */
    private readonly key: string,
    private readonly socket: net.Socket,
  ) {
    socket.on('error', this.drop);
    socket.on('end', this.drop);
    socket.on('data', this.drop);
    // A socket a splice handed over is left paused: bytes or a FIN would go unseen.
    socket.resume();
  }

  /** Keep `socket`, connected to `address`:`port` and untouched, for a request to come. */
  static reserve(socket: net.Socket, address: string, port: number): ReservedUpstream {
    return new ReservedUpstream(`${address}:${port}`, socket);
  }

  /**
   * The socket, for a request to `address`:`port`: no longer watched, the caller's to read (at once: a socket left
   * flowing with no reader would lose what comes). To another address or port, or gone already: closed, undefined.
   */
  claim(address: string, port: number): net.Socket | undefined {
    if (this.socket.destroyed || this.key !== `${address}:${port}`) return void this.close();
    this.socket.off('error', this.drop);
    this.socket.off('end', this.drop);
    this.socket.off('data', this.drop);
    return this.socket;
  }

  /** No request takes it. */
  close(): void {
    this.socket.destroy();
  }
}

/**
 * A connection's reserved upstream, taken out of it once, by its first request (or its end): the caller claims it for
 * that request or closes it, and no later request finds it.
 */
export function takeReserved(connection: { reserved?: ReservedUpstream | undefined }): ReservedUpstream | undefined {
  const reserved = connection.reserved;
  connection.reserved = undefined;
  return reserved;
}
