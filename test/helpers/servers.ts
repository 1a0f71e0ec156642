import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createCertificateAuthority, issueLeafCertificate, type KeyAndCert } from '../../certs/certificates.js';

export interface TestServer {
  port: number;
  requests: Array<{ method: string; url: string; host: string; body: Buffer }>;
  close: () => Promise<void>;
}

export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer) => void;

const defaultHandler: Handler = (req, res) => {
  const text = `hello from ${req.headers.host} ${req.url}\n`;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
  res.end(text);
};

function serve(server: http.Server, host: string, handler: Handler): Promise<TestServer> {
  const requests: TestServer['requests'] = [];
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      requests.push({ method: req.method ?? '', url: req.url ?? '', host: req.headers.host ?? '', body });
      handler(req, res, body);
    });
  });
  return new Promise((resolve) => {
    server.listen(0, host, () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        requests,
        close: () =>
          new Promise((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}

export function startHttpServer(handler: Handler = defaultHandler, host = '127.0.0.1'): Promise<TestServer> {
  return serve(http.createServer(), host, handler);
}

export function startHttpsServer(leaf: KeyAndCert, handler: Handler = defaultHandler, host = '127.0.0.1'): Promise<TestServer> {
  return serve(https.createServer({ key: leaf.keyPem, cert: leaf.certPem }), host, handler);
}

let sharedCa: KeyAndCert | undefined;

/** One CA per test process (key generation is the slow part). */
export function testCa(): KeyAndCert {
  sharedCa ??= createCertificateAuthority('egress-guard test CA');
  return sharedCa;
}

export function leafFor(...hosts: string[]): KeyAndCert {
  return issueLeafCertificate(testCa(), hosts);
}
