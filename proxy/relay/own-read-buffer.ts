import net from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * A connected TCP socket's reads into one buffer of its own, as net's `onread` option does for a socket it creates:
 * no ArrayBuffer allocated per read (node allocates 64 KiB for every read otherwise) and no copy of what was read
 * (llhttp's body callback copies each piece into a new Buffer). `onRead(nread, buffer)` gets each read: the bytes are
 * `buffer.subarray(0, nread)`, valid until it returns (the next read overwrites them). The socket's 'end', 'error',
 * 'close', idle timer, pause() and resume() work as for any socket (node's `onStreamRead` serves both).
 *
 * Once set, for the rest of the socket's life: node has no call to take the handle's user buffer back. A parser must
 * not consume the handle afterwards either: it would pass its read errors down to this listener without a buffer,
 * which some node versions' check there accepted for EOF only (an abort on ECONNRESET). The buffer is referenced by
 * the socket, so it lives as long as the handle.
 */

/** node's own-property symbols for the `onread` buffer and callback (`kBuffer`, `kBufferCb` in net.js), found on a socket at the first use. */
let symbols: { buffer: symbol; callback: symbol } | null | undefined;
function onreadSymbols(): { buffer: symbol; callback: symbol } | null {
  if (symbols !== undefined) return symbols;
  const probe = new net.Socket();
  const named = (description: string) => Object.getOwnPropertySymbols(probe).find((s) => s.description === description);
  const buffer = named('kBuffer');
  const callback = named('kBufferCb');
  probe.destroy();
  return (symbols = buffer && callback ? { buffer, callback } : null);
}

interface UserBufferHandle {
  useUserBuffer?(buffer: Uint8Array): void;
  constructor: { name: string };
}

/** Whether `socket` can read into a buffer of its own: a plain TCP socket (no TLS) with a handle, on a node that has the call. */
export function ownReadBufferUsable(socket: Duplex): boolean {
  const handle = (socket as unknown as { _handle?: UserBufferHandle | null })._handle;
  return onreadSymbols() !== null && !('encrypted' in socket) && typeof handle?.useUserBuffer === 'function' && handle.constructor.name === 'TCP';
}

/** From now on `socket` reads into `buffer` and hands each read to `onRead` (see the top; ownReadBufferUsable first). */
export function readIntoOwnBuffer(socket: Duplex, buffer: Buffer, onRead: (nread: number, buffer: Buffer) => void): void {
  const handle = (socket as unknown as { _handle: Required<UserBufferHandle> })._handle;
  const own = socket as unknown as Record<symbol, unknown>;
  const { buffer: bufferSymbol, callback } = onreadSymbols()!;
  own[bufferSymbol] = buffer;
  own[callback] = onRead;
  handle.useUserBuffer(buffer);
}
