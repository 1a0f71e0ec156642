import type { EgressEvent } from '../events/schema.js';
import { stepAt, type JobStep } from './steps.js';
import { destinationKey, isDecision, summarize, type Destination, type Summary } from './summary.js';

export type ReportFormat = 'table' | 'markdown' | 'json';
export const REPORT_FORMATS: readonly ReportFormat[] = ['table', 'markdown', 'json'];

export interface StepSection {
  step: string;
  number?: number;
  summary: Summary;
}

export interface Report {
  source: string;
  summary: Summary;
  /** Present when step timings were given: the events grouped by the step that was running. */
  steps?: StepSection[];
}

export const OUTSIDE_STEPS = '(outside any step)';

export function buildReport(events: readonly EgressEvent[], source: string, steps?: readonly JobStep[]): Report {
  const report: Report = { source, summary: summarize(events) };
  if (!steps) return report;
  const groups = new Map<JobStep | undefined, Set<string>>();
  for (const e of events) {
    if (!isDecision(e)) continue;
    const step = stepAt(steps, e.time);
    let ids = groups.get(step);
    if (!ids) groups.set(step, (ids = new Set()));
    ids.add(e.id);
  }
  const ordered = [...steps.filter((s) => groups.has(s)), ...(groups.has(undefined) ? [undefined] : [])];
  report.steps = ordered.map((step) => ({
    step: step?.name ?? OUTSIDE_STEPS,
    ...(step?.number !== undefined && { number: step.number }),
    summary: summarize(events.filter((e) => groups.get(step)!.has(e.id))),
  }));
  return report;
}

export function renderReport(report: Report, format: ReportFormat): string {
  if (format === 'json') return `${JSON.stringify(report, null, 2)}\n`;
  return format === 'markdown' ? renderMarkdown(report) : renderTable(report);
}

function totalsLine(s: Summary): string {
  return `allowed ${s.totals.allowed}, would-block ${s.totals['would-block']}, blocked ${s.totals.blocked}`;
}

function clock(time: string): string {
  const d = new Date(time);
  return Number.isNaN(d.getTime()) ? time : d.toISOString().slice(11, 19);
}

function headline(report: Report): string {
  const s = report.summary;
  const jobs = s.jobs.length === 1 ? `job ${s.jobs[0]}` : `${s.jobs.length} jobs`;
  const span = s.first ? `, ${s.first} to ${s.last}` : '';
  return `${jobs}: ${s.destinations.length} destinations, ${s.decisions} decisions${span}`;
}

// ---- terminal table ----

function table(rows: string[][], rightAligned: Set<number>): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => (rightAligned.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function destinationTable(destinations: readonly Destination[]): string {
  if (destinations.length === 0) return '(no connections)';
  const rows = [['DECISION', 'DESTINATION', 'KINDS', 'COUNT', 'FIRST', 'LAST', 'REASON']];
  for (const d of destinations) {
    rows.push([d.decision, destinationKey(d.host, d.port), d.kinds.join(','), String(d.count), clock(d.first), clock(d.last), d.reasons.join(',')]);
  }
  return table(rows, new Set([3]));
}

function renderTable(report: Report): string {
  const s = report.summary;
  const out = [`egress-guard report (${report.source}): ${headline(report)}`, totalsLine(s), ''];
  if (report.steps) {
    for (const section of report.steps) {
      out.push(`== ${section.number !== undefined ? `Step ${section.number}: ` : ''}${section.step} (${section.summary.decisions} decisions; ${totalsLine(section.summary)})`);
      out.push(destinationTable(section.summary.destinations), '');
    }
  } else {
    out.push(destinationTable(s.destinations), '');
  }
  return `${out.join('\n').trimEnd()}\n`;
}

// ---- markdown ----

const BADGE: Record<Destination['decision'], string> = { blocked: '⛔ blocked', 'would-block': '⚠️ would-block', allowed: '✅ allowed' };

/** Make text safe inside a GitHub-flavoured markdown table cell (no HTML, no cell breaks). */
function cell(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/[\\|`*_[\]<>&]/g, (c) => `\\${c}`);
}

function code(text: string): string {
  return `\`${text.replace(/[`\r\n|]/g, '')}\``;
}

function destinationMarkdown(destinations: readonly Destination[]): string {
  if (destinations.length === 0) return '_No connections._';
  const rows = ['| Decision | Destination | Kinds | Count | First seen | Last seen | Reason |', '| --- | --- | --- | ---: | --- | --- | --- |'];
  for (const d of destinations) {
    rows.push(
      `| ${BADGE[d.decision]} | ${code(destinationKey(d.host, d.port))} | ${cell(d.kinds.join(', '))} | ${d.count} | ${cell(clock(d.first))} | ${cell(clock(d.last))} | ${cell(d.reasons.join(', '))} |`,
    );
  }
  return rows.join('\n');
}

function renderMarkdown(report: Report): string {
  const s = report.summary;
  const out = [
    `### egress-guard: ${cell(headline(report))}`,
    '',
    `**${s.totals.allowed}** allowed · **${s.totals['would-block']}** would-block · **${s.totals.blocked}** blocked`,
    '',
  ];
  if (report.steps) {
    for (const section of report.steps) {
      out.push(`#### ${section.number !== undefined ? `Step ${section.number}: ` : ''}${cell(section.step)}`, '');
      out.push(destinationMarkdown(section.summary.destinations), '');
    }
  } else {
    out.push(destinationMarkdown(s.destinations), '');
  }
  return `${out.join('\n').trimEnd()}\n`;
}
