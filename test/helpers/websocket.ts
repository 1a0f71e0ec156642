/**
 * A minimal WebSocket (RFC 6455) for tests, both ends: an echo server on an HTTP(S) server's 'upgrade', and a
 * client that performs the handshake over a given socket, checks Sec-WebSocket-Accept, sends one masked text
 * frame, reads the echo and closes. Text frames of up to 64 KiB, no extensions, no fragmentation.
 */
import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import type { Duplex } from 'node:stream';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const TEXT = 0x1;
const CLOSE = 0x8;

export function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + GUID)
    .digest('base64');
}

function frame(opcode: number, payload: Buffer, masked: boolean): Buffer {
  const length = payload.length < 126 ? Buffer.from([payload.length]) : Buffer.from([126, payload.length >> 8, payload.length & 0xff]);
  length[0]! |= masked ? 0x80 : 0;
  if (!masked) return Buffer.concat([Buffer.from([0x80 | opcode]), length, payload]);
  const mask = randomBytes(4);
  return Buffer.concat([Buffer.from([0x80 | opcode]), length, mask, payload.map((b, i) => b ^ mask[i % 4]!)]);
}

/** Whole frames read from a stream, one callback each (payload unmasked). */
function readFrames(stream: Duplex, onFrame: (opcode: number, payload: Buffer) => void, start: Buffer = Buffer.alloc(0)): void {
  let buffered: Buffer = start;
  const parse = () => {
    for (;;) {
      if (buffered.length < 2) return;
      const masked = (buffered[1]! & 0x80) !== 0;
      let length = buffered[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffered.length < 4) return;
        length = buffered.readUInt16BE(2);
        offset = 4;
      }
      const end = offset + (masked ? 4 : 0) + length;
      if (buffered.length < end) return;
      const mask = masked ? buffered.subarray(offset, offset + 4) : undefined;
      const payload = Buffer.from(buffered.subarray(end - length, end)).map((b, i) => (mask ? b ^ mask[i % 4]! : b));
      const opcode = buffered[0]! & 0x0f;
      buffered = buffered.subarray(end);
      onFrame(opcode, Buffer.from(payload));
    }
  };
  stream.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    parse();
  });
  parse();
}

/**
 * Answer upgrades on `server`: paths starting with `/no-upgrade` get a plain 404; the rest are accepted, every
 * text frame is answered with `echo: TEXT`, a close frame with a close frame. `onUpgrade` hears of every path asked for.
 */
export function serveWebSocketEcho(server: http.Server, onUpgrade: (path: string) => void): void {
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    onUpgrade(req.url ?? '');
    socket.on('error', () => socket.destroy());
    if (req.url?.includes('/no-upgrade') || req.headers.upgrade?.toLowerCase() !== 'websocket') {
      return void socket.end('HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nno socket\n');
    }
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(String(req.headers['sec-websocket-key']))}\r\n\r\n`,
    );
    readFrames(
      socket,
      (opcode, payload) => {
        if (opcode === TEXT) socket.write(frame(TEXT, Buffer.from(`echo: ${payload.toString()}`), false));
        if (opcode === CLOSE) socket.end(frame(CLOSE, payload, false));
      },
      head,
    );
  });
}

export interface WebSocketExchange {
  /** The status line's code, and the head as received. */
  status: number;
  head: string;
  /** Sec-WebSocket-Accept matched the key sent. */
  accepted: boolean;
  /** The text frame that came back, and whether the server answered our close frame. */
  echoed?: string;
  closed: boolean;
}

/** Upgrade on `socket` (already connected, TLS or not) and exchange one message; bounded by `timeoutMs`. */
export function webSocketExchange(socket: Duplex, options: { host: string; path: string; message: string; timeoutMs?: number }): Promise<WebSocketExchange> {
  const key = randomBytes(16).toString('base64');
  return new Promise((resolve) => {
    const result: WebSocketExchange = { status: 0, head: '', accepted: false, closed: false };
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(finish, options.timeoutMs ?? 5000);
    let received = Buffer.alloc(0);
    const onHead = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onHead);
      result.head = received.subarray(0, end).toString('latin1');
      result.status = Number(/^HTTP\/1\.1 (\d{3})/.exec(result.head)?.[1] ?? 0);
      result.accepted = new RegExp(`^sec-websocket-accept: ${acceptKey(key).replace(/[+/]/g, '\\$&')}$`, 'im').test(result.head);
      if (result.status !== 101) return void socket.once('close', finish).resume();
      readFrames(
        socket,
        (opcode, payload) => {
          if (opcode === TEXT) {
            result.echoed = payload.toString();
            socket.write(frame(CLOSE, Buffer.from([0x03, 0xe8]), true));
          }
          if (opcode === CLOSE) {
            result.closed = true;
            finish();
          }
        },
        received.subarray(end + 4),
      );
      socket.write(frame(TEXT, Buffer.from(options.message), true));
    };
    socket.on('data', onHead);
    socket.once('close', finish);
    socket.on('error', () => undefined);
    socket.write(
      `GET ${options.path} HTTP/1.1\r\nHost: ${options.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
  });
}
