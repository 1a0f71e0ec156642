/**
 * A process that set a socket mark at start (as root) and then lost the capability to set marks (its effective
 * uid changed to 65534, which clears its effective capabilities): both ways of opening a tunnel's upstream
 * (node's socket, connectUpstream; the kernel relay's, connectUpstreamInKernel) must refuse the same way. Prints
 * one JSON line: each path's status and close error, or what it did instead. Run by test/unit/net-socket-mark.test.ts.
 */
import net from 'node:net';
import { connectUpstream, connectUpstreamInKernel, UpstreamConnectError } from '../../net/connect.js';
import { cancelKernelUpstream } from '../../net/kernel-relay.js';
import { useSocketMark } from '../../net/socket-mark.js';

setTimeout(() => {
  process.stdout.write(JSON.stringify({ error: 'timed out' }) + '\n');
  process.exit(3);
}, 10_000).unref();

type Outcome = { status: number; error: string } | { connected: true } | { other: string };

async function outcome(connect: () => Promise<unknown>, close: (upstream: unknown) => void): Promise<Outcome> {
  try {
    close(await connect());
    return { connected: true };
  } catch (err) {
    return err instanceof UpstreamConnectError ? { status: err.status, error: err.error } : { other: String(err) };
  }
}

const server = net.createServer((socket) => socket.destroy());
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address() as net.AddressInfo;
  useSocketMark(0x5eed1e56);
  process.seteuid!(65534);
  void Promise.all([
    outcome(
      () => connectUpstream('127.0.0.1', port, 2000),
      (socket) => (socket as net.Socket).destroy(),
    ),
    outcome(
      () => connectUpstreamInKernel('127.0.0.1', port, 2000),
      (id) => cancelKernelUpstream(id as number),
    ),
  ]).then(([js, kernel]) => {
    process.stdout.write(JSON.stringify({ js, kernel }) + '\n');
    process.exit(0);
  });
});
