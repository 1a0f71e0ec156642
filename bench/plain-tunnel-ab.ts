import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freshGet } from './clients.js';
import { runLoad } from './load.js';
import { startEgressGuard, type RunningEgressGuard } from './proxies.js';
import { BENCH_HOST, type BenchServers } from './servers.js';
import { median, round } from './stats.js';

/**
 * A/B of two builds on plain HTTP inside a CONNECT tunnel (issue 14, the tunnel's own upstream connection reused by its
 * first request): per tunnel a fresh CONNECT to bench.test, one plain GET of 1 KiB read by the request reader, then
 * close. The origin answers `Connection: close` (as HTTP/1.0 servers and many simple ones do), so the proxy never holds
 * an idle connection to it: the case where the tunnel's upstream was closed unused and a second one opened. Both builds
 * run side by side against the same origin and take turns, a round of at most `ops` tunnels (and `capMs`) each, with
 * `concurrency` at once. Prints per round the proxy's CPU per tunnel (user + system from /proc) and the connections the
 * origin accepted per tunnel, then the medians.
 *
 *   node dist/bench/plain-tunnel-ab.js <a/dist/egress-guard.js> <b/dist/egress-guard.js> [rounds=6] [ops=300] [concurrency=4] [capMs=20000]
 */
const [cliA, cliB] = process.argv.slice(2, 4);
if (!cliA || !cliB) {
  console.error('usage: plain-tunnel-ab <cliA> <cliB> [rounds=6] [ops=300] [concurrency=4] [capMs=20000]');
  process.exit(2);
}
const rounds = Number(process.argv[4] ?? 6);
const ops = Number(process.argv[5] ?? 300);
const concurrency = Number(process.argv[6] ?? 4);
const capMs = Number(process.argv[7] ?? 20_000);
const WARM_UP = 100;
const BODY = Buffer.alloc(1024, 'x');

let accepted = 0;
const origin = http.createServer((req, res) => {
  req.resume();
  res.setHeader('Connection', 'close');
  res.setHeader('Content-Length', BODY.length);
  res.end(BODY);
});
origin.on('connection', (socket: Socket) => {
  accepted++;
  socket.on('error', () => undefined);
});
await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
// freshGet's plain route: a tunnel to bench.test at this port, Host bench.test:port.
const servers: BenchServers = {
  httpPort: (origin.address() as AddressInfo).port,
  httpsPort: 0,
  caPem: '',
  serverName: BENCH_HOST,
  close: async () => undefined,
};

const dir = mkdtempSync(join(tmpdir(), 'eg-plain-ab-'));
const proxies: RunningEgressGuard[] = [];
try {
  for (const [i, cli] of [cliA, cliB].entries()) proxies.push(await startEgressGuard({ eventsFile: join(dir, `events-${i}.log`), cli }));
  const get = async (proxy: RunningEgressGuard) => {
    const result = await freshGet(proxy, servers, '/1k', { tls: false });
    if (result.status !== 200) throw new Error(`status ${result.status}`);
  };
  for (let k = 0; k < WARM_UP; k++) for (const proxy of proxies) await get(proxy);
  const series = proxies.map(() => ({ cpuUs: [] as number[], connections: [] as number[] }));
  for (let r = 0; r < rounds; r++) {
    for (const [i, proxy] of proxies.entries()) {
      const cpuBefore = proxy.cpuMs();
      const acceptedBefore = accepted;
      const load = await runLoad({ count: ops, timeCapMs: capMs, concurrency, task: () => get(proxy) });
      if (load.failed > 0) throw new Error(`build ${i ? 'B' : 'A'}: ${load.failed} failed: ${JSON.stringify(load.errors)}`);
      const cpuUs = ((proxy.cpuMs() - cpuBefore) * 1000) / load.completed;
      const perTunnel = (accepted - acceptedBefore) / load.completed;
      series[i]!.cpuUs.push(cpuUs);
      series[i]!.connections.push(perTunnel);
      console.log(`round ${r + 1}/${rounds} ${i ? 'B' : 'A'}: ${load.completed} tunnels, CPU ${round(cpuUs, 0)} us/tunnel, origin connections ${round(perTunnel, 2)}/tunnel`);
    }
  }
  for (const [i, s] of series.entries()) {
    console.log(`${i ? 'B' : 'A'} ${i ? cliB : cliA}: median CPU ${round(median(s.cpuUs), 0)} us/tunnel, origin connections ${round(median(s.connections), 2)}/tunnel`);
  }
} finally {
  for (const proxy of proxies) await proxy.stop();
  origin.close();
  rmSync(dir, { recursive: true, force: true });
}
