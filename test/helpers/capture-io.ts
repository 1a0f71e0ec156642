import { PassThrough } from 'node:stream';
import type { CommandIo } from '../../cli/args.js';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a CLI command function in-process with captured stdout/stderr and the given environment. */
export async function runCaptured(command: (argv: string[], io: CommandIo) => Promise<number>, argv: string[], env: NodeJS.ProcessEnv = {}): Promise<CommandResult> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  const code = await command(argv, { stdout, stderr, env });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}
