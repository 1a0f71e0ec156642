import { readFileSync, writeFileSync } from 'node:fs';
import pino from 'pino';
import { ConfigError, loadConfig, parseListen } from '../config/load-config.js';
import { PolicyError } from '../policy/index.js';
import { parseArgs, rejectUnknown, single, UsageError, type CommandIo } from './args.js';
import { EventValidationError } from '../events/validate.js';
import { loadEvents } from '../report/load-events.js';
import { proxyEnvironment, renderGithubEnv, renderShellExports } from './proxy-env.js';
import { policyFromFile, replay, type ReplayResult } from '../report/replay.js';
import { buildReport, renderReport, REPORT_FORMATS, type ReportFormat } from '../report/format.js';
import { startCollector } from '../collector/server.js';
import { parseJobSteps, StepsError } from '../report/steps.js';
import { plural, renderPolicyYaml, suggestPolicy } from '../report/suggest.js';
import { destinationKey } from '../report/summary.js';

const defaultIo = (): CommandIo => ({ stdout: process.stdout, stderr: process.stderr, env: process.env });

/** Run a command body; usage and input errors print one line and exit 2. */
async function guarded(io: CommandIo, usage: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof UsageError || err instanceof PolicyError || err instanceof ConfigError || err instanceof StepsError || err instanceof EventValidationError) {
      io.stderr.write(`egress-guard: ${err.message}\n${err instanceof UsageError ? `usage: ${usage}\n` : ''}`);
      return 2;
    }
    throw err;
  }
}

