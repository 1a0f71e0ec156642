import { mkdirSync, readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as core from '@actions/core';
import { loadConfig } from '../config/load-config.js';
import type { Policy } from '../policy/index.js';
import { disableSudo } from './disable-sudo.js';
import { stopEarlierReader } from './earlier-reader.js';
import { parseActionInputs } from './inputs.js';
import { installApp, installPolicyFile } from './install-app.js';
import { JOB_RESOLV_CONF, pointResolvConf, saveResolvConf, upstreamResolvers } from './job-dns.js';
import { actionLayout, SIDECAR_USER } from './layout.js';
import { startNetfilterLog } from './netfilter-log.js';
import { privileged } from './privileged.js';
import { applyRedirectRules } from './redirect-rules.js';
import { RUNNER_ENDPOINTS, withRunnerEndpoints } from './runner-endpoints.js';
import { ciVariables, inInputTerms, sidecarEnvironment } from './sidecar-settings.js';
import { processStartTime } from './process-identity.js';
import { assertAdminPortFree, findEgressGuard, spawnSidecar, waitUntilHealthy } from './sidecar-process.js';
import { ensureSidecarUser } from './sidecar-user.js';
import { encodeState, STATE_KEY, type ActionState } from './state.js';

/** The action's `main`: start egress-guard as its own user, redirect the job's traffic and DNS to it. */
async function main(): Promise<void> {
  const inputs = parseActionInputs((name) => core.getInput(name));
  const layout = actionLayout(process.env);
  mkdirSync(layout.workDir, { recursive: true });
  const root = privileged();
  const workspace = process.env.GITHUB_WORKSPACE ?? process.cwd();
  const dnsUpstream = upstreamResolvers();
  // The policy as egress-guard will read it, checked before anything on the runner changes (errors name file:line).
  const repositoryPolicy = inputs.policyFile ? path.resolve(workspace, inputs.policyFile) : undefined;
  const checkEnv = sidecarEnvironment(inputs, layout, { dnsUpstream, ...(repositoryPolicy && { policyFile: repositoryPolicy }) });
  let policy: Policy;
  try {
    policy = loadConfig({ flags: new Map(), env: checkEnv, readFile: (file) => readFileSync(file, 'utf8') }).policy;
  } catch (err) {
    throw new Error(`egress-guard: ${inInputTerms((err as Error).message)}`);
  }
  const mode = policy.mode;
  // Environment beats the policy file: the file's list (or the input's, or the default's) goes in again, with the runner's.
  const allowedEndpoints = withRunnerEndpoints(policy.endpoints.map((rule) => rule.source));
  core.info(`egress-guard: ${mode} mode, upstream DNS ${dnsUpstream.join(' ')}, the runner's own ${RUNNER_ENDPOINTS.join(' ')} allowed`);

  // Before anything on the runner changes: an egress-guard still running would answer for the new one.
  await assertAdminPortFree();
  const state: ActionState = { mode, sudoDisabled: false };
  const save = () => core.saveState(STATE_KEY, encodeState(state));
  save();
  const user = await ensureSidecarUser(root, SIDECAR_USER);
  core.info(`egress-guard: ${user.created ? 'created' : 'using'} system user ${user.name} (uid ${user.uid})`);
  await installApp(root, layout, path.dirname(fileURLToPath(import.meta.url)), user);
  const policyFile = inputs.policyFile ? await installPolicyFile(root, layout, workspace, inputs.policyFile, user) : undefined;
  core.setOutput('events-file', layout.eventsFile);

  // Before netlog/ is made anew: what an earlier job's main left there names the reader it may have left running.
  const earlierReader = await stopEarlierReader(root, layout);
  if (earlierReader) core.info(`egress-guard: ${earlierReader}`);
  const netfilterReport = await startNetfilterLog(root, layout);
  const netfilterLog = 'reason' in netfilterReport ? undefined : netfilterReport;
  if (netfilterLog) {
    state.netfilterLog = netfilterLog;
    save();
    core.info(`egress-guard: packets the rules refuse or report are read by ${netfilterLog.reader === 'built-in' ? 'its built-in NFLOG reader' : 'ulogd'}`);
  } else core.warning(`egress-guard: UDP, ICMP and answers to outside hosts that the rules refuse are not events: ${'reason' in netfilterReport ? netfilterReport.reason : ''}`);

  const env = sidecarEnvironment(inputs, layout, {
    dnsUpstream,
    ci: ciVariables(process.env),
    ...(policyFile && { policyFile }),
    ...(netfilterLog && { netfilterLog: netfilterLog.jsonFile }),
  });
  const sidecar = spawnSidecar(root, layout, user, env, mode);
  if (sidecar.pid === undefined) throw new Error('egress-guard could not be started');
  state.sidecarPid = sidecar.pid;
  const start = processStartTime(sidecar.pid);
  if (start !== undefined) state.sidecarStart = start;
  save();
  await waitUntilHealthy(sidecar, layout);
  // Healthy: setpriv has exec'd egress-guard, so it has its argv. Post judges by this process whether it exited.
  const egressGuard = findEgressGuard(sidecar.pid, layout);
  if (egressGuard) state.egressGuard = egressGuard;
  else core.info(`egress-guard: its own process was not found below pid ${sidecar.pid}; post judges by that one whether it exited during the job`);
  save();
  core.info(`egress-guard: running as ${user.name} (pid ${sidecar.pid}), output in ${layout.logFile}`);

  const rules = await applyRedirectRules(root, layout, user, mode);
  for (const line of rules.applied) core.info(`egress-guard: ${line}`);
  for (const why of rules.warnings) core.warning(`egress-guard: ${why}`);

  state.resolvConf = await saveResolvConf(root, layout.savedResolvConf);
  save();
  await pointResolvConf(root, JOB_RESOLV_CONF);
  const was = state.resolvConf.kind === 'symlink' ? `a symlink to ${state.resolvConf.target}` : 'a file';
  core.info(`egress-guard: /etc/resolv.conf (was ${was}) now names egress-guard's DNS listeners 127.0.0.1 and ::1; post restores it`);

  if (inputs.disableSudo) {
    const runner = userInfo().username;
    if (process.getuid?.() === 0) core.warning('disable-sudo: the action runs as root, there is no sudo to take away');
    else {
      state.sudoDisabled = true;
      save();
      for (const line of await disableSudo(root, runner)) core.info(`egress-guard: disable-sudo: ${line}`);
    }
  }
}

main().catch((err: unknown) => core.setFailed(err instanceof Error ? err.message : String(err)));
