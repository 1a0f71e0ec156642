/**
 * Run inside a network namespace with tiny TCP buffers. One TCP client writes QUERIES framed DNS queries in
 * one go and reads nothing for a while: a server that respects backpressure stops reading once its answers
 * cannot be sent, so most of the client's bytes stay unsent on the client's side. Then the client reads, and
 * every answer must arrive. Prints one JSON line.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { EventLog } from '../../events/event-log.js';
import { buildPolicy } from '../../policy/index.js';
import { AddressBook } from '../../decision/address-book.js';
import { startDnsServer } from '../../dns/server.js';
import { queryBytes } from './dns-fixture.js';

const QUERIES = Number(process.argv[2] ?? 20000);

/** Count the DNS-over-TCP frames a socket receives. */
function countFrames(socket: net.Socket): { count: number } {
  const counter = { count: 0 };
  let pending = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
      pending = pending.subarray(2 + pending.readUInt16BE(0));
      counter.count++;
    }
  });
  return counter;
}
const origin = { file: 'probe', line: 1 };
const policy = buildPolicy({ mode: { value: 'block', origin }, 'allowed-endpoints': { value: 'allowed.test', origin } });
const server = await startDnsServer({
  listen: { host: '127.0.0.1', port: 0 },
  upstreams: ['127.0.0.1:9'],
  policy: () => policy,
  events: new EventLog({ stdout: false }),
  addressBook: new AddressBook(),
});
const port = server.tcpAddress.port;

const frames = Array.from({ length: QUERIES }, (_, i) => {
  const query = queryBytes(i & 0xffff, 'localhost', 1);
  const frame = Buffer.alloc(2 + query.length);
  frame.writeUInt16BE(query.length, 0);
  query.copy(frame, 2);
  return frame;
});
const payload = Buffer.concat(frames);
const client = net.connect(port, '127.0.0.1');
await new Promise((resolve) => client.once('connect', resolve));
client.pause();
client.write(payload);
await new Promise((resolve) => setTimeout(resolve, 1500));
const unsentWhileNotReading = client.writableLength;

// Meanwhile another client is served.
const udp = dgram.createSocket('udp4');
const udpAnswered = await new Promise<boolean>((resolve) => {
  const timer = setTimeout(() => resolve(false), 2000);
  udp.once('message', () => {
    clearTimeout(timer);
    resolve(true);
  });
  udp.send(queryBytes(7, 'localhost', 1), server.udpAddress.port, '127.0.0.1');
});
udp.close();

const answered = countFrames(client);
client.resume();
const deadline = Date.now() + 20_000;
while (answered.count < QUERIES && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
client.destroy();

// A client that sends everything, half-closes, and reads only later still gets every answer before the close.
const halfClosed = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
await new Promise((resolve) => halfClosed.once('connect', resolve));
halfClosed.pause();
halfClosed.end(payload);
await new Promise((resolve) => setTimeout(resolve, 1000));
const halfClosedAnswered = countFrames(halfClosed);
const ended = new Promise<void>((resolve) => halfClosed.once('end', () => resolve()));
halfClosed.resume();
await Promise.race([ended, new Promise((resolve) => setTimeout(resolve, 20_000))]);
halfClosed.destroy();
await server.close();
console.log(
  JSON.stringify({ queries: QUERIES, payloadBytes: payload.length, unsentWhileNotReading, udpAnswered, answers: answered.count, halfClosedAnswers: halfClosedAnswered.count }),
);
