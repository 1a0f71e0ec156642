/**
 * net/socket-mark.ts: every kind of outbound socket egress-guard opens carries the mark once one is in use, and
 * none does without. The kernel is the judge: `ss -e` prints a socket's fwmark. Needs root (CAP_NET_RAW).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { connectUpstreamInKernel } from '../../net/connect.js';
import { cancelKernelUpstream, kernelRelayUnavailable } from '../../net/kernel-relay.js';
import { connectTcp, markDatagramSocket, markedAgent, socketMark, useSocketMark } from '../../net/socket-mark.js';

const run = promisify(execFile);
const MARK = 0x5eed1e55;
let server: net.Server;
let port: number;

/** The fwmark `ss` reports for the socket whose local port is `localPort` (undefined: none). */
async function fwmarkOf(protocol: 'tcp' | 'udp', localPort: number): Promise<string | undefined> {
  const { stdout } = await run('ss', [protocol === 'tcp' ? '-tnHe' : '-unHe', 'state', 'all', `sport = :${localPort}`], { timeout: 5000 });
  assert.ok(stdout.includes(`:${localPort}`), `ss lists the socket on port ${localPort}: ${stdout}`);
  return /fwmark:(0x[0-9a-f]+)/.exec(stdout)?.[1];
}

function connected(socket: net.Socket): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
}

before(async () => {
  server = http.createServer((req, res) => res.end(String(req.socket.remotePort)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
});

after(() => {
  server.close();
});

afterEach(() => {
  useSocketMark(undefined);
});

test('without a mark, a TCP socket carries none', async () => {
  const socket = connectTcp({ host: '127.0.0.1', port });
  await connected(socket);
  assert.equal(await fwmarkOf('tcp', socket.localPort!), undefined);
  socket.destroy();
});

test('with a mark, TCP sockets to IPv4 and IPv6 addresses carry it from their first packet', async () => {
  useSocketMark(MARK);
  assert.equal(socketMark(), MARK);
  for (const host of ['127.0.0.1', '[::1]']) {
    const listener = net.createServer((s) => s.end());
    await new Promise<void>((resolve) => listener.listen(0, host.replace(/[[\]]/g, ''), resolve));
    const socket = connectTcp({ host, port: (listener.address() as net.AddressInfo).port, allowHalfOpen: true, noDelay: true });
    await connected(socket);
    assert.equal(await fwmarkOf('tcp', socket.localPort!), `0x${MARK.toString(16)}`, host);
    socket.destroy();
    listener.close();
  }
});

test('with a mark, a TCP connect by name is refused rather than sent unmarked', () => {
  useSocketMark(MARK);
  assert.throws(() => connectTcp({ host: 'localhost', port }), /not an IP address/);
});

test('with a mark, a connected UDP socket carries it', async () => {
  useSocketMark(MARK);
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.connect(9, '127.0.0.1', resolve));
  markDatagramSocket(socket);
  assert.equal(await fwmarkOf('udp', socket.address().port), `0x${MARK.toString(16)}`);
  socket.close();
});

test("with a mark, the collector stream's agent connects marked sockets, by name too", async () => {
  useSocketMark(MARK);
  const agent = markedAgent('http:', { keepAlive: true });
  const clientPort = await new Promise<number>((resolve, reject) => {
    http
      .get({ host: 'localhost', port, agent }, (res) => {
        let body = '';
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => resolve(Number(body)));
      })
      .on('error', reject);
  });
  // Kept alive, so the client's socket is still there to look at.
  assert.equal(await fwmarkOf('tcp', clientPort), `0x${MARK.toString(16)}`);
  agent.destroy();
});

test('a mark out of range is refused at start', () => {
  assert.throws(() => useSocketMark(0), /1 to 0xffffffff/);
  assert.throws(() => useSocketMark(2 ** 32), /1 to 0xffffffff/);
});

test('a process that may not set marks is told which capability it lacks', async () => {
  const module = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../net/socket-mark.js');
  const script = `import(${JSON.stringify(module)}).then((m) => m.useSocketMark(5)).catch((e) => { console.error(e.message); process.exit(3); })`;
  const result = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, '-e', script], { timeout: 10_000 }).then(
    () => ({ code: 0, stderr: '' }),
    (err: { code: number; stderr: string }) => err,
  );
  assert.equal(result.code, 3, result.stderr);
  assert.match(result.stderr, /CAP_NET_ADMIN, or CAP_NET_RAW/);
});

test('an upstream the kernel relay opens (connectUpstreamInKernel) carries the mark when one is in use, none without', async () => {
  assert.equal(kernelRelayUnavailable(), undefined, 'the kernel_relay addon is built (npm run install)');
  for (const mark of [MARK, undefined]) {
    useSocketMark(mark);
    for (const host of ['127.0.0.1', '::1']) {
      const listener = net.createServer((s) => s.on('error', () => undefined));
      await new Promise<void>((resolve) => listener.listen(0, host, resolve));
      const listenerPort = (listener.address() as net.AddressInfo).port;
      const upstream = await connectUpstreamInKernel(host, listenerPort, 2000);
      // The outbound socket is the one whose destination is the listener (its local port is the addon's to know).
      const { stdout } = await run('ss', ['-tnHe', 'state', 'all', `dport = :${listenerPort}`], { timeout: 5000 });
      assert.ok(stdout.includes(`:${listenerPort}`), `ss lists the upstream socket: ${stdout}`);
      assert.equal(/fwmark:(0x[0-9a-f]+)/.exec(stdout)?.[1], mark === undefined ? undefined : `0x${MARK.toString(16)}`, `${host}, mark ${mark}`);
      cancelKernelUpstream(upstream);
      listener.close();
    }
  }
});

test('a mark that can no longer be set fails the upstream alike on every path (tunnels and forwarded requests): 502 upstream-eperm, never an unmarked socket', async () => {
  assert.equal(kernelRelayUnavailable(), undefined, 'the kernel_relay addon is built (npm run install)');
  const helper = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/marked-connect-without-capability.js');
  const { stdout } = await run(process.execPath, [helper], { timeout: 15_000 });
  assert.deepEqual(JSON.parse(stdout), {
    js: { status: 502, error: 'upstream-eperm' },
    kernel: { status: 502, error: 'upstream-eperm' },
    forward: { status: 502, error: 'upstream-eperm' },
  });
});
