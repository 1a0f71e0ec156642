import net from 'node:net';

/**
 * `node dist/bench/hold-server.js`: a TCP server on 127.0.0.1 that accepts connections and holds them, sending
 * nothing: the far end of the idle tunnels. A separate process, so that its sockets do not count against the
 * bench's RLIMIT_NOFILE. Prints {"port":N} on stdout; exits when stdin closes (the bench ended) or on SIGTERM.
 */
const server = net.createServer({ noDelay: true }, (socket) => {
  socket.on('error', () => socket.destroy());
});
server.on('error', (err) => {
  process.stderr.write(`hold-server: ${err.message}\n`);
});
server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as net.AddressInfo).port })}\n`);
});
process.stdin.resume();
process.stdin.once('end', () => process.exit(0));
process.once('SIGTERM', () => process.exit(0));
