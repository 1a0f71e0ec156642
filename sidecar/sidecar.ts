import type { AddressInfo } from 'node:net';
import { startEventStream, type EventStream } from '../events/delivery/stream-client.js';
import { startAdminServer, type AdminServer } from './admin-server.js';
import { describeConfig, type Config } from '../config/load-config.js';
import { EventLog } from '../events/event-log.js';
import { ciContextFrom } from '../events/schema.js';
import { formatHostPort, type Policy } from '../policy/index.js';
import { AddressBook } from '../decision/address-book.js';
import { withoutOwnListeners } from '../dns/own-endpoints.js';
import { readResolvConfUpstreams, startDnsServer, type DnsServer, type DnsStats } from '../dns/server.js';
import { lookupAddresses } from '../dns/address-lookup.js';
import { parseUpstream, UpstreamClient } from '../dns/upstream.js';
import { kernelRelayUnavailable, useRelay } from '../net/kernel-relay.js';
import { markedAgent, useSocketMark } from '../net/socket-mark.js';
import { createHttpProxyServer } from '../proxy/explicit/server.js';
import { createHttpForwarder } from '../proxy/relay/http-forwarder.js';
import { createInspector } from '../proxy/relay/inspection.js';
import { inspectionTrust, policyInspects } from './inspection.js';
import { watchPolicyFile } from './policy-watch.js';
import { useYoungGeneration } from './young-generation.js';
import { listen } from '../net/listen.js';
import { Resolver } from '../decision/resolver.js';
import { createTrafficCounters } from '../proxy/relay/traffic-counters.js';
import { startTransparentListeners, type TransparentListeners } from '../proxy/transparent/server.js';
import { spliceTunnel } from '../proxy/relay/tunnel.js';
import { startNetfilterLog, type NetfilterLog } from '../netlog/reader.js';

export interface Sidecar {
  events: EventLog;
  proxyAddress: AddressInfo;
  policy: () => Policy;
  /**
   * Re-read the configuration and swap the policy; open tunnels are kept. With transparent listeners (redirect
   * rules), a policy that changes the mode is refused whole: the rules keep the mode they were applied in.
   */
  reload(): Promise<boolean>;
  /** Stop accepting, let tunnels drain up to drain-timeout, then close everything. */
  close(): Promise<void>;
}

export interface SidecarOptions {
  loadConfig: () => Config;
  env: NodeJS.ProcessEnv;
  events?: EventLog;
}

/** The DNS servers' cache counters, added up (one server per dns-listen address). */
function dnsStats(servers: readonly DnsServer[]): DnsStats | undefined {
  if (servers.length === 0) return undefined;
  const sum = { cacheHits: 0, cacheMisses: 0, cacheEntries: 0 };
  for (const server of servers) {
    const s = server.stats();
    sum.cacheHits += s.cacheHits;
    sum.cacheMisses += s.cacheMisses;
    sum.cacheEntries += s.cacheEntries;
  }
  return sum;
}

function formatPolicy(policy: Policy) {
  return { mode: policy.mode, dns: policy.dns, endpoints: policy.endpoints.length, allowed_ips: policy.allowedIps.length, trusted_ranges: policy.trustedRanges.length };
}

