/**
 * A BatchUdpSocket on `::` that answers every datagram LATER (sendTo from a timer, as the DNS server answers a query
 * that went upstream) with `late <source address as the addon wrote it>`. Prints `ready PORT`, then one line per
 * answer; exits by itself after 20 s. Run by test/e2e/dns-udp-link-local.test.ts inside a network namespace.
 */
import { BatchUdpSocket } from '../../net/udp-batch.js';

const socket: BatchUdpSocket = BatchUdpSocket.bind('::', 0, (datagram) => {
  const { address, port } = datagram;
  setTimeout(() => {
    const sent = socket.sendTo(Buffer.from(`late ${address}`), address, port);
    process.stdout.write(`sent ${sent} ${address}\n`);
  }, 20);
  return undefined;
});
process.stdout.write(`ready ${socket.port}\n`);
setTimeout(() => {
  socket.close();
  process.exit(0);
}, 20_000);
