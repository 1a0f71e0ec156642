import { spawn, type ChildProcess } from 'node:child_process';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { openTunnel } from './clients.js';
import { runLoad } from './load.js';
import { nofileLimit, RssSampler, rssMiB, withNofile } from './procfs.js';
import { stopChild, type RunningProxy } from './proxies.js';
import { round } from './stats.js';

/** The goal of issue 14: this many idle tunnels held. */
export const IDLE_TUNNELS_GOAL = 10_000;
/** File descriptors a proxy needs per tunnel (client side, upstream side), and what it needs besides. */
const FDS_PER_TUNNEL = 2;
const FDS_RESERVED = 100;

export interface IdleTunnelSettings {
  /** Stop opening at this many tunnels... */
  count: number;
  /** ...or after this long, whichever comes first. */
  openCapMs: number;
  concurrency: number;
  /** How long the tunnels are held idle while the proxy's CPU is measured. */
  holdMs: number;
  /**
   * Send a few bytes (not TLS) through each tunnel once it is open, so that egress-guard's check of the first
   * bytes settles and the tunnel is decided (and, with relay=kernel, handed to the kernel relay) before it idles.
   * Without them the tunnels idle in that check. `npm run bench` sends them (idle keep-alive tunnels of a real job
   * are decided connections); BENCH_IDLE_DECIDED=0 leaves the tunnels in the check.
   */
  decided?: boolean;
}

export const DEFAULT_IDLE_SETTINGS: IdleTunnelSettings = { count: IDLE_TUNNELS_GOAL, openCapMs: 30_000, concurrency: 100, holdMs: 5_000 };

export interface IdleTunnelsResult {
  route: string;
  /** Tunnels the run tried to open: settings.count, or fewer when RLIMIT_NOFILE cannot hold them (see limited_by). */
  target: number;
  limited_by?: string;
  opened: number;
  failed: number;
  errors: Record<string, number>;
  open_ms: number;
  /** Tunnels still open (not closed by the proxy) at the end of the hold. */
  held: number;
  rss_mib_before: number;
  /** Largest RSS sampled while the tunnels were held. */
  rss_mib_held: number;
  hold_ms: number;
  /** CPU the proxy used over the hold, with nothing moving. */
  idle_cpu_ms: number;
}

/** The hold server: a child process that accepts connections and keeps them, silent. */
export interface HoldServer {
  port: number;
  stop(): Promise<void>;
}

export async function startHoldServer(): Promise<HoldServer> {
  const [command, args] = withNofile(process.execPath, [fileURLToPath(new URL('./hold-server.js', import.meta.url))]);
  const child: ChildProcess = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('hold server did not report its port within 10 s')), 10_000);
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { port: number }).port);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`hold server exited (${code})`));
    });
  }).catch(async (err: unknown) => {
    await stopChild(child);
    throw err;
  });
  return { port, stop: () => stopChild(child) };
}

/** How many tunnels a proxy (and this process) can hold under the current RLIMIT_NOFILE, and why fewer than wanted. */
export function tunnelCapacity(wanted: number): { target: number; limited_by?: string } {
  const { hard } = nofileLimit();
  const cap = Math.floor((hard - FDS_RESERVED) / FDS_PER_TUNNEL);
  if (cap >= wanted) return { target: wanted };
  return { target: cap, limited_by: `RLIMIT_NOFILE hard limit ${hard}: a proxy needs ${FDS_PER_TUNNEL} descriptors per tunnel, so at most ${cap}` };
}

/**
 * Opens up to `settings.count` CONNECT tunnels to the hold server through the proxy (bounded by count and by
 * openCapMs), holds them idle for holdMs measuring the proxy's CPU and RSS, then closes them all.
 */
export async function idleTunnels(proxy: RunningProxy, holdPort: number, settings: IdleTunnelSettings, progress: (line: string) => void): Promise<IdleTunnelsResult> {
  const { target, limited_by } = tunnelCapacity(settings.count);
  const sockets: net.Socket[] = [];
  const rssBefore = rssMiB(proxy.pid);
  progress(`idle tunnels: opening up to ${target} CONNECT tunnels through ${proxy.name} (cap ${settings.openCapMs / 1000} s)`);
  try {
    const load = await runLoad({
      count: target,
      timeCapMs: settings.openCapMs,
      concurrency: settings.concurrency,
      task: async () => {
        const socket = await openTunnel(proxy, `${proxy.targetHost}:${holdPort}`);
        socket.on('error', () => undefined);
        if (settings.decided) socket.write('idle\n');
        sockets.push(socket);
      },
    });
    await sleep(500); // the proxy finishes logging the last decisions
    const sampler = new RssSampler(proxy.pid);
    const cpuBefore = proxy.cpuMs();
    const t0 = performance.now();
    await sleep(settings.holdMs);
    const idleCpu = proxy.cpuMs() - cpuBefore;
    const holdMs = performance.now() - t0;
    const rssHeld = sampler.stop();
    const result: IdleTunnelsResult = {
      route: proxy.name,
      target,
      ...(limited_by && { limited_by }),
      opened: load.completed,
      failed: load.failed,
      errors: load.errors,
      open_ms: round(load.elapsedMs, 0),
      held: sockets.filter((s) => !s.destroyed && s.readable).length,
      rss_mib_before: rssBefore,
      rss_mib_held: rssHeld,
      hold_ms: round(holdMs, 0),
      idle_cpu_ms: idleCpu,
    };
    progress(`idle tunnels through ${proxy.name}: ${result.held} held, ${result.rss_mib_held} MiB, ${result.idle_cpu_ms} ms CPU over ${result.hold_ms} ms`);
    return result;
  } finally {
    for (const s of sockets) s.destroy();
  }
}
