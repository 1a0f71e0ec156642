/**
 * The "internet" of the end-to-end suite, run inside its network namespace by the harness:
 * `node internet-fixture.js CONFIG.json`. Serves HTTPS/HTTP for allowed.test, registry.test (a one-package
 * npm registry that also accepts `npm publish`) and attacker.test, a UDP/TCP recorder on the attacker's address, and an authoritative DNS
 * server for `.test`. Every request, body, datagram and DNS question is appended to the log file (NDJSON)
 * that the tests read. Prints "ready" when every socket is bound.
 */
import { spawn } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import dgram from 'node:dgram';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import dns2 from 'dns2';
import { serveWebSocketEcho } from '../helpers/websocket.js';

export interface InternetConfig {
  logFile: string;
  keyPem: string;
  certPem: string;
  /** name -> A and AAAA records. */
  zone: Record<string, { a: string[]; aaaa: string[] }>;
  /** Addresses the DNS server answers on (port 53, UDP and TCP). */
  dnsAddresses: string[];
  /** TCP ports that just record what arrives (e.g. a non-allowed "ssh-like" port). */
  tcpRecorderPorts: number[];
  /** UDP ports that record datagrams (QUIC 443, an arbitrary port). */
  udpRecorderPorts: number[];
  /**
   * Services that read until the client's FIN, then answer `received N bytes` and close: a reply proves the
   * FIN was relayed and the reply direction kept open (half-close). `plain` is TCP, `tls` the same inside TLS.
   */
  halfClosePorts?: { plain: number; tls: number };
  /** A service that speaks first (as SMTP, FTP and MySQL do): a banner line at connect, then each line echoed. */
  bannerPort?: number;
  /** registry.test: the one package it serves. */
  registry: { name: string; version: string; tarball: string };
  /** Bare repositories served by `git http-backend` under https://allowed.test/git/ (clone and push). */
  gitHttpRoot?: string;
}

const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as InternetConfig;
const record = (entry: Record<string, unknown>) => appendFileSync(config.logFile, `${JSON.stringify({ time: Date.now(), ...entry })}\n`);

const { Packet } = dns2;

function lookupZone(name: string) {
  const key = name.toLowerCase().replace(/\.$/, '');
  if (config.zone[key]) return config.zone[key];
  const labels = key.split('.');
  for (let i = 1; i < labels.length; i++) {
    const wildcard = config.zone[`*.${labels.slice(i).join('.')}`];
    if (wildcard) return wildcard;
  }
  return undefined;
}

function dnsHandler(server: string, transport: 'udp' | 'tcp') {
  return (request: any, send: (response: any) => void) => {
    const question = request.questions?.[0];
    if (!question) return;
    record({ type: 'dns', server, transport, name: String(question.name).toLowerCase(), qtype: question.type });
    const response = Packet.createResponseFromRequest(request);
    response.header.aa = 1;
    const entry = lookupZone(String(question.name));
    if (!entry) response.header.rcode = 3;
    else if (question.type === Packet.TYPE.A) {
      for (const address of entry.a) response.answers.push({ name: question.name, type: Packet.TYPE.A, class: Packet.CLASS.IN, ttl: 30, address } as any);
    } else if (question.type === Packet.TYPE.AAAA) {
      for (const address of entry.aaaa) response.answers.push({ name: question.name, type: Packet.TYPE.AAAA, class: Packet.CLASS.IN, ttl: 30, address } as any);
    }
    send(response);
  };
}

function readBody(req: http.IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

/** Smart HTTP for git: `git http-backend` as a CGI, the request streamed to it, its answer back. */
function gitHttpBackend(root: string, req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', 'https://allowed.test');
  record({ type: 'http', scheme: 'https', host: 'allowed.test', method: req.method, url: req.url, git: true });
  const cgi = spawn('git', ['http-backend'], {
    env: {
      PATH: process.env.PATH,
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1',
      REMOTE_USER: 'test',
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: url.pathname.replace(/^\/git/, ''),
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: req.headers['content-type'] ?? '',
      ...(req.headers['content-encoding'] && { HTTP_CONTENT_ENCODING: String(req.headers['content-encoding']) }),
    },
  });
  req.pipe(cgi.stdin);
  let head = Buffer.alloc(0);
  let started = false;
  cgi.stdout.on('data', (chunk: Buffer) => {
    if (started) return void res.write(chunk);
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end === -1) return;
    started = true;
    let status = 200;
    for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
      const [name, ...rest] = line.split(':');
      const value = rest.join(':').trim();
      if (name!.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
      else res.setHeader(name!, value);
    }
    res.writeHead(status);
    res.write(head.subarray(end + 4));
  });
  cgi.on('close', () => res.end());
  cgi.on('error', () => res.destroy());
}

