import path from 'node:path';

/** Where the action puts things on the runner, and the ports egress-guard listens on (loopback only). */
export interface ActionLayout {
  /**
   * Root's, readable by everyone (outside the runner's home, which the egress-guard user may not be able to enter).
   * Never the egress-guard user's: root runs what is in it (appDir: the NFLOG reader, the audit supervisor's
   * teardown, post) and writes into it (savedResolvConf), so a user who could rename its entries could have root run
   * or overwrite anything. The egress-guard user gets files and folders of its own inside it.
   */
  stateDir: string;
  /** The egress-guard user's own state directory (`state-dir`: a generated CA, if a policy inspects). */
  sidecarStateDir: string;
  /** A copy of action-dist/ and of the node binary that runs it, readable by the egress-guard user. */
  appDir: string;
  node: string;
  entry: string;
  /** Run as root: removes the rules, restores resolv.conf (teardown.ts). */
  teardown: string;
  eventsFile: string;
  policyFile: string;
  /** /etc/resolv.conf as it was (a symlink stays a symlink), put back by post or by the audit supervisor. */
  savedResolvConf: string;
  spoolDir: string;
  /** Root's: the NFLOG reader (root) writes its JSON lines and pid file here; egress-guard only reads. */
  netlogDir: string;
  /** The runner's own scratch space: egress-guard's output, ulogd's configuration. */
  workDir: string;
  logFile: string;
}

/** The container listeners are on 0.0.0.0 (a redirect from a bridge lands on the bridge's address): ports of their own. */
export const PORTS = { proxy: 3128, transparent: 3129, admin: 3130, dns: 53, containerTransparent: 3132, containerDns: 3153 } as const;
export const SIDECAR_USER = 'egress-guard';

export function actionLayout(env: NodeJS.ProcessEnv): ActionLayout {
  const stateDir = '/var/lib/egress-guard';
  const appDir = path.join(stateDir, 'app');
  const workDir = path.join(env.RUNNER_TEMP ?? '/tmp', 'egress-guard');
  return {
    stateDir,
    appDir,
    sidecarStateDir: path.join(stateDir, 'sidecar'),
    node: path.join(appDir, 'node'),
    entry: path.join(appDir, 'egress-guard.js'),
    teardown: path.join(appDir, 'teardown.js'),
    eventsFile: path.join(stateDir, 'events.ndjson'),
    policyFile: path.join(stateDir, 'policy.yaml'),
    savedResolvConf: path.join(stateDir, 'resolv.conf.saved'),
    spoolDir: path.join(stateDir, 'spool'),
    netlogDir: path.join(stateDir, 'netlog'),
    workDir,
    logFile: path.join(workDir, 'egress-guard.log'),
  };
}
