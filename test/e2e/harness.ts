import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createCertificateAuthority, issueLeafCertificate } from '../../certs/certificates.js';
import type { CloseEvent, DecisionEvent, EgressEvent } from '../../events/schema.js';
import type { InternetConfig } from './internet-fixture.js';
import { destroyNamespaceSync, must, removeLeftoverNamespaces, run, type CommandResult } from './netns.js';

const here = path.dirname(fileURLToPath(import.meta.url));
/** dist/ of this checkout (the harness runs compiled, from dist/test/e2e). */
const distRoot = path.resolve(here, '../..');
/** The egress-guard CLI under test; EGRESS_E2E_BIN points the suite at another build. */
export const EGRESS_BIN = process.env.EGRESS_E2E_BIN ?? path.join(distRoot, 'egress-guard.js');

/** Documentation ranges only (RFC 5737, RFC 3849). */
export const NET = {
  runnerV4: '198.51.100.2',
  internetV4: '198.51.100.1',
  runnerV6: '2001:db8:1::2',
  internetV6: '2001:db8:1::1',
  allowed: '203.0.113.10',
  registry: '203.0.113.20',
  attacker: '203.0.113.66',
  rawOnly: '203.0.113.77',
  dns: '203.0.113.53',
  otherResolver: '203.0.113.99',
  allowed6: '2001:db8:2::10',
  registry6: '2001:db8:2::20',
  attacker6: '2001:db8:2::66',
  rawOnly6: '2001:db8:2::77',
  dns6: '2001:db8:2::53',
} as const;

export const PACKAGE = { name: 'left-pad-lite', version: '1.0.0' };
export const ALLOWED_ENDPOINTS = 'allowed.test:443 allowed.test:80 allowed.test:9418 allowed.test:9420 allowed.test:9421 allowed.test:9425 registry.test:443';
/** The internet's service that speaks first (see internet-fixture.ts bannerPort). */
export const BANNER_PORT = 9425;
/** The internet's reply-after-FIN services (see internet-fixture.ts halfClosePorts). */
export const HALF_CLOSE_PORTS = { plain: 9420, tls: 9421 } as const;
export const SIDECAR_USER = 'egress-guard';
const TRANSPARENT_PORT = 3129;
const DNS_PORT = 53;

export interface InternetLogEntry {
  time: number;
  type: 'dns' | 'http' | 'tcp-connect' | 'tcp-data' | 'udp' | 'half-close' | 'websocket';
  [key: string]: unknown;
}

export interface JobOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  cwd?: string;
}

async function ensureSidecarUser(): Promise<{ uid: number; gid: number }> {
  if ((await run('id', ['-u', SIDECAR_USER])).code !== 0) {
    await must('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', SIDECAR_USER]);
  }
  return { uid: Number((await must('id', ['-u', SIDECAR_USER])).trim()), gid: Number((await must('id', ['-g', SIDECAR_USER])).trim()) };
}

/**
 * One per suite run: a `runner` namespace (egress-guard as its own uid with rules applied, the job's
 * commands as root) linked by one veth pair to an `internet` namespace (web servers, registry, attacker,
 * authoritative DNS). Nothing is connected to the machine's own network.
 */
export interface WorldOptions {
  /** Namespace names are PREFIX-runner-PID and PREFIX-internet-PID (default eg). */
  prefix?: string;
  /** The runner namespace's /etc/resolv.conf (default: egress-guard on 127.0.0.1). */
  resolvConf?: string;
  /** Create the egress-guard user on this machine for startEgressGuard (default true). */
  sidecarUser?: boolean;
}

