/**
 * The transparent plain-HTTP listener in a worker thread, its events file at `workerData.eventsFile`: a test whose
 * events file can block (StalledEventsFile) keeps its own thread free to read it. Connections to the port it posts
 * are handed over as the transparent listener hands them (first bytes unread, socket paused), with the original
 * destination 127.0.0.1:`workerData.upstreamPort`. Policy, block mode: allowed.test and elsewhere.test at that port
 * (only allowed.test resolves to it).
 */
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { AddressBook } from '../../decision/address-book.js';
import { Resolver } from '../../decision/resolver.js';
import { EventLog } from '../../events/event-log.js';
import { buildPolicy } from '../../policy/index.js';
import { createTransparentHttp } from '../../proxy/transparent/http.js';

const { eventsFile, upstreamPort } = workerData as { eventsFile: string; upstreamPort: number };
const origin = { file: 'transparent-http-worker', line: 1 };
const policy = buildPolicy({
  mode: { value: 'block', origin },
  'allowed-endpoints': { value: `allowed.test:${upstreamPort} elsewhere.test:${upstreamPort}`, origin },
  'trusted-ranges': { value: '127.0.0.0/8', origin },
});
const addressBook = new AddressBook();
const resolver = new Resolver({
  overrides: new Map([
    ['allowed.test', ['127.0.0.1']],
    ['elsewhere.test', ['198.51.100.7']],
  ]),
  addressBook,
});
const events = new EventLog({ stdout: false, eventsFile });
const plainHttp = createTransparentHttp({ policy: () => policy, events, addressBook, resolver, connectTimeoutMs: 2000, idleTimeoutMs: 10_000 });
const front = net.createServer((socket) => {
  socket.pause();
  plainHttp.adopt(socket, { client: `${socket.remoteAddress}:${socket.remotePort}`, destination: { address: '127.0.0.1', port: upstreamPort, family: 4 } });
});
front.listen(0, '127.0.0.1', () => parentPort!.postMessage((front.address() as net.AddressInfo).port));
parentPort!.once('message', () => {
  front.close();
  events.flush();
  process.exit(0);
});
