import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BENCH_HOST } from './servers.js';
import type { ProxyEndpoint } from './clients.js';
import { processCpuMs, withNofile } from './procfs.js';

/** A proxy process started by the bench, stopped by its PID. */
export interface RunningProxy extends ProxyEndpoint {
  pid: number;
  version: string;
  /** What the proxy logs per request in this configuration. */
  logging: string;
  /** User + system CPU time of the proxy process so far, ms (from /proc). */
  cpuMs(): number;
  stop(): Promise<void>;
}

/** The egress-guard CLI every part of the bench starts: this build's, or another one named by BENCH_EGRESS_GUARD_CLI (an A/B). */
export const EGRESS_GUARD_CLI = process.env.BENCH_EGRESS_GUARD_CLI || fileURLToPath(new URL('../egress-guard.js', import.meta.url));
const STARTUP_TIMEOUT_MS = 15_000;

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export function stopChild(child: ChildProcess, graceMs = 5000): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

function waitForPort(port: number, child: ChildProcess, describe: () => string): Promise<void> {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      if (child.exitCode !== null || child.signalCode !== null) return reject(new Error(`exited (${child.exitCode ?? child.signalCode}) before listening: ${describe()}`));
      const socket = net.connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', () => {
        socket.destroy();
        if (Date.now() > deadline) return reject(new Error(`not listening on ${port} after ${STARTUP_TIMEOUT_MS} ms: ${describe()}`));
        setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

function tail(text: string, max = 2000): string {
  return text.length > max ? `...${text.slice(-max)}` : text;
}

export interface EgressGuardOptions {
  eventsFile: string;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir', dir]. */
  nodeFlags?: string[];
  /** Another build's bin/egress-guard.js, to compare a change (default: this checkout's dist). */
  cli?: string;
  /** Settings on top of the bench's (EGRESS_DNS_LISTEN, EGRESS_MAX_TUNNELS, ...). */
  env?: Record<string, string>;
  /** A command that runs node, e.g. ['valgrind', '--tool=callgrind'] (bench/instruction-count.ts). */
  wrapper?: string[];
  /** How long to wait for "listening" (default 15 s; a node under valgrind needs far more). */
  startupTimeoutMs?: number;
}

/** RunningProxy of egress-guard, with the time it was spawned (performance.now()). */
export interface RunningEgressGuard extends RunningProxy {
  spawnedAt: number;
}

/**
 * `egress-guard run` as a child process in block mode, allowing bench.test on any port (resolved to
 * 127.0.0.1, a trusted range). Events stay on: every decision and close goes to stdout (a pipe the bench
 * drains and discards, as a CI log collector would) and to the events file.
 */
export async function startEgressGuard(options: EgressGuardOptions): Promise<RunningEgressGuard> {
  const port = await freePort();
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EGRESS_') && !k.startsWith('GITHUB_')));
  Object.assign(env, {
    EGRESS_MODE: 'block',
    EGRESS_ALLOWED_ENDPOINTS: `${BENCH_HOST}:*`,
    EGRESS_TRUSTED_RANGES: '127.0.0.0/8',
    EGRESS_EVENTS_FILE: options.eventsFile,
    // The proxy scenarios need no DNS server (the DNS bench starts its own); the default would take port 53
    // and, in block mode, refuse to start while anything else holds it.
    EGRESS_DNS_LISTEN: 'off',
    // A/B of the tunnel relay (docs/benchmark.md, "Kernel relay"): BENCH_RELAY=kernel|js, BENCH_RELAY_HAND_OVER_AFTER=<bytes>.
    ...(process.env.BENCH_RELAY && { EGRESS_RELAY: process.env.BENCH_RELAY }),
    ...(process.env.BENCH_RELAY_HAND_OVER_AFTER && { EGRESS_RELAY_HAND_OVER_AFTER: process.env.BENCH_RELAY_HAND_OVER_AFTER }),
    // A/B of where the native relay moves a tunnel's first bytes (docs/benchmark.md, "a tunnel's first bytes on the main loop"): BENCH_RELAY_THREAD_AFTER=<bytes> (0: its thread at once).
    ...(process.env.BENCH_RELAY_THREAD_AFTER && { EGRESS_RELAY_THREAD_AFTER: process.env.BENCH_RELAY_THREAD_AFTER }),
    // A/B of the young generation's size (docs/benchmark.md, "Young generation fixed"): BENCH_YOUNG_GENERATION=fixed|grow.
    ...(process.env.BENCH_YOUNG_GENERATION && { EGRESS_YOUNG_GENERATION: process.env.BENCH_YOUNG_GENERATION }),
    // A/B of the DNS server's UDP path (docs/benchmark.md, "DNS with batched UDP system calls"): BENCH_DNS_UDP=batch|dgram.
    ...(process.env.BENCH_DNS_UDP && { EGRESS_DNS_UDP: process.env.BENCH_DNS_UDP }),
    ...options.env,
  });
  const wrapper = options.wrapper ?? [];
  const [command, args] = withNofile(wrapper[0] ?? process.execPath, [
    ...(wrapper.length > 0 ? [...wrapper.slice(1), process.execPath] : []),
    ...(options.nodeFlags ?? []),
    // Node/V8 flags to try on egress-guard (an A/B of e.g. --max-semi-space-size), space-separated.
    ...(process.env.BENCH_EGRESS_GUARD_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean),
    options.cli ?? EGRESS_GUARD_CLI,
    'run',
    '--listen',
    `127.0.0.1:${port}`,
    '--resolve',
    `${BENCH_HOST}=127.0.0.1`,
  ]);
  const spawnedAt = performance.now();
  const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let listening = false;
  const startupTimeoutMs = options.startupTimeoutMs ?? STARTUP_TIMEOUT_MS;
  const ready = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`egress-guard did not log "listening" within ${startupTimeoutMs} ms: ${tail(output)}`)), startupTimeoutMs);
    const onData = (chunk: Buffer) => {
      if (listening) return; // after start-up the output is drained and discarded
      output += chunk.toString();
      if (output.includes('"msg":"listening"')) {
        listening = true;
        clearTimeout(timer);
        output = '';
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`egress-guard exited (${code ?? signal}) before listening: ${tail(output)}`));
    });
  });
  try {
    await ready;
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  const version = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return {
    name: 'egress-guard',
    host: '127.0.0.1',
    port,
    targetHost: BENCH_HOST,
    pid: child.pid!,
    version: `${version} (node ${process.version})`,
    logging: 'decision + close event per request, JSON to stdout (pipe) and the events file (decisions written at once, close events once per event-loop turn)',
    cpuMs: () => processCpuMs(child.pid!),
    stop: () => stopChild(child, 12_000),
    spawnedAt,
  };
}

