import type { EgressEvent } from '../events/schema.js';
import type { ReviewRow } from '../report/review.js';
import type { Summary } from '../report/summary.js';

export interface Annotation {
  level: 'error' | 'warning';
  title: string;
  message: string;
}

/** A destination the policy refused (block mode) or would have refused (audit mode). */
function refused(decision: ReviewRow['decision']): boolean {
  return decision === 'blocked' || decision === 'would-block';
}

/**
 * One annotation per refused row of the report (the report folds many names of one domain, a DNS tunnel, into
 * one row): an error for what was blocked, a warning for what audit mode would block.
 */
export function annotationsOf(rows: readonly ReviewRow[]): Annotation[] {
  return rows
    .filter((row) => refused(row.decision))
    .map((row) => {
      const looksLike = row.flags.length > 0 ? ` Looks like ${row.flags.map((f) => f.text).join('; ')}.` : '';
      const verb = row.decision === 'blocked' ? 'blocked' : 'would block (audit mode)';
      return {
        level: row.decision === 'blocked' ? 'error' : 'warning',
        title: `egress-guard ${row.decision}: ${row.label}`,
        message: `egress-guard ${verb} ${row.label} (${row.kinds.join(', ')}; ${row.count}x; ${row.reasons.join(', ')}).${looksLike}`,
      };
    });
}

/** The `blocked-count` output: host:port destinations blocked, or in audit mode would-block. */
export function blockedCount(summary: Pick<Summary, 'destinations'>): number {
  return summary.destinations.filter((d) => refused(d.decision)).length;
}

/** The time of the last event, as ISO text, or undefined when there is none. */
export function lastEventTime(events: readonly EgressEvent[]): string | undefined {
  let last: string | undefined;
  for (const event of events) if (last === undefined || event.time > last) last = event.time;
  return last;
}

/**
 * What post says when egress-guard exited before post stopped it: the report ends where its events end. Audit mode
 * (the supervisor removed the rules) let the rest of the job out unchecked; block mode (the rules stayed) refused it.
 */
export function exitedEarlyNotice(mode: 'audit' | 'block', lastEvent: string | undefined, logFile: string): string {
  const after = lastEvent ? `after its last event (${lastEvent})` : 'after it started';
  const consequence =
    mode === 'audit'
      ? `audit mode removed the redirect rules when it exited, so what the job sent ${after} went out unchecked and is not in this report`
      : `block mode kept the redirect rules, so the job's connections ${after} were refused (failed closed) and are not in this report`;
  return `egress-guard exited during the job (its output: ${logFile}); ${consequence}`;
}
