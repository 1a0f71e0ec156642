import net from 'node:net';
import tls from 'node:tls';
import { formatHostPort } from '../policy/index.js';
import { connectUpstream, upstreamFailure, UpstreamConnectError } from './connect.js';

/** What an upstream TLS connection of an inspected connection is verified for: the decided name, and its roots. */
export interface UpstreamTls {
  /** The decided host: sent as SNI, the certificate checked for it. */
  servername: string;
  /** Roots for the upstream's certificate (the `upstream-ca` option), parsed once; default: the system's. */
  trust?: (() => tls.SecureContext) | undefined;
}

/**
 * The one TLS client egress-guard speaks to an inspected connection's upstream with (the forwarder's pool of
 * inspected requests, an upgrade's own connection, a CONNECT relayed from inside terminated TLS), over a TCP
 * connection to the checked address: SNI and the certificate check for the decided name, ALPN http/1.1 (what the
 * inspector offers its clients), node's verification (rejectUnauthorized, checkServerIdentity) against `trust`. A
 * certificate that does not verify is the socket's error before `secureConnect`: nothing is sent on it.
 */
export function verifiedTlsOver(tcp: net.Socket, { servername, trust }: UpstreamTls): tls.TLSSocket {
  return tls.connect({ socket: tcp, servername, ALPNProtocols: ['http/1.1'], ...(trust && { secureContext: trust() }) });
}

/**
 * connectUpstream() and then verifiedTlsOver(), within `timeoutMs` in all (as the forwarder's connect timeout covers
 * both): the handshaken socket, or an UpstreamConnectError as connectUpstream's (a certificate that does not verify, or
 * a failed handshake: 502 `upstream-tls`, nothing sent; too slow: 504 `upstream-timeout`). An address for a name fails
 * as `upstream-tls` unconnected, as the forwarder's (SNI carries names only: there is no name to verify).
 */
export async function connectUpstreamTls(address: string, port: number, upstream: UpstreamTls, timeoutMs: number): Promise<tls.TLSSocket> {
  const target = formatHostPort(address, port);
  if (!upstream.servername || net.isIP(upstream.servername)) {
    throw new UpstreamConnectError(`${target}: no server name to verify the upstream certificate for`, 502, 'upstream-tls');
  }
  const started = Date.now();
  const tcp = await connectUpstream(address, port, timeoutMs);
  const secure = verifiedTlsOver(tcp, upstream);
  return new Promise((resolve, reject) => {
    const fail = (error: UpstreamConnectError) => {
      clearTimeout(timer);
      secure.destroy();
      tcp.destroy();
      reject(error);
    };
    const timer = setTimeout(
      () => fail(new UpstreamConnectError(`TLS with ${target} timed out after ${timeoutMs} ms`, 504, 'upstream-timeout')),
      Math.max(0, timeoutMs - (Date.now() - started)),
    );
    secure.once('error', (err: NodeJS.ErrnoException) => {
      const failure = upstreamFailure(err, false);
      fail(new UpstreamConnectError(`TLS with ${target} (${upstream.servername}) failed: ${err.code ?? err.message}`, failure.status, failure.error));
    });
    secure.once('secureConnect', () => {
      clearTimeout(timer);
      secure.removeAllListeners('error');
      resolve(secure);
    });
  });
}
