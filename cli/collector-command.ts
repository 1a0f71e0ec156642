import pino from 'pino';
import { startCollector } from '../collector/server.js';
import { parseListen } from '../config/load-config.js';
import { parseArgs, processIo, single, UsageError, type CommandIo, type OptionSpecs } from './args.js';

export const COLLECTOR_USAGE = 'egress-guard collector [--listen HOST:PORT] [--db FILE|postgres://...] [--token TOKEN] [--retention-days DAYS] [--log-level LEVEL]';
const OPTIONS: OptionSpecs = {
  listen: { type: 'string' },
  db: { type: 'string' },
  token: { type: 'string' },
  'retention-days': { type: 'string' },
  'log-level': { type: 'string' },
};

/**
 * `egress-guard collector`: run the collector until SIGINT/SIGTERM. Settings: --listen
 * (EGRESS_COLLECTOR_LISTEN, default 127.0.0.1:8080), --db (EGRESS_COLLECTOR_DB, default
 * ./egress-guard-collector.db), --token (EGRESS_COLLECTOR_TOKEN), --retention-days (EGRESS_COLLECTOR_RETENTION_DAYS,
 * default: keep everything).
 */
export async function collectorCommand(argv: readonly string[], io: CommandIo = processIo()): Promise<number> {
  const args = parseArgs(argv, OPTIONS);
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
  const listen = parseListen(single(args, 'listen') ?? io.env.EGRESS_COLLECTOR_LISTEN ?? '127.0.0.1:8080', 'listen');
  const db = single(args, 'db') ?? io.env.EGRESS_COLLECTOR_DB ?? 'egress-guard-collector.db';
  const token = single(args, 'token') ?? (io.env.EGRESS_COLLECTOR_TOKEN || undefined);
  const retentionText = single(args, 'retention-days') ?? (io.env.EGRESS_COLLECTOR_RETENTION_DAYS || undefined);
  const retentionDays = retentionText === undefined ? undefined : Number(retentionText);
  if (retentionDays !== undefined && !(Number.isInteger(retentionDays) && retentionDays >= 1)) {
    throw new UsageError(`retention-days: "${retentionText}" is not a whole number of days (1 or more)`);
  }
  const log = pino({ level: single(args, 'log-level') ?? 'info', base: undefined, timestamp: pino.stdTimeFunctions.isoTime }, io.stdout);
  if (!token) log.warn('collector: no --token: anyone who can reach the listen address can add events');
  let collector;
  try {
    collector = await startCollector({ listen, db, ...(token && { token }), ...(retentionDays !== undefined && { retentionDays }), log });
  } catch (err) {
    // Its own result: it could not start (exit 1).
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
}
