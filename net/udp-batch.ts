import net from 'node:net';
import { lazyLinuxAddon } from './native-addon.js';

/**
 * A UDP socket that reads and answers datagrams in batches (setting `dns-udp`, issue 14): the native udp_batch
 * addon (native/udp_batch.c) watches its fd in node's own event loop, reads up to `slots` datagrams with one
 * recvmmsg(2), hands them to JavaScript in one call, and sends that call's answers with one sendmmsg(2). node's
 * dgram costs a read callback, a Buffer, an rinfo object, an event and a sendmsg per datagram, which was the floor
 * of the DNS server's rate (docs/benchmark.md, "Issue 14, third round: DNS per query"). Linux only; where the addon
 * cannot be loaded, batchUdpUnavailable() says why and the caller uses dgram.
 */
interface UdpBatchAddon {
  /** `v6only`: set IPV6_V6ONLY on an IPv6 socket (net/listen.ts ipv6OnlyFor); else the kernel's default (both families). */
  open(family: 4 | 6, address: string, port: number, slots: number, onBatch: (count: number) => unknown[], v6only?: boolean): object;
  data(handle: object): Buffer;
  meta(handle: object): Int32Array;
  addresses(handle: object): string[];
  port(handle: object): number;
  sendTo(handle: object, bytes: Buffer, address: string, port: number, local?: number): boolean;
  close(handle: object): void;
  stats(handle: object): BatchUdpStats;
}

export interface BatchUdpStats {
  /** recvmmsg calls that returned datagrams, datagrams read, answers sent, answers the kernel refused, datagrams too large for a slot. */
  batches: number;
  datagrams: number;
  sent: number;
  sendErrors: number;
  truncated: number;
  /** Source-address strings made: one per change of source (a run of datagrams from one client shares one). */
  addressTexts: number;
}

export interface Datagram {
  /**
   * The datagram's bytes: a copy the receiver may keep, or, for a socket bound with bytes 'lent', a view of the
   * receive buffer that is valid only during the call (the next batch is read into the same memory).
   */
  bytes: Buffer;
  address: string;
  port: number;
  family: 'IPv4' | 'IPv6';
  /**
   * The datagram was larger than a slot (SLOT_BYTES): `bytes` is only its first SLOT_BYTES bytes. It is still handed
   * over, so that the receiver can report it and answer what it can (the DNS server: FORMERR and a malformed-request
   * event, as with dgram), rather than it vanishing without a trace.
   */
  truncated: boolean;
  /**
   * On a socket bound to the wildcard address, the number of the address the datagram was sent to (-1: not known, or
   * past the 64 addresses a socket numbers): an answer sent later goes out from it when sendTo() is given it (answers
   * returned by the handler go out from the datagram's destination already, numbered or not).
   * Without it, the kernel picks the source, which on an interface with more than one address (a bridge with two
   * global IPv6 ones that REDIRECT reaches at the first) may not be the one the client asked, and the client drops it.
   */
  local: number;
}

/**
 * Called once per datagram of a batch, in order; its return value (a Buffer) is the answer, sent with the rest of
 * the batch's answers when the batch is done. Anything else: no answer now (sendTo() may answer later).
 */
export type DatagramHandler = (datagram: Datagram) => Buffer | null | undefined | unknown;

const SLOT_BYTES = 4096;
const META_INTS = 4;

const addon = lazyLinuxAddon<UdpBatchAddon>('udp_batch', import.meta.url, 'recvmmsg(2)');
const loaded = addon.get;

/** Why batched UDP cannot be used here (the caller falls back to dgram); undefined when it can. */
export function batchUdpUnavailable(): string | undefined {
  return addon.unavailable();
}

export class BatchUdpSocket {
  private closed = false;
  private readonly answers: unknown[];

  private constructor(
    private readonly native: UdpBatchAddon,
    private readonly handle: object,
    answers: unknown[],
    readonly address: string,
    readonly port: number,
  ) {
    this.answers = answers;
  }