/** Start every listener of `egress-guard run` on one policy. */
export async function startSidecar(options: SidecarOptions): Promise<Sidecar> {
  const config = options.loadConfig();
  const events = options.events ?? new EventLog({ eventsFile: config.eventsFile, level: config.logLevel, ci: ciContextFrom(options.env), stdoutEvents: config.stdoutEvents });
  let policy = config.policy;
  const currentPolicy = () => policy;
  for (const warning of policy.warnings) events.log.warn({ warning }, 'policy warning');
  events.log.info({ config: describeConfig(config) }, 'effective configuration');

  // Before any socket is opened; throws (egress-guard does not start) when the process may not set marks.
  useSocketMark(config.socketMark);
  useRelay(config.relay, config.relayHandOverAfter, config.relayThreadAfter);
  useYoungGeneration(config.youngGeneration);
  const noKernelRelay = kernelRelayUnavailable();
  if (noKernelRelay) events.log.warn({ reason: noKernelRelay }, 'relay kernel: the native relay is unavailable; tunnels are relayed in JavaScript');
  const marked = config.socketMark !== undefined;
  // resolv.conf is read only by who needs it: the DNS server, and the proxy's own lookups when marked.
  const dnsUpstreams = config.dnsUpstream.length > 0 || (config.dnsListen.length === 0 && !marked) ? config.dnsUpstream : await readResolvConfUpstreams();
  // Started first, so the stream sees every decision, including those of the first connections.
  const stream: EventStream | undefined = config.collectorUrl
    ? startEventStream({ url: config.collectorUrl, token: config.collectorToken, spoolDir: config.spoolDir, events, ...(marked && { createAgent: markedAgent }) })
    : undefined;
  const addressBook = new AddressBook();
  // With a socket mark, the proxy's own lookups go through dns/'s client too: node's resolvers cannot mark.
  // Not through egress-guard's own DNS listeners (a resolv.conf that names them): a lookup of its own is no job's.
  const markedLookup = marked ? new UpstreamClient(withoutOwnListeners(dnsUpstreams.map(parseUpstream), config.dnsListen).kept, { timeoutMs: 2000 }) : undefined;
  const resolver = new Resolver({
    overrides: config.resolve,
    addressBook,
    timeoutMs: config.connectTimeoutMs,
    servers: config.dnsUpstream,
    ...(markedLookup && { lookup: (name: string) => lookupAddresses(markedLookup, name) }),
  });
  const counters = createTrafficCounters();
  // TLS inspection for hosts with method or path entries: the CA is loaded now if the policy needs it (a CA that
  // cannot be used stops the start), else by the reload that adds such entries, before they take effect.
  const trust = inspectionTrust(config, events);
  if (policyInspects(policy)) await trust.prepare();
  const forwarder = createHttpForwarder({ events, connectTimeoutMs: config.connectTimeoutMs, idleTimeoutMs: config.idleTimeoutMs, upstreamTrust: trust.upstreamTrust });
  const inspector = createInspector({
    policy: currentPolicy,
    resolver,
    events,
    leaves: trust.leaves,
    forwarder,
    idleTimeoutMs: config.idleTimeoutMs,
    connectTimeoutMs: config.connectTimeoutMs,
    halfCloseTimeoutMs: config.halfCloseTimeoutMs,
    upstreamTrust: trust.upstreamTrust,
  });
  // What the explicit and the transparent listeners share: one policy, resolver, event log, counters, limits.
  const listenerOptions = {
    policy: currentPolicy,
    resolver,
    events,
    counters,
    tunnel: spliceTunnel,
    connectTimeoutMs: config.connectTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    halfCloseTimeoutMs: config.halfCloseTimeoutMs,
    maxTunnels: config.maxTunnels,
    inspector,
    forwarder,
  };
  const proxyServer = createHttpProxyServer({ ...listenerOptions, headTimeoutMs: config.headTimeoutMs });
  const dnsServers: DnsServer[] = [];
  // Before the listeners: reports of what the rules refused from the job's first packet on are read.
  const netfilterLog: NetfilterLog | undefined = config.netfilterLog ? startNetfilterLog({ file: config.netfilterLog, events, mode: () => policy.mode }) : undefined;
  let transparent: TransparentListeners | undefined;
  let admin: AdminServer | undefined;
  let closing: Promise<void> | undefined;
  let proxyAddress: AddressInfo;

  try {
    proxyAddress = await listen(proxyServer, config.listen, 'listen');
    events.log.info({ listener: 'proxy', address: proxyAddress.address, port: proxyAddress.port, policy: formatPolicy(policy) }, 'listening');

    if (config.dnsListen.length > 0) {
      const upstreams = dnsUpstreams;
      for (const address of config.dnsListen) {
        try {
          const otherListens = config.dnsListen.filter((other) => other !== address);
          const server = await startDnsServer({
            listen: address,
            otherListens,
            upstreams,
            policy: currentPolicy,
            events,
            addressBook,
            localNames: config.localNames,
            udp: config.dnsUdp,
          });
          dnsServers.push(server);
          events.log.info({ listener: 'dns', address: server.udpAddress.address, port: server.udpAddress.port, udp: server.udp, upstreams: server.upstreams }, 'listening');
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (address.host.includes(':') && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) {
            // IPv6 is off in this namespace (Docker's default): no IPv6 DNS can be sent, so none needs answering.
            events.log.warn({ address: formatHostPort(address.host, address.port), err: code }, 'IPv6 is not available here: no DNS listener on it');
            continue;
          }
          // Block mode fails closed: without its resolver the job must not run unfiltered. Audit never breaks a job.
          if (policy.mode === 'block') {
            throw new Error(
              `dns-listen: cannot serve DNS on ${formatHostPort(address.host, address.port)}: ${(err as Error).message}; block mode does not start without its resolver (set dns-listen to a free address, or off)`,
            );
          }
          events.log.error({ err: (err as Error).message, address: formatHostPort(address.host, address.port) }, 'DNS listener not started (audit mode goes on without it)');
        }
      }
    }

    if (config.transparentListen.length > 0) {
      transparent = await startTransparentListeners({ ...listenerOptions, listen: config.transparentListen, addressBook });
      for (const a of transparent.addresses) events.log.info({ listener: 'transparent', address: a.address, port: a.port }, 'listening');
    }

    if (config.adminListen) {
      // prom-client (12 MiB) is loaded only where metrics are served.
      const { newMetricsRegistry, registerEventStreamMetrics, registerProcessMetrics, registerSidecarMetrics } = await import('./metrics.js');
      const metrics = newMetricsRegistry();
      registerSidecarMetrics(metrics, { events, counters, dnsStats: () => dnsStats(dnsServers), netfilterStats: () => netfilterLog?.stats() });
      if (stream) registerEventStreamMetrics(metrics, stream.stats);
      registerProcessMetrics(metrics);
      admin = await startAdminServer({ listen: config.adminListen, metrics, health: () => closing === undefined });
      events.log.info({ listener: 'admin', address: config.adminListen.host, port: admin.port }, 'listening');
    }
    // Every listener is up: whoever waits for the "listening" lines reads them now, not at the next periodic write.
    events.flush();
  } catch (err) {
    proxyServer.close();
    markedLookup?.close();
    await Promise.all([...dnsServers.map((d) => d.close()), transparent?.close(), admin?.close(), netfilterLog?.stop(), stream?.stop()]);
    throw err;
  }

  const reloadNow = async (): Promise<boolean> => {
    try {
      const next = options.loadConfig();
      if (transparent && next.policy.mode !== policy.mode) {
        // The redirect rules were applied in the mode egress-guard started in (REJECT or LOG for UDP and ICMP,
        // by a root process); egress-guard cannot change them, and two modes at once would be a lie in one place.
        events.log.error(
          { mode: policy.mode, requested: next.policy.mode },
          `policy reload refused: it changes mode ${policy.mode} -> ${next.policy.mode}, and the redirect rules stay in ${policy.mode} mode until egress-guard restarts (rules apply --mode ${next.policy.mode}); keeping the previous policy`,
        );
        return false;
      }
      // A policy that starts inspecting needs the CA: one that cannot be used keeps the previous policy.
      if (policyInspects(next.policy)) await trust.prepare();
      policy = next.policy;
      for (const warning of policy.warnings) events.log.warn({ warning }, 'policy warning');
      events.log.info({ policy: formatPolicy(policy) }, 'policy reloaded');
      return true;
    } catch (err) {
      events.log.error({ err: (err as Error).message }, 'policy reload failed; keeping the previous policy');
      return false;
    }
  };
  // One reload at a time, in the order asked: a slow one (loading the CA) is not overtaken by a later one.
  let reloading: Promise<boolean> = Promise.resolve(true);

  const sidecar: Sidecar = {
    events,
    proxyAddress,
    policy: currentPolicy,
    reload() {
      reloading = reloading.then(reloadNow);
      return reloading;
    },
    close() {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => proxyServer.close(() => resolve()));
        const transparentClosed = transparent?.close();
        // Logged once the listeners are closed: whoever reads this line and connects is refused.
        events.log.info({ open: counters.open }, 'shutting down: no new connections, draining');
        proxyServer.closeIdleConnections();
        inspector.closeIdle();
        const deadline = Date.now() + config.drainTimeoutMs;
        while (counters.open > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        if (counters.open > 0) events.log.warn({ open: counters.open }, 'drain timeout: closing open connections');
        for (const socket of counters.tunnels) socket.destroy();
        proxyServer.closeAllConnections();
        await closed;
        await transparentClosed;
        await Promise.all(dnsServers.map((d) => d.close()));
        markedLookup?.close();
        await admin?.close();
        // Before the stream stops: what ulogd wrote last still reaches the collector.
        await netfilterLog?.stop();
        await stream?.stop();
        // Pending asynchronous stdout writes keep the event loop alive: the process exits after they land.
        events.log.info('stopped');
      })();
      return closing;
    },
  };
  // A mounted ConfigMap (or any edit) reaches egress-guard without a restart or a signal.
  const policyWatch = config.watchPolicy && config.policyFile ? watchPolicyFile(config.policyFile, () => sidecar.reload(), events.log) : undefined;
  return policyWatch ? { ...sidecar, close: () => (policyWatch.stop(), sidecar.close()) } : sidecar;
}
