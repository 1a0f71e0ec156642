import type http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';

/** A pooled upstream connection: node's socket (net or TLS) and what the pool keeps on it. */
type PooledSocket = Duplex & {
  setTimeout(ms: number): unknown;
  ref(): unknown;
  unref(): unknown;
  /** Node's client sets this to the request on the socket; cleared while idle (the old request is not kept alive). */
  _httpMessage?: { res?: { rawHeaders: readonly string[] } | null } | null;
  /** The socket's idle timeout now (node's `Socket.timeout`). */
  timeout?: number;
};

/**
 * How long the server says it keeps an idle connection (`Keep-Alive: timeout=N`, in seconds), less a second, in ms,
 * as node's agent reads it: reusing a connection the server is closing would fail a request (ECONNRESET, a 502).
 * undefined: the response gave no such hint.
 */
export function serverIdleLimitMs(raw: readonly string[] | undefined): number | undefined {
  if (!raw) return undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (raw[i]!.length !== 10 || raw[i]!.toLowerCase() !== 'keep-alive') continue;
    const seconds = /^\s*timeout=(\d+)/i.exec(raw[i + 1]!)?.[1];
    if (seconds !== undefined) return Math.max(0, Number(seconds) * 1000 - 1000);
  }
  return undefined;
}

interface PoolEntry {
  readonly key: string;
  idle: boolean;
}

const entryOf = Symbol('egress-guard upstream pool entry');
type Tracked = PooledSocket & { [entryOf]?: PoolEntry };

/** What node's client passes an agent's `addRequest`: host, port, server name, ... */
export type ConnectOptions = http.ClientRequestArgs & { servername?: string };

export interface UpstreamPoolOptions {
  /** The idle timeout of an upstream connection, waiting in the pool and with a request on it. */
  idleTimeoutMs: number;
  /** Idle connections kept per key; one more is closed. */
  maxIdlePerKey: number;
}

/**
 * Keep-alive upstream connections for node's client, in place of `http.Agent`'s own pool: an agent's
 * `addRequest` hands a request its socket (`takeOrCreate`), and the socket's 'free' (emitted by node's client
 * when a response ends on a connection that stays open) puts it back, most recently used first out.
 *
 * Why not the agent's pool: per request it builds its pool key three times, searches and splices the list of
 * busy sockets, adds and removes an 'error' listener and emits on the agent; here a request costs a key, a pop
 * and a push, and the listeners are added once per connection. Upstream framing stays node's (its client and
 * parser read every response); only the choice of connection is ours.
 */
export class UpstreamPool {
  private readonly idle = new Map<string, Tracked[]>();

  constructor(private readonly options: UpstreamPoolOptions) {}

  /**
   * Give `req` an idle connection to `key`, or a new one from `connect`: an agent's `addRequest`, which node's
   * client calls for every request (the agent's `timeout` option makes node's client relay the socket's
   * 'timeout' to the request).
   */
  assign(req: http.ClientRequest, key: string, connect: (options: ConnectOptions) => Duplex, options: ConnectOptions): void {
    const socket = this.take(key) ?? this.adopt(connect(options) as Tracked, key);
    req.onSocket(socket as unknown as net.Socket);
  }

  /** Idle connections held now (for tests). */
  idleCount(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  private take(key: string): Tracked | undefined {
    const list = this.idle.get(key);
    while (list && list.length > 0) {
      const socket = list.pop()!;
      const entry = socket[entryOf]!;
      entry.idle = false;
      if (socket.destroyed || !socket.writable) continue;
      // Idle, it may have waited under the server's shorter Keep-Alive hint: the request on it gets the whole idle
      // timeout, as on a new connection (else a slow answer on a reused connection is a 504 after the hint).
      if (socket.timeout !== this.options.idleTimeoutMs) socket.setTimeout(this.options.idleTimeoutMs);
      socket.ref();
      return socket;
    }
    return undefined;
  }

  /** The listeners a connection keeps for its whole life: it goes back to the pool, or away when it fails idle. */
  private adopt(socket: Tracked, key: string): Tracked {
    const entry: PoolEntry = { key, idle: false };
    socket[entryOf] = entry;
    socket.on('free', () => this.release(socket));
    // With a request on it, node's client has its own listeners (the request's 'error' and 'timeout'); idle, an
    // error or the idle timeout closes it here, and 'close' takes it out of the pool.
    socket.on('error', () => {
      if (entry.idle) socket.destroy();
    });
    socket.on('timeout', () => {
      if (entry.idle) socket.destroy();
    });
    socket.once('close', () => {
      if (!entry.idle) return;
      entry.idle = false;
      const list = this.idle.get(key);
      const at = list?.indexOf(socket) ?? -1;
      if (at !== -1) list!.splice(at, 1);
    });
    return socket;
  }

  /** Back to the pool when its response ended with the connection kept open (node emits 'free' only then). */
  private release(socket: Tracked): void {
    const entry = socket[entryOf]!;
    if (entry.idle) return;
    let list = this.idle.get(entry.key);
    if (!list) this.idle.set(entry.key, (list = []));
    const serverLimit = serverIdleLimitMs(socket._httpMessage?.res?.rawHeaders);
    if (socket.destroyed || !socket.writable || list.length >= this.options.maxIdlePerKey || serverLimit === 0) {
      socket.destroy();
      return;
    }
    socket._httpMessage = null;
    // Node's client turned the socket's timeout off as the response ended: idle connections are bounded too, and
    // closed before the server's own limit.
    const timeout = serverLimit !== undefined && serverLimit < this.options.idleTimeoutMs ? serverLimit : this.options.idleTimeoutMs;
    if (socket.timeout !== timeout) socket.setTimeout(timeout);
    // An idle connection does not keep the process alive (as the agent's own pool).
    socket.unref();
    entry.idle = true;
    list.push(socket);
  }
}
