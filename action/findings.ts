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
