import type { DecisionEvent } from './schema.js';

/** The job an event belongs to: ci.job_id, else repository/run_id/job, else "default". */
export function jobKey(event: Pick<DecisionEvent, 'ci'>): string {
  const ci = event.ci;
  if (!ci) return 'default';
  if (ci.job_id) return ci.job_id;
  if (ci.repository || ci.run_id || ci.job) return `${ci.repository ?? '-'}/${ci.run_id ?? '-'}/${ci.job ?? '-'}`;
  return 'default';
}
