import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EGRESS_GUARD_CLI, startEgressGuard } from './proxies.js';
import { keepAliveRate, tunnelTlsRate, type LoadSettings } from './proxy-bench.js';
import { startBenchServers, type BenchServers } from './servers.js';

/**
 * Instructions egress-guard executes per operation, counted by valgrind's callgrind: a figure that does not
 * move with the load on the machine (CPU time does, by 25% and more on a shared 2-core runner), so two builds
 * can be compared on a busy machine. User space only: system calls count as the instructions that make them,
 * not the kernel's work (CPU time in `npm run bench` has both).
 *
 *   node dist/bench/instruction-count.js tunnel|keepalive [operations] [path/to/dist/bin/egress-guard.js ...]
 *
 * For each build: egress-guard under callgrind, a warm-up of half the operations (JIT), counters zeroed
 * (callgrind_control -z), the operations at concurrency 10, counters dumped; instructions / operations.
 */
const [scenario = 'tunnel', countArg = '400', ...clis] = process.argv.slice(2);
const operations = Number(countArg);
if (scenario !== 'tunnel' && scenario !== 'keepalive') throw new Error(`scenario is tunnel or keepalive, not ${scenario}`);
if (!Number.isInteger(operations) || operations < 10) throw new Error(`operations must be an integer >= 10, not ${countArg}`);
if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is not installed (apt-get install -y valgrind)');

const run = (route: Parameters<typeof tunnelTlsRate>[0], servers: BenchServers, count: number) => {
  const settings: LoadSettings = { count, timeCapMs: 20 * 60_000, concurrency: 10, warmup: 0 };
  return scenario === 'tunnel' ? tunnelTlsRate(route, servers, settings) : keepAliveRate(route, servers, settings);
};

async function count(cli: string, servers: BenchServers): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'egress-guard-icount-'));
  const proxy = await startEgressGuard({
    eventsFile: join(dir, 'events.ndjson'),
    cli,
    // V8 writes and patches its own code: valgrind must look for that everywhere but in files.
    wrapper: ['valgrind', '--tool=callgrind', '--smc-check=all-non-file', `--callgrind-out-file=${join(dir, 'callgrind.%p')}`],
    startupTimeoutMs: 300_000,
  });
  try {
    const warm = await run(proxy, servers, Math.max(50, Math.round(operations / 2)));
    execFileSync('callgrind_control', ['-z', String(proxy.pid)], { stdio: 'ignore' });
    const measured = await run(proxy, servers, operations);
    execFileSync('callgrind_control', ['-d', String(proxy.pid)], { stdio: 'ignore' });
    // The dump is written by the process itself, at its next scheduling point.
    let instructions = 0;
    for (let i = 0; i < 100 && instructions === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      for (const file of readdirSync(dir).filter((f) => f.startsWith('callgrind.'))) {
        const total = /^(?:summary|totals): (\d+)/m.exec(readFileSync(join(dir, file), 'utf8'));
        if (total) instructions = Math.max(instructions, Number(total[1]));
      }
    }
    if (instructions === 0) throw new Error('callgrind wrote no counts');
    const failed = warm.failed + measured.failed;
    return { cli, scenario, operations: measured.completed, failed, instructions, per_operation: Math.round(instructions / measured.completed) };
  } finally {
    await proxy.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const servers = await startBenchServers();
try {
  for (const cli of clis.length > 0 ? clis : [EGRESS_GUARD_CLI]) process.stdout.write(`${JSON.stringify(await count(cli, servers))}\n`);
} finally {
  await servers.close();
}
