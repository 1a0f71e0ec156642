import type net from 'node:net';
import type { Forward } from '../../decision/authorize.js';
import { connectUpstream, UpstreamConnectError } from '../../net/connect.js';
import { splice } from '../../net/splice.js';
import { connectUpstreamTls, type UpstreamTls } from '../../net/upstream-tls.js';
import { requestHead } from './request-head.js';
import type { InspectedRequest, RequestReader } from './request-reader.js';
import { relayTimeouts } from './tunnel.js';

/**
 * What becomes of a client socket the request reader handed over (an upgrade, a CONNECT, an h2c preface), the
 * transparent listener's and the inspector's: the request put back and relayed, or the socket ended and drained when
 * nothing is relayed on it.
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

export interface OwnRelayOptions {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  halfCloseTimeoutMs?: number | undefined;
  /**
   * What was read inside terminated TLS (a CONNECT there): the connection of its own is TLS of egress-guard's own,
   * verified as inspected requests' upstreams are (net/upstream-tls.ts), and the relay moves plaintext between the
   * client's TLS socket and it. Unset: plain TCP.
   */
  tls?: UpstreamTls | undefined;
}

/**
 * What the client sends from here on (what was read of it put back on the socket: a CONNECT as written, an h2c
 * preface), relayed in audit mode under `relayed` (a would-block decision) over a connection of its own to the checked
 * address, both ways; the relay's end is that decision's close, its bytes counted.
 *
 * Upstream not reached: the client's connection is closed with no answer, as the destination's own refusal would have
 * ended it (in audit mode egress-guard answers nothing in the destination's place: a 502 of its own would have been
 * read as the job's proxy's answer to the CONNECT, and an h2c client cannot read one), and the close event carries the
 * failure's status and error. Until 2026-12-03 the transparent listener's CONNECT got a 502 there, with no event id.
 * Over TLS (`options.tls`) a certificate that does not verify, or a failed handshake, is such a failure (502
 * `upstream-tls`): nothing of the client's is sent; the bytes counted are the plaintext relayed.
 */
export async function relayOnItsOwn(socket: net.Socket, relayed: Forward, options: OwnRelayOptions): Promise<void> {
  let upstream: net.Socket;
  try {
    upstream = options.tls
      ? await connectUpstreamTls(relayed.address, relayed.port, options.tls, options.connectTimeoutMs)
      : await connectUpstream(relayed.address, relayed.port, options.connectTimeoutMs);
  } catch (err) {
    const failure = UpstreamConnectError.from(err);
    socket.destroy();
    relayed.connection.close({ status: failure.status, error: failure.error });
    return;
  }
  if (socket.destroyed) {
    upstream.destroy();
    relayed.connection.close({ error: 'client-aborted' });
    return;
  }
  splice(socket, upstream, { ...relayTimeouts(options), onClose: (result) => relayed.connection.close(result) });
}
