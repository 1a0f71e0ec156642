import { CaError } from '../certs/ca-error.js';
import { UsageError, type CommandIo } from '../cli/args.js';
import { ConfigError } from '../config/load-config.js';
import { EventValidationError } from '../events/validate.js';
import { PolicyError } from '../policy/index.js';
import { EventSourceError } from '../report/load-events.js';
import { StepsError } from '../report/steps.js';

/** A command returns its own result (0, or 1: blocked, would block, could not start) and throws the rest. */
export type Command = (argv: readonly string[], io: CommandIo) => Promise<number>;

/** Bad input: the command line, a policy or setting, a steps file, an events source or its events, a CA or trust store. */
const INPUT_ERRORS = [UsageError, EventSourceError, PolicyError, ConfigError, StepsError, EventValidationError, CaError];

/**
 * The one map from an error a command throws to what the CLI prints and its exit code: bad input is one
 * line and exit 2 (with the command's usage after usage errors, when it has one); anything else is a bug:
 * its stack and exit 1.
 */
export function exitCodeFor(err: unknown, stderr: NodeJS.WritableStream, usage?: string): number {
  if (INPUT_ERRORS.some((type) => err instanceof type)) {
    const message = (err as Error).message;
    const shown = err instanceof UsageError ? (err.usage ?? usage) : err instanceof EventSourceError ? usage : undefined;
    stderr.write(`${message ? `egress-guard: ${message}\n` : ''}${shown ? `usage: ${shown}\n` : ''}`);
    return 2;
  }
  stderr.write(`egress-guard: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return 1;
}

/** Run a command as the CLI does: its result, or the exit code of what it threw. Tests call commands through this too. */
export async function invoke(command: Command, argv: readonly string[], io: CommandIo, usage?: string): Promise<number> {
  try {
    return await command(argv, io);
  } catch (err) {
    return exitCodeFor(err, io.stderr, usage);
  }
}
