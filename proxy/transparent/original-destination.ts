import type { Socket } from 'node:net';
import { loadNativeAddon } from '../../net/native-addon.js';

export interface OriginalDestination {
  address: string;
  port: number;
  family: 4 | 6;
}

interface OriginalDstAddon {
  originalDestination(fd: number): OriginalDestination;
}

let addon: OriginalDstAddon | undefined;

/**
 * The native addon (native/original_dst.c, built by node-gyp at `npm ci`, or prebuilt in the action's bundle):
 * Node has no getsockopt, and no well-kept package exposes SO_ORIGINAL_DST. Loaded lazily so that the explicit
 * proxy runs without it.
 */
function loadAddon(): OriginalDstAddon {
  addon ??= loadNativeAddon<OriginalDstAddon>('original_dst', import.meta.url);
  return addon;
}

/** Fails at start rather than on the first connection when the addon is missing. */
export function assertOriginalDestinationAvailable(): void {
  loadAddon();
}

/** Strip the IPv4-mapped prefix (::ffff:a.b.c.d) that dual-stack sockets report. */
export function unmapAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/**
 * Where a redirected connection was going before netfilter rewrote it (SO_ORIGINAL_DST /
 * IP6T_SO_ORIGINAL_DST). Throws (code ENOENT) for a connection that no NAT rule touched.
 */
export function originalDestination(socket: Socket): OriginalDestination {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw Object.assign(new Error('the socket has no file descriptor'), { code: 'EBADF' });
  const dst = loadAddon().originalDestination(fd);
  return { address: unmapAddress(dst.address), port: dst.port, family: dst.family };
}
