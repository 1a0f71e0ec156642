import { renderReport, type Report } from '../report/format.js';

/**
 * The job summary: the report's markdown (flagged, blocked and would-block rows first) and, collapsed, the
 * policy that would let this run pass, to paste into `allowed-endpoints` or a policy file. `notices` (what makes the
 * report incomplete) come first, as GitHub's warning alerts.
 */
export function jobSummaryMarkdown(report: Report, suggestedPolicyYaml: string, notices: readonly string[] = []): string {
  return [
    // What makes the report incomplete comes before it (egress-guard exited during the job).
    ...notices.map((notice) => `> [!WARNING]\n> ${notice}\n`),
    renderReport(report, 'markdown').trimEnd(),
    '',
    '<details><summary>Suggested policy (the smallest allowlist this run needed; review it before block mode)</summary>',
    '',
    '```yaml',
    suggestedPolicyYaml.trimEnd().replace(/```/g, '` ` `'),
    '```',
    '',
    '</details>',
    '',
  ].join('\n');
}
