import { lazyLinuxAddon } from '../net/native-addon.js';
import { recordOfPacket, type NflogPacket } from './nflog-packet.js';
import { LostReports, lostInRead } from './nflog-sequence.js';
import { LOST_FIELD } from './report.js';
import { RotatingJsonFile } from './rotating-file.js';

interface NflogAddon {
  open(group: number, copyRange: number): number;
  /** overflowsBefore: per ENOBUFS, how many of `packets` were read before it. */
  read(fd: number, timeoutMs: number): { packets: NflogPacket[]; overflowsBefore: number[] };
  close(fd: number): void;
}

const nflogAddon = lazyLinuxAddon<NflogAddon>('nflog', import.meta.url, 'NFLOG (nfnetlink_log)');

/** Why the built-in reader cannot run here (no addon, not Linux), or undefined when it can. */
export function nflogReaderUnavailable(): string | undefined {
  return nflogAddon.unavailable();
}

/** The IP and transport headers: IPv6 with a few extension headers and a TCP header fit. */
const COPY_RANGE = 160;
/** How long one read waits for reports before the event loop runs (signals, stop). */
const WAIT_MS = 200;
/** Reports the kernel dropped are written as one line per this interval at most (a flood drops many times a second); resyncs told as often. */
const LOST_LINE_MS = 1000;

function lostLine(count: number): string {
  return `${JSON.stringify({ [LOST_FIELD]: count, 'oob.time.sec': Math.floor(Date.now() / 1000) })}\n`;
}

export interface NflogReaderOptions {
  group: number;
  /** Appended to: one JSON line per report, as ulogd's JSON plugin writes them (netlog/reader.ts follows it). */
  jsonFile: string;
  /** Past this size `jsonFile` is renamed to `jsonFile.1` and begun anew (netlog/rotating-file.ts); 0: never. */
  rotateBytes?: number;
  /**
   * Reports the kernel dropped because the reader fell behind (the socket's queue overflowed), counted from the gaps in
   * the reports' sequence numbers (netlog/nflog-sequence.ts): exact once a later report arrives; an overflow no
   * numbered report has followed yet, or one where the numbers could not be trusted (a resync), counts 1. Also
   * written to `jsonFile` as a line of their own ({"egress-guard.lost": N}), at most one a second.
   */
  onLost?: (count: number) => void;
  /** The reports' numbers could not be followed (netlog/nflog-sequence.ts): `total` times so far; at most once a second. */
  onResync?: (total: number) => void;
  /** A rotation failed; the reports go on to the file written (netlog/rotating-file.ts): what happened, once a try. */
  onRotateFailed?: (message: string) => void;
  /**
   * `jsonFile` could not be written (ENOSPC: the disk full), once until a write goes in whole again: the reader goes on,
   * and the reports not written are counted lost (the `egress-guard.lost` line written once it can write again).
   */
  onWriteFailed?: (message: string) => void;
}

export interface NflogReader {
  /** Reports written so far. */
  written(): number;
  /** Settles when the reader ends: after stop(), or rejected by a read that failed. */
  done: Promise<void>;
  stop(): Promise<void>;
}

/**
 * ulogd's job for egress-guard, without ulogd: bind the rules' NFLOG group (root, CAP_NET_ADMIN) and append each
 * report to `jsonFile` as a JSON line, the file rotated by size (ulogd's never is). The group is bound before this
 * returns, so a caller can say it is ready; it throws (code EPERM) without the capability or when another process (ulogd) holds the group.
 */
export function startNflogReader(options: NflogReaderOptions): NflogReader {
  const addon = nflogAddon.get();
  if (!addon) throw new Error(`the built-in NFLOG reader is unavailable: ${nflogAddon.unavailable()}`);
  const out = new RotatingJsonFile(options.jsonFile, options.rotateBytes, options.onRotateFailed, options.onWriteFailed);
  let socket: number;
  try {
    socket = addon.open(options.group, COPY_RANGE);
  } catch (err) {
    out.close();
    throw err;
  }
  let written = 0;
  let stopped = false;
  let lostUnwritten = 0;
  let lostWrittenAt = 0;
  // The reader made the kernel's instance of the group (BIND): its counter starts at 0, so reports dropped before the
  // first one read are counted too.
  const lostReports = new LostReports(0);
  let resyncsTold = 0;
  let resyncToldAt = 0;
  const done = (async () => {
    try {
      while (!stopped) {
        // Blocks for up to WAIT_MS: this process has nothing else to do, and the loop runs between reads.
        const { packets, overflowsBefore } = addon.read(socket, WAIT_MS);
        const lost = lostInRead(
          lostReports,
          packets.map((packet) => packet.seq),
          overflowsBefore,
        );
        if (lostReports.resyncs > resyncsTold && Date.now() - resyncToldAt >= LOST_LINE_MS) {
          resyncsTold = lostReports.resyncs;
          resyncToldAt = Date.now();
          options.onResync?.(resyncsTold);
        }
        if (lost > 0) {
          options.onLost?.(lost);
          lostUnwritten += lost;
        }
        // Each line with the reports it stands for: its own (1), or the count a lost line carries.
        const lines: { line: string; report: boolean; lost: number }[] = [];
        if (lostUnwritten > 0 && Date.now() - lostWrittenAt >= LOST_LINE_MS) {
          lines.push({ line: lostLine(lostUnwritten), report: false, lost: lostUnwritten });
          lostUnwritten = 0;
          lostWrittenAt = Date.now();
        }
        const now = Math.floor(Date.now() / 1000);
        for (const packet of packets) {
          const record = recordOfPacket(packet, now);
          if (record) lines.push({ line: `${JSON.stringify(record)}\n`, report: true, lost: 0 });
        }
        if (lines.length > 0) {
          const wrote = out.write(lines.map((l) => l.line).join(''));
          // What went in whole is written; the rest (the file could not be written: a full disk) is counted lost, and
          // said in the file with the next lost line, once it can be written again.
          let end = 0;
          for (const { line, report, lost } of lines) {
            end += Buffer.byteLength(line);
            if (end <= wrote) written += report ? 1 : 0;
            else lostUnwritten += report ? 1 : lost;
          }
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      addon.close(socket);
      try {
        if (lostUnwritten > 0) out.write(lostLine(lostUnwritten));
      } finally {
        out.close();
      }
    }
  })();
  return {
    written: () => written,
    done,
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}
