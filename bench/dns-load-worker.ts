import dgram from 'node:dgram';
import { parentPort, workerData } from 'node:worker_threads';
import { queryBytes } from '../test/helpers/dns-fixture.js';
import type { ScenarioResult } from './dns-bench.js';

const round = (n: number, digits = 3) => Number(n.toFixed(digits));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Send `count` queries (names from `nameAt`) with `concurrency` in flight, from one UDP socket. */
async function load(port: number, nameAt: (i: number) => string, count: number, concurrency: number, timeCapMs: number): Promise<ScenarioResult> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  const waiting = new Map<number, (ok: boolean) => void>();
  socket.on('message', (reply) => {
    if (reply.length >= 4) waiting.get(reply.readUInt16BE(0))?.(true);
  });
  const latencies: number[] = [];
  let errors = 0;
  let next = 0;
  let nextId = 1;
  const started = performance.now();
  const deadline = started + timeCapMs;
  const one = (i: number) =>
    new Promise<void>((resolve) => {
      const id = nextId++ & 0xffff;
      const sent = performance.now();
      const timer = setTimeout(() => finish(false), 2000);
      function finish(ok: boolean) {
        clearTimeout(timer);
        waiting.delete(id);
        if (ok) latencies.push(performance.now() - sent);
        else errors++;
        resolve();
      }
      waiting.set(id, finish);
      socket.send(queryBytes(id, nameAt(i)), port, '127.0.0.1');
    });
  const worker = async () => {
    while (next < count && performance.now() < deadline) await one(next++);
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const duration = performance.now() - started;
  socket.close();
  latencies.sort((a, b) => a - b);
  return {
    queries: latencies.length,
    errors,
    qps: round(latencies.length / (duration / 1000), 1),
    p50_ms: round(percentile(latencies, 50)),
    p99_ms: round(percentile(latencies, 99)),
    duration_ms: round(duration, 1),
  };
}

const data = workerData as { port: number; names: { fixed: string } | { prefix: string; suffix: string }; count: number; concurrency: number; timeCapMs: number };
const names = data.names;
const nameAt = 'fixed' in names ? () => names.fixed : (i: number) => `${names.prefix}${i}${names.suffix}`;
// Warm the client (JIT, socket) first, so the numbers measure the server, not a cold worker.
const warmNames = 'fixed' in names ? nameAt : (i: number) => `w${names.prefix}${i}${names.suffix}`;
await load(data.port, warmNames, Math.min(500, data.count), data.concurrency, 2000);
parentPort?.postMessage(await load(data.port, nameAt, data.count, data.concurrency, data.timeCapMs));
