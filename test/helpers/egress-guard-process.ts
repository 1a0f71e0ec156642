import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export const CLI = fileURLToPath(new URL('../../egress-guard.js', import.meta.url));

export interface LogLine {
  [key: string]: unknown;
  event?: string;
  msg?: string;
}

export interface EgressGuardProcess {
  child: ChildProcess;
  port: number;
  proxyUrl: string;
  lines: LogLine[];
  stderr: () => string;
  /** Decision and close events seen so far. */
  events: () => LogLine[];
  waitFor: (predicate: (line: LogLine) => boolean, timeoutMs?: number) => Promise<LogLine>;
  /** The lines matching `predicate` once there are at least `count` of them (stdout is written in batches). */
  waitForCount: (predicate: (line: LogLine) => boolean, count: number, timeoutMs?: number) => Promise<LogLine[]>;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/**
 * Start the real CLI (`egress-guard run`) on a free port and follow its JSON output. The caller's env
 * replaces EGRESS_* variables of the test process, so tests do not leak settings into each other.
 */
export async function startEgressGuard(args: string[] = [], env: Record<string, string> = {}): Promise<EgressGuardProcess> {
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EGRESS_') && !k.startsWith('GITHUB_')));
  const child = spawn(process.execPath, [CLI, 'run', '--listen', '127.0.0.1:0', ...args], {
    env: { EGRESS_DNS_LISTEN: 'off', ...baseEnv, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: LogLine[] = [];
  const waiters = new Set<{ predicate: (line: LogLine) => boolean; resolve: (line: LogLine) => void }>();
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      line = { msg: text, unparsed: true };
    }
    lines.push(line);
    for (const waiter of waiters) {
      if (waiter.predicate(line)) {
        waiters.delete(waiter);
        waiter.resolve(line);
      }
    }
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const waitFor = (predicate: (line: LogLine) => boolean, timeoutMs = 5000) => {
    const seen = lines.find(predicate);
    if (seen) return Promise.resolve(seen);
    return new Promise<LogLine>((resolve, reject) => {
      const waiter = {
        predicate,
        resolve: (line: LogLine) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        waiters.delete(waiter);
        reject(new Error(`timed out waiting for a log line; stderr: ${stderr}; last lines: ${JSON.stringify(lines.slice(-5))}`));
      }, timeoutMs);
      waiters.add(waiter);
    });
  };
  const waitForCount = async (predicate: (line: LogLine) => boolean, count: number, timeoutMs = 5000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = lines.filter(predicate);
      if (found.length >= count) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} log lines, saw ${found.length}; last lines: ${JSON.stringify(lines.slice(-5))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const listening = await Promise.race([
    waitFor((l) => l.msg === 'listening' && l.listener === 'proxy', 10_000),
    exited.then((code) => {
      throw new Error(`egress-guard exited with ${code}: ${stderr}`);
    }),
  ]);
  const port = listening.port as number;
  return {
    child,
    port,
    proxyUrl: `http://127.0.0.1:${port}`,
    lines,
    waitFor,
    waitForCount,
    stderr: () => stderr,
    events: () => lines.filter((l) => l.event === 'decision' || l.event === 'close'),
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Run the CLI to completion (decide, rules print...). */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EGRESS_')));
  return runProcess(process.execPath, [CLI, ...args], { ...baseEnv, ...env });
}

export function runProcess(command: string, args: string[], env?: NodeJS.ProcessEnv, timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString('latin1');
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
