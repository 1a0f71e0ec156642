/**
 * A BatchUdpSocket on `::` (or the address given as the first argument; `v6only` as the second: an IPv6-only socket, as
 * the container DNS listener binds `[::]` beside `0.0.0.0`) that answers a datagram saying `now` at once (returned from the handler, sent with the
 * batch) and any other LATER (sendTo from a timer, as the DNS server answers a query that went upstream), with
 * `<now|late> <source address as the addon wrote it>`; both from the address the datagram was sent to (its `local`).
 * Prints `ready PORT`, then one line per later answer; exits by itself after 20 s. Run by the e2e tests
 * dns-udp-link-local and dns-udp-source-address inside a network namespace.
 */
import { BatchUdpSocket } from '../../net/udp-batch.js';

const host = process.argv[2] ?? '::';
const ipv6Only = process.argv[3] === 'v6only';

const socket: BatchUdpSocket = BatchUdpSocket.bind(
  host,
  0,
  (datagram) => {
    const { address, port, local } = datagram;
    if (datagram.bytes.toString() === 'now') return Buffer.from(`now ${address}`);
    setTimeout(() => {
      const sent = socket.sendTo(Buffer.from(`late ${address}`), address, port, local);
      process.stdout.write(`sent ${sent} ${address}\n`);
    }, 20);
    return undefined;
  },
  undefined,
  'copy',
  ipv6Only,
);
process.stdout.write(`ready ${socket.port}\n`);
setTimeout(() => {
  socket.close();
  process.exit(0);
}, 20_000);
