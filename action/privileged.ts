import { execFile } from 'node:child_process';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command as root: directly when the action already runs as root (self-hosted), else through `sudo -n`. */
export interface Privileged {
  run(command: string, args: readonly string[], options?: { input?: string }): Promise<CommandResult>;
  /** The same, throwing with the command's stderr when it fails. */
  must(command: string, args: readonly string[], options?: { input?: string }): Promise<string>;
  /** argv that runs `command args` as root, with `env` passed through sudo (for a detached spawn). */
  argv(command: string, args: readonly string[], env?: Record<string, string>): string[];
}

export function execCommand(command: string, args: readonly string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(command, [...args], { env: options.env ?? process.env, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null;
      const code = !e ? 0 : typeof e.code === 'number' ? e.code : 127;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) || (e && typeof e.code !== 'number' ? e.message : '') });
    });
    // A command that exits without reading its input (most do) closes the pipe: EPIPE is no error of ours.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input ?? '');
  });
}

export function privileged(isRoot = process.getuid?.() === 0): Privileged {
  const argv = (command: string, args: readonly string[], env: Record<string, string> = {}): string[] => {
    const names = Object.keys(env);
    if (isRoot) return [command, ...args];
    // Passing variables through sudo needs SETENV, implied for a runner whose sudoers rule is `ALL`.
    return ['sudo', '-n', ...(names.length > 0 ? [`--preserve-env=${names.join(',')}`] : []), command, ...args];
  };
  const run: Privileged['run'] = (command, args, options = {}) => {
    const [binary, ...rest] = argv(command, args);
    return execCommand(binary!, rest, { input: options.input });
  };
  return {
    argv,
    run,
    async must(command, args, options) {
      const result = await run(command, args, options);
      if (result.code !== 0) throw new Error(`${argv(command, args).join(' ')} failed (exit ${result.code}): ${result.stderr.trim()}`);
      return result.stdout;
    },
  };
}
