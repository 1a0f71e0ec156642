import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import { ipv6OnlyFor } from '../net/listen.js';
import { BatchUdpSocket, batchUdpUnavailable, type Datagram } from '../net/udp-batch.js';
import { DnsResponder, clientText, type DnsClient, type DnsResponderOptions } from './responder.js';
import { withoutOwnListeners, type ListenEndpoint } from './own-endpoints.js';
import { parseUpstream } from './upstream.js';

export { parseResolvConf, readResolvConfUpstreams } from './resolv-conf.js';

/** The responder's options (policy, events, address book, cache, upstream timing), with upstreams as text. */
export interface DnsServerOptions extends Omit<DnsResponderOptions, 'upstreams'> {
  listen: { host: string; port: number };
  /** egress-guard's other DNS listen addresses (the rest of dns-listen): upstreams that lead to any of them are left out too. */
  otherListens?: readonly ListenEndpoint[];
  /** `ip`, `ip:port`, `[v6]`, `[v6]:port`; see readResolvConfUpstreams for the default. */
  upstreams: string[];
  /** Largest query accepted over TCP (default 4096 bytes; a query is one question and an OPT). */
  maxTcpQueryBytes?: number;
  /** TCP connections open at once (default 256); past it node closes a new one as it comes, with an at-capacity event. */
  maxTcpConnections?: number;
  /** A TCP connection that moves no byte for this long is closed (default 10 s); a frame must be whole within twice it of its first byte. */
  tcpIdleTimeoutMs?: number;
  /** Queries being answered at once, UDP and TCP together; past it UDP queries are dropped (default 2048). */
  maxInFlight?: number;
  /**
   * How UDP queries are read and answered (setting dns-udp): `batch` (default) through net/udp-batch.ts, many
   * datagrams per system call (Linux, the udp_batch addon; dgram where it is missing or the host is not an IP
   * literal), or `dgram`, node's dgram module, one datagram per callback and per send.
   */
  udp?: DnsUdpMode;
}

export type DnsUdpMode = 'batch' | 'dgram';

export interface DnsStats {
  cacheHits: number;
  cacheMisses: number;
  cacheEntries: number;
}

export interface DnsServer {
  /** The upstreams it forwards to (the configured ones less those that lead back to egress-guard). */
  upstreams: string[];
  udpAddress: { address: string; port: number };
  /** The UDP path in use (`batch` may have fallen back to `dgram`). */
  udp: DnsUdpMode;
  tcpAddress: { address: string; port: number };
  stats(): DnsStats;
  close(): Promise<void>;
}

const MAX_TCP_PIPELINE = 16;
/**
 * A frame must be whole within this many idle timeouts of its first byte being read (20 s by default). A query is at
 * most 4096 bytes, sent in one write by every resolver: a few segments, there in a round trip or a retransmission or
 * two. Twice the idle timeout leaves a slow link a whole idle period of slack, and is still a bound for a client that
 * trickles a byte just under every idle timeout, which the idle timeout alone let keep a partial frame, and a
 * connection, open for ever. Derived from the idle timeout (no setting of its own) so that it scales with it.
 */
const FRAME_DEADLINE_IDLE_TIMEOUTS = 2;

/**
 * dgram passes the address of every send through its `lookup` (dns.lookup by default, which answers an IP literal
 * on the next tick: a tick and a closure per answer). An answer goes back to the address its query came from, an
 * IP literal, so that is handed back at once; anything else (a host name to bind to) still goes to dns.lookup.
 */
function literalLookup(address: string, family: unknown, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const literal = net.isIP(address);
  if (literal !== 0) callback(null, address, literal);
  else dns.lookup(address, family as number, callback);
}

/** A bound UDP socket of either path, answering through the handler it was bound with. */
interface UdpEndpoint {
  mode: DnsUdpMode;
  address: string;
  port: number;
  close(): Promise<void>;
}

/** What the server does with one UDP query: the answer now, a promise of it (upstream), or null (drop). */
/** `cut`: the packet is the start of a datagram larger than the socket's read (readQuery refuses it). */
type UdpQueryHandler = (packet: Buffer, client: DnsClient, cut: boolean) => Buffer | null | Promise<Buffer | null>;

