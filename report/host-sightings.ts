import { apiUrl, EventSourceError, getJson } from './load-events.js';

/** When a set of decisions happened, and how they went (the collector's job list and search alike). */
export interface DecisionCounts {
  first: string;
  last: string;
  decisions: number;
  allowed: number;
  blocked: number;
  wouldBlock: number;
}

/** One job's sightings of a host, as the collector's GET /api/v1/search answers them. */
export interface JobSighting extends DecisionCounts {
  job: string;
  bytesOut: number;
  hosts: string[];
}

export interface HostSightings {
  host: string;
  since?: string;
  until?: string;
  decision?: string;
  jobs: JobSighting[];
  /** More pages than fetched (the answer is cut at maxJobs). */
  truncated: boolean;
}

/** `30d`, `12h`, `90m` before now, or an ISO time; undefined when the text is neither. */
export function timeArgument(text: string, now = Date.now()): string | undefined {
  const relative = /^(\d+)([dhm])$/.exec(text.trim());
  if (relative) return new Date(now - Number(relative[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[relative[2] as 'd' | 'h' | 'm']).toISOString();
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

/** "Which of our jobs talked to this host, and when?", every page up to maxJobs, newest first. */
export async function fetchHostSightings(collector: string, query: { host: string; since?: string; until?: string; decision?: string }, maxJobs = 5000): Promise<HostSightings> {
  const jobs: JobSighting[] = [];
  // `next`: a cursor; a collector before cursors answered the next page's offset (a number), asked as `offset`.
  let next: string | number | null | undefined;
  let answer: { host: string; next: string | number | null; jobs: JobSighting[] } | undefined;
  do {
    const url = apiUrl(collector, '/api/v1/search');
    const page = next === undefined || next === null ? {} : typeof next === 'number' ? { offset: String(next) } : { cursor: next };
    for (const [key, value] of Object.entries({ ...query, limit: '500', ...page })) if (value !== undefined) url.searchParams.set(key, value);
    answer = (await getJson(url)) as typeof answer;
    if (!answer || !Array.isArray(answer.jobs)) throw new EventSourceError(`collector answer for ${url.pathname} has no jobs`);
    // A loop, not push(...): a page of more than ~120,000 jobs (the collector's answer) overflowed the stack.
    for (const job of answer.jobs) jobs.push(job);
    next = answer.jobs.length === 0 ? null : answer.next;
  } while (next !== null && next !== undefined && jobs.length < maxJobs);
  return {
    host: answer?.host ?? query.host,
    ...(query.since && { since: query.since }),
    ...(query.until && { until: query.until }),
    ...(query.decision && { decision: query.decision }),
    jobs: jobs.slice(0, maxJobs),
    truncated: jobs.length > maxJobs || (next !== null && next !== undefined),
  };
}

function bytes(n: number): string {
  return n < 1024 ? `${n} B` : n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** For a terminal (table), a ticket (markdown) or a script (json). */
export function renderHostSightings(result: HostSightings, format: 'table' | 'markdown' | 'json'): string {
  if (format === 'json') return `${JSON.stringify(result, null, 2)}\n`;
  const window = [result.since && `since ${result.since}`, result.until && `until ${result.until}`, result.decision && `decision ${result.decision}`].filter(Boolean).join(', ');
  const title = `Jobs that talked to ${result.host}${window ? ` (${window})` : ''}: ${result.jobs.length}${result.truncated ? ' (more not shown)' : ''}`;
  const header = ['job', 'first seen', 'last seen', 'decisions', 'blocked', 'would-block', 'bytes out', 'hosts'];
  const rows = result.jobs.map((j) => [j.job, j.first, j.last, String(j.decisions), String(j.blocked), String(j.wouldBlock), bytes(j.bytesOut), j.hosts.join(' ')]);
  if (format === 'markdown') {
    const line = (cells: string[]) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`;
    return [`### ${title}`, '', line(header), line(header.map(() => '---')), ...rows.map(line), ''].join('\n');
  }
  const widths = header.map((h, i) => rows.reduce((w, r) => Math.max(w, r[i]!.length), h.length));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [title, '', line(header), ...rows.map(line), ''].join('\n');
}
