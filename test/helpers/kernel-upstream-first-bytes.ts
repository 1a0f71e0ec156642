/**
 * One tunnel through the kernel relay with its upstream opened by the addon, whose client sends FIRST_BYTES bytes
 * while the first-bytes gate is still open (node reads and holds them), then its FIN. Prints one JSON line: what
 * upstream received (length, sha256) and the tunnel's close. Run by test/unit/kernel-upstream.test.ts as an
 * unprivileged user whose pipe quota is used up, so that the relay's pipes are the kernel's smallest (8 KiB).
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { connectUpstreamInKernel } from '../../net/connect.js';
import { RELAY, spliceKernelUpstream, type SpliceResult } from '../../net/splice.js';

const FIRST_BYTES = 48 * 1024;
setTimeout(() => {
  process.stdout.write(JSON.stringify({ error: 'timed out' }) + '\n');
  process.exit(3);
}, 15_000).unref();

const sent = randomBytes(FIRST_BYTES);
const received = new Promise<Buffer>((resolve) => {
  const upstream = net.createServer({ allowHalfOpen: true }, (socket) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('end', () => {
      socket.end();
      resolve(Buffer.concat(chunks));
    });
  });
  upstream.listen(0, '127.0.0.1', () => void start((upstream.address() as net.AddressInfo).port));
});
let onClosed!: (result: SpliceResult) => void;
const closed = new Promise<SpliceResult>((resolve) => (onClosed = resolve));

async function start(upstreamPort: number): Promise<void> {
  const proxy = net.createServer({ allowHalfOpen: true }, (client) => {
    void connectUpstreamInKernel('127.0.0.1', upstreamPort, 2000).then((id) => {
      // The gate settles once node holds every byte the client sent (as an SNI check holding a large first flight).
      const gate = new Promise<typeof RELAY>((resolve) => {
        const check = () => (client.readableLength >= FIRST_BYTES ? resolve(RELAY) : client.once('readable', check));
        check();
      });
      spliceKernelUpstream(client, id, { idleTimeoutMs: 10_000, clientGate: gate, onClose: onClosed });
    });
  });
  proxy.listen(0, '127.0.0.1', () => {
    const client = net.connect({ port: (proxy.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true }, () => client.end(sent));
    client.on('error', () => undefined);
    client.resume();
  });
}

const [body, close] = await Promise.all([received, closed]);
process.stdout.write(
  JSON.stringify({
    length: body.length,
    same: createHash('sha256').update(body).digest('hex') === createHash('sha256').update(sent).digest('hex'),
    bytesOut: close.bytesOut,
    error: close.error ?? null,
  }) + '\n',
);
process.exit(0);
