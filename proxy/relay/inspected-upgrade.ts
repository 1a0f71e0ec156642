import http from 'node:http';
import type net from 'node:net';
import type tls from 'node:tls';
import type { Forward } from '../../decision/authorize.js';
import type { CloseError } from '../../events/schema.js';
import { upstreamFailure } from '../../net/connect.js';
import { connectTcp } from '../../net/socket-mark.js';
import { splice } from '../../net/splice.js';
import { verifiedTlsOver } from '../../net/upstream-tls.js';
import { formatHostPort, hostHeaderValue } from '../../policy/index.js';
import { writeRawError } from './error-response.js';
import { originForm } from './http-forwarder.js';

/**
 * An HTTP upgrade (WebSocket) on an inspected connection, already decided on its method and path like any
 * request: it goes to the checked address over TLS verified for the decided name, with node's HTTP client
 * parsing the answer. A 101 is passed back as the upstream sent it and the connection becomes a byte relay
 * (splice: counters, idle and half-close timeouts); any other answer is relayed and the connection ends
 * (`not-upgraded`). One close event either way.
 */

export interface UpgradeRelayOptions {
  connectTimeoutMs: number;
  /** The relay ends after this long without a byte; also how long upstream has to answer the upgrade. */
  idleTimeoutMs: number;
  halfCloseTimeoutMs?: number;
  /** Roots for the upstream's certificate (default: the system's). */
  upstreamTrust?: () => tls.SecureContext;
}

export interface UpgradeRequest {
  /** The upgrade request's head (node's IncomingMessage, or request-reader.ts's InspectedRequest). */
  req: { readonly method?: string | undefined; readonly url?: string | undefined; readonly headers: http.IncomingHttpHeaders };
  /** The client's socket (terminated TLS, or plain) and what it sent past the request head. */
  client: net.Socket;
  head: Buffer;
  auth: Forward;
  /** The decided name: the upstream certificate is checked for it, and it is the Host sent... */
  host: string;
  /** ...unless this is given: a request naming another Host, relayed in audit mode as the client sent it. */
  hostHeader?: string;
  tls: boolean;
  /**
   * A plain upstream connected to `auth`'s address and port already (a plain tunnel's own, reserved-upstream.ts): the
   * upgrade is sent on it, not on a connection of its own.
   */
  upstream?: net.Socket;
}

/** Request headers of our hop with the client, not the upstream's (Connection and Upgrade are the upgrade's own). */
const CLIENT_HOP = new Set(['host', 'proxy-connection', 'proxy-authorization', 'keep-alive', 'te', 'trailer', 'transfer-encoding']);
/** Response headers of the upstream's hop, on an answer that is not an upgrade (relayed close-delimited). */
const UPSTREAM_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length']);

function responseHead(res: http.IncomingMessage, keep: (name: string) => boolean, extra: string[] = []): string {
  const lines = [`HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}`];
  for (let i = 0; i + 1 < res.rawHeaders.length; i += 2) if (keep(res.rawHeaders[i]!.toLowerCase())) lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
  return `${[...lines, ...extra].join('\r\n')}\r\n\r\n`;
}

/** A TCP (and TLS, verified for `host`) connection to the checked address, failing with ETIMEDOUT after `ms`. */
function connectChecked(options: UpgradeRelayOptions, address: string, port: number, host: string, secure: boolean): net.Socket {
  const tcp = connectTcp({ host: address, port, noDelay: true, allowHalfOpen: true });
  const socket = secure ? verifiedTlsOver(tcp, { servername: host, trust: options.upstreamTrust }) : tcp;
  const timer = setTimeout(() => socket.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })), options.connectTimeoutMs);
  socket.once(secure ? 'secureConnect' : 'connect', () => clearTimeout(timer));
  socket.once('close', () => clearTimeout(timer));
  return socket;
}

