import { readFileSync } from 'node:fs';
import { parseArgs as parseTokens, type ParseArgsConfig } from 'node:util';

/**
 * A bad command line: bin's exit-code map prints `egress-guard: <message>` and exits 2. `usage`, when
 * given, is printed after it (alone when the message is empty: decide and rules answer a missing or
 * wrong positional with their usage line only).
 */
export class UsageError extends Error {
  readonly usage: string | undefined;
  constructor(message: string, usage?: string) {
    super(message);
    this.usage = usage;
  }
}

/** The options a command accepts, as node:util parseArgs takes them. */
export type OptionSpecs = NonNullable<ParseArgsConfig['options']>;

export interface ParsedArgs {
  flags: Map<string, string[]>;
  positionals: string[];
}

/**
 * Parse with node:util parseArgs against the options a command declares: `--key value`, `--key=value`,
 * repeated flags, `--` ends flags. An option not declared is refused before the command does anything.
 * parseArgs runs non-strict and its tokens are checked here, for this CLI's messages and so that a value
 * may start with a dash (`--policy -x`), as the hand-written parser allowed.
 */
export function parseArgs(argv: readonly string[], options: OptionSpecs): ParsedArgs {
  const { values, positionals, tokens } = parseTokens({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    const spec = Object.hasOwn(options, token.name) ? options[token.name] : undefined;
    // Short options are none of ours (`-x`, `-abc`): name the argument as given.
    if (!spec || !token.rawName.startsWith('--')) throw new UsageError(`unknown option ${token.rawName.startsWith('--') ? token.rawName : argv[token.index]}`);
    if (spec.type === 'string' && token.value === undefined) throw new UsageError(`${token.rawName} needs a value`);
    if (spec.type === 'boolean' && token.value !== undefined) throw new UsageError(`${token.rawName} takes no value`);
  }
  const flags = new Map<string, string[]>();
  for (const [key, value] of Object.entries(values)) {
    if (value !== undefined) flags.set(key, (Array.isArray(value) ? value : [value]).map(String));
  }
  return { flags, positionals };
}

export function single(args: ParsedArgs, key: string): string | undefined {
  return args.flags.get(key)?.at(-1);
}

/** The one events source (file, `-` or collector URL) report and policy take. */
export function oneSource(positionals: string[]): string {
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'name an events file (or - or a collector URL)' : `unexpected argument "${positionals[1]}"`);
  return positionals[0]!;
}

/** A file named on the command line; one that cannot be read is a usage error. */
export function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

/** Where commands write: the CLI passes the process's streams and environment; tests pass their own. */
export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

export const processIo = (): CommandIo => ({ stdout: process.stdout, stderr: process.stderr, env: process.env });

/** Take an option a command handles itself out of the map, leaving the settings for loadConfig. */
export function takeOption(args: ParsedArgs, key: string): string | undefined {
  const value = single(args, key);
  args.flags.delete(key);
  return value;
}
