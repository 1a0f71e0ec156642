/**
 * A process that set a socket mark at start (as root) and then lost the capability to set marks (its effective
 * uid changed to 65534, which clears its effective capabilities): both ways of opening a tunnel's upstream
 * (node's socket, connectUpstream; the kernel relay's, connectUpstreamInKernel) must refuse the same way, and so must
 * a plain-HTTP request through the explicit proxy (the forwarder's upstream pool). Prints one JSON line:
 * each path's status and close error, or what it did instead. Run by test/unit/net-socket-mark.test.ts.
 */
import http from 'node:http';
import net from 'node:net';
import { EventLog } from '../../events/event-log.js';
import type { CloseEvent, EgressEvent } from '../../events/schema.js';
import { blockModeContext } from './block-mode-context.js';
import { createHttpProxyServer, type HttpProxyServer } from '../../proxy/explicit/server.js';
import { createHttpForwarder } from '../../proxy/relay/http-forwarder.js';
import { createTrafficCounters } from '../../proxy/relay/traffic-counters.js';
import { spliceTunnel } from '../../proxy/relay/tunnel.js';
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

/** An explicit proxy allowing `a.test` (at 127.0.0.1), listening; the close events it emits are kept in `closes`. */
function explicitProxy(closes: CloseEvent[]): HttpProxyServer {
  const events = new EventLog({ stdout: false });
  events.subscribe((e: EgressEvent) => void (e.event === 'close' && closes.push(e)));
  const forwarder = createHttpForwarder({ events, connectTimeoutMs: 2000, idleTimeoutMs: 5000 });
  const context = blockModeContext('a.test:*', ['a.test'], events);
  return createHttpProxyServer({ ...context, counters: createTrafficCounters(), tunnel: spliceTunnel, connectTimeoutMs: 2000, idleTimeoutMs: 5000, maxTunnels: 10, forwarder });
}

/** A GET through the proxy: its status, and the error of the request's close event. */
function forwarded(proxy: HttpProxyServer, closes: CloseEvent[], port: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const target = `a.test:${port}`;
    const req = http.request({ host: '127.0.0.1', port: (proxy.address() as net.AddressInfo).port, path: `http://${target}/`, headers: { host: target } }, (res) => {
      res.resume();
      res.once('end', () => setImmediate(() => resolve({ status: res.statusCode ?? 0, error: closes[0]?.error ?? 'no close event' })));
    });
    req.once('error', (err) => resolve({ other: String(err) }));
    req.end();
  });
}

const server = net.createServer((socket) => socket.destroy());
const closes: CloseEvent[] = [];
const proxy = explicitProxy(closes);
proxy.listen(0, '127.0.0.1');
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
    forwarded(proxy, closes, port),
  ]).then(([js, kernel, forward]) => {
    process.stdout.write(JSON.stringify({ js, kernel, forward }) + '\n');
    process.exit(0);
  });
});
