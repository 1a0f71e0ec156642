import { PassThrough } from 'node:stream';
import { invoke, type Command } from '../../bin/exit-code.js';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run a CLI command function in-process with captured stdout/stderr and the given environment, through
 * bin's exit-code map as the CLI runs it (`usage`: the command's usage line, printed after usage errors).
 */
export async function runCaptured(command: Command, argv: string[], env: NodeJS.ProcessEnv = {}, usage?: string): Promise<CommandResult> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  const code = await invoke(command, argv, { stdout, stderr, env }, usage);
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}
