import { writeFileSync } from 'node:fs';
import { loadEvents } from '../report/load-events.js';
import { policyFromFile, replay, type ReplayResult } from '../report/replay.js';
import { plural, renderPolicyYaml, suggestPolicy } from '../report/suggest.js';
import { destinationKey } from '../report/summary.js';
import { oneSource, parseArgs, processIo, readText, single, UsageError, type CommandIo, type OptionSpecs } from './args.js';

export const POLICY_USAGE =
  'egress-guard policy suggest [--collapse N] [--paths] [--job JOB] [--output FILE] EVENTS | policy replay --policy FILE [--format table|json] [--job JOB] EVENTS';
const SUGGEST_OPTIONS: OptionSpecs = { collapse: { type: 'string' }, job: { type: 'string' }, output: { type: 'string' }, paths: { type: 'boolean' } };
const REPLAY_OPTIONS: OptionSpecs = { policy: { type: 'string' }, job: { type: 'string' }, format: { type: 'string' } };

function renderReplay(result: ReplayResult, policyFile: string, source: string): string {
  const checked = result.decisions - result.ignored;
  const ignored = result.ignored > 0 ? ` (${plural(result.ignored, 'malformed request')} left out)` : '';
  if (result.blocked.length === 0) return `${policyFile}: a block run would have allowed all ${plural(checked, 'decision')} of ${source}${ignored}.\n`;
  const count = result.blocked.reduce((n, b) => n + b.count, 0);
  const lines = [
    `${policyFile}: a block run would have blocked ${count} of ${plural(checked, 'decision')} (${plural(result.blocked.length, 'destination')}) of ${source}${ignored}:`,
  ];
  // A loop, not Math.max(...): a spread of more than ~120,000 values (destinations of a DNS tunnel) overflows the stack.
  const width = result.blocked.reduce((w, b) => Math.max(w, destinationKey(b.host, b.port).length), 0);
  for (const b of result.blocked) {
    lines.push(`  ${destinationKey(b.host, b.port).padEnd(width)}  ${b.kinds.join(',').padEnd(11)} ${String(b.count).padStart(5)}x  ${b.reason}: ${b.message}`);
  }
  return `${lines.join('\n')}\n`;
}

async function suggest(argv: readonly string[], io: CommandIo): Promise<number> {
  const args = parseArgs(argv, SUGGEST_OPTIONS);
  const collapseText = single(args, 'collapse');
  if (collapseText !== undefined && !/^\d+$/.test(collapseText)) throw new UsageError('--collapse takes a whole number (subdomains of one parent)');
  const collapse = collapseText === undefined ? undefined : Number(collapseText);
  if (collapse !== undefined && collapse < 2) throw new UsageError('--collapse must be 2 or more');
  const loaded = await loadEvents(oneSource(args.positionals), single(args, 'job'));
  const paths = args.flags.has('paths');
  args.flags.delete('paths');
  const suggestion = suggestPolicy(loaded.events, { ...(collapse !== undefined && { collapse }), ...(paths && { paths }) });
  const yaml = renderPolicyYaml(suggestion, loaded.source);
  const output = single(args, 'output');
  if (output) writeFileSync(output, yaml);
  else io.stdout.write(yaml);
  if (suggestion.decisions === 0) io.stderr.write(`egress-guard: no decision events in ${loaded.source}; the policy allows nothing\n`);
  return 0;
}

async function replayCommand(argv: readonly string[], io: CommandIo): Promise<number> {
  const args = parseArgs(argv, REPLAY_OPTIONS);
  const policyFile = single(args, 'policy');
  if (!policyFile) throw new UsageError('replay needs --policy FILE');
  const format = single(args, 'format') ?? 'table';
  if (format !== 'table' && format !== 'json') throw new UsageError('--format must be table or json');
  const policy = policyFromFile(readText(policyFile, 'policy file'), policyFile);
  const loaded = await loadEvents(oneSource(args.positionals), single(args, 'job'));
  const result = replay(policy, loaded.events);
  io.stdout.write(format === 'json' ? `${JSON.stringify(result, null, 2)}\n` : renderReplay(result, policyFile, loaded.source));
  return result.blocked.length > 0 ? 1 : 0;
}

/** `egress-guard policy suggest|replay`. Replay exits 1 when the policy would block anything. */
export async function policyCommand(argv: readonly string[], io: CommandIo = processIo()): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'suggest') return suggest(rest, io);
  if (sub === 'replay') return replayCommand(rest, io);
  throw new UsageError(sub ? `unknown policy command "${sub}"` : 'policy needs a command: suggest or replay');
}
