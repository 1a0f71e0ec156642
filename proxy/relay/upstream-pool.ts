import type { Duplex } from 'node:stream';

/** A pooled upstream connection: node's socket (net or TLS) and what the pool keeps on it. */
export type PooledSocket = Duplex & {
  setTimeout(ms: number): unknown;
  ref(): unknown;
  unref(): unknown;
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
  /** When an idle connection is no longer reused (performance.now()): the server's Keep-Alive hint, less a second. */
  staleAt?: number;
  /** Taken out of the pool dead (closed or closing while idle): neither idle nor busy. */
  gone?: boolean;
}

const entryOf = Symbol('egress-guard upstream pool entry');
type Tracked = PooledSocket & { [entryOf]?: PoolEntry };

/** Where a new connection goes: the checked address, port and (TLS) the name to verify. */
export interface ConnectOptions {
  host: string;
  port: number;
  servername?: string;
}

/** What waits for an upstream connection: a forwarded request (or, in tests, node's client through an agent). */
export interface PoolRequest {
  /** Its client gave up: a waiting request is skipped. */
  readonly cancelled: boolean;
  /** Its connection, or the error that opening one threw. */
  give(socket: PooledSocket | undefined, err?: Error): void;
}

export interface UpstreamPoolOptions {
  /** The idle timeout of an upstream connection, waiting in the pool and with a request on it. */
  idleTimeoutMs: number;
  /** Idle connections kept per key; one more is closed. */
  maxIdlePerKey: number;
  /**
   * Connections per key with a request on them (or connecting) at most; more requests wait for one, in order (as
   * `http.Agent`'s maxSockets). Unbounded when absent.
   */
  maxBusyPerKey?: number;
}

/** A request waiting for a connection to its key (the key at its limit of busy connections). */
interface Waiting {
  readonly req: PoolRequest;
  readonly connect: (options: ConnectOptions) => Duplex;
  readonly options: ConnectOptions;
}

/**
 * Keep-alive upstream connections per key (checked address, port, server name): `acquire` hands a request an
 * idle connection or a new one, `release` (a response ended with the connection kept open) puts it back, most
 * recently used first out.
 *
 * Why not `http.Agent`'s pool: per request it builds its pool key three times, searches and splices the list of
 * busy sockets, adds and removes an 'error' listener and emits on the agent; here a request costs a key, a pop
 * and a push, and the listeners are added once per connection.
 */
export class UpstreamPool {
  private readonly idle = new Map<string, Tracked[]>();
  /** Connections per key that are open and not idle. */
  private readonly busy = new Map<string, number>();
  private readonly waiting = new Map<string, Waiting[]>();

  constructor(private readonly options: UpstreamPoolOptions) {}

  /**
   * Give `req` an idle connection to `key`, or a new one from `connect` (the request is waiting when `key` has its busy
   * limit). `ready`: a connection to `key` opened for this request already (a plain tunnel's, see reserved-upstream.ts):
   * taken where a new connection would be opened (no idle one, `key` under its busy limit), else closed. An idle one
   * goes first: taking `ready` then would leave it idle too, and a run of tunnels would fill the pool with connections
   * the server holds open for nothing (up to maxIdlePerKey, for the idle timeout).
   */
  acquire(req: PoolRequest, key: string, connect: (options: ConnectOptions) => Duplex, options: ConnectOptions, ready?: PooledSocket): void {
    const socket = this.take(key);
    if (ready) {
      if (!socket && !ready.destroyed && ready.writable && (this.busy.get(key) ?? 0) < (this.options.maxBusyPerKey ?? Infinity)) return req.give(this.adopt(ready, key));
      ready.destroy();
    }
    if (socket) return req.give(socket);
    // Without a bound, one client's pipelined requests would each open a connection at once (400 requests, 400).
    if ((this.busy.get(key) ?? 0) >= (this.options.maxBusyPerKey ?? Infinity)) {
      let queue = this.waiting.get(key);
      if (!queue) this.waiting.set(key, (queue = []));
      queue.push({ req, connect, options });
      return;
    }
    this.open(req, key, connect, options);
  }

  /**
   * A new connection for `req`. A connect that throws (a marked socket the kernel will not make: EPERM) fails the
   * request with that error: thrown here it would escape the forwarder (a 400 for the client) or, for a waiting
   * request, a socket's 'close' listener (the process).
   */
  private open(req: PoolRequest, key: string, connect: (options: ConnectOptions) => Duplex, options: ConnectOptions): void {
    let socket: Tracked;
    try {
      socket = connect(options) as Tracked;
    } catch (err) {
      return req.give(undefined, err as Error);
    }
    req.give(this.adopt(socket, key));
  }

