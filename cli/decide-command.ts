import { ConfigError, loadConfig } from '../config/load-config.js';
import { decide, PolicyError } from '../policy/index.js';
import { parseAuthority } from '../policy/host-port.js';
import { parseArgs, takeOption, type CommandIo } from './args.js';
import { configSources } from './config-sources.js';


/**
 * `egress-guard decide [--policy FILE] [--address IP]... HOST[:PORT]`: print the decision as one JSON line;
 * exit 0 allowed, 1 blocked, 2 bad policy or usage. With --address, the address stage is decided too.
 */
export async function decideCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const args = parseArgs(argv);
  const addresses = args.flags.get('address');
  args.flags.delete('address');
  const format = takeOption(args, 'format');
  if (args.positionals.length !== 1) {
    io.stderr.write('usage: egress-guard decide [--policy FILE] [--address IP]... HOST[:PORT]\n');
    return 2;
  }
  const target = parseAuthority(args.positionals[0]!, 443);
  if (!target) {
    io.stderr.write(`egress-guard: "${args.positionals[0]}" is not HOST[:PORT]\n`);
    return 2;
  }
  let config;
  try {
    config = loadConfig(configSources(args.flags, io.env));
  } catch (err) {
    if (err instanceof PolicyError || err instanceof ConfigError) {
      io.stdout.write(`${JSON.stringify({ error: 'bad-policy', message: err.message, ...(err instanceof PolicyError && { file: err.file, line: err.line, entry: err.entry }) })}\n`);
      io.stderr.write(`egress-guard: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const d = decide(config.policy, { host: target.host, port: target.port, ...(addresses && { addresses }) });
  const result = { decision: d.permitted ? 'allowed' : 'blocked', reason: d.reason, rule: d.rule, message: d.message, host: d.host, port: target.port, mode: config.policy.mode, ...(d.ip !== undefined && { ip: d.ip }) };
  io.stdout.write(format === 'text' ? `${result.decision}: ${d.message}\n` : `${JSON.stringify(result)}\n`);
  return d.permitted ? 0 : 1;
}
