import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { BenchServers } from './servers.js';

/** A forward proxy under test (egress-guard, tinyproxy, squid). */
export interface ProxyEndpoint {
  name: string;
  host: string;
  port: number;
  /** The host the client names in CONNECT and absolute URIs (what the proxy must resolve). */
  targetHost: string;
}

/** How a client reaches the origin servers: directly, or through a proxy. */
export type Route = ProxyEndpoint | 'direct';

export const REQUEST_TIMEOUT_MS = 15_000;

/** CONNECT through the proxy; resolves with the tunnel socket once the proxy answered 200. */
export function openTunnel(proxy: ProxyEndpoint, authority: string, timeoutMs = REQUEST_TIMEOUT_MS): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: proxy.host, port: proxy.port, method: 'CONNECT', path: authority, agent: false, headers: { host: authority } });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`CONNECT ${authority} via ${proxy.name} timed out`)));
    req.once('connect', (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      req.setTimeout(0);
      if (res.statusCode !== 200) {
        socket.destroy();
        return reject(new Error(`CONNECT ${authority} via ${proxy.name}: status ${res.statusCode}`));
      }
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    // 'on', not 'once': a timed-out CONNECT can emit a second error (its socket's), which must not crash the bench.
    req.on('error', reject);
    req.end();
  });
}

function connectDirect(port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error('connect timed out')));
    socket.once('connect', () => {
      socket.setTimeout(0);
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export interface GetResult {
  status: number;
  bytes: number;
  /** sha256 hex of the body, when asked for. */
  digest?: string;
}

export interface FreshGetOptions {
  /** false: plain HTTP inside the tunnel (or straight to the plain server); default true: TLS. */
  tls?: boolean;
  hash?: boolean;
  timeoutMs?: number;
}

/**
 * One GET on a fresh TCP connection (or a fresh CONNECT tunnel), `Connection: close`: HTTPS with a full TLS
 * handshake (no session reuse) to the TLS server, or, with tls: false, plain HTTP to the plain server (through a
 * proxy: a raw CONNECT, then the GET inside the tunnel). The body is counted (and hashed if asked) and discarded.
 */
export async function freshGet(route: Route, servers: BenchServers, path: string, options: FreshGetOptions = {}): Promise<GetResult> {
  const timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  const useTls = options.tls ?? true;
  const port = useTls ? servers.httpsPort : servers.httpPort;
  const socket = route === 'direct' ? await connectDirect(port, timeoutMs) : await openTunnel(route, `${route.targetHost}:${port}`, timeoutMs);
  return new Promise((resolve, reject) => {
    const request = {
      // No agent: with createConnection and no agent, node neither pools nor resolves the host name.
      host: servers.serverName,
      port,
      path,
      method: 'GET',
      headers: { connection: 'close' },
    };
    const req = useTls
      ? https.request({
          ...request,
          servername: servers.serverName,
          ca: servers.caPem,
          createConnection: () => tls.connect({ socket, servername: servers.serverName, ca: servers.caPem }),
        })
      : http.request({ ...request, createConnection: () => socket });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${path} timed out`)));
    req.once('error', (err) => {
      socket.destroy();
      reject(err);
    });
    req.once('response', (res) => {
      const hash = options.hash ? createHash('sha256') : undefined;
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        hash?.update(chunk);
      });
      res.once('error', reject);
      res.once('end', () => {
        socket.destroy();
        resolve({ status: res.statusCode ?? 0, bytes, ...(hash && { digest: hash.digest('hex') }) });
      });
    });
    req.end();
  });
}

/** A keep-alive client for plain-HTTP requests, direct or as absolute-URI requests to a proxy. */
export class KeepAliveClient {
  readonly agent: http.Agent;

  constructor(
    private readonly route: Route,
    private readonly servers: BenchServers,
    maxSockets: number,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets, maxFreeSockets: maxSockets });
  }

  /** Requests retried because a reused keep-alive connection had been closed by the other side. */
  retries = 0;

  async get(path: string, timeoutMs = REQUEST_TIMEOUT_MS): Promise<{ status: number; bytes: number }> {
    try {
      return await this.getOnce(path, timeoutMs);
    } catch (err) {
      // A server may close an idle keep-alive connection just as the agent reuses it (tinyproxy closes after
      // every response without saying "Connection: close"); an idempotent GET is retried once, as node's docs advise.
      if (!(err as { reusedSocket?: boolean }).reusedSocket || (err as NodeJS.ErrnoException).code !== 'ECONNRESET') throw err;
      this.retries++;
      return this.getOnce(path, timeoutMs);
    }
  }

  private getOnce(path: string, timeoutMs: number): Promise<{ status: number; bytes: number }> {
    const route = this.route;
    const authority = route === 'direct' ? `127.0.0.1:${this.servers.httpPort}` : `${route.targetHost}:${this.servers.httpPort}`;
    const target = route === 'direct' ? { host: '127.0.0.1', port: this.servers.httpPort, path } : { host: route.host, port: route.port, path: `http://${authority}${path}` };
    return new Promise((resolve, reject) => {
      const req = http.request({ ...target, method: 'GET', agent: this.agent, headers: { host: authority } });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${path} timed out`)));
      req.once('error', (err) => reject(Object.assign(err, { reusedSocket: req.reusedSocket })));
      req.once('response', (res) => {
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
        });
        res.once('error', reject);
        res.once('end', () => resolve({ status: res.statusCode ?? 0, bytes }));
      });
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