export class World {
  readonly runnerNs: string;
  readonly internetNs: string;
  readonly dir = mkdtempSync(path.join(tmpdir(), 'eg-e2e-'));
  readonly caFile = path.join(this.dir, 'ca.pem');
  readonly internetLogFile = path.join(this.dir, 'internet.ndjson');
  private readonly processes = new Set<ChildProcess>();
  private sidecar: { child: ChildProcess; eventsFile: string; output: string[]; nflogReader: ChildProcess } | undefined;
  private sidecarUser: { uid: number; gid: number } | undefined;
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.destroySync();
    process.kill(process.pid, signal);
  };

  private constructor(private readonly options: WorldOptions) {
    this.runnerNs = `${options.prefix ?? 'eg'}-runner-${process.pid}`;
    this.internetNs = `${options.prefix ?? 'eg'}-internet-${process.pid}`;
  }

  static async create(options: WorldOptions = {}): Promise<World> {
    removeLeftoverNamespaces(options.prefix ?? 'eg');
    const world = new World(options);
    process.once('SIGINT', world.onSignal);
    process.once('SIGTERM', world.onSignal);
    try {
      await world.build();
    } catch (err) {
      world.destroySync();
      throw err;
    }
    return world;
  }

  private async inRunner(args: string[]) {
    return must('ip', ['netns', 'exec', this.runnerNs, ...args]);
  }

  private async inInternet(args: string[]) {
    return must('ip', ['netns', 'exec', this.internetNs, ...args]);
  }

  private async build(): Promise<void> {
    chmodSync(this.dir, 0o755);
    // Namespaces: failing here fails the suite loudly (no silent skip).
    await must('ip', ['netns', 'add', this.runnerNs]);
    await must('ip', ['netns', 'add', this.internetNs]);
    mkdirSync(`/etc/netns/${this.runnerNs}`, { recursive: true });
    writeFileSync(`/etc/netns/${this.runnerNs}/resolv.conf`, this.options.resolvConf ?? 'nameserver 127.0.0.1\noptions attempts:1 timeout:2\n');
    writeFileSync(`/etc/netns/${this.runnerNs}/hosts`, '127.0.0.1 localhost\n::1 localhost\n');
    // The pair is created inside the runner namespace and its peer moved straight into the internet namespace.
    await this.inRunner(['ip', 'link', 'add', 'egr0', 'type', 'veth', 'peer', 'name', 'egi0', 'netns', this.internetNs]);
    for (const [ns, dev, v4, v6] of [
      [this.runnerNs, 'egr0', NET.runnerV4, NET.runnerV6],
      [this.internetNs, 'egi0', NET.internetV4, NET.internetV6],
    ] as const) {
      const exec = (args: string[]) => must('ip', ['netns', 'exec', ns, ...args]);
      await exec(['ip', 'link', 'set', 'lo', 'up']);
      await exec(['ip', 'addr', 'add', `${v4}/24`, 'dev', dev]);
      await exec(['ip', '-6', 'addr', 'add', `${v6}/64`, 'dev', dev, 'nodad']);
      await exec(['ip', 'link', 'set', dev, 'up']);
    }
    await this.inRunner(['ip', 'route', 'add', 'default', 'via', NET.internetV4]);
    await this.inRunner(['ip', '-6', 'route', 'add', 'default', 'via', NET.internetV6]);
    for (const address of [NET.allowed, NET.registry, NET.attacker, NET.rawOnly, NET.dns, NET.otherResolver]) {
      await this.inInternet(['ip', 'addr', 'add', `${address}/32`, 'dev', 'lo']);
    }
    for (const address of [NET.allowed6, NET.registry6, NET.attacker6, NET.rawOnly6, NET.dns6]) {
      await this.inInternet(['ip', '-6', 'addr', 'add', `${address}/128`, 'dev', 'lo', 'nodad']);
    }
    await this.inInternet(['ip', '-6', 'route', 'add', '2001:db8:1::/64', 'dev', 'egi0']).catch(() => undefined);
    // egress-guard binds port 53 as an unprivileged user: allowed in this namespace only.
    await this.inRunner(['sysctl', '-q', '-w', 'net.ipv4.ip_unprivileged_port_start=0']);
    if (this.options.sidecarUser !== false) this.sidecarUser = await ensureSidecarUser();
    await this.startInternet();
  }

  private async startInternet(): Promise<void> {
    const ca = createCertificateAuthority('egress-guard e2e CA');
    writeFileSync(this.caFile, ca.certPem);
    const leaf = issueLeafCertificate(ca, ['allowed.test', 'registry.test', 'attacker.test', '*.attacker.test', NET.attacker, NET.rawOnly, NET.attacker6, NET.rawOnly6]);
    // The one package of registry.test.
    const pkgDir = path.join(this.dir, 'pkg', 'package');
    mkdirSync(pkgDir, { recursive: true });
    writeFileSync(path.join(pkgDir, 'package.json'), JSON.stringify({ name: PACKAGE.name, version: PACKAGE.version, main: 'index.js' }));
    writeFileSync(path.join(pkgDir, 'index.js'), 'module.exports = (s, n) => String(s).padStart(n);\n');
    const tarball = path.join(this.dir, 'pkg.tgz');
    await must('tar', ['czf', tarball, '-C', path.join(this.dir, 'pkg'), 'package']);
    // A git repository for git:// (a client-speaks-first, non-TLS, non-HTTP protocol).
    const gitRoot = path.join(this.dir, 'git');
    const gitEnv = {
      ...process.env,
      GIT_AUTHOR_NAME: 'e2e',
      GIT_AUTHOR_EMAIL: 'e2e@allowed.test',
      GIT_COMMITTER_NAME: 'e2e',
      GIT_COMMITTER_EMAIL: 'e2e@allowed.test',
      GIT_CONFIG_NOSYSTEM: '1',
      HOME: this.dir,
    };
    await must('git', ['init', '-q', '-b', 'main', path.join(gitRoot, 'src')], { env: gitEnv });
    await must('git', ['-C', path.join(gitRoot, 'src'), 'commit', '-q', '--allow-empty', '-m', 'init'], { env: gitEnv });
    await must('git', ['clone', '-q', '--bare', path.join(gitRoot, 'src'), path.join(gitRoot, 'repo.git')], { env: gitEnv });
    // Two repositories over smart HTTP (git http-backend) that accept pushes: the job's own, and an attacker's.
    const gitHttpRoot = path.join(this.dir, 'git-http');
    for (const repo of ['my-org/app.git', 'attacker/loot.git']) {
      await must('git', ['clone', '-q', '--bare', path.join(gitRoot, 'src'), path.join(gitHttpRoot, repo)], { env: gitEnv });
      await must('git', ['-C', path.join(gitHttpRoot, repo), 'config', 'http.receivepack', 'true'], { env: gitEnv });
    }

    const config: InternetConfig = {
      logFile: this.internetLogFile,
      keyPem: leaf.keyPem,
      certPem: leaf.certPem,
      zone: {
        'allowed.test': { a: [NET.allowed], aaaa: [NET.allowed6] },
        // Another site on allowed.test's addresses (a CDN's): allowed or not by each suite's policy.
        'cdn.test': { a: [NET.allowed], aaaa: [NET.allowed6] },
        'registry.test': { a: [NET.registry], aaaa: [NET.registry6] },
        'attacker.test': { a: [NET.attacker], aaaa: [NET.attacker6] },
        '*.attacker.test': { a: [NET.attacker], aaaa: [NET.attacker6] },
      },
      dnsAddresses: [NET.dns, NET.dns6, NET.otherResolver],
      tcpRecorderPorts: [9419],
      // 67 and 547: DHCP server ports, where only broadcast (and named servers) may go.
      udpRecorderPorts: [443, 9999, 67, 547],
      halfClosePorts: HALF_CLOSE_PORTS,
      bannerPort: BANNER_PORT,
      registry: { ...PACKAGE, tarball },
      gitHttpRoot,
    };
    const configFile = path.join(this.dir, 'internet.json');
    writeFileSync(configFile, JSON.stringify(config));
    writeFileSync(this.internetLogFile, '');
    const fixture = this.spawnIn(this.internetNs, [process.execPath, path.join(here, 'internet-fixture.js'), configFile]);
    await waitForOutput(fixture.output, (text) => text.includes('ready'), 15_000, 'internet fixture', fixture.child);
    const daemon = this.spawnIn(
      this.internetNs,
      ['git', 'daemon', '--reuseaddr', '--export-all', `--base-path=${gitRoot}`, `--listen=${NET.allowed}`, `--listen=${NET.allowed6}`, '--port=9418', gitRoot],
      gitEnv,
    );
    await waitFor(async () => (await run('ip', ['netns', 'exec', this.internetNs, 'ss', '-Hltn', 'sport = :9418'])).stdout.includes('9418'), 10_000, 'git daemon', daemon.child);
  }

  private spawnIn(ns: string, argv: string[], env: NodeJS.ProcessEnv = process.env): { child: ChildProcess; output: string[] } {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const output: string[] = [];
    child.stdout!.on('data', (d: Buffer) => output.push(d.toString()));
    child.stderr!.on('data', (d: Buffer) => output.push(d.toString()));
    this.processes.add(child);
    child.once('exit', () => this.processes.delete(child));
    return { child, output };
  }

  /** A command of the CI job: in the runner namespace, as root (not exempt from the rules). */
  job(command: string, args: readonly string[], options: JobOptions = {}): Promise<CommandResult> {
    const env = { PATH: process.env.PATH, HOME: path.join(this.dir, 'home'), LANG: 'C', ...options.env };
    mkdirSync(env.HOME!, { recursive: true });
    return run('ip', ['netns', 'exec', this.runnerNs, command, ...args], { env, input: options.input, timeoutMs: options.timeoutMs ?? 30_000, cwd: options.cwd });
  }

  /** A command on a host of the internet (an attacker reaching into the runner): in the internet namespace. */
  fromInternet(command: string, args: readonly string[], options: JobOptions = {}): Promise<CommandResult> {
    return run('ip', ['netns', 'exec', this.internetNs, command, ...args], {
      env: { PATH: process.env.PATH, LANG: 'C', ...options.env },
      input: options.input,
      timeoutMs: options.timeoutMs ?? 30_000,
    });
  }

  /**
   * Apply the rules (with `rulesArgs` added to `rules apply`) and start `egress-guard run` as the sidecar user
   * with DNS and transparent listeners.
   */
  async startEgressGuard(
    mode: 'block' | 'audit',
    rulesArgs: readonly string[] = [],
    options: { socketMark?: number; env?: NodeJS.ProcessEnv; nflogReader?: 'ulogd' | 'built-in' } = {},
  ): Promise<void> {
    if (this.sidecar) throw new Error('egress-guard is already running');
    const user = this.sidecarUser!;
    // ulogd, as root in the runner namespace, turns the rules' NFLOG reports into JSON lines egress-guard reads. Started
    // before the rules, as the GitHub Action starts its reader: a report made with nobody listening is lost, and the
    // kernel's per-flow limit then holds the next one back for a minute (a connection open before the rules).
    // Or egress-guard's own reader (`rules log-reader`, as the GitHub Action runs it): the one that reads a frame's
    // addresses (the guard against packet-socket frames reports at the netdev hook, which ulogd does not decode).
    const nflogFile = path.join(this.dir, `nflog-${mode}-${Date.now()}.json`);
    let reader: { child: ChildProcess };
    if (options.nflogReader === 'built-in') {
      reader = this.spawnIn(this.runnerNs, [process.execPath, EGRESS_BIN, 'rules', 'log-reader', '--json-file', nflogFile]);
    } else {
      const ulogdConfig = await must(process.execPath, [EGRESS_BIN, 'rules', 'log-config', '--json-file', nflogFile]);
      const ulogdConfigFile = `${nflogFile}.conf`;
      writeFileSync(ulogdConfigFile, ulogdConfig);
      reader = this.spawnIn(this.runnerNs, ['ulogd', '-c', ulogdConfigFile]);
    }
    await waitFor(async () => existsSync(nflogFile), 10_000, 'the NFLOG reader', reader.child);
    const rules = await run('ip', [
      'netns',
      'exec',
      this.runnerNs,
      process.execPath,
      EGRESS_BIN,
      'rules',
      'apply',
      '--user',
      SIDECAR_USER,
      '--mode',
      mode,
      '--transparent-port',
      String(TRANSPARENT_PORT),
      '--dns-port',
      String(DNS_PORT),
      ...rulesArgs,
      ...(options.socketMark === undefined ? [] : ['--socket-mark', String(options.socketMark)]),
    ]);
    if (rules.code !== 0) {
      reader.child.kill('SIGTERM');
      throw new Error(`egress-guard rules apply failed (exit ${rules.code}): ${rules.stderr}${rules.stdout}`);
    }
    const eventsFile = path.join(this.dir, `events-${mode}-${Date.now()}.ndjson`);
    writeFileSync(eventsFile, '');
    chownSync(eventsFile, user.uid, user.gid);
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      EGRESS_MODE: mode,
      EGRESS_ALLOWED_ENDPOINTS: ALLOWED_ENDPOINTS,
      // The documentation ranges are not public unicast: trust them, as a user trusts a private registry.
      EGRESS_TRUSTED_RANGES: '203.0.113.0/24 2001:db8::/32',
      EGRESS_LISTEN: '127.0.0.1:3128',
      EGRESS_DNS_LISTEN: `127.0.0.1:${DNS_PORT} [::1]:${DNS_PORT}`,
      EGRESS_DNS_UPSTREAM: NET.dns,
      EGRESS_TRANSPARENT_LISTEN: `127.0.0.1:${TRANSPARENT_PORT} [::1]:${TRANSPARENT_PORT}`,
      EGRESS_EVENTS_FILE: eventsFile,
      EGRESS_CONNECT_TIMEOUT: '3000',
      EGRESS_NETFILTER_LOG: nflogFile,
      ...(options.socketMark !== undefined && { EGRESS_SOCKET_MARK: String(options.socketMark) }),
      ...options.env,
    };
    // With a socket mark, egress-guard keeps CAP_NET_RAW (enough to set SO_MARK since Linux 5.17), as the container does.
    const caps = options.socketMark === undefined ? [] : ['--inh-caps=-all,+net_raw', '--ambient-caps=-all,+net_raw'];
    const { child, output } = this.spawnIn(
      this.runnerNs,
      ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', ...caps, process.execPath, EGRESS_BIN, 'run'],
      env,
    );
    this.sidecar = { child, eventsFile, output, nflogReader: reader.child };
    await waitForOutput(output, (text) => /"listener":"transparent"/.test(text), 15_000, 'egress-guard transparent listener', child);
    // The DNS server answers (localhost is answered locally, nothing goes upstream).
    await waitFor(async () => (await this.job('dig', ['+tries=1', '+time=1', '@127.0.0.1', 'localhost'])).code === 0, 10_000, 'egress-guard DNS server', child);
  }

  /** Stop the sidecar (SIGTERM, or SIGKILL to simulate a crash) and, unless told to keep them, remove the rules. */
  async stopEgressGuard(options: { signal?: NodeJS.Signals; keepRules?: boolean } = {}): Promise<void> {
    const sidecar = this.sidecar;
    this.sidecar = undefined;
    if (sidecar && sidecar.child.exitCode === null && sidecar.child.signalCode === null) {
      const exited = new Promise<void>((resolve) => sidecar.child.once('exit', () => resolve()));
      // `ip netns exec` execs setpriv, which execs node: the child PID is egress-guard itself.
      sidecar.child.kill(options.signal ?? 'SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 12_000))]);
      if (sidecar.child.exitCode === null && sidecar.child.signalCode === null) sidecar.child.kill('SIGKILL');
    }
    sidecar?.nflogReader.kill('SIGTERM');
    if (!options.keepRules) await run('ip', ['netns', 'exec', this.runnerNs, process.execPath, EGRESS_BIN, 'rules', 'remove']);
  }

  /** egress-guard's uid and gid (what a job that switches to them would take). */
  get sidecarIds(): { uid: number; gid: number } {
    return this.sidecarUser!;
  }

  get sidecarOutput(): string {
    return this.sidecar?.output.join('') ?? '';
  }

  events(): EgressEvent[] {
    if (!this.sidecar) return [];
    return parseNdjson(readFileSync(this.sidecar.eventsFile, 'utf8')) as EgressEvent[];
  }

  /** Wait (bounded) for a decision event matching `match`, returning it, or undefined. */
  async decision(match: (e: DecisionEvent) => boolean, timeoutMs = 3000): Promise<DecisionEvent | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events().find((e): e is DecisionEvent => e.event === 'decision' && match(e));
      if (found || Date.now() > deadline) return found;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Wait (bounded) for the close event of the decision `id`, returning it, or undefined. */
  async closeOf(id: string, timeoutMs = 3000): Promise<CloseEvent | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events().find((e): e is CloseEvent => e.event === 'close' && e.id === id);
      if (found || Date.now() > deadline) return found;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  internetLog(): InternetLogEntry[] {
    return parseNdjson(readFileSync(this.internetLogFile, 'utf8')) as InternetLogEntry[];
  }

  async close(): Promise<void> {
    await this.stopEgressGuard().catch(() => undefined);
    this.destroySync();
  }

  destroySync(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    for (const child of this.processes) child.kill('SIGKILL');
    destroyNamespaceSync(this.runnerNs);
    destroyNamespaceSync(this.internetNs);
    if (existsSync(this.dir)) rmSync(this.dir, { recursive: true, force: true });
  }
}

function parseNdjson(text: string): unknown[] {
  const out: unknown[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line));
    } catch {
      // a line being written
    }
  }
  return out;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) throw new Error(`${what}: process exited (${child.exitCode ?? child.signalCode})`);
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`${what}: not ready after ${timeoutMs} ms`);
}

function waitForOutput(output: string[], ready: (text: string) => boolean, timeoutMs: number, what: string, child: ChildProcess): Promise<void> {
  return waitFor(async () => ready(output.join('')), timeoutMs, what, child).catch((err: Error) => {
    throw new Error(`${err.message}\n--- output ---\n${output.join('').slice(-4000)}`);
  });
}
