import type dgram from 'node:dgram';
import { promises as dns } from 'node:dns';
import { closeSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { loadNativeAddon } from './native-addon.js';

/**
 * The socket mark of egress-guard's own outbound traffic (setting `socket-mark`). Where the sidecar runs in its
 * own container, the redirect rules exempt its traffic by uid AND this mark: a root job in the runner's
 * container can take egress-guard's uid (CAP_SETUID), but setting a mark needs CAP_NET_ADMIN (or CAP_NET_RAW
 * since Linux 5.17), and the mark is random per start, read by nobody else. One mark per process: every
 * outbound socket egress-guard opens (upstream TCP, upstream DNS, the collector) carries it.
 */
interface SocketMarkAddon {
  tcpSocket(family: 4 | 6, mark: number): number;
  setMark(fd: number, mark: number): void;
}

let addon: SocketMarkAddon | undefined;
let processMark: number | undefined;

/**
 * Mark every outbound socket from now on (undefined: none). Throws at start, with what to do, when the process
 * may not set marks, rather than failing every connection later.
 */
export function useSocketMark(mark: number | undefined): void {
  if (mark === undefined) {
    processMark = undefined;
    return;
  }
  if (!Number.isInteger(mark) || mark < 1 || mark > 0xffffffff) throw new Error(`socket-mark must be an integer from 1 to 0xffffffff, not ${mark}`);
  addon ??= loadNativeAddon<SocketMarkAddon>('socket_mark', import.meta.url);
  let probe: number;
  try {
    probe = addon.tcpSocket(4, mark);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const hint = code === 'EPERM' ? ': egress-guard needs CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17 and later, to mark its sockets' : '';
    throw new Error(`socket-mark: cannot mark a socket (${(err as Error).message})${hint}`);
  }
  closeSync(probe);
  processMark = mark;
}

export function socketMark(): number | undefined {
  return processMark;
}

/**
 * A TCP socket connecting to an IP address, marked when a mark is in use. Node creates its socket inside
 * connect(), too late to mark the SYN, so a marked socket is created natively and connected in the same tick
 * (an unconnected socket that waits for the event loop reports ENOTCONN).
 */
export function connectTcp(options: { host: string; port: number; allowHalfOpen?: boolean; noDelay?: boolean }): net.Socket {
  if (processMark === undefined) return net.connect({ host: options.host, port: options.port, allowHalfOpen: options.allowHalfOpen, noDelay: options.noDelay });
  const host = options.host.replace(/^\[(.*)\]$/, '$1');
  const family = net.isIP(host);
  // Never an unmarked socket while a mark is in use: that would be refused by the rules anyway, silently.
  if (family === 0) throw Object.assign(new Error(`socket-mark: ${options.host} is not an IP address`), { code: 'EINVAL' });
  const socket = new net.Socket({ fd: addon!.tcpSocket(family as 4 | 6, processMark), allowHalfOpen: options.allowHalfOpen });
  if (options.noDelay) socket.setNoDelay(true);
  return socket.connect({ host, port: options.port });
}

/** Mark a UDP socket once it is bound or connected (the mark applies to every datagram sent afterwards). */
export function markDatagramSocket(socket: dgram.Socket): void {
  if (processMark === undefined) return;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw Object.assign(new Error('socket-mark: the UDP socket has no file descriptor yet'), { code: 'EBADF' });
  addon!.setMark(fd, processMark);
}

/**
 * An http(s) agent whose connections carry the mark (the collector stream). The name is looked up first, then
 * the socket created and connected at once (see connectTcp).
 */
export function markedAgent(protocol: 'http:' | 'https:', agentOptions: http.AgentOptions): http.Agent {
  type Done = (err: Error | null, stream: Duplex) => void;
  const connect = (options: http.ClientRequestArgs, done: Done, wrap: (socket: net.Socket) => Duplex) => {
    const host = (options.host ?? options.hostname ?? 'localhost').replace(/^\[(.*)\]$/, '$1');
    const fail = (err: unknown) => done(err as Error, undefined as unknown as Duplex);
    dns.lookup(host, { verbatim: true }).then((answer) => {
      let stream: Duplex;
      try {
        stream = wrap(connectTcp({ host: answer.address, port: Number(options.port), noDelay: true }));
      } catch (err) {
        fail(err);
        return;
      }
      done(null, stream);
    }, fail);
  };
  if (protocol === 'http:') {
    return new (class extends http.Agent {
      override createConnection(options: http.ClientRequestArgs, done?: Done): undefined {
        connect(options, done!, (socket) => socket);
      }
    })(agentOptions);
  }
  return new (class extends https.Agent {
    override createConnection(options: http.ClientRequestArgs, done?: Done): undefined {
      connect(options, done!, (socket) => tls.connect({ ...(options as tls.ConnectionOptions), socket }));
    }
  })(agentOptions);
}
