import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { privileged, type Privileged } from '../../action/privileged.js';

/**
 * Root as the action has it (the tests run as root), recording what it is asked to run; with `execute` false it runs
 * nothing (a signal that must not be sent is then only recorded).
 */
export function recordingRoot(execute: boolean): Privileged & { calls: string[][] } {
  const real = privileged(true);
  const calls: string[][] = [];
  const run: Privileged['run'] = (command, args, options) => {
    calls.push([command, ...args]);
    return execute ? real.run(command, args, options) : Promise.resolve({ code: 0, stdout: '', stderr: '' });
  };
  return { calls, run, must: async (command, args) => (await run(command, args)).stdout, argv: real.argv };
}

/**
 * A script standing in for egress-guard.js (or the reader): whatever its arguments, it runs until SIGTERM (then exits 0)
 * or for at most 60 s. Readable by every user (setpriv runs it as another one).
 */
export function idleScript(dir: string, name = 'egress-guard.js'): string {
  const file = path.join(dir, name);
  writeFileSync(file, "process.on('SIGTERM', () => process.exit(0));\nsetTimeout(() => {}, 60_000);\n");
  chmodSync(file, 0o644);
  return file;
}

/** A real process: node running `script` with `args` (its argv is [node, script, ...args]), started. */
export async function startIdle(script: string, ...args: string[]): Promise<ChildProcess & { pid: number }> {
  const child = spawn(process.execPath, [script, ...args], { stdio: 'ignore' });
  await once(child, 'spawn');
  return child as ChildProcess & { pid: number };
}
