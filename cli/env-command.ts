import { loadConfig } from '../config/load-config.js';
import { policyInspects } from '../sidecar/inspection.js';
import { caTrustEnvironment } from './ca-trust-env.js';
import { parseArgs, processIo, takeOption, UsageError, type CommandIo, type OptionSpecs } from './args.js';
import { configSources, SETTING_OPTIONS } from './config-sources.js';
import { proxyEnvironment, renderGithubEnv, renderShellExports } from './proxy-env.js';

export const ENV_USAGE = 'egress-guard env [--format shell|github] [--listen HOST:PORT] [--policy FILE] [--trust-ca [--state-dir DIR]]';
const OPTIONS: OptionSpecs = { ...SETTING_OPTIONS, format: { type: 'string' }, 'trust-ca': { type: 'boolean' } };

/**
 * `egress-guard env`: the environment that makes tools use the proxy at the configured listen address
 * (flags, EGRESS_LISTEN or the policy file), as `export` lines or lines for $GITHUB_ENV. With --trust-ca, also
 * the variables that make them trust the TLS inspection CA (cli/ca-trust-env.ts); they come anyway when the
 * policy inspects some host (method or path entries).
 */
export async function envCommand(argv: readonly string[], io: CommandIo = processIo()): Promise<number> {
  const args = parseArgs(argv, OPTIONS);
  const format = takeOption(args, 'format') ?? 'shell';
  const trustCa = takeOption(args, 'trust-ca') !== undefined;
  if (format !== 'shell' && format !== 'github') throw new UsageError('--format must be shell or github');
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
  const config = loadConfig(configSources(args.flags, io.env));
  // A policy that inspects some host needs its clients to trust the CA: the variables come without asking.
  const vars = [...proxyEnvironment(config.listen, io.env), ...(trustCa || policyInspects(config.policy) ? caTrustEnvironment(config) : [])];
  io.stdout.write(format === 'github' ? renderGithubEnv(vars) : renderShellExports(vars));
  return 0;
}
