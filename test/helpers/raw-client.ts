import net from 'node:net';
import tls from 'node:tls';

/** Send raw bytes to a server and collect what comes back until it closes, or until `untilText` shows up. */
export function rawExchange(port: number, payload: string | Buffer, options: { untilText?: string; timeoutMs?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let received = '';
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(received);
    };
    const timer = setTimeout(done, options.timeoutMs ?? 3000);
    socket.on('connect', () => socket.write(payload));
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (options.untilText && received.includes(options.untilText)) done();
    });
    socket.on('end', done);
    socket.on('close', done);
    socket.on('error', (err) => {
      clearTimeout(timer);
      if (received) resolve(received);
      else reject(err);
    });
  });
}

/** What a tunnel does with the client's first bytes: answers, closes, or resets (ECONNRESET). */
export function firstBytesOutcome(socket: net.Socket, bytes: Buffer): Promise<string> {
  return new Promise<string>((resolve) => {
    socket.on('data', () => resolve('answered'));
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    socket.on('close', () => resolve('closed'));
    socket.write(bytes);
  }).finally(() => socket.destroy());
}

/** Open a CONNECT tunnel through the proxy; resolves with the socket once the proxy answered 200. */
export function openTunnel(proxyPort: number, authority: string): Promise<{ socket: net.Socket; status: number; response: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(proxyPort, '127.0.0.1');
    let head = '';
    const onData = (chunk: Buffer) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end === -1) return;
      socket.off('data', onData);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
      const rest = head.slice(end + 4);
      if (rest) socket.unshift(Buffer.from(rest, 'latin1'));
      resolve({ socket, status, response: head });
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.on('connect', () => socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`));
  });
}

/** Write `bytes` into an open tunnel and collect what comes back until `until` is seen, the tunnel closes, or `waitMs` passes. */
export function exchangeOnTunnel(socket: net.Socket, bytes: string, until: string, waitMs = 5000): Promise<string> {
  return new Promise((resolve) => {
    let received = '';
    const done = () => {
      clearTimeout(timer);
      resolve(received);
    };
    const timer = setTimeout(done, waitMs);
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.toString('latin1');
      if (received.includes(until)) done();
    });
    socket.once('close', done);
    socket.write(bytes);
  });
}

/** HTTPS GET over a CONNECT tunnel with node's own TLS client; resolves with status and body. */
export async function httpsGetThroughProxy(proxyPort: number, host: string, port: number, path: string, ca: string): Promise<{ status: number; body: string }> {
  const tunnel = await openTunnel(proxyPort, `${host}:${port}`);
  if (tunnel.status !== 200) {
    tunnel.socket.destroy();
    return { status: tunnel.status, body: tunnel.response };
  }
  return new Promise((resolve, reject) => {
    const secure = tls.connect({ socket: tunnel.socket, servername: host, ca }, () => {
      secure.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nConnection: close\r\n\r\n`);
    });
    let text = '';
    secure.on('data', (c: Buffer) => {
      text += c.toString();
    });
    secure.on('end', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ status, body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
    secure.on('error', reject);
  });
}
