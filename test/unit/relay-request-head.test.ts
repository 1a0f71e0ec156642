import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import { requestHead } from '../../proxy/relay/http-forwarder.js';

/**
 * The forwarder writes the request head itself (no ClientRequest): it must be the bytes node's client wrote for
 * the same method, target and header list over a keep-alive agent (what the forwarder sent before).
 */
describe('requestHead: the bytes node client writes for a header list', () => {
  let server: net.Server;
  let port: number;
  /** The next request head a connection brings, up to its blank line. */
  let nextHead: ((head: string) => void) | undefined;

  before(async () => {
    server = net.createServer((socket) => {
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        const end = text.indexOf('\r\n\r\n');
        if (end === -1) return;
        nextHead?.(text.slice(0, end + 4));
        socket.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      });
      socket.on('error', () => socket.destroy());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = (server.address() as net.AddressInfo).port;
  });

  after(() => server.close());

  /** What node's client sends for `method target` with `headers`, as the forwarder called it (array headers, keep-alive agent). */
  async function nodeClientHead(method: string, target: string, headers: string[], body?: string): Promise<string> {
    const agent = new http.Agent({ keepAlive: true });
    try {
      const head = new Promise<string>((resolve) => (nextHead = resolve));
      const req = http.request({ host: '127.0.0.1', port, method, path: target, headers, agent }, (res) => res.resume());
      req.on('error', () => {});
      req.end(body);
      return await head;
    } finally {
      agent.destroy();
    }
  }

  const cases: Array<[string, string, string[], string?]> = [
    ['GET', '/', ['Host', 'a.test']],
    ['GET', '/a/b?c=d&e', ['Host', 'a.test:8080', 'Accept', '*/*', 'User-Agent', 'curl/8.5.0', 'X-Two', '1', 'X-Two', '2', 'x-lower', 'v a l']],
    ['HEAD', '/x', ['host', 'a.test', 'Accept-Encoding', 'gzip, br']],
    ['DELETE', '/item/1', ['Host', 'a.test', 'Content-Length', '0']],
    ['POST', '/upload', ['Host', 'a.test', 'Content-Type', 'application/json', 'Content-Length', '2'], '{}'],
    ['PUT', '/chunked', ['Host', 'a.test', 'Transfer-Encoding', 'chunked'], 'hello'],
    ['OPTIONS', '*', ['Host', 'a.test', 'Empty', '']],
    ['GET', '/latin1', ['Host', 'a.test', 'X-Obs', 'caf\u00e9']],
  ];

  for (const [method, target, headers, body] of cases) {
    test(`${method} ${target} with ${headers.length / 2} headers`, async () => {
      assert.equal(requestHead(method, target, headers), await nodeClientHead(method, target, headers, body));
    });
  }
});
