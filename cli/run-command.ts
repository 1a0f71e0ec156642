import { ConfigError, loadConfig } from '../config/load-config.js';
import { PolicyError } from '../policy/index.js';
import { startSidecar } from '../sidecar/sidecar.js';
import { parseArgs, type CommandIo } from './args.js';
import { configSources, SETTING_OPTIONS } from './config-sources.js';

/** `egress-guard run`: start the sidecar; SIGHUP reloads the policy, SIGTERM/SIGINT drain and stop. */
export async function runCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const args = parseArgs(argv, SETTING_OPTIONS);
  const load = () => loadConfig(configSources(args.flags, io.env));
  let sidecar;
  // From the first moment: a SIGHUP during start (a config watcher, a pod's reload hook) would otherwise end the
  // process (the default action). One that arrives before the listeners are up reloads once they are.
  let reloadRequested = false;
  let reload = () => void (reloadRequested = true);
  process.on('SIGHUP', () => reload());
  try {
    sidecar = await startSidecar({ loadConfig: load, env: io.env });
  } catch (err) {
    // A bad policy or setting goes to bin's exit-code map (exit 2); any other start failure (a port it
    // cannot bind) is this command's own result: say why, exit 1.
    if (err instanceof PolicyError || err instanceof ConfigError) throw err;
    io.stderr.write(`egress-guard: ${(err as Error).message}\n`);
    return 1;
  }
  const running = sidecar;
  // A promise rejection nobody handled is a bug on one connection's path: log it, keep serving the others.
  process.on('unhandledRejection', (reason) => running.events.log.error({ err: reason instanceof Error ? reason.stack : String(reason) }, 'unhandled rejection'));
  reload = () => void running.reload();
  if (reloadRequested) reload();
  return new Promise((resolve) => {
    const stop = () => {
      // A second signal stops at once (a drain that hangs), as without a handler, but through process.exit so
      // the exit hook still writes the events file's queued lines.
      for (const [signal, code] of [
        ['SIGTERM', 143],
        ['SIGINT', 130],
      ] as const)
        process.once(signal, () => process.exit(code));
      void running.close().then(() => resolve(0));
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
