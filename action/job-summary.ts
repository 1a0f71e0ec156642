import { renderReport, type Report } from '../report/format.js';

/**
 * The job summary: the report's markdown (flagged, blocked and would-block rows first) and, collapsed, the
 * policy that would let this run pass, to paste into `allowed-endpoints` or a policy file.
 */
export function jobSummaryMarkdown(report: Report, suggestedPolicyYaml: string): string {
  return [
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