function oneSource(positionals: string[]): string {
  if (positionals.length !== 1) throw new UsageError(positionals.length === 0 ? 'name an events file (or - or a collector URL)' : `unexpected argument "${positionals[1]}"`);
  return positionals[0]!;
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

const REPORT_USAGE = 'egress-guard report [--format table|markdown|json] [--steps JOB.json] [--job JOB] EVENTS|-|COLLECTOR_URL';

/** `egress-guard report`: what a job connected to, as a table, markdown (for $GITHUB_STEP_SUMMARY) or JSON. */
export async function reportCommand(argv: string[], io: CommandIo = defaultIo()): Promise<number> {
  return guarded(io, REPORT_USAGE, async () => {
    const args = parseArgs(argv);
    rejectUnknown(args, ['format', 'steps', 'job', 'collector']);
    const format = (single(args, 'format') ?? 'table') as ReportFormat;
    if (!REPORT_FORMATS.includes(format)) throw new UsageError(`--format must be one of ${REPORT_FORMATS.join(', ')}`);
    const collector = single(args, 'collector');
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
    io.stdout.write(renderReport(buildReport(loaded.events, loaded.source, steps), format));
    return 0;
  });
}

const POLICY_USAGE = 'egress-guard policy suggest [--collapse N] [--job JOB] [--output FILE] EVENTS | policy replay --policy FILE [--format table|json] [--job JOB] EVENTS';

function renderReplay(result: ReplayResult, policyFile: string, source: string): string {
  const checked = result.decisions - result.ignored;
  const ignored = result.ignored > 0 ? ` (${plural(result.ignored, 'malformed request')} left out)` : '';
  if (result.blocked.length === 0) return `${policyFile}: a block run would have allowed all ${plural(checked, 'decision')} of ${source}${ignored}.\n`;
  const count = result.blocked.reduce((n, b) => n + b.count, 0);
  const lines = [`${policyFile}: a block run would have blocked ${count} of ${plural(checked, 'decision')} (${plural(result.blocked.length, 'destination')}) of ${source}${ignored}:`];
  const width = Math.max(...result.blocked.map((b) => destinationKey(b.host, b.port).length));
  for (const b of result.blocked) {
    lines.push(`  ${destinationKey(b.host, b.port).padEnd(width)}  ${b.kinds.join(',').padEnd(11)} ${String(b.count).padStart(5)}x  ${b.reason}: ${b.message}`);
  }
  return `${lines.join('\n')}\n`;
}

/** `egress-guard policy suggest|replay`. Replay exits 1 when the policy would block anything. */
export async function policyCommand(argv: string[], io: CommandIo = defaultIo()): Promise<number> {
  return guarded(io, POLICY_USAGE, async () => {
    const [sub, ...rest] = argv;
    const args = parseArgs(rest);
    if (sub === 'suggest') {
      rejectUnknown(args, ['collapse', 'job', 'output']);
      const collapseText = single(args, 'collapse');
      if (collapseText !== undefined && !/^\d+$/.test(collapseText)) throw new UsageError('--collapse takes a whole number (subdomains of one parent)');
      const collapse = collapseText === undefined ? undefined : Number(collapseText);
      if (collapse !== undefined && collapse < 2) throw new UsageError('--collapse must be 2 or more');
      const loaded = await loadEvents(oneSource(args.positionals), single(args, 'job'));
      const suggestion = suggestPolicy(loaded.events, { ...(collapse !== undefined && { collapse }) });
      const yaml = renderPolicyYaml(suggestion, loaded.source);
      const output = single(args, 'output');
      if (output) writeFileSync(output, yaml);
      else io.stdout.write(yaml);
      if (suggestion.decisions === 0) io.stderr.write(`egress-guard: no decision events in ${loaded.source}; the policy allows nothing\n`);
      return 0;
    }
    if (sub === 'replay') {
      rejectUnknown(args, ['policy', 'job', 'format']);
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
    throw new UsageError(sub ? `unknown policy command "${sub}"` : 'policy needs a command: suggest or replay');
  });
}

const ENV_USAGE = 'egress-guard env [--format shell|github] [--listen HOST:PORT] [--policy FILE]';

/**
 * `egress-guard env`: the environment that makes tools use the proxy at the configured listen address
 * (flags, EGRESS_LISTEN or the policy file), as `export` lines or lines for $GITHUB_ENV.
 */
export async function envCommand(argv: string[], io: CommandIo = defaultIo()): Promise<number> {
  return guarded(io, ENV_USAGE, async () => {
    const args = parseArgs(argv);
    const format = single(args, 'format') ?? 'shell';
    if (format !== 'shell' && format !== 'github') throw new UsageError('--format must be shell or github');
    if (args.positionals.length > 0) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
    const flags = new Map(args.flags);
    flags.delete('format');
    const config = loadConfig({ flags, env: io.env, readFile: (path) => readFileSync(path, 'utf8') });
    const vars = proxyEnvironment(config.listen, io.env);
    io.stdout.write(format === 'github' ? renderGithubEnv(vars) : renderShellExports(vars));
    return 0;
  });
}

const COLLECTOR_USAGE = 'egress-guard collector [--listen HOST:PORT] [--db FILE|postgres://...] [--token TOKEN] [--log-level LEVEL]';

/**
 * `egress-guard collector`: run the collector until SIGINT/SIGTERM. Settings: --listen
 * (EGRESS_COLLECTOR_LISTEN, default 127.0.0.1:8080), --db (EGRESS_COLLECTOR_DB, default
 * ./egress-guard-collector.db), --token (EGRESS_COLLECTOR_TOKEN).
 */
export async function collectorCommand(argv: string[], io: CommandIo = defaultIo()): Promise<number> {
  return guarded(io, COLLECTOR_USAGE, async () => {
    const args = parseArgs(argv);
    rejectUnknown(args, ['listen', 'db', 'token', 'log-level']);
    if (args.positionals.length > 0) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
    const listen = parseListen(single(args, 'listen') ?? io.env.EGRESS_COLLECTOR_LISTEN ?? '127.0.0.1:8080', 'listen');
    const db = single(args, 'db') ?? io.env.EGRESS_COLLECTOR_DB ?? 'egress-guard-collector.db';
    const token = single(args, 'token') ?? (io.env.EGRESS_COLLECTOR_TOKEN || undefined);
    const log = pino({ level: single(args, 'log-level') ?? 'info', base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, io.stdout);
    if (!token) log.warn('collector: no --token: anyone who can reach the listen address can add events');
    let collector;
    try {
      collector = await startCollector({ listen, db, ...(token && { token }), log });
    } catch (err) {
      io.stderr.write(`egress-guard collector: cannot start: ${(err as Error).message}\n`);
      return 1;
    }
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    log.info('collector: stopping');
    await collector.close();
    return 0;
  });
}
