import type { Socket } from 'node:net';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  421: 'Misdirected Request',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** Header values must be one line of visible ASCII: whatever a client sent us is made safe first. */
export function headerSafe(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 512);
}

function body(status: number, message: string): string {
  return `egress-guard: ${status} ${STATUS_TEXT[status] ?? ''}\n${message}\n`;
}

/**
 * How a refusal reads best to the client that sent `headers`: JSON (`{"error": ...}`) for a client that sends
 * or asks for JSON, since npm prints a JSON error body's `error` beside the status; text for the rest.
 */
export function errorFormatFor(headers: IncomingHttpHeaders): 'json' | 'text' {
  return /json/i.test(`${headers['content-type'] ?? ''} ${headers.accept ?? ''}`) ? 'json' : 'text';
}

/** What a refusal is written on: node's `ServerResponse`, or an inspected connection's `RawResponse`. */
export interface ErrorAnswer {
  readonly headersSent: boolean;
  writeHead(status: number, headers: OutgoingHttpHeaders): unknown;
  end(text: string): unknown;
  destroy(): unknown;
}

/** Answer a request the proxy will not (or cannot) forward, on an HTTP response. */
export function sendProxyError(res: ErrorAnswer, status: number, message: string, eventId?: string, format: 'json' | 'text' = 'text'): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = format === 'json' ? `${JSON.stringify({ error: `egress-guard: ${message}`, status, ...(eventId && { event: eventId }) })}\n` : body(status, message);
  res.writeHead(status, {
    'content-type': `${format === 'json' ? 'application/json' : 'text/plain'}; charset=utf-8`,
    'content-length': Buffer.byteLength(text),
    'x-egress-guard-reason': headerSafe(message),
    ...(eventId && { 'x-egress-guard-event': eventId }),
    // A client that sent something unusable is not worth keeping a connection open for.
    ...(status === 400 && { connection: 'close' }),
  });
  res.end(text);
}

/** The same, written raw on a socket (CONNECT and malformed requests, where there is no ServerResponse). */
export function writeRawError(socket: Socket, status: number, message: string, eventId?: string): void {
  if (socket.destroyed || !socket.writable) return;
  const text = body(status, message);
  const headers = [
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(text)}`,
    `X-Egress-Guard-Reason: ${headerSafe(message)}`,
    ...(eventId ? [`X-Egress-Guard-Event: ${eventId}`] : []),
    'Connection: close',
  ];
  socket.end(`${headers.join('\r\n')}\r\n\r\n${text}`);
}

/**
 * Answer a refusal once its decision event is written, naming the event (`X-Egress-Guard-Event`): the line is on disk
 * before the client reads its refusal. If the event could not be written, the answer still goes, without an id. An
 * answer that throws (its socket gone meanwhile) is given once, and never becomes an unhandled rejection.
 */
export function answerWhenWritten(refused: Promise<{ event: { id: string } }>, answer: (eventId?: string) => void): void {
  refused
    .then(
      (written) => written.event.id,
      () => undefined,
    )
    .then(answer)
    .catch(() => undefined);
}
