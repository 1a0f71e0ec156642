import { loadEvents } from '../report/load-events.js';
import { buildReport, renderReport, REPORT_FORMATS, type ReportFormat } from '../report/format.js';
import { parseJobSteps } from '../report/steps.js';
import { fetchHostSightings, renderHostSightings, timeArgument } from '../report/host-sightings.js';
import { oneSource, parseArgs, processIo, readText, single, UsageError, type CommandIo, type OptionSpecs } from './args.js';

export const REPORT_USAGE =
  'egress-guard report [--format table|markdown|json] [--steps JOB.json] [--job JOB] EVENTS|-|COLLECTOR_URL | report --collector URL --host PATTERN [--since 30d|ISO] [--until ISO] [--decision D]';
const OPTIONS: OptionSpecs = {
  format: { type: 'string' },
  steps: { type: 'string' },
  job: { type: 'string' },
  collector: { type: 'string' },
  host: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
  decision: { type: 'string' },
};

/** `egress-guard report`: what a job connected to, as a table, markdown (for $GITHUB_STEP_SUMMARY) or JSON. */
export async function reportCommand(argv: readonly string[], io: CommandIo = processIo()): Promise<number> {
  const args = parseArgs(argv, OPTIONS);
  const format = (single(args, 'format') ?? 'table') as ReportFormat;
  if (!REPORT_FORMATS.includes(format)) throw new UsageError(`--format must be one of ${REPORT_FORMATS.join(', ')}`);
  const collector = single(args, 'collector');
  const host = single(args, 'host');
  if (host !== undefined) return hostReport(collector ?? args.positionals[0], host, args, format, io);
  const source = collector && args.positionals.length === 0 ? collector : oneSource(args.positionals);
  const stepsFile = single(args, 'steps');
  let steps;
  if (stepsFile) {
    let json: unknown;
    try {
      json = JSON.parse(readText(stepsFile, 'steps file'));
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new UsageError(`${stepsFile} is not JSON: ${(err as Error).message}`);
    }
    steps = parseJobSteps(json);
  }
  const loaded = await loadEvents(source, single(args, 'job'));
  if (loaded.events.length === 0) io.stderr.write(`egress-guard: no decision events in ${loaded.source}\n`);
  // Colour for a person at a terminal; never in a pipe, a file or a CI log, nor with NO_COLOR set.
  const color = (io.stdout as { isTTY?: boolean }).isTTY === true && !io.env.NO_COLOR;
  io.stdout.write(renderReport(buildReport(loaded.events, loaded.source, steps), format, { color }));
  return 0;
}

/** `report --collector URL --host PATTERN`: which jobs talked to a host, and when (the collector's search). */
async function hostReport(collector: string | undefined, host: string, args: ReturnType<typeof parseArgs>, format: ReportFormat, io: CommandIo): Promise<number> {
  if (!collector || !/^https?:\/\//i.test(collector)) throw new UsageError('--host searches a collector: give --collector URL');
  const time = (name: 'since' | 'until') => {
    const text = single(args, name);
    if (text === undefined) return undefined;
    const iso = timeArgument(text);
    if (!iso) throw new UsageError(`--${name}: "${text}" is not 30d, 12h, 90m or an ISO time`);
    return iso;
  };
  const since = time('since');
  const until = time('until');
  const decision = single(args, 'decision');
  const result = await fetchHostSightings(collector, { host, ...(since && { since }), ...(until && { until }), ...(decision && { decision }) });
  io.stdout.write(renderHostSightings(result, format));
  return 0;
}