/** The first line of `command -v`-style probing; undefined when the binary is missing. */
function which(binary: string): string | undefined {
  const found = spawnSync('sh', ['-c', `command -v ${binary}`], { encoding: 'utf8' });
  return found.status === 0 ? found.stdout.trim() : undefined;
}

function versionOf(binary: string, args: string[]): string {
  const out = spawnSync(binary, args, { encoding: 'utf8' });
  return (
    `${out.stdout}${out.stderr}`
      .split('\n')
      .find((l) => l.trim())
      ?.trim() ?? 'unknown'
  );
}

export class ProxyUnavailable extends Error {}

/**
 * tinyproxy in the foreground (-d) with a generated config: loopback only, CONNECT allowed to the bench
 * TLS port, one log line per connection (LogLevel Info) to a file. Origins are named by IP (no DNS).
 */
export async function startTinyproxy(connectPorts: number[]): Promise<RunningProxy> {
  const binary = which('tinyproxy') ?? ['/usr/bin/tinyproxy', '/usr/sbin/tinyproxy'].find((p) => spawnSync(p, ['-v']).status === 0);
  if (!binary) throw new ProxyUnavailable('tinyproxy is not installed (apt-get install tinyproxy)');
  const dir = mkdtempSync(join(tmpdir(), 'bench-tinyproxy-'));
  chmodSync(dir, 0o777);
  const port = await freePort();
  const config = [
    `Port ${port}`,
    'Listen 127.0.0.1',
    'Timeout 60',
    'MaxClients 512',
    'Allow 127.0.0.1',
    ...connectPorts.map((p) => `ConnectPort ${p}`),
    `LogFile "${join(dir, 'tinyproxy.log')}"`,
    'LogLevel Info',
    `PidFile "${join(dir, 'tinyproxy.pid')}"`,
    '',
  ].join('\n');
  writeFileSync(join(dir, 'tinyproxy.conf'), config);
  const child = spawn(binary, ['-d', '-c', join(dir, 'tinyproxy.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (c: Buffer) => {
    output = tail(output + c.toString());
  });
  child.stderr!.on('data', (c: Buffer) => {
    output = tail(output + c.toString());
  });
  const stop = async () => {
    await stopChild(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForPort(port, child, () => output);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    name: 'tinyproxy',
    host: '127.0.0.1',
    port,
    targetHost: '127.0.0.1',
    pid: child.pid!,
    version: versionOf(binary, ['-v']),
    logging: 'one line per connection (LogLevel Info) to a file',
    cpuMs: () => processCpuMs(child.pid!),
    stop,
  };
}

/**
 * squid in the foreground (-N) with a generated config: no disk cache, no memory cache, loopback clients
 * only, access_log to a file. Origins are named by IP (no DNS).
 */
export async function startSquid(options: { maxFileDescriptors?: number } = {}): Promise<RunningProxy> {
  const binary = findSquid();
  if (!binary) throw new ProxyUnavailable('squid is not installed (apt-get install squid)');
  const dir = mkdtempSync(join(tmpdir(), 'bench-squid-'));
  chmodSync(dir, 0o777);
  const port = await freePort();
  const config = [`http_port 127.0.0.1:${port}`, ...squidCommonConfig(dir, options.maxFileDescriptors ?? 4096)].join('\n');
  writeFileSync(join(dir, 'squid.conf'), config);
  const [command, args] = withNofile(binary, ['-N', '-f', join(dir, 'squid.conf')], options.maxFileDescriptors);
  const { pid, stop } = await runSquid(command, args, dir, port);
  return {
    name: 'squid',
    host: '127.0.0.1',
    port,
    targetHost: '127.0.0.1',
    pid,
    version: versionOf(binary, ['-v']),
    logging: 'access_log line per request to a file; no cache',
    cpuMs: () => processCpuMs(pid),
    stop,
  };
}

function findSquid(): string | undefined {
  return which('squid') ?? ['/usr/sbin/squid'].find((p) => spawnSync(p, ['-v']).status === 0);
}

/** What every bench squid shares: loopback clients only, no cache, logs and pid file in `dir`, a quick shutdown. */
function squidCommonConfig(dir: string, maxFileDescriptors: number): string[] {
  return [
    'acl bench_clients src 127.0.0.0/8',
    'http_access allow bench_clients',
    'http_access deny all',
    'cache deny all',
    'cache_mem 0 MB',
    `access_log stdio:${join(dir, 'access.log')}`,
    `cache_log ${join(dir, 'cache.log')}`,
    `pid_filename ${join(dir, 'squid.pid')}`,
    `coredump_dir ${dir}`,
    'netdb_filename none',
    'logfile_rotate 0',
    'shutdown_lifetime 1 seconds',
    `max_filedescriptors ${maxFileDescriptors}`,
    '',
  ];
}

/** Spawns squid and waits for its port; `stop` ends it by PID and removes `dir`. A squid that never listens is stopped, and its output and cache.log thrown with the error. */
async function runSquid(command: string, args: string[], dir: string, port: number): Promise<{ pid: number; stop: () => Promise<void> }> {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  for (const stream of [child.stdout!, child.stderr!]) stream.on('data', (c: Buffer) => (output = tail(output + c.toString())));
  const stop = async () => {
    await stopChild(child, 8000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForPort(port, child, () => tail(`${output}\n${readOptional(join(dir, 'cache.log'))}`));
  } catch (err) {
    await stop();
    throw err;
  }
  return { pid: child.pid!, stop };
}

export interface SquidSslBumpOptions {
  /** The CA squid signs its generated leaves with (PEM), and the roots it verifies origins with. */
  caCertPem: string;
  caKeyPem: string;
  upstreamCaPem: string;
  /** Names squid resolves from its own hosts file (e.g. bench.test -> 127.0.0.1), so CONNECT names the host. */
  hosts: Record<string, string>;
}

/**
 * squid (squid-openssl) with `ssl_bump bump all`: every CONNECT is terminated with a leaf squid generates for
 * the CONNECT name (security_file_certgen, its database initialised in a temp dir), and each request inside
 * goes to the origin over TLS verified with `upstreamCaPem`. No cache, access_log to a file, as startSquid.
 */
export async function startSquidSslBump(options: SquidSslBumpOptions): Promise<RunningProxy> {
  const binary = findSquid();
  const certgen = '/usr/lib/squid/security_file_certgen';
  if (!binary || !spawnSync(binary, ['-v'], { encoding: 'utf8' }).stdout.includes('--with-openssl')) {
    throw new ProxyUnavailable('squid with OpenSSL is not installed (apt-get install squid-openssl)');
  }
  if (spawnSync(certgen, ['-h']).error) throw new ProxyUnavailable(`${certgen} is missing (squid-openssl)`);
  const dir = mkdtempSync(join(tmpdir(), 'bench-squid-bump-'));
  chmodSync(dir, 0o755);
  const file = (name: string, content: string) => {
    writeFileSync(join(dir, name), content, { mode: 0o644 });
    return join(dir, name);
  };
  const db = join(dir, 'ssl_db');
  const init = spawnSync(certgen, ['-c', '-s', db, '-M', '16MB'], { encoding: 'utf8' });
  if (init.status !== 0) throw new Error(`security_file_certgen -c failed: ${init.stderr}`);
  // Started as root, squid and its helpers run as cache_effective_user (proxy): they must own what they write.
  const proxyUser = spawnSync('id', ['-u', 'proxy'], { encoding: 'utf8' });
  if (process.getuid?.() === 0 && proxyUser.status === 0) spawnSync('chown', ['-R', 'proxy:proxy', dir]);
  const port = await freePort();
  const config = [
    `http_port 127.0.0.1:${port} ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=16MB tls-cert=${file('ca.crt', options.caCertPem)} tls-key=${file('ca.key', options.caKeyPem)}`,
    `sslcrtd_program ${certgen} -s ${db} -M 16MB`,
    'sslcrtd_children 8 startup=2 idle=1',
    'ssl_bump bump all',
    `tls_outgoing_options cafile=${file('upstream-ca.pem', options.upstreamCaPem)}`,
    `hosts_file ${file(
      'hosts',
      Object.entries(options.hosts)
        .map(([name, ip]) => `${ip} ${name}\n`)
        .join(''),
    )}`,
    ...squidCommonConfig(dir, 4096),
  ].join('\n');
  if (process.getuid?.() === 0 && proxyUser.status === 0) spawnSync('chown', ['-R', 'proxy:proxy', dir]);
  const { pid, stop } = await runSquid(binary, ['-N', '-f', file('squid.conf', config)], dir, port);
  return {
    name: 'squid ssl-bump',
    host: '127.0.0.1',
    port,
    targetHost: Object.keys(options.hosts)[0] ?? '127.0.0.1',
    pid,
    version: versionOf(binary, ['-v']),
    logging: 'access_log line per request to a file; no cache; leaves from security_file_certgen',
    cpuMs: () => processCpuMs(pid),
    stop,
  };
}

function readOptional(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}