function bindDgram(host: string, port: number, ipv6Only: boolean): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4', ipv6Only, lookup: literalLookup as dgram.SocketOptions['lookup'] });
    socket.once('error', reject);
    socket.bind(port, host, () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}

async function bindDgramEndpoint(host: string, port: number, ipv6Only: boolean, handle: UdpQueryHandler, log: DnsServerOptions['events']['log']): Promise<UdpEndpoint> {
  const socket = await bindDgram(host, port, ipv6Only);
  let closed = false;
  const send = (response: Buffer | null, rinfo: dgram.RemoteInfo): void => {
    if (!response || closed) return;
    try {
      // No completion callback: it costs a tick per answer, and a failed send of a datagram (the client's port gone)
      // was only ever logged at debug level; the client retries, as for any lost datagram.
      socket.send(response, rinfo.port, rinfo.address);
    } catch (err) {
      log.warn({ err: (err as Error).message, client: clientText(rinfo) }, 'dns udp reply not sent');
    }
  };
  socket.on('message', (packet, rinfo) => {
    const response = handle(packet, rinfo, false);
    if (response instanceof Promise) void response.then((bytes) => send(bytes, rinfo));
    else send(response, rinfo);
  });
  socket.on('error', (err) => log.error({ err }, 'dns udp socket error'));
  const bound = socket.address();
  return {
    mode: 'dgram',
    address: bound.address,
    port: bound.port,
    close: () => {
      closed = true;
      return new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}

/** The batched path: a batch's immediate answers go out together with one sendmmsg; later ones one by one. */
function bindBatchEndpoint(host: string, port: number, ipv6Only: boolean, handle: UdpQueryHandler): UdpEndpoint {
  let socket: BatchUdpSocket | undefined = undefined;
  const onDatagram = (datagram: Datagram): Buffer | null => {
    // A datagram larger than a slot comes cut (datagram.truncated): the responder refuses it as malformed, reports it
    // and answers FORMERR, as the dgram path does for such a datagram read whole, so no query goes without its event.
    const response = handle(datagram.bytes, datagram, datagram.truncated);
    if (!(response instanceof Promise)) return response;
    void response.then((bytes) => {
      if (bytes) socket?.sendTo(bytes, datagram.address, datagram.port, datagram.local);
    });
    return null;
  };
  // The datagram's bytes are lent (a view of the receive buffer): the responder copies what it keeps past the call.
  socket = BatchUdpSocket.bind(host, port, onDatagram, undefined, 'lent', ipv6Only);
  const bound = socket;
  return {
    mode: 'batch',
    address: bound.address,
    port: bound.port,
    close: () => {
      bound.close();
      return Promise.resolve();
    },
  };
}

/**
 * The batched path where it can be used (else dgram, with the reason logged once per server). `ipv6Only`: net/listen.ts
 * ipv6OnlyFor, the same for UDP and TCP.
 */
function bindUdp(mode: DnsUdpMode, host: string, port: number, ipv6Only: boolean, handle: UdpQueryHandler, log: DnsServerOptions['events']['log']): Promise<UdpEndpoint> {
  if (mode === 'batch') {
    const why = net.isIP(host) === 0 ? `the listen host ${host} is not an IP literal` : batchUdpUnavailable();
    if (why === undefined) return Promise.resolve(bindBatchEndpoint(host, port, ipv6Only, handle));
    log.warn({ reason: why }, 'dns udp: batched path unavailable, using dgram');
  }
  return bindDgramEndpoint(host, port, ipv6Only, handle, log);
}

function listenTcp(server: net.Server, host: string, port: number, ipv6Only: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, ipv6Only }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

/**
 * Start the policy-enforcing DNS server on UDP and TCP (same port; with port 0 a free one is picked
 * for both). Bad configuration (an upstream that is not an address) throws here, at start.
 */
export async function startDnsServer(options: DnsServerOptions): Promise<DnsServer> {
  const log = options.events.log;
  const configured = options.upstreams.map(parseUpstream);
  const listens = [options.listen, ...(options.otherListens ?? [])];
  const { kept: upstreams, dropped } = withoutOwnListeners(configured, listens);
  // `[::]:P` beside an IPv4 address with port P in dns-listen binds IPv6 only, alone it takes IPv4 too (net/listen.ts).
  const ipv6Only = ipv6OnlyFor(options.listen, listens);
  if (dropped.length > 0)
    log.warn({ listen: options.listen, ignored: dropped.map((u) => u.text) }, "dns upstream that is one of egress-guard's own DNS listeners ignored (it would loop)");
  if (upstreams.length === 0) log.warn('no DNS upstream resolvers: allowed names will get SERVFAIL');

  const responder = new DnsResponder({ ...options, upstreams });
  const maxTcpQuery = options.maxTcpQueryBytes ?? 4096;
  const maxConnections = options.maxTcpConnections ?? 256;
  const idleMs = options.tcpIdleTimeoutMs ?? 10_000;
  const frameDeadlineMs = FRAME_DEADLINE_IDLE_TIMEOUTS * idleMs;
  const maxInFlight = options.maxInFlight ?? 2048;
  let inFlight = 0;
  let closed = false;

  const failed = (err: unknown, client: DnsClient): null => {
    // The responder does not throw on any input; this is a bug, not a bad packet.
    log.error({ err, client: clientText(client) }, 'dns query handling failed');
    return null;
  };
  /** The responder's answer, now or (a query that goes upstream) later; null drops the packet. Never throws nor rejects. */
  const answer = (packet: Buffer, client: DnsClient, transport: 'udp' | 'tcp', cut = false): Buffer | null | Promise<Buffer | null> => {
    let result: Buffer | null | Promise<Buffer | null>;
    try {
      result = responder.answer(packet, client, transport, cut);
    } catch (err) {
      return failed(err, client);
    }
    if (!(result instanceof Promise)) return result;
    inFlight++;
    return result.then(
      (response) => {
        inFlight--;
        return response;
      },
      (err: unknown) => {
        inFlight--;
        return failed(err, client);
      },
    );
  };

  const answerUdp: UdpQueryHandler = (packet, client, cut) => {
    // Source port 0 cannot be answered (a raw-socket sender can forge it); dropping it is the only reply.
    if (closed || client.port === 0) return null;
    if (inFlight >= maxInFlight) {
      responder.reportDropped(packet, client, inFlight, cut);
      return null;
    }
    return answer(packet, client, 'udp', cut);
  };

  let udp: UdpEndpoint | undefined;
  const tcp = net.createServer({ allowHalfOpen: true });
  tcp.maxConnections = maxConnections;
  // Past maxConnections node closes a connection as it comes, with this event only (no 'connection'): the client's
  // resolver retries or fails, so it must be reported (until 2026-12-04 it went without a trace). No data when node
  // could not read the addresses.
  tcp.on('drop', (data) => {
    if (closed) return;
    responder.reportConnectionDropped({ address: data?.remoteAddress ?? '?', port: data?.remotePort ?? 0 }, maxConnections);
  });
  // With port 0, the TCP port must be the one the kernel gave UDP; retry if something holds it.
  for (let attempt = 0; ; attempt++) {
    udp = await bindUdp(options.udp ?? 'batch', options.listen.host, options.listen.port, ipv6Only, answerUdp, log);
    try {
      await listenTcp(tcp, options.listen.host, udp.port, ipv6Only);
      break;
    } catch (err) {
      await udp.close();
      if (options.listen.port !== 0 || attempt >= 10 || (err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    }
  }
  const udpEndpoint = udp;

  const connections = new Set<net.Socket>();
  tcp.on('connection', (socket) => {
    connections.add(socket);
    const client = { address: socket.remoteAddress ?? '?', port: socket.remotePort ?? 0 };
    let buffered = Buffer.alloc(0);
    let pipeline = 0;
    let peerEnded = false;
    // A client that does not read its answers is not read from either (no unbounded answer buffering).
    let writeBlocked = false;
    // The idle timeout fired while answers were owed: the timer is restarted once the last of them is written.
    let idleWhileOwed = false;
    /** Bytes read so far: where in the stream the frame the deadline runs for starts (frameAt). */
    let received = 0;
    let frameAt = -1;
    let frameTimer: NodeJS.Timeout | undefined;
    // The frame deadline passed while answers were owed: nothing more is read, and the connection closes once they are written.
    let frameLate = false;
    /** Closes the connection for good: nothing buffered is read after this, whatever answer comes back later. */
    const abandon = () => {
      buffered = Buffer.alloc(0);
      socket.destroy();
    };
    // A listener of its own, not setTimeout's callback: that one is a `once`, and the timeout may have to fire again.
    socket.setTimeout(idleMs);
    socket.on('timeout', () => {
      // Not idle while egress-guard owes answers (queries at a slow upstream): their client is waiting for them.
      if (pipeline > 0) {
        idleWhileOwed = true;
        return;
      }
      // Bytes still waiting (a frame cut short, or queries behind answers the client did not read) are queries that
      // got no answer: their event says so (until 2026-12-03 the connection closed without a trace).
      if (buffered.length > 0) responder.reportMalformed(client, 'tcp', `no byte moved for ${idleMs} ms with ${unreadText()} unanswered`, 'connection closed');
      abandon();
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      connections.delete(socket);
      clearTimeout(frameTimer);
    });
    const frameWaiting = () => buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0);
    /** The whole frames `buffered` holds, and the bytes after them (of a frame cut short). */
    const scan = () => {
      let frames = 0;
      let at = 0;
      while (buffered.length - at >= 2 && buffered.length - at >= 2 + buffered.readUInt16BE(at)) {
        at += 2 + buffered.readUInt16BE(at);
        frames++;
      }
      return { frames, cut: buffered.length - at };
    };
    /** What `buffered` holds, for an event: whole frames and the bytes of one cut short. */
    const unreadText = () => {
      const { frames, cut } = scan();
      const whole = frames > 0 ? `${frames} whole ${frames === 1 ? 'query' : 'queries'}` : '';
      const part = cut > 0 ? `${cut} bytes of a frame` : '';
      return [whole, part].filter((text) => text !== '').join(' and ');
    };
    const maybeEnd = () => {
      if (!peerEnded || pipeline !== 0 || writeBlocked || frameWaiting() || socket.destroyed) return;
      if (buffered.length > 0) {
        // What is left once every whole frame is answered is a query cut short: its event says so (until
        // 2026-12-03 a log line only, written at the FIN even when whole frames were still waiting their turn).
        responder.reportMalformed(client, 'tcp', `the connection ended ${buffered.length} bytes into a frame`, false);
        buffered = Buffer.alloc(0);
      }
      socket.end();
    };
    /** The frame deadline's close: one event for what is unread (the frame cut short, and any whole query not started). */
    const closeLate = (end: boolean) => {
      responder.reportMalformed(client, 'tcp', `a frame not whole ${frameDeadlineMs} ms after its first byte, with ${unreadText()} unanswered`, 'connection closed');
      buffered = Buffer.alloc(0);
      // After the answers owed, end (a destroy could lose them to the reset that unread bytes cause); the idle timeout
      // destroys a connection whose client then neither reads nor closes.
      if (!end) {
        abandon();
        return;
      }
      socket.end();
      socket.setTimeout(idleMs);
    };
    const frameExpired = () => {
      frameTimer = undefined;
      if (socket.destroyed || buffered.length === 0) return;
      // Not reading (answers owed fill the pipeline, or the client does not read them): the rest of the frame may be
      // waiting in the kernel, not at the client; it gets another period once read again.
      if (socket.isPaused()) {
        frameTimer = setTimeout(frameExpired, frameDeadlineMs);
        return;
      }
      if (pipeline === 0) {
        closeLate(false);
        return;
      }
      // Answers owed: they are delivered (the idle path waits for them too), then the connection closes; nothing more is read.
      frameLate = true;
      socket.pause();
    };
    /** After a read: the deadline runs for the frame cut short at the end of `buffered`, from its first byte read. */
    const watchFrame = () => {
      const cut = buffered.length === 0 ? 0 : scan().cut;
      if (cut === 0) {
        clearTimeout(frameTimer);
        frameTimer = undefined;
        return;
      }
      if (frameTimer !== undefined && frameAt === received - cut) return;
      clearTimeout(frameTimer);
      frameAt = received - cut;
      frameTimer = setTimeout(frameExpired, frameDeadlineMs);
    };
    const send = (frame: Buffer) => {
      if (socket.write(frame) || writeBlocked) return;
      writeBlocked = true;
      socket.pause();
      socket.once('drain', () => {
        writeBlocked = false;
        if (pipeline < MAX_TCP_PIPELINE && !frameLate) socket.resume();
        drain();
        maybeEnd();
      });
    };
    const drain = () => {
      // A destroyed connection reads nothing more (its buffer is emptied too, but answers still coming back call this).
      while (!socket.destroyed && !frameLate && !writeBlocked && buffered.length >= 2 && pipeline < MAX_TCP_PIPELINE) {
        const length = buffered.readUInt16BE(0);
        if (length > maxTcpQuery) {
          // No query is this long; its event says so (until 2026-12-03 a log line only), once: the frame is dropped
          // with the connection (until 2026-12-04 each answer still owed read it again, an event each).
          responder.reportMalformed(client, 'tcp', `a frame of ${length} bytes, over the ${maxTcpQuery}-byte limit for a query`, 'connection closed');
          abandon();
          return;
        }
        if (buffered.length < 2 + length) break;
        const packet = Buffer.from(buffered.subarray(2, 2 + length));
        buffered = buffered.subarray(2 + length);
        pipeline++;
        // Always answered on a later microtask, even from the cache: answering inside this loop would re-enter drain().
        void Promise.resolve(answer(packet, client, 'tcp')).then((response) => {
          pipeline--;
          // Closed meanwhile (idle timeout, bound, a bad frame, the client's reset): the answer has nowhere to go.
          if (socket.destroyed) return;
          if (!response) {
            // A dropped packet means the stream can no longer be trusted to be in sync: the queries behind it are not
            // read (until 2026-12-04 the answers still owed read them on, deciding queries for a closed connection).
            abandon();
            return;
          }
          if (socket.writable) {
            const frame = Buffer.alloc(2);
            frame.writeUInt16BE(response.length);
            send(Buffer.concat([frame, response]));
          }
          if (frameLate) {
            if (pipeline === 0) closeLate(true);
            return;
          }
          if (pipeline === 0 && idleWhileOwed) {
            // The last owed answer is written: the idle time counts from here.
            idleWhileOwed = false;
            socket.setTimeout(idleMs);
          }
          if (socket.isPaused() && !writeBlocked) socket.resume();
          drain();
          maybeEnd();
        });
      }
      if (pipeline >= MAX_TCP_PIPELINE) socket.pause();
    };
    socket.on('data', (chunk) => {
      // Read before the pause of a late frame took effect: the connection is closing, nothing more is decided.
      if (frameLate) return;
      received += chunk.length;
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      // Not reached by a client that pipelines (the reader pauses while MAX_TCP_PIPELINE queries are out, and a read
      // adds one chunk): a bound, with its event, all the same.
      if (buffered.length > 2 * (maxTcpQuery + 2) * MAX_TCP_PIPELINE) {
        responder.reportMalformed(
          client,
          'tcp',
          `${buffered.length} bytes waiting, over the ${2 * (maxTcpQuery + 2) * MAX_TCP_PIPELINE}-byte bound (${unreadText()})`,
          'connection closed',
        );
        abandon();
        return;
      }
      drain();
      watchFrame();
    });
    socket.on('end', () => {
      peerEnded = true;
      // Nothing more can come: a frame cut short is reported when the answers owed are written (maybeEnd).
      clearTimeout(frameTimer);
      frameTimer = undefined;
      maybeEnd();
    });
  });
  tcp.on('error', (err) => log.error({ err }, 'dns tcp server error'));

  const udpAddress = { address: udpEndpoint.address, port: udpEndpoint.port };
  const tcpAddress = tcp.address() as net.AddressInfo;
  log.info(
    { udp: `${udpAddress.address}:${udpAddress.port}`, udpPath: udpEndpoint.mode, tcp: `${tcpAddress.address}:${tcpAddress.port}`, upstreams: upstreams.map((u) => u.text) },
    'dns server listening',
  );
  return {
    upstreams: upstreams.map((u) => u.text),
    udpAddress,
    udp: udpEndpoint.mode,
    tcpAddress: { address: tcpAddress.address, port: tcpAddress.port },
    stats: () => ({ cacheHits: responder.cacheStats.hits, cacheMisses: responder.cacheStats.misses, cacheEntries: responder.cacheSize }),
    close: async () => {
      if (closed) return;
      closed = true;
      responder.close();
      for (const socket of connections) socket.destroy();
      await Promise.all([udpEndpoint.close(), new Promise<void>((resolve) => tcp.close(() => resolve()))]);
    },
  };
}
