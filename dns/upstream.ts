import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { connectTcp, markDatagramSocket } from '../net/socket-mark.js';
import { buildUpstreamQuery, flagsOf, parseMessage, RCODE, WireError, type WireMessage, type WireQuestion } from './wire.js';

/** An upstream resolver address. */
export interface Upstream {
  host: string;
  port: number;
  /** As configured, for logs. */
  text: string;
}

/** Parse `ip`, `ip:port`, `v6`, `[v6]` or `[v6]:port` (port 53 by default); throws on anything else. */
export function parseUpstream(text: string): Upstream {
  const trimmed = text.trim();
  let host = trimmed;
  let port = 53;
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(trimmed);
  if (bracketed) {
    host = bracketed[1]!;
    if (bracketed[2] !== undefined) port = Number(bracketed[2]);
  } else if (/^[^:]+:\d+$/.test(trimmed)) {
    const [h, p] = trimmed.split(':');
    host = h!;
    port = Number(p);
  }
  if (net.isIP(host) === 0) throw new Error(`DNS upstream "${text}" is not an IP address, [IPv6] or address:port`);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`DNS upstream "${text}" has an invalid port`);
  return { host, port, text: trimmed };
}

export class UpstreamError extends Error {
  constructor(readonly failures: string[]) {
    super(`all DNS upstreams failed: ${failures.join('; ')}`);
  }
}

export interface UpstreamAnswer {
  response: Buffer;
  message: WireMessage;
  upstream: string;
}

export interface UpstreamOptions {
  /** Per attempt, per upstream. */
  timeoutMs?: number;
  /** Rounds over the whole upstream list. */
  rounds?: number;
}

/** Answers whose rcode means "ask the next upstream". */
const RETRY_RCODES = new Set<number>([RCODE.SERVFAIL, RCODE.REFUSED, RCODE.NOTIMP, RCODE.FORMERR]);

/**
 * Sends one question to the upstream resolvers: UDP from a fresh socket (random source port) with a
 * random id, TCP when the answer comes back truncated, the next upstream on timeout, error or
 * SERVFAIL/REFUSED, for `rounds` rounds. Only answers that echo our id and question are accepted.
 */
export class UpstreamClient {
  private readonly timeoutMs: number;
  private readonly rounds: number;
  private readonly inFlight = new Set<(reason: Error) => void>();
  private closed = false;

  constructor(
    readonly upstreams: readonly Upstream[],
    options: UpstreamOptions = {},
  ) {
    this.timeoutMs = options.timeoutMs ?? 2000;
    this.rounds = Math.max(1, options.rounds ?? 2);
  }

  async query(question: WireQuestion, cd: number): Promise<UpstreamAnswer> {
    const failures: string[] = [];
    if (this.upstreams.length === 0) throw new UpstreamError(['no upstream resolvers configured']);
    for (let round = 0; round < this.rounds; round++) {
      for (const upstream of this.upstreams) {
        if (this.closed) throw new UpstreamError([...failures, 'server closing']);
        try {
          let answer = await this.exchange(upstream, question, cd, 'udp');
          if (flagsOf(answer.message.flags).tc) answer = await this.exchange(upstream, question, cd, 'tcp');
          const rcode = flagsOf(answer.message.flags).rcode;
          if (RETRY_RCODES.has(rcode)) {
            failures.push(`${upstream.text}: rcode ${rcode}`);
            continue;
          }
          return answer;
        } catch (err) {
          failures.push(`${upstream.text}: ${(err as Error).message}`);
        }
      }
    }
    throw new UpstreamError(failures);
  }

  /** Abort every exchange in flight (server shutdown). */
  close(): void {
    this.closed = true;
    for (const abort of [...this.inFlight]) abort(new Error('server closing'));
  }

  private exchange(upstream: Upstream, question: WireQuestion, cd: number, transport: 'udp' | 'tcp'): Promise<UpstreamAnswer> {
    const id = randomInt(0x10000);
    const packet = buildUpstreamQuery(id, question, cd);
    return new Promise<UpstreamAnswer>((resolve, reject) => {
      let cleanup = () => {};
      let done = false;
      const finish = (err: Error | null, answer?: UpstreamAnswer) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.inFlight.delete(abort);
        cleanup();
        if (err) reject(err);
        else resolve(answer!);
      };
      const abort = (reason: Error) => finish(reason);
      const timer = setTimeout(() => finish(new Error(`${transport} timeout after ${this.timeoutMs} ms`)), this.timeoutMs);
      this.inFlight.add(abort);
      /** Returns true when `bytes` is the answer to our question; throws when it is ours but unreadable. */
      const accept = (bytes: Buffer): boolean => {
        if (bytes.length < 12 || bytes.readUInt16BE(0) !== id || !flagsOf(bytes.readUInt16BE(2)).qr) return false;
        let message: WireMessage;
        try {
          message = parseMessage(bytes);
        } catch (err) {
          throw new Error(`malformed answer (${err instanceof WireError ? err.message : 'unreadable'})`);
        }
        const echoed = message.questions[0];
        if (message.questions.length !== 1 || !echoed || echoed.name !== question.name || echoed.type !== question.type || echoed.klass !== question.klass) {
          return false;
        }
        finish(null, { response: bytes, message, upstream: upstream.text });
        return true;
      };
      if (transport === 'udp') {
        const socket = dgram.createSocket(net.isIPv6(upstream.host) ? 'udp6' : 'udp4');
        cleanup = () => socket.close();
        socket.on('error', (err) => finish(err));
        socket.on('message', (bytes) => {
          try {
            accept(bytes);
          } catch (err) {
            finish(err as Error);
          }
        });
        // A connected socket only receives from the upstream and reports ICMP unreachable at once. A connect that
        // fails (no route to the upstream: ENETUNREACH; a broadcast address: EACCES) comes to this callback as its
        // argument, not as an 'error' event, and leaves the socket unconnected, where send() without a port throws.
        socket.connect(upstream.port, upstream.host, (err?: Error) => {
          if (err) {
            finish(err);
            return;
          }
          try {
            markDatagramSocket(socket);
          } catch (err) {
            finish(err as Error);
            return;
          }
          socket.send(packet);
        });
      } else {
        let socket: net.Socket;
        try {
          socket = connectTcp({ host: upstream.host, port: upstream.port });
        } catch (err) {
          finish(err as Error);
          return;
        }
        cleanup = () => socket.destroy();
        let buffered = Buffer.alloc(0);
        socket.on('error', (err) => finish(err));
        socket.on('close', () => finish(new Error('tcp connection closed before an answer')));
        socket.on('data', (chunk) => {
          buffered = Buffer.concat([buffered, chunk]);
          while (buffered.length >= 2) {
            const length = buffered.readUInt16BE(0);
            if (buffered.length < 2 + length) return;
            const message = buffered.subarray(2, 2 + length);
            buffered = buffered.subarray(2 + length);
            try {
              if (accept(message)) return;
            } catch (err) {
              finish(err as Error);
              return;
            }
          }
        });
        const frame = Buffer.alloc(2);
        frame.writeUInt16BE(packet.length);
        socket.write(Buffer.concat([frame, packet]));
      }
    });
  }
}
