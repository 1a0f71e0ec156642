import http from 'node:http';
import type { Registry } from 'prom-client';
import type { ListenAddress } from '../config/load-config.js';
import { listen } from '../net/listen.js';

export interface AdminServer {
  port: number;
  close(): Promise<void>;
}

/** Serve `/metrics` (Prometheus text from `metrics`) and `/healthz` (200 ok, 503 when `health()` is false). */
export async function startAdminServer(options: { listen: ListenAddress; metrics: Registry; health: () => boolean }): Promise<AdminServer> {
  const fail = (res: http.ServerResponse, err: unknown) => {
    if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
    res.end(`error: ${(err as Error).message}\n`);
  };
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://admin').pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    try {
      if (path === '/metrics') {
        // Rendering is asynchronous in prom-client (collect callbacks may be).
        options.metrics.metrics().then(
          (text) => res.writeHead(200, { 'content-type': options.metrics.contentType, 'cache-control': 'no-store' }).end(text),
          (err: unknown) => fail(res, err),
        );
      } else if (path === '/healthz') {
        const healthy = options.health();
        res.writeHead(healthy ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }).end(healthy ? 'ok\n' : 'unhealthy\n');
      } else {
        res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: try /metrics or /healthz\n');
      }
    } catch (err) {
      fail(res, err);
    }
  });
  const address = await listen(server, options.listen, 'admin-listen');
  return {
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