  /**
   * Binds `host` (an IP literal) and `port` (0: any free one) and starts reading. Throws when the addon is
   * unavailable (check batchUdpUnavailable() first) or the bind fails (err.code EADDRINUSE, ...).
   * `bytes`: 'copy' (default) hands each datagram over in a Buffer of its own; 'lent' as a view of the receive buffer,
   * for a receiver that copies what it keeps past the call (the DNS server): a Buffer of its own per datagram (its own
   * ArrayBuffer and backing store, then a copy) was a few per cent of the DNS server's CPU per cached query
   * (docs/benchmark.md, "Issue 14, seventh round: CPU per DNS query").
   */
  static bind(host: string, port: number, onDatagram: DatagramHandler, slots = 64, bytes: 'copy' | 'lent' = 'copy', ipv6Only = false): BatchUdpSocket {
    const native = loaded();
    if (!native) throw new Error(`batched UDP is unavailable: ${addon.unavailable()}`);
    // isIP tries the IPv4 pattern first: node's IPv6 pattern costs 5-15 ms to compile on its first use, at every start.
    const family = net.isIP(host) as 0 | 4 | 6;
    if (family === 0) throw Object.assign(new Error(`batched UDP binds IP literals only, not ${host}`), { code: 'EINVAL' });
    const answers: unknown[] = new Array(slots).fill(undefined);
    const lent = bytes === 'lent';
    let data: Buffer | undefined;
    let meta: Int32Array | undefined;
    let addresses: string[] | undefined;
    let previousCount = 0;
    const onBatch = (count: number): unknown[] => {
      for (let i = 0; i < count; i++) {
        const length = meta![i * META_INTS];
        const sourcePort = meta![i * META_INTS + 1];
        let answer: unknown;
        // Length -1: larger than its slot, which holds its first SLOT_BYTES bytes (recvmmsg's MSG_TRUNC).
        const truncated = length < 0;
        const kept = truncated ? SLOT_BYTES : length;
        const offset = i * SLOT_BYTES;
        let datagramBytes: Buffer;
        if (lent) datagramBytes = data!.subarray(offset, offset + kept);
        else {
          // A copy of its own, as dgram gives: a receiver may keep slices of it past the batch, and a slice of the
          // shared pool would keep a whole 8 KiB pool chunk alive.
          datagramBytes = Buffer.allocUnsafeSlow(kept);
          data!.copy(datagramBytes, 0, offset, offset + kept);
        }
        try {
          const family = meta![i * META_INTS + 2] === 6 ? 'IPv6' : 'IPv4';
          answer = onDatagram({ bytes: datagramBytes, address: addresses![i], port: sourcePort, family, truncated, local: meta![i * META_INTS + 3]! });
        } catch {
          // The handler is not meant to throw; one datagram's failure must not lose the batch's other answers.
          answer = undefined;
        }
        answers[i] = answer;
      }
      // Slots past count are never read by the addon; clear them so old answers are not kept alive.
      for (let i = count; i < previousCount; i++) answers[i] = undefined;
      previousCount = count;
      return answers;
    };
    const handle = native.open(family, host, port, slots, onBatch, ipv6Only);
    data = native.data(handle);
    meta = native.meta(handle);
    addresses = native.addresses(handle);
    return new BatchUdpSocket(native, handle, answers, host, native.port(handle));
  }

  /**
   * One answer outside a batch (one that came later), from the address `local` names (Datagram.local; -1 or absent:
   * the kernel's pick); false when it was not sent (closed, or the kernel refused it).
   */
  sendTo(bytes: Buffer, address: string, port: number, local = -1): boolean {
    if (this.closed) return false;
    return this.native.sendTo(this.handle, bytes, address, port, local);
  }

  stats(): BatchUdpStats {
    return this.native.stats(this.handle);
  }

  /** Stops reading and closes the fd at once; idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.native.close(this.handle);
    this.answers.fill(undefined);
  }
}