function webHandler(scheme: 'https' | 'http') {
  return async (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (config.gitHttpRoot && scheme === 'https' && req.url?.startsWith('/git/')) return gitHttpBackend(config.gitHttpRoot, req, res);
    const body = await readBody(req);
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    const sni = scheme === 'https' ? ((req.socket as unknown as { servername?: string }).servername ?? null) : null;
    record({ type: 'http', scheme, host, sni, local: req.socket.localAddress, peerPort: req.socket.remotePort, method: req.method, url: req.url, body });
    const { registry } = config;
    if (host === 'registry.test' && req.url === `/${registry.name}`) {
      const tarballUrl = `https://registry.test/${registry.name}/-/${registry.name}-${registry.version}.tgz`;
      const packument = {
        name: registry.name,
        'dist-tags': { latest: registry.version },
        versions: { [registry.version]: { name: registry.name, version: registry.version, dist: { tarball: tarballUrl } } },
      };
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify(packument));
    }
    // `npm publish`: a PUT of the packument (tarball attached). Accepted (audit mode lets it through); the log
    // above is what proves whether one arrived.
    if (host === 'registry.test' && req.method === 'PUT') {
      res.writeHead(201, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ ok: true, id: decodeURIComponent((req.url ?? '/').slice(1)) }));
    }
    if (host === 'registry.test' && req.url === `/${registry.name}/-/${registry.name}-${registry.version}.tgz`) {
      const tgz = readFileSync(registry.tarball);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': tgz.length });
      return res.end(tgz);
    }
    res.writeHead(host === 'registry.test' ? 404 : 200, { 'content-type': 'text/plain' });
    res.end(`hello from ${host || req.socket.localAddress}\n`);
  };
}

function listenTcp(server: net.Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host }, () => resolve());
  });
}

async function main() {
  const httpsServer = https.createServer({ key: config.keyPem, cert: config.certPem }, webHandler('https'));
  const httpServer = http.createServer(webHandler('http'));
  // WebSocket echo on every HTTPS host (upgrades never reach webHandler); each upgrade that arrives is logged.
  serveWebSocketEcho(httpsServer, (url) => record({ type: 'websocket', url }));
  // A client that half-closes after its request is answered (node would abort its request on the FIN).
  for (const server of [httpsServer, httpServer]) (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  // Each plain HTTP connection accepted and closed, by the port it comes from (an http record's peerPort says which one
  // carried a request), with how many are open after it.
  let httpOpen = 0;
  httpServer.on('connection', (socket: net.Socket) => {
    const peerPort = socket.remotePort;
    record({ type: 'http-connection', peerPort, open: ++httpOpen });
    socket.once('close', () => record({ type: 'http-connection-closed', peerPort, open: --httpOpen }));
  });
  await listenTcp(httpsServer, 443, '::');
  await listenTcp(httpServer, 80, '::');
  for (const port of config.tcpRecorderPorts) {
    const server = net.createServer((socket) => {
      record({ type: 'tcp-connect', port, local: socket.localAddress, remote: socket.remoteAddress });
      socket.on('data', (data) => record({ type: 'tcp-data', port, data: data.toString('latin1').slice(0, 200) }));
      socket.on('error', () => socket.destroy());
      socket.write('SSH-2.0-recorder\r\n');
    });
    await listenTcp(server, port, '::');
  }
  const replyAfterFin = (port: number) => (socket: net.Socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => socket.destroy());
    socket.on('end', () => {
      const data = Buffer.concat(chunks).toString('latin1');
      record({ type: 'half-close', port, data: data.slice(0, 200), bytes: data.length });
      socket.end(`received ${data.length} bytes\n`);
    });
  };
  if (config.bannerPort !== undefined) {
    const port = config.bannerPort;
    const server = net.createServer((socket) => {
      socket.on('error', () => socket.destroy());
      record({ type: 'tcp-connect', port, local: socket.localAddress, remote: socket.remoteAddress });
      socket.write('220 banner.test ready\r\n');
      socket.on('data', (data: Buffer) => socket.write(`echo ${data.toString('latin1')}`));
    });
    await listenTcp(server, port, '::');
  }
  if (config.halfClosePorts) {
    const { plain, tls: tlsPort } = config.halfClosePorts;
    await listenTcp(net.createServer({ allowHalfOpen: true }, replyAfterFin(plain)), plain, '::');
    await listenTcp(tls.createServer({ key: config.keyPem, cert: config.certPem, allowHalfOpen: true }, replyAfterFin(tlsPort)), tlsPort, '::');
  }
  for (const port of config.udpRecorderPorts) {
    const socket = dgram.createSocket({ type: 'udp6' });
    socket.on('message', (data, rinfo) => record({ type: 'udp', port, from: rinfo.address, data: data.toString('latin1').slice(0, 200) }));
    await new Promise<void>((resolve) => socket.bind(port, '::', () => resolve()));
  }
  for (const address of config.dnsAddresses) {
    const udp = dns2.createUDPServer({ type: net.isIPv6(address) ? 'udp6' : 'udp4' } as any);
    udp.on('request', dnsHandler(address, 'udp') as any);
    await udp.listen(53, address);
    const tcp = dns2.createTCPServer(dnsHandler(address, 'tcp') as any);
    await listenTcp(tcp as unknown as net.Server, 53, address);
  }
  process.stdout.write('ready\n');
}

main().catch((err: Error) => {
  process.stderr.write(`internet fixture failed: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
