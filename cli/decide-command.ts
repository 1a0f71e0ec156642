import { ConfigError, loadConfig } from '../config/load-config.js';
import { decide, PolicyError } from '../policy/index.js';
import { parseAuthority } from '../policy/host-port.js';
import { parseArgs, takeOption, UsageError, type CommandIo, type OptionSpecs } from './args.js';
import { configSources, SETTING_OPTIONS } from './config-sources.js';

const USAGE = 'egress-guard decide [--policy FILE] [--address IP]... [METHOD] HOST[:PORT][/PATH]';
const OPTIONS: OptionSpecs = { ...SETTING_OPTIONS, address: { type: 'string', multiple: true }, format: { type: 'string' } };

/**
 * `egress-guard decide [--policy FILE] [--address IP]... [METHOD] HOST[:PORT][/PATH]`: print the decision as one
 * JSON line; exit 0 allowed, 1 blocked, 2 bad policy or usage. With --address, the address stage is decided too.
 * With a method or a path, one request is decided (method GET, path / when only one is given); without, the
 * connection, as an inspecting listener would (`inspect`: its requests are then decided one by one).
 */
export async function decideCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const args = parseArgs(argv, OPTIONS);
  const addresses = args.flags.get('address');
  args.flags.delete('address');
  const format = takeOption(args, 'format');
  if (args.positionals.length < 1 || args.positionals.length > 2) throw new UsageError('', USAGE);
  const method = args.positionals.length === 2 ? args.positionals[0]!.toUpperCase() : undefined;
  const written = args.positionals.at(-1)!;
  const slash = written.indexOf('/');
  const path = slash === -1 ? undefined : written.slice(slash);
  const target = parseAuthority(slash === -1 ? written : written.slice(0, slash), 443);
  if (!target) throw new UsageError(`"${written}" is not HOST[:PORT][/PATH]`);
  const request = method !== undefined || path !== undefined ? { method: method ?? 'GET', path: path ?? '/' } : { inspectable: true };
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
  const d = decide(config.policy, { host: target.host, port: target.port, ...request, ...(addresses && { addresses }) });
  const result = {
    decision: d.permitted ? 'allowed' : 'blocked',
    reason: d.reason,
    rule: d.rule,
    message: d.message,
    host: d.host,
    port: target.port,
    ...('method' in request && request),
    ...(d.inspect && { inspect: true }),
    mode: config.policy.mode,
    ...(d.ip !== undefined && { ip: d.ip }),
  };
  io.stdout.write(format === 'text' ? `${result.decision}: ${d.message}\n` : `${JSON.stringify(result)}\n`);
  return d.permitted ? 0 : 1;
}