export function relayUpgrade(options: UpgradeRelayOptions, { req, client, head, auth, host, hostHeader, tls: secure, upstream: connected }: UpgradeRequest): void {
  let done = false;
  const close = (result: { bytesIn: number; bytesOut: number; status?: number; error?: CloseError | undefined }) => {
    if (done) return;
    done = true;
    auth.connection.close({
      bytesIn: result.bytesIn,
      bytesOut: result.bytesOut,
      ...(result.status !== undefined && { status: result.status }),
      ...(result.error && { error: result.error }),
    });
  };
  // The client left while the upgrade was being decided: its 'close' has been and gone.
  if (client.destroyed) {
    connected?.destroy();
    return close({ bytesIn: 0, bytesOut: 0, error: 'client-aborted' });
  }
  const headers: http.OutgoingHttpHeaders = { host: hostHeader ?? hostHeaderValue(host, auth.port, secure ? 443 : 80) };
  for (const [name, value] of Object.entries(req.headers)) if (!CLIENT_HOP.has(name) && value !== undefined) headers[name] = value;
  // In origin form, as http-forwarder.ts sends requests: an absolute-form target (`GET http://attacker.test/ws`) is
  // routed on its authority by nginx, Go and Apache whatever the Host header says (RFC 9112 3.2.2).
  const upstream = http.request({
    method: req.method,
    path: originForm(req.url ?? '/'),
    headers,
    createConnection: () => connected ?? connectChecked(options, auth.address, auth.port, host, secure),
  });
  upstream.setTimeout(options.idleTimeoutMs, () => upstream.destroy(Object.assign(new Error('no answer to the upgrade'), { code: 'NO_ANSWER' })));
  // Until upstream answers, the client going away ends the attempt.
  const onClientGone = () => {
    upstream.destroy();
    close({ bytesIn: 0, bytesOut: 0, error: 'client-aborted' });
  };
  client.once('close', onClientGone);

  upstream.on('error', (err: NodeJS.ErrnoException) => {
    if (done) return;
    const failure = err.code === 'NO_ANSWER' ? { status: 502, error: 'upstream-no-answer' as const } : upstreamFailure(err, err.code === 'ETIMEDOUT');
    writeRawError(client, failure.status, `${formatHostPort(host, auth.port)}: upstream failed (${err.code ?? err.message})`, auth.event.id);
    close({ bytesIn: 0, bytesOut: 0, ...failure });
  });
  upstream.on('response', (res: http.IncomingMessage) => {
    // Not upgraded (401, 404, ...): the answer goes back, then the connection ends; the client's bytes past its
    // request are never relayed.
    let bytesIn = 0;
    // Closed once the answer is relayed: node's client, given our Connection header and no agent, keeps a keep-alive
    // answer's socket open (its 'free' event unheard), so it was held until the server dropped it.
    const upstreamSocket = res.socket;
    res.once('close', () => upstreamSocket?.destroy());
    client.write(responseHead(res, (name) => !UPSTREAM_HOP.has(name), ['Connection: close']));
    res.on('data', (chunk: Buffer) => {
      bytesIn += chunk.length;
      client.write(chunk);
    });
    // Upstream gone mid-answer: the client's connection goes too (an unheard 'error' would end the process).
    res.once('error', () => client.destroy());
    res.once('close', () => {
      client.off('close', onClientGone);
      client.end();
      close({ bytesIn, bytesOut: 0, status: res.statusCode, error: 'not-upgraded' });
    });
  });
  upstream.on('upgrade', (res: http.IncomingMessage, socket: net.Socket, upstreamHead: Buffer) => {
    client.off('close', onClientGone);
    // The answer timeout is the request's; from here on the relay's own timeouts apply.
    upstream.removeAllListeners('timeout');
    client.write(responseHead(res, () => true));
    if (upstreamHead.length > 0) client.write(upstreamHead);
    splice(client, socket, {
      idleTimeoutMs: options.idleTimeoutMs,
      ...(options.halfCloseTimeoutMs !== undefined && { halfCloseTimeoutMs: options.halfCloseTimeoutMs }),
      onClose: (result) => close({ ...result, bytesIn: result.bytesIn + upstreamHead.length, status: res.statusCode }),
    });
    // Bytes the client sent right behind its request, ahead of anything the relay reads from it.
    if (head.length > 0) socket.write(head);
  });
  upstream.end();
}
