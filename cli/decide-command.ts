import { ConfigError, loadConfig } from '../config/load-config.js';
import { decide, PolicyError } from '../policy/index.js';
import { parseAuthority } from '../policy/host-port.js';
import { parseArgs, takeOption, UsageError, type CommandIo, type OptionSpecs } from './args.js';
import { configSources, SETTING_OPTIONS } from './config-sources.js';

const USAGE = 'egress-guard decide [--policy FILE] [--address IP]... HOST[:PORT]';
const OPTIONS: OptionSpecs = { ...SETTING_OPTIONS, address: { type: 'string', multiple: true }, format: { type: 'string' } };

/**
 * `egress-guard decide [--policy FILE] [--address IP]... HOST[:PORT]`: print the decision as one JSON line;
 * exit 0 allowed, 1 blocked, 2 bad policy or usage. With --address, the address stage is decided too.
 */
export async function decideCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const args = parseArgs(argv, OPTIONS);
  const addresses = args.flags.get('address');
  args.flags.delete('address');
  const format = takeOption(args, 'format');
  if (args.positionals.length !== 1) throw new UsageError('', USAGE);
  const target = parseAuthority(args.positionals[0]!, 443);
  if (!target) throw new UsageError(`"${args.positionals[0]}" is not HOST[:PORT]`);
  let config;
  try {
    config = loadConfig(configSources(args.flags, io.env));
  } catch (err) {
    // decide's own answer to a policy that does not load, for scripts; bin's exit-code map adds the message and exit 2.
    if (err instanceof PolicyError || err instanceof ConfigError) {
      io.stdout.write(
        `${JSON.stringify({ error: 'bad-policy', message: err.message, ...(err instanceof PolicyError && { file: err.file, line: err.line, entry: err.entry }) })}\n`,
      );
    }
    throw err;
  }
  const d = decide(config.policy, { host: target.host, port: target.port, ...(addresses && { addresses }) });
  const result = {
    decision: d.permitted ? 'allowed' : 'blocked',
    reason: d.reason,
    rule: d.rule,
    message: d.message,
    host: d.host,
    port: target.port,
    mode: config.policy.mode,
    ...(d.ip !== undefined && { ip: d.ip }),
  };
  io.stdout.write(format === 'text' ? `${result.decision}: ${d.message}\n` : `${JSON.stringify(result)}\n`);
  return d.permitted ? 0 : 1;
}
