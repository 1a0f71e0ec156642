/** A step of a CI job with its run time, from `gh api repos/OWNER/REPO/actions/jobs/ID`. */
export interface JobStep {
  name: string;
  number?: number;
  started: number;
  completed: number;
}

export class StepsError extends Error {}

/**
 * Read the steps of a GitHub Actions job (its `steps[]` with `name`, `started_at`, `completed_at`).
 * Steps that never ran (no start time) are left out; a running step ends now.
 */
export function parseJobSteps(json: unknown): JobStep[] {
  const steps = (json as { steps?: unknown })?.steps;
  if (!Array.isArray(steps)) throw new StepsError('the job JSON has no "steps" list (expected the output of gh api repos/OWNER/REPO/actions/jobs/ID)');
  const out: JobStep[] = [];
  for (const s of steps) {
    if (typeof s !== 'object' || s === null) continue;
    const { name, number, started_at: startedAt, completed_at: completedAt } = s as Record<string, unknown>;
    const started = typeof startedAt === 'string' ? Date.parse(startedAt) : NaN;
    if (typeof name !== 'string' || Number.isNaN(started)) continue;
    const completed = typeof completedAt === 'string' ? Date.parse(completedAt) : NaN;
    out.push({ name, ...(typeof number === 'number' && { number }), started, completed: Number.isNaN(completed) ? Date.now() : completed });
  }
  return out.sort((a, b) => a.started - b.started || (a.number ?? 0) - (b.number ?? 0));
}

/**
 * The step running at `time`. GitHub reports step times in whole seconds, so a step is taken to run
 * from its start second to the end of its completion second; where steps overlap, the later one wins.
 */
export function stepAt(steps: readonly JobStep[], time: string): JobStep | undefined {
  const t = Date.parse(time);
  let found: JobStep | undefined;
  for (const step of steps) {
    if (step.started <= t && t < step.completed + 1000) found = step;
  }
  return found;
}
