import { spawn, type ChildProcess } from 'node:child_process';
import { request, Agent } from 'node:http';
import type { EgressEvent } from '../../events/schema.js';
import { CLI } from './egress-guard-process.js';

/** A real `egress-guard collector` process (tests and bench/collector-bench.ts). */
export interface CollectorProcess {
  child: ChildProcess;
  pid: number;
  port: number;
  output: () => string;
  /** SIGTERM (clean stop) or SIGKILL (a crash); resolves with the exit code. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

export async function startCollectorProcess(
  db: string,
  options: { token?: string; port?: number; env?: Record<string, string>; args?: string[]; timeoutMs?: number; cli?: string } = {},
): Promise<CollectorProcess> {
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EGRESS_')));
  const child = spawn(process.execPath, [options.cli ?? CLI, 'collector', '--listen', `127.0.0.1:${options.port ?? 0}`, '--db', db, ...(options.args ?? [])], {
    env: { ...baseEnv, ...(options.token && { EGRESS_COLLECTOR_TOKEN: options.token }), ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // A line per batch at info level: keep the last 64 KiB only (bench runs post hundreds of thousands of batches).
  let output = '';
  const keep = (c: Buffer) => {
    output += c;
    if (output.length > 131_072) output = output.slice(-65_536);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    return exited;
  };
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop('SIGKILL');
      reject(new Error(`collector did not start: ${output}`));
    }, options.timeoutMs ?? 30_000);
    const poll = setInterval(() => {
      const m = /"listen":"127\.0\.0\.1:(\d+)".*collector: listening/.exec(output);
      if (m) {
        clearInterval(poll);
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    }, 20);
    void exited.then((code) => {
      clearInterval(poll);
      clearTimeout(timer);
      reject(new Error(`collector exited (${code}) before listening: ${output}`));
    });
  });
  return { child, pid: child.pid!, port, output: () => output, stop };
}

/** POST one NDJSON batch; resolves with the status and the answer (network errors reject). */
export function postEvents(
  port: number,
  events: readonly EgressEvent[] | string,
  token?: string,
  agent?: Agent,
): Promise<{ status: number; body: { stored?: number; duplicates?: number } }> {
  const body = Buffer.from(typeof events === 'string' ? events : events.map((e) => JSON.stringify(e)).join('\n'));
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/api/v1/events',
        agent,
        headers: { 'content-type': 'application/x-ndjson', 'content-length': String(body.length), ...(token && { authorization: `Bearer ${token}` }) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          try {
            resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
          } catch {
            resolve({ status: res.statusCode ?? 0, body: {} });
          }
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(60_000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}
