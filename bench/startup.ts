import dgram from 'node:dgram';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { queryBytes } from '../test/helpers/dns-fixture.js';
import { freePort, startEgressGuard } from './proxies.js';
import { median, round } from './stats.js';

/**
 * Start to ready: from spawning `egress-guard run` to every listener accepting: the explicit proxy (TCP connect),
 * the DNS server (a UDP query answered) and the transparent listener (TCP connect). Polled every POLL_MS.
 */
export interface StartupSettings {
  starts: number;
  /** Give up on one start after this long. */
  timeoutMs: number;
}

export const DEFAULT_STARTUP_SETTINGS: StartupSettings = { starts: 5, timeoutMs: 10_000 };

export interface StartupResult {
  listeners: string[];
  /** ms from spawn to all listeners accepting, per start. */
  starts_ms: number[];
  median_ms: number;
  /**
   * egress-guard's CPU time (user + system, ms) when it was ready, per start: what starting cost, which, unlike the
   * wall time, a busy machine does not stretch (it waits for a core, it does not spend more).
   */
  cpu_ms: number[];
  median_cpu_ms: number;
  errors: string[];
}

const POLL_MS = 2;

function tcpAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      socket.destroy();
      resolve(false);
    });
  });
}

/** A UDP socket that sends a denied query (answered locally, no upstream needed) and reports whether any reply came. */
function dnsProbe(port: number): { answered: () => boolean; send: () => void; close: () => void } {
  const socket = dgram.createSocket('udp4');
  let answered = false;
  socket.on('message', () => (answered = true));
  socket.on('error', () => undefined);
  const query = queryBytes(7, 'ready.attacker.test');
  return {
    answered: () => answered,
    send: () => socket.send(query, port, '127.0.0.1'),
    close: () => socket.close(),
  };
}

async function freeDnsPort(): Promise<number> {
  // The DNS server binds UDP and TCP on the same port: a TCP-free port that UDP can bind too.
  for (let i = 0; i < 20; i++) {
    const port = await freePort();
    const udp = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    await new Promise<void>((r) => udp.close(() => r()));
    if (ok) return port;
  }
  throw new Error('no free port for DNS');
}

async function oneStart(dir: string, index: number, settings: StartupSettings): Promise<{ wallMs: number; cpuMs: number }> {
  const dnsPort = await freeDnsPort();
  const transparentPort = await freePort();
  const guard = await startEgressGuard({
    eventsFile: join(dir, `startup-${index}.ndjson`),
    env: {
      EGRESS_DNS_LISTEN: `127.0.0.1:${dnsPort}`,
      // No resolver is consulted: the probe asks for a denied name.
      EGRESS_DNS_UPSTREAM: '127.0.0.1:9',
      EGRESS_TRANSPARENT_LISTEN: `127.0.0.1:${transparentPort}`,
    },
  });
  const dns = dnsProbe(dnsPort);
  try {
    const deadline = guard.spawnedAt + settings.timeoutMs;
    const pending = { proxy: true, transparent: true };
    while (performance.now() < deadline) {
      if (pending.proxy) pending.proxy = !(await tcpAccepts(guard.port));
      if (pending.transparent) pending.transparent = !(await tcpAccepts(transparentPort));
      if (!dns.answered()) dns.send();
      await sleep(POLL_MS);
      if (!pending.proxy && !pending.transparent && dns.answered()) return { wallMs: performance.now() - guard.spawnedAt, cpuMs: guard.cpuMs() };
    }
    throw new Error(
      `not ready within ${settings.timeoutMs} ms (waiting for ${[
        ...Object.entries(pending)
          .filter(([, v]) => v)
          .map(([k]) => k),
        ...(dns.answered() ? [] : ['dns']),
      ].join(', ')})`,
    );
  } finally {
    dns.close();
    await guard.stop();
  }
}

/** `settings.starts` starts one after another; the median of those that became ready. */
export async function measureStartToReady(dir: string, settings: StartupSettings, progress: (line: string) => void): Promise<StartupResult> {
  const starts: number[] = [];
  const cpu: number[] = [];
  const errors: string[] = [];
  for (let i = 0; i < settings.starts; i++) {
    try {
      const start = await oneStart(dir, i, settings);
      starts.push(round(start.wallMs, 1));
      cpu.push(start.cpuMs);
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  progress(
    `start to ready (proxy, DNS, transparent listeners): ${starts.join(', ')} ms (CPU ${cpu.join(', ')} ms)${errors.length ? `; ${errors.length} failed: ${errors[0]}` : ''}`,
  );
  return {
    listeners: ['proxy', 'dns', 'transparent'],
    starts_ms: starts,
    median_ms: starts.length ? median(starts) : NaN,
    cpu_ms: cpu,
    median_cpu_ms: cpu.length ? median(cpu) : NaN,
    errors,
  };
}
