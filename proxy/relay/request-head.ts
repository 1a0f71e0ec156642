import type http from 'node:http';
import type net from 'node:net';

/** What a request head is made from: request-reader.ts's InspectedRequest (node's IncomingMessage has the same members). */
type RequestHeadSource = Pick<http.IncomingMessage, 'method' | 'url' | 'httpVersion' | 'rawHeaders'>;

/** A request's head as text: its method, `path` and HTTP version, then each raw header `header` keeps (undefined drops it; a string replaces its value). */
export function requestHead(req: RequestHeadSource, path: string, header: (name: string, value: string) => string | undefined): string {
  const lines = [`${req.method} ${path} HTTP/${req.httpVersion}`];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const value = header(req.rawHeaders[i]!, req.rawHeaders[i + 1]!);
    if (value !== undefined) lines.push(`${req.rawHeaders[i]}: ${value}`);
  }
  return `${lines.join('\r\n')}\r\n\r\n`;
}

const UPGRADE_HEADERS = new Set(['upgrade', 'connection', 'http2-settings']);

/**
 * An upgrade that is not a WebSocket (h2c...) is served as the plain HTTP/1.1 request it also is (a server that does
 * not upgrade answers it so): its head without the upgrade headers, and what followed it, are put back on the socket
 * to be parsed and decided again; `read` starts reading it again, the rebuilt head first. Relayed after a 101 it
 * would carry requests nobody decides.
 */
export function readAgainWithoutUpgrade(req: RequestHeadSource, socket: net.Socket, head: Buffer, read: () => void): void {
  const rebuilt = requestHead(req, req.url ?? '/', (name, value) => (UPGRADE_HEADERS.has(name.toLowerCase()) ? undefined : value));
  socket.unshift(Buffer.concat([Buffer.from(rebuilt, 'latin1'), head]));
  read();
  socket.resume();
}
