import tls from 'node:tls';
import type { AuthorizeContext } from '../../decision/authorize.js';
import { createHttpProxyServer, type HttpProxyServer } from '../../proxy/explicit/server.js';
import { createHttpForwarder } from '../../proxy/relay/http-forwarder.js';
import { createInspector, type LeafSource } from '../../proxy/relay/inspection.js';
import { createTrafficCounters } from '../../proxy/relay/traffic-counters.js';
import { spliceTunnel } from '../../proxy/relay/tunnel.js';
import { testCa } from './servers.js';

/**
 * The explicit proxy with TLS inspection, in this process, listening on a free loopback port: its forwarder and
 * inspector trust the test CA's upstream servers; timeouts 3 s (connect) and `idleTimeoutMs` (10 s unless given). Tests only.
 */
export async function startInspectingProxy(context: AuthorizeContext, leaves: LeafSource, idleTimeoutMs = 10_000): Promise<HttpProxyServer> {
  const upstreamTrust = tls.createSecureContext({ ca: testCa().certPem });
  const forwarder = createHttpForwarder({ events: context.events, connectTimeoutMs: 3000, idleTimeoutMs, upstreamTrust: () => upstreamTrust });
  const inspector = createInspector({ ...context, leaves, forwarder, idleTimeoutMs, connectTimeoutMs: 3000, upstreamTrust: () => upstreamTrust });
  const proxy = createHttpProxyServer({
    ...context,
    counters: createTrafficCounters(),
    tunnel: spliceTunnel,
    connectTimeoutMs: 3000,
    idleTimeoutMs,
    maxTunnels: 100,
    inspector,
    forwarder,
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  return proxy;
}
