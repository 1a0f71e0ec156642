import type net from 'node:net';
import { requestHead } from './request-head.js';
import type { InspectedRequest, RequestReader } from './request-reader.js';

/**
 * What becomes of a client socket the request reader handed over (an upgrade or a CONNECT), the transparent listener's
 * and the inspector's: the request put back for a relay, or the socket ended and drained when nothing is relayed on it.
 */

/** A socket handed over with answers still being written: ended once they are out (or gone), what the client sends dropped. */
export function endAfterAnswers(reader: RequestReader, socket: net.Socket, idleTimeoutMs: number): void {
  socket.on('error', () => socket.destroy());
  const current = reader.answerInFlight;
  if (socket.destroyed) return;
  if (!current) {
    socket.end();
    return dropClientBytes(socket, idleTimeoutMs);
  }
  // 'close' comes a tick after the answer finished (or when the connection went), once the next one is assigned.
  current.once('close', () => endAfterAnswers(reader, socket, idleTimeoutMs));
}

/**
 * An upgrade's socket that relays nothing more (refused, failed, not upgraded): the reader let go of it and nothing
 * reads it, so bytes the client sent after its head stayed buffered and its end (FIN) behind them was never seen: the
 * connection stayed open for good. What it sends is read and dropped (never relayed), its end closes the connection
 * once the answer is out, and a client that never ends it is closed after the idle timeout.
 */
export function dropClientBytes(socket: net.Socket, idleTimeoutMs: number): void {
  socket.resume();
  socket.setTimeout(idleTimeoutMs, () => socket.destroy());
}

/**
 * A handed-over request (a CONNECT) put back on its socket as the client wrote it, with what followed its head: relayed
 * from there (and counted by the relay) or read and dropped. At once, before the next tick: a FIN read with them ends
 * the socket's reading, after which nothing can be put back.
 */
export function putBackAsWritten(socket: net.Socket, req: InspectedRequest, head: Buffer): void {
  if (socket.readableEnded) return;
  const asWritten = Buffer.from(
    requestHead(req, req.url, (_name, value) => value),
    'latin1',
  );
  socket.unshift(Buffer.concat([asWritten, head]));
}
