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
  /** When an idle connection is no longer reused (performance.now()): the server's Keep-Alive hint, less a second. */
  staleAt?: number;
  /** Taken out of the pool dead (closed or closing while idle): neither idle nor busy. */
  gone?: boolean;
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
  /**
   * Connections per key with a request on them (or connecting) at most; more requests wait for one, in order (as
   * `http.Agent`'s maxSockets). Unbounded when absent.
   */
  maxBusyPerKey?: number;
}

/** A request waiting for a connection to its key (the key at its limit of busy connections). */
interface Waiting {
  readonly req: http.ClientRequest;
  readonly connect: (options: ConnectOptions) => Duplex;
  readonly options: ConnectOptions;
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
  /** Connections per key that are open and not idle. */
  private readonly busy = new Map<string, number>();
  private readonly waiting = new Map<string, Waiting[]>();

  constructor(private readonly options: UpstreamPoolOptions) {}

  /**
   * Give `req` an idle connection to `key`, or a new one from `connect`: an agent's `addRequest`, which node's
   * client calls for every request (the agent's `timeout` option makes node's client relay the socket's
   * 'timeout' to the request).
   */
  assign(req: http.ClientRequest, key: string, connect: (options: ConnectOptions) => Duplex, options: ConnectOptions): void {
    const socket = this.take(key);
    if (socket) return req.onSocket(socket as unknown as net.Socket);
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
   * request with that error, as node's agent passes a failed connect: thrown here it would escape http.request (a
   * 400 for the client) or, for a waiting request, a socket's 'close' listener (the process).
   */
  private open(req: http.ClientRequest, key: string, connect: (options: ConnectOptions) => Duplex, options: ConnectOptions): void {
    let socket: Tracked;
    try {
      socket = connect(options) as Tracked;
    } catch (err) {
      return (req.onSocket as (socket: net.Socket | undefined, err: Error) => void)(undefined, err as Error);
    }
    req.onSocket(this.adopt(socket, key) as unknown as net.Socket);
  }

  /** The next waiting request for `key` still wanted (one its client gave up on is skipped). */
  private nextWaiting(key: string): Waiting | undefined {
    const queue = this.waiting.get(key);
    while (queue && queue.length > 0) {
      const next = queue.shift()!;
      if (!next.req.destroyed) return next;
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
    const next = this.nextWaiting(entry.key);
    if (next) {
      // Straight to a waiting request: it stays busy (and referenced), with the whole idle timeout.
      if (socket.timeout !== this.options.idleTimeoutMs) socket.setTimeout(this.options.idleTimeoutMs);
      return next.req.onSocket(socket as unknown as net.Socket);
    }
    this.unbusy(entry.key);
    // Node's client turned the socket's timeout off as the response ended: idle connections are bounded too. The
    // server's shorter Keep-Alive hint is a time after which the connection is not reused (the server closes it
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
