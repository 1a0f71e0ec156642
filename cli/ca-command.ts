import { caCertificate } from '../certs/ca-store.js';
import { installSystemCa, uninstallSystemCa } from '../certs/system-trust-store.js';
import { loadConfig } from '../config/load-config.js';
import { parseArgs, processIo, UsageError, type CommandIo } from './args.js';
import { configSources, SETTING_OPTIONS } from './config-sources.js';

export const CA_USAGE = 'egress-guard ca print|install|uninstall [--state-dir DIR] [--ca-cert FILE --ca-key FILE]';

/**
 * `egress-guard ca print`: the CA certificate of TLS inspection as PEM (generated on first use);
 * `ca install`: add it to the system trust store (Debian/Ubuntu); `ca uninstall`: remove it again.
 */
export async function caCommand(argv: readonly string[], io: CommandIo = processIo()): Promise<number> {
  const args = parseArgs(argv, SETTING_OPTIONS);
  const [action, extra] = args.positionals;
  if (action !== 'print' && action !== 'install' && action !== 'uninstall')
    throw new UsageError(action ? `unknown action "${action}"` : 'name an action: print, install or uninstall');
  if (extra !== undefined) throw new UsageError(`unexpected argument "${extra}"`);
  const config = loadConfig(configSources(args.flags, io.env));
  if (action === 'uninstall') {
    const removed = uninstallSystemCa();
    io.stdout.write(removed ? `removed ${removed} and ran update-ca-certificates --fresh\n` : 'the egress-guard CA was not installed\n');
    return 0;
  }
  const ca = caCertificate(config);
  if (action === 'print') io.stdout.write(ca.certPem);
  else io.stdout.write(`installed ${ca.certPath} as ${installSystemCa(ca.certPem)} and ran update-ca-certificates\n`);
  return 0;
}
