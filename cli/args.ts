export class UsageError extends Error {}

export interface ParsedArgs {
  flags: Map<string, string[]>;
  positionals: string[];
}

/**
 * Split `--key value`, `--key=value` and positionals. Flags named in `booleans` take no value; `--`
 * ends flags. Unknown flags are kept: the caller decides what it accepts.
 */
export function parseArgs(argv: readonly string[], booleans: readonly string[] = []): ParsedArgs {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const key = arg.slice(2, eq === -1 ? undefined : eq);
    let value: string;
    if (eq !== -1) value = arg.slice(eq + 1);
    else if (booleans.includes(key)) value = 'true';
    else {
      if (i + 1 >= argv.length) throw new UsageError(`--${key} needs a value`);
      value = argv[++i]!;
    }
    flags.set(key, [...(flags.get(key) ?? []), value]);
  }
  return { flags, positionals };
}

export function single(args: ParsedArgs, key: string): string | undefined {
  return args.flags.get(key)?.at(-1);
}

export function rejectUnknown(args: ParsedArgs, known: readonly string[]): void {
  for (const key of args.flags.keys()) if (!known.includes(key)) throw new UsageError(`unknown option --${key}`);
}

/** Where commands write: the CLI passes the process's streams and environment; tests pass their own. */
export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

/** Take an option a command handles itself out of the map, leaving the settings for loadConfig. */
export function takeOption(args: ParsedArgs, key: string): string | undefined {
  const value = single(args, key);
  args.flags.delete(key);
  return value;
}
