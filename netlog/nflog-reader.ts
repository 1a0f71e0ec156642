import { closeSync, openSync, writeSync } from 'node:fs';
import { lazyLinuxAddon } from '../net/native-addon.js';
import { recordOfPacket, type NflogPacket } from './nflog-packet.js';

interface NflogAddon {
  open(group: number, copyRange: number): number;
  read(fd: number, timeoutMs: number): { packets: NflogPacket[]; lost: number };
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

export interface NflogReaderOptions {
  group: number;
  /** Appended to: one JSON line per report, as ulogd's JSON plugin writes them (netlog/reader.ts follows it). */
  jsonFile: string;
  /** Reports the kernel dropped because the reader fell behind (its socket's queue was full). */
  onLost?: (count: number) => void;
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
 * report to `jsonFile` as a JSON line. The group is bound before this returns, so a caller can say it is ready;
 * it throws (code EPERM) without the capability or when another process (ulogd) holds the group.
 */
export function startNflogReader(options: NflogReaderOptions): NflogReader {
  const addon = nflogAddon.get();
  if (!addon) throw new Error(`the built-in NFLOG reader is unavailable: ${nflogAddon.unavailable()}`);
  const socket = addon.open(options.group, COPY_RANGE);
  const out = openSync(options.jsonFile, 'a', 0o644);
  let written = 0;
  let stopped = false;
  const done = (async () => {
    try {
      while (!stopped) {
        // Blocks for up to WAIT_MS: this process has nothing else to do, and the loop runs between reads.
        const { packets, lost } = addon.read(socket, WAIT_MS);
        if (lost > 0) options.onLost?.(lost);
        if (packets.length > 0) {
          const now = Math.floor(Date.now() / 1000);
          let text = '';
          let records = 0;
          for (const packet of packets) {
            const record = recordOfPacket(packet, now);
            if (!record) continue;
            text += `${JSON.stringify(record)}\n`;
            records++;
          }
          if (text) {
            writeSync(out, text);
            written += records;
          }
        }
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } finally {
      addon.close(socket);
      closeSync(out);
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
