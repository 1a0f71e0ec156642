import { spawn, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';

export type JsonLine = Record<string, unknown>;

/** A command run by bash in a network namespace, its stdout read as JSON lines (egress-guard's events and log). */
export interface NamespaceProcess {
  child: ChildProcess;
  lines: JsonLine[];
  stderr: () => string;
  exited: Promise<number | null>;
  /** The first line matching `predicate`, waiting for it; fails if the process exits first or after `timeoutMs`. */
  waitFor: (what: string, predicate: (line: JsonLine) => boolean, timeoutMs?: number) => Promise<JsonLine>;
  /** SIGKILL unless it has exited. */
  kill: () => void;
}

/** `bash -c 'exec COMMAND'` in `ns`, from `cwd`, without the test process's EGRESS_* and GITHUB_* variables. */
export function spawnInNamespace(ns: string, command: string, cwd: string, env: Record<string, string> = {}): NamespaceProcess {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('EGRESS_') && !k.startsWith('GITHUB_')));
  const child = spawn('ip', ['netns', 'exec', ns, 'bash', '-c', `exec ${command}`], { cwd, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: JsonLine[] = [];
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const waiters: Array<() => void> = [];
  createInterface({ input: child.stdout! }).on('line', (text) => {
    try {
      lines.push(JSON.parse(text) as JsonLine);
    } catch {
      return; // not a JSON line
    }
    for (const wake of waiters.splice(0)) wake();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const waitFor = async (what: string, predicate: (line: JsonLine) => boolean, timeoutMs = 15_000): Promise<JsonLine> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = lines.find(predicate);
      if (found) return found;
      if (child.exitCode !== null) assert.fail(`the process exited (${child.exitCode}) before ${what}: ${stderr}`);
      if (Date.now() > deadline) assert.fail(`no line for ${what} within ${timeoutMs} ms; stderr: ${stderr}`);
      await new Promise<void>((resolve) => {
        waiters.push(resolve);
        setTimeout(resolve, 200).unref();
      });
    }
  };
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  return { child, lines, stderr: () => stderr, exited, waitFor, kill };
}
