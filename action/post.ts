import { existsSync } from 'node:fs';
import * as core from '@actions/core';
import { buildReport } from '../report/format.js';
import { readEventsFile } from '../report/events-file.js';
import { renderPolicyYaml, suggestPolicy } from '../report/suggest.js';
import { annotationsOf, blockedCount, exitedEarlyNotice, lastEventTime } from './findings.js';
import { parseActionInputs } from './inputs.js';
import { actionLayout, type ActionLayout } from './layout.js';
import { stopNetfilterLog } from './netfilter-log.js';
import { privileged, type Privileged } from './privileged.js';
import { jobSummaryMarkdown } from './job-summary.js';
import { egressGuardExited, stopEgressGuard } from './sidecar-stop.js';
import { decodeState, STATE_KEY, type ActionState } from './state.js';

/**
 * Undo what main did: egress-guard first, then its rules and resolv.conf (no window where the job bypasses it).
 * Whether egress-guard was still running: 'gone' means it exited during the job.
 */
async function teardown(root: Privileged, state: ActionState, layout: ActionLayout): Promise<Awaited<ReturnType<typeof stopEgressGuard>>> {
  const sidecar = await stopEgressGuard(root, state);
  if (sidecar === 'unknown') core.info(`egress-guard: pid ${state.sidecarPid} not signalled: the state has no start time to tell it from a later process`);
  else if (sidecar) core.info(`egress-guard: ${sidecar}`);
  if (state.netfilterLog) core.info(`egress-guard: ${await stopNetfilterLog(root, state.netfilterLog)}`);
  const restored = await root.run(layout.node, [layout.teardown]);
  if (restored.code !== 0) core.warning(`egress-guard: the network could not be restored: ${restored.stderr.trim()}`);
  else core.info(restored.stdout.trim());
  return sidecar;
}

async function post(): Promise<void> {
  const inputs = parseActionInputs((name) => core.getInput(name));
  const layout = actionLayout(process.env);
  const state = decodeState(core.getState(STATE_KEY));
  let sidecar: Awaited<ReturnType<typeof teardown>>;
  if (state?.sudoDisabled) {
    core.info('egress-guard: sudo is disabled for this job, so egress-guard and its rules stay until the runner is gone');
    // Nothing can be stopped without sudo, but whether egress-guard is still there needs no root (kill -0: EPERM is
    // alive): the hardened set-up must not be the one where egress-guard exiting during the job goes untold.
    if (egressGuardExited(state)) sidecar = 'gone';
  } else if (state) sidecar = await teardown(privileged(), state, layout);
  if (!existsSync(layout.eventsFile)) {
    core.warning(`egress-guard: no events file (${layout.eventsFile}): main did not start egress-guard`);
    return;
  }
  const { events } = await readEventsFile(layout.eventsFile);
  const report = buildReport(events, layout.eventsFile);
  const notices = sidecar === 'gone' && state ? [exitedEarlyNotice(state.mode, lastEventTime(events), layout.logFile)] : [];
  for (const notice of notices) core.warning(notice, { title: 'egress-guard exited during the job' });
  for (const annotation of annotationsOf(report.review)) {
    if (annotation.level === 'error') core.error(annotation.message, { title: annotation.title });
    else core.warning(annotation.message, { title: annotation.title });
  }
  const count = blockedCount(report.summary);
  core.setOutput('events-file', layout.eventsFile);
  core.setOutput('blocked-count', String(count));
  if (inputs.jobSummary) await core.summary.addRaw(jobSummaryMarkdown(report, renderPolicyYaml(suggestPolicy(events), layout.eventsFile), notices)).write();
  if (inputs.failOnBlock && count > 0) {
    const what = state?.mode === 'block' ? 'blocked' : 'would be blocked in block mode (audit mode)';
    const destinations = report.summary.destinations.filter((d) => d.decision !== 'allowed').map((d) => `${d.host}:${d.port}`);
    core.setFailed(`egress-guard: ${count} destination(s) ${what}, and fail-on-block is set: ${destinations.join(', ')}`);
  }
}

post().catch((err: unknown) => core.setFailed(err instanceof Error ? err.message : String(err)));
