import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freshGet, type Route } from './clients.js';
import { runLoad } from './load.js';
import { freePort, startEgressGuard, type RunningEgressGuard } from './proxies.js';
import { startBenchServers, type BenchServers } from './servers.js';
import { median, round } from './stats.js';

/**
 * CPU per tunnel of a redirected (transparent) TLS connection beside an explicit CONNECT tunnel, through one
 * egress-guard: the bench's (a) operation (a fresh connection, a full TLS handshake, a 1 KiB GET, close) at
 * concurrency `concurrency`, the two routes taking turns in rounds of `ops`, CPU per operation from /proc.
 *
 * The redirect needs iptables: the script runs itself again inside a network namespace of its own (`unshare --net`:
 * only a loopback interface, no link to anything; its rules and sockets go with it when the process exits). There a
 * nat OUTPUT rule sends every connection to the TLS server's port on 127.0.0.1 that does not carry egress-guard's
 * socket mark to the transparent listener; egress-guard's own upstream connection carries the mark and goes through.
 *
 *   node dist/bench/transparent-tunnel.js [rounds=5] [ops=300] [concurrency=10] [cli]
 */
const INSIDE = 'EGRESS_BENCH_TRANSPARENT_NETNS';
const MARK = 0x2a7e;

const args = process.argv.slice(2);
if (process.env[INSIDE] !== '1') {
  const result = spawnSync('unshare', ['--net', '--', process.execPath, fileURLToPath(import.meta.url), ...args], { stdio: 'inherit', env: { ...process.env, [INSIDE]: '1' } });
  if (result.error) throw result.error;
  process.exit(result.status ?? 1);
}

const rounds = Number(args[0] ?? 5);
const ops = Number(args[1] ?? 300);
const concurrency = Number(args[2] ?? 10);
const cli = args[3];
const WARM_UP = 200;
/** No round of operations runs longer than this (a stalled route fails the run rather than hanging it). */
const ROUND_CAP_MS = 120_000;

function must(command: string, commandArgs: string[]): void {
  const result = spawnSync(command, commandArgs, { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`${command} ${commandArgs.join(' ')}: ${result.error?.message ?? result.stderr.trim()}`);
}

/** `count` operations, at most `concurrency` at a time and within ROUND_CAP_MS; every one must answer 200. */
async function run(name: string, route: Route, servers: BenchServers, count: number): Promise<void> {
  const result = await runLoad({
    count,
    timeCapMs: ROUND_CAP_MS,
    concurrency,
    task: async () => {
      const { status } = await freshGet(route, servers, '/1k');
      if (status !== 200) throw new Error(`status ${status}`);
    },
  });
  if (result.completed !== count) throw new Error(`${name}: ${result.completed} of ${count} answered 200 within ${ROUND_CAP_MS} ms ${JSON.stringify(result.errors)}`);
}

must('ip', ['link', 'set', 'lo', 'up']);
const dir = mkdtempSync(join(tmpdir(), 'eg-transparent-bench-'));
const servers = await startBenchServers();
let proxy: RunningEgressGuard | undefined;
try {
  const transparentPort = await freePort();
  proxy = await startEgressGuard({
    eventsFile: join(dir, 'events.log'),
    ...(cli && { cli }),
    env: { EGRESS_TRANSPARENT_LISTEN: `127.0.0.1:${transparentPort}`, EGRESS_SOCKET_MARK: String(MARK) },
  });
  must('iptables', [
    '-t',
    'nat',
    '-A',
    'OUTPUT',
    '-p',
    'tcp',
    '-d',
    '127.0.0.1',
    '--dport',
    String(servers.httpsPort),
    '-m',
    'mark',
    '!',
    '--mark',
    String(MARK),
    '-j',
    'REDIRECT',
    '--to-ports',
    String(transparentPort),
  ]);
  // 'direct' connects to the TLS server's port on 127.0.0.1, which the rule above sends to the transparent listener.
  const routes: Array<[string, Route]> = [
    ['explicit CONNECT', proxy],
    ['redirected', 'direct'],
  ];
  for (const [name, route] of routes) await run(name, route, servers, WARM_UP);
  const cpuUs: number[][] = routes.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [i, [name, route]] of routes.entries()) {
      const before = proxy.cpuMs();
      await run(name, route, servers, ops);
      cpuUs[i]!.push(((proxy.cpuMs() - before) * 1000) / ops);
      console.log(`round ${r + 1}/${rounds} ${name}: CPU ${round(cpuUs[i]!.at(-1)!, 0)} us/tunnel`);
    }
  }
  // Proof that the redirected connections were egress-guard's: one allowed decision per operation of each kind
  // (read once egress-guard has stopped and flushed its events file).
  const stopping = proxy;
  proxy = undefined;
  await stopping.stop();
  const decided = { connect: 0, transparent: 0 };
  for (const line of readFileSync(join(dir, 'events.log'), 'utf8').split('\n')) {
    if (!line.includes('"event":"decision"')) continue;
    const event = JSON.parse(line) as { kind: string; decision: string };
    if (event.decision === 'allowed' && (event.kind === 'connect' || event.kind === 'transparent')) decided[event.kind]++;
  }
  const expected = WARM_UP + rounds * ops;
  if (decided.connect !== expected || decided.transparent !== expected) throw new Error(`expected ${expected} allowed decisions of each kind, got ${JSON.stringify(decided)}`);
  console.log(`allowed decisions in the events file: ${decided.connect} connect, ${decided.transparent} transparent`);
  for (const [i, [name]] of routes.entries()) console.log(`${name}: median CPU ${round(median(cpuUs[i]!), 0)} us/tunnel (${cpuUs[i]!.map((v) => round(v, 0)).join(', ')})`);
} finally {
  await proxy?.stop();
  await servers.close();
  rmSync(dir, { recursive: true, force: true });
}