  /** The next waiting request for `key` still wanted (one its client gave up on is skipped). */
  private nextWaiting(key: string): Waiting | undefined {
    const queue = this.waiting.get(key);
    while (queue && queue.length > 0) {
      const next = queue.shift()!;
      if (!next.req.cancelled) return next;
    }
    if (queue) this.waiting.delete(key);
    return undefined;
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
      if (socket.destroyed || !socket.writable || (entry.staleAt !== undefined && performance.now() >= entry.staleAt)) {
        // Its 'close' may still be to come: it must not count as a busy connection closing.
        entry.gone = true;
        socket.destroy();
        continue;
      }
      socket.ref();
      this.busy.set(key, (this.busy.get(key) ?? 0) + 1);
      return socket;
    }
    return undefined;
  }

  /** The listeners a connection keeps for its whole life: it goes back to the pool, or away when it fails idle. */
  private adopt(socket: Tracked, key: string): Tracked {
    const entry: PoolEntry = { key, idle: false };
    socket[entryOf] = entry;
    this.busy.set(key, (this.busy.get(key) ?? 0) + 1);
    // With a request on it, its user has its own listeners (the request's 'error' and 'timeout'); idle, an
    // error or the idle timeout closes it here, and 'close' takes it out of the pool.
    socket.on('error', () => {
      if (entry.idle) socket.destroy();
    });
    socket.on('timeout', () => {
      if (entry.idle) socket.destroy();
    });
    socket.once('close', () => {
      if (entry.gone) return;
      if (!entry.idle) return this.closedBusy(key);
      entry.idle = false;
      const list = this.idle.get(key);
      const at = list?.indexOf(socket) ?? -1;
      if (at !== -1) list!.splice(at, 1);
    });
    return socket;
  }

  /** A busy connection closed: one fewer for its key, and room for a waiting request on a new connection. */
  private closedBusy(key: string): void {
    this.unbusy(key);
    const next = this.nextWaiting(key);
    if (next) this.open(next.req, key, next.connect, next.options);
  }

  /** One busy connection fewer for `key` (it closed, or went idle). */
  private unbusy(key: string): void {
    const count = (this.busy.get(key) ?? 1) - 1;
    if (count > 0) this.busy.set(key, count);
    else this.busy.delete(key);
  }

  /**
   * Back to the pool: a response ended with the connection kept open (`responseHeaders`: its raw headers, for the
   * server's Keep-Alive hint), and the request before it was written whole.
   */
  release(pooled: PooledSocket, responseHeaders: readonly string[] | undefined): void {
    const socket = pooled as Tracked;
    const entry = socket[entryOf]!;
    if (entry.idle) return;
    let list = this.idle.get(entry.key);
    if (!list) this.idle.set(entry.key, (list = []));
    const serverLimit = serverIdleLimitMs(responseHeaders);
    if (socket.destroyed || !socket.writable || list.length >= this.options.maxIdlePerKey || serverLimit === 0) {
      socket.destroy();
      return;
    }
    const next = this.nextWaiting(entry.key);
    if (next) {
      // Straight to a waiting request: it stays busy (and referenced), with the whole idle timeout.
      if (socket.timeout !== this.options.idleTimeoutMs) socket.setTimeout(this.options.idleTimeoutMs);
      return next.req.give(socket);
    }
    this.unbusy(entry.key);
    // Idle connections are bounded by the same timeout (node's client, when it carried requests, turned the
    // socket's timeout off as a response ended; a user that leaves it on costs no call here). The server's shorter Keep-Alive hint is a time after which the connection is not reused (the server closes it
    // then), not its timeout: that would stay on the socket for the next request (a slow answer on a reused
    // connection was a 504 after the hint), and setting it back per request cost ~6% of a request's instructions.
    if (socket.timeout !== this.options.idleTimeoutMs) socket.setTimeout(this.options.idleTimeoutMs);
    entry.staleAt = serverLimit !== undefined && serverLimit < this.options.idleTimeoutMs ? performance.now() + serverLimit : undefined;
    // An idle connection does not keep the process alive (as the agent's own pool).
    socket.unref();
    entry.idle = true;
    list.push(socket);
  }
}
