import type { EgressEvent } from '../events/schema.js';
import { stepAt, type JobStep } from './steps.js';
import { formatBytes, review, type ReviewRow } from './review.js';
import { isDecision, summarize, type Summary } from './summary.js';

export type ReportFormat = 'table' | 'markdown' | 'json';
export const REPORT_FORMATS: readonly ReportFormat[] = ['table', 'markdown', 'json'];

export interface StepSection {
  step: string;
  number?: number;
  summary: Summary;
  review?: ReviewRow[];
}

export interface Report {
  source: string;
  summary: Summary;
  /** The rows a reviewer reads: grouped by registrable domain, attack-looking ones flagged and first. */
  review: ReviewRow[];
  /** Present when step timings were given: the events grouped by the step that was running. */
  steps?: StepSection[];
}

export const OUTSIDE_STEPS = '(outside any step)';

export function buildReport(events: readonly EgressEvent[], source: string, steps?: readonly JobStep[]): Report {
  const summary = summarize(events);
  const report: Report = { source, summary, review: review(summary) };
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
  for (const section of report.steps) section.review = review(section.summary);
  return report;
}

/** `color`: ANSI colours for a terminal (the CLI asks for them on a TTY without NO_COLOR). */
export function renderReport(report: Report, format: ReportFormat, options: { color?: boolean } = {}): string {
  if (format === 'json') return `${JSON.stringify(report, null, 2)}\n`;
  return format === 'markdown' ? renderMarkdown(report) : renderTable(report, options.color === true);
}

/** The flagged rows of a report, every section's when steps were given. */
function flagged(report: Report): ReviewRow[] {
  const rows = report.steps ? report.steps.flatMap((s) => s.review ?? []) : report.review;
  return rows.filter((r) => r.flags.length > 0);
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
  // A loop, not Math.max(...): a spread of more than ~120,000 values overflows the stack (a job of that many rows).
  const widths = rows[0]!.map((_, i) => rows.reduce((w, r) => Math.max(w, r[i]!.length), 0));
  return rows
    .map((r) =>
      r
        .map((cell, i) => (rightAligned.has(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const ANSI = { red: '\x1b[31m', yellow: '\x1b[33m', green: '\x1b[32m', bold: '\x1b[1m', reset: '\x1b[0m' };
const DECISION_COLOR: Record<ReviewRow['decision'], string> = { blocked: ANSI.red, 'would-block': ANSI.yellow, allowed: ANSI.green };

function destinationTable(rows: readonly ReviewRow[], color: boolean): string {
  if (rows.length === 0) return '(no connections)';
  const cells = [['DECISION', 'DESTINATION', 'KINDS', 'COUNT', 'OUT', 'IN', 'FIRST', 'LAST', 'REASON', 'LOOKS LIKE']];
  for (const r of rows) {
    cells.push([
      r.decision,
      r.label,
      r.kinds.join(','),
      String(r.count),
      formatBytes(r.bytesOut),
      formatBytes(r.bytesIn),
      clock(r.first),
      clock(r.last),
      r.reasons.join(','),
      r.flags.map((f) => f.id).join(','),
    ]);
  }
  const text = table(cells, new Set([3, 4, 5]));
  if (!color) return text;
  // Colour after padding, so the columns stay aligned.
  const lines = text.split('\n');
  return lines
    .map((line, i) => {
      if (i === 0) return `${ANSI.bold}${line}${ANSI.reset}`;
      const row = rows[i - 1]!;
      const decision = row.decision;
      const coloured = `${DECISION_COLOR[decision]}${decision}${ANSI.reset}${line.slice(decision.length)}`;
      return row.flags.length > 0 ? `${ANSI.bold}${coloured}${ANSI.reset}` : coloured;
    })
    .join('\n');
}

function findingsText(report: Report, color: boolean): string[] {
  const rows = flagged(report);
  if (rows.length === 0) return [];
  const mark = color ? `${ANSI.red}${ANSI.bold}!${ANSI.reset}` : '!';
  return ['Looks like an attack, not a missing allowlist entry:', ...rows.flatMap((r) => r.flags.map((f) => `  ${mark} ${r.label} (${r.decision}): ${f.text}`)), ''];
}

function renderTable(report: Report, color: boolean): string {
  const s = report.summary;
  const out = [`egress-guard report (${report.source}): ${headline(report)}`, totalsLine(s), '', ...findingsText(report, color)];
  if (report.steps) {
    for (const section of report.steps) {
      out.push(`== ${section.number !== undefined ? `Step ${section.number}: ` : ''}${section.step} (${section.summary.decisions} decisions; ${totalsLine(section.summary)})`);
      out.push(destinationTable(section.review ?? review(section.summary), color), '');
    }
  } else {
    out.push(destinationTable(report.review, color), '');
  }
  return `${out.join('\n').trimEnd()}\n`;
}

// ---- markdown ----

const BADGE: Record<ReviewRow['decision'], string> = { blocked: '⛔ blocked', 'would-block': '⚠️ would-block', allowed: '✅ allowed' };

/** Make text safe inside a GitHub-flavoured markdown table cell (no HTML, no cell breaks). */
function cell(text: string): string {
  return text.replace(/[\r\n]+/g, ' ').replace(/[\\|`*_[\]<>&]/g, (c) => `\\${c}`);
}

function code(text: string): string {
  return `\`${text.replace(/[`\r\n|]/g, '')}\``;
}

const FLAG_BADGE = '🚩';

function destinationMarkdown(rows: readonly ReviewRow[]): string {
  if (rows.length === 0) return '_No connections._';
  const lines = [
    '| Decision | Destination | Kinds | Count | Out | In | First seen | Last seen | Reason | Looks like |',
    '| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    const flags = r.flags.length > 0 ? `${FLAG_BADGE} ${cell(r.flags.map((f) => f.id).join(', '))}` : '';
    lines.push(
      `| ${BADGE[r.decision]} | ${code(r.label)} | ${cell(r.kinds.join(', '))} | ${r.count} | ${formatBytes(r.bytesOut)} | ${formatBytes(r.bytesIn)} | ${cell(clock(r.first))} | ${cell(clock(r.last))} | ${cell(r.reasons.join(', '))} | ${flags} |`,
    );
  }
  return lines.join('\n');
}

function findingsMarkdown(report: Report): string[] {
  const rows = flagged(report);
  if (rows.length === 0) return [];
  return ['#### 🚩 Looks like an attack, not a missing allowlist entry', '', ...rows.flatMap((r) => r.flags.map((f) => `- ${code(r.label)} (${r.decision}): ${cell(f.text)}`)), ''];
}

function renderMarkdown(report: Report): string {
  const s = report.summary;
  const out = [
    `### egress-guard: ${cell(headline(report))}`,
    '',
    `**${s.totals.allowed}** allowed · **${s.totals['would-block']}** would-block · **${s.totals.blocked}** blocked`,
    '',
    ...findingsMarkdown(report),
  ];
  if (report.steps) {
    for (const section of report.steps) {
      out.push(`#### ${section.number !== undefined ? `Step ${section.number}: ` : ''}${cell(section.step)}`, '');
      out.push(destinationMarkdown(section.review ?? review(section.summary)), '');
    }
  } else {
    out.push(destinationMarkdown(report.review), '');
  }
  return `${out.join('\n').trimEnd()}\n`;
}
