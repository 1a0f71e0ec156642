export interface ParsedArgs {
  positionals: string[];
  /** Options by name (without --), every occurrence kept in order. */
  options: Map<string, string[]>;
}

export class UsageError extends Error {}

/** Parse `--name value`, `--name=value` and positionals; names in `booleans` take no value. */
export function parseArgs(argv: readonly string[], booleans: readonly string[] = ['help']): ParsedArgs {
  const positionals: string[] = [];
  const options = new Map<string, string[]>();
  const add = (name: string, value: string) => options.set(name, [...(options.get(name) ?? []), value]);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    if (eq !== -1) add(name, arg.slice(eq + 1));
    else if (booleans.includes(name)) add(name, 'true');
    else if (i + 1 < argv.length) add(name, argv[++i]!);
    else throw new UsageError(`--${name} needs a value`);
  }
  return { positionals, options };
}

/** Take the options a command handles itself out of the map, leaving the settings. */
export function takeOption(args: ParsedArgs, name: string): string | undefined {
  const values = args.options.get(name);
  args.options.delete(name);
  return values?.at(-1);
}
