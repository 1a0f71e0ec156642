import { statSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

export const SYSTEM_STATE_DIR = '/var/lib/egress-guard';

export interface StateDirHost {
  uid: number | undefined;
  isDirectory: (path: string) => boolean;
  home: string;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

const thisHost = (): StateDirHost => ({ uid: process.getuid?.(), isDirectory, home: homedir() });

/**
 * The state directory when `state-dir` is not set: /var/lib/egress-guard for root, and for anyone once it
 * exists (so `ca print` and `env` run by the job's user find the CA a root sidecar generated); otherwise
 * $XDG_STATE_HOME/egress-guard (an absolute one, as the XDG spec says), else ~/.local/state/egress-guard.
 */
export function defaultStateDir(env: NodeJS.ProcessEnv, host: StateDirHost = thisHost()): string {
  if (host.uid === 0 || host.isDirectory(SYSTEM_STATE_DIR)) return SYSTEM_STATE_DIR;
  const xdg = env.XDG_STATE_HOME;
  return join(xdg && isAbsolute(xdg) ? xdg : join(host.home, '.local', 'state'), 'egress-guard');
}
