import type { Duplex } from 'node:stream';
import { waitFor } from './wait-for.js';

/**
 * A client that stopped reading, as the backpressure tests use it: wait until what an upstream wrote stalls, then
 * read the answer. Tests only.
 */

/** Until `count()` (of what the upstream wrote, or holds unsent) is above 0 and the same 300 ms later (30 s at most). */
export function untilStalled(what: string, count: () => number): Promise<void> {
  let last = -1;
  return waitFor(
    what,
    async () => {
      const now = count();
      const stalled = now > 0 && now === last;
      last = now;
      await new Promise((r) => setTimeout(r, 300));
      return stalled;
    },
    30_000,
  );
}

/** Resume the paused `socket` and read an answer: its head and the body bytes after it, once `bodyBytes` came (60 s at most). */
export function readAnswer(socket: Duplex, bodyBytes: number): Promise<{ head: string; received: number }> {
  let received = 0;
  let head = '';
  let headEnd = -1;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${received} body bytes after 60 s`)), 60_000);
    socket.on('data', (chunk: Buffer) => {
      if (headEnd === -1) {
        head += chunk.toString('latin1');
        headEnd = head.indexOf('\r\n\r\n');
        if (headEnd === -1) return;
        received += Buffer.byteLength(head, 'latin1') - headEnd - 4;
        head = head.slice(0, headEnd + 4);
      } else received += chunk.length;
      if (received >= bodyBytes) {
        clearTimeout(timer);
        resolve({ head, received });
      }
    });
    socket.resume();
  });
}
