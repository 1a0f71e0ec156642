import { writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { loadCertificateAuthority } from '../../certs/ca-store.js';
import type { KeyAndCert } from '../../certs/certificates.js';
import { LeafIssuer } from '../../certs/leaf-issuer.js';
import type { AuthorizeContext } from '../../decision/authorize.js';
import { createHttpProxyServer, type HttpProxyServer } from '../../proxy/explicit/server.js';
import { createHttpForwarder } from '../../proxy/relay/http-forwarder.js';
import { createInspector, type LeafSource } from '../../proxy/relay/inspection.js';
import { createTrafficCounters } from '../../proxy/relay/traffic-counters.js';
import { spliceTunnel } from '../../proxy/relay/tunnel.js';
import { testCa } from './servers.js';
import { tempDir } from './temp-dir.js';

/** Leaf certificates from `inspectionCa`, loaded as the sidecar loads a given CA (its files in a new temporary directory). */
export function inspectionLeaves(inspectionCa: KeyAndCert, prefix: string): { leaves: LeafIssuer; caFile: string } {
  const dir = tempDir(prefix);
  const caFile = join(dir, 'inspection-ca.pem');
  const caKeyFile = join(dir, 'inspection-ca.key');
  writeFileSync(caFile, inspectionCa.certPem);
  writeFileSync(caKeyFile, inspectionCa.keyPem, { mode: 0o600 });
  return { leaves: new LeafIssuer(loadCertificateAuthority({ stateDir: dir, caCert: caFile, caKey: caKeyFile })), caFile };
}

/** A TLS connection to `host:port` through `proxy`'s CONNECT (inspected), trusting `inspectionCa`. */
export async function inspectedSocket(proxy: net.Server, host: string, port: number, inspectionCa: KeyAndCert): Promise<tls.TLSSocket> {
  const socket = net.connect((proxy.address() as AddressInfo).port, '127.0.0.1');
  socket.write(`CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  await new Promise<void>((resolve) => socket.once('data', () => resolve()));
  const secure = tls.connect({ socket, servername: host, ca: inspectionCa.certPem, ALPNProtocols: ['http/1.1'] });
  await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
  return secure;
}

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
