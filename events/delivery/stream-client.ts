import http from 'node:http';
import https from 'node:https';
import { gzipSync } from 'node:zlib';
import type { Logger } from 'pino';
import type { EventLog } from '../event-log.js';
import { MemoryBuffer, type EventBuffer, type PendingBatch } from './event-buffer.js';
import { post } from './http-post.js';
import { ingestUrl, type RejectedLine } from './ingest-url.js';
import { SpoolBuffer } from './spool.js';

export interface EventStreamOptions {
  /** Collector base URL (EGRESS_COLLECTOR_URL); events go to <url>/api/v1/events. */
  url: string;
  token?: string;
  /** On-disk spool directory (EGRESS_SPOOL_DIR); without it events wait in a bounded memory queue. */
  spoolDir?: string;
  events: EventLog;
  log?: Logger;
  batchMaxEvents?: number;
  batchMaxBytes?: number;
  /** How long an event may wait for a batch to fill. */
  flushIntervalMs?: number;
  /** Memory queue bound (events), when there is no spool. */
  maxQueue?: number;
  maxSpoolBytes?: number;
  /** Batches at least this large are sent gzip-compressed. */
  gzipMinBytes?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  requestTimeoutMs?: number;
  /** How long stop() tries to deliver what is left. */
  stopTimeoutMs?: number;
  /** The keep-alive agent's maker (default node's own): the sidecar's marks its sockets (net/socket-mark.ts). */
  createAgent?: (protocol: 'http:' | 'https:', options: http.AgentOptions) => http.Agent;
}

export interface EventStreamStats {
  /** Events waiting for delivery (memory queue or spool). */
  queued: number;
  /** Events the collector acknowledged. */
  sent: number;
  /** Events lost: queue or spool full, a batch the collector refused whole, or unsent at stop without a spool. */
  dropped: number;
  /** Events the collector refused one by one as invalid (the rest of their batch was stored). */
  rejected: number;
  /** Events written to the on-disk spool. */
  spooled: number;
  /** Delivery attempts that failed and will be retried. */
  failures: number;
  /** Bytes in the spool directory. */
  spoolBytes: number;
  lastError?: string;
}

export interface EventStream {
  stop(): Promise<void>;
  stats(): EventStreamStats;
}

type Outcome = { kind: 'delivered'; rejected: RejectedLine[] } | { kind: 'rejected'; why: string } | { kind: 'too-large' } | { kind: 'retry'; why: string };

/** The lines a collector's 2xx answer says it refused (`{"rejected":[{"line":L,"error":"..."}]}`); none if it does not say. */
function rejectedLines(body: string): RejectedLine[] {
  try {
    const rejected = (JSON.parse(body) as { rejected?: unknown }).rejected;
    return Array.isArray(rejected) ? rejected.filter((r): r is RejectedLine => typeof r?.line === 'number' && typeof r?.error === 'string') : [];
  } catch {
    return [];
  }
}

/**
 * Streams every event of an EventLog to a collector as NDJSON POST batches: bearer token, gzip for
 * large batches, exponential backoff with jitter on failure, and either a bounded memory queue or an
 * on-disk spool. Delivery is at least once; the collector stores each event id once.
 */
export function startEventStream(options: EventStreamOptions): EventStream {
  const url = ingestUrl(options.url);
  const log = options.log ?? options.events.log;
  const batchMaxEvents = options.batchMaxEvents ?? 500;
  const batchMaxBytes = options.batchMaxBytes ?? 1024 * 1024;
  const flushIntervalMs = options.flushIntervalMs ?? 1000;
  const gzipMinBytes = options.gzipMinBytes ?? 4096;
  const backoffInitialMs = options.backoffInitialMs ?? 500;
  const backoffMaxMs = options.backoffMaxMs ?? 30_000;
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const protocol = url.protocol === 'https:' ? 'https:' : 'http:';
  const agent = options.createAgent?.(protocol, { keepAlive: true }) ?? (protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true }));

  const spool = options.spoolDir ? new SpoolBuffer(options.spoolDir, { maxBytes: options.maxSpoolBytes ?? 256 * 1024 * 1024 }) : undefined;
  const buffer: EventBuffer = spool ?? new MemoryBuffer(options.maxQueue ?? 10_000);
  const counters = { sent: 0, dropped: 0, rejected: 0, spooled: 0, failures: 0 };
  let lastError: string | undefined;
  let currentMaxEvents = batchMaxEvents;
  let backoffMs = backoffInitialMs;
  let flushTimer: NodeJS.Timeout | undefined;
  let retryTimer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let stopped = false;
  let closed = false;
  let droppedWarned = false;

  if (spool && spool.pending > 0) log.info({ pending: spool.pending, spool: options.spoolDir }, 'event stream: delivering spooled events');

  const unsubscribe = options.events.subscribe((event) => {
    if (stopped) return;
    if (!buffer.append(JSON.stringify(event))) {
      counters.dropped++;
      if (!droppedWarned) log.warn({ queued: buffer.pending }, 'event stream: queue full, dropping events');
      droppedWarned = true;
      return;
    }
    if (spool) counters.spooled++;
    if (buffer.pending >= currentMaxEvents) kick();
    else if (!flushTimer && !retryTimer) flushTimer = unref(setTimeout(kick, flushIntervalMs));
  });

  function unref(timer: NodeJS.Timeout): NodeJS.Timeout {
    timer.unref();
    return timer;
  }

  /** Start a delivery run now unless one is running or waiting out a backoff. */
  function kick(): void {
    clearTimeout(flushTimer);
    flushTimer = undefined;
    if (running || retryTimer || stopped) return;
    running = deliver().finally(() => {
      running = undefined;
    });
  }

  async function deliver(): Promise<void> {
    for (;;) {
      const batch = buffer.take(currentMaxEvents, batchMaxBytes);
      if (!batch) return;
      const outcome = await send(batch);
      if (closed) return;
      if (outcome.kind === 'delivered') {
        batch.commit();
        counters.sent += batch.lines.length - outcome.rejected.length;
        if (outcome.rejected.length > 0) {
          // The valid events of the batch were stored; these lines cannot be, however often they are sent.
          counters.rejected += outcome.rejected.length;
          lastError = `collector rejected line ${outcome.rejected[0]!.line} of a batch: ${outcome.rejected[0]!.error}`;
          log.error({ rejected: outcome.rejected.length, first: outcome.rejected[0], events: batch.lines.length }, 'event stream: collector refused invalid events of a batch');
        }
        backoffMs = backoffInitialMs;
        currentMaxEvents = Math.min(batchMaxEvents, currentMaxEvents * 2);
        droppedWarned = false;
      } else if (outcome.kind === 'too-large' && batch.lines.length > 1) {
        currentMaxEvents = Math.max(1, Math.floor(batch.lines.length / 2));
      } else if (outcome.kind === 'rejected' || outcome.kind === 'too-large') {
        // Retrying a batch the collector calls invalid cannot succeed; keeping it would block the stream.
        batch.commit();
        counters.dropped += batch.lines.length;
        lastError = outcome.kind === 'rejected' ? outcome.why : 'event larger than the collector accepts';
        log.error({ events: batch.lines.length, error: lastError }, 'event stream: collector rejected a batch, dropped');
      } else {
        counters.failures++;
        lastError = outcome.why;
        if (stopped) return;
        const delay = Math.round(backoffMs * (0.5 + Math.random() * 0.5));
        log.warn({ error: outcome.why, retry_ms: delay, queued: buffer.pending }, 'event stream: delivery failed, will retry');
        backoffMs = Math.min(backoffMaxMs, backoffMs * 2);
        retryTimer = unref(
          setTimeout(() => {
            retryTimer = undefined;
            kick();
          }, delay),
        );
        return;
      }
    }
  }

  async function send(batch: PendingBatch): Promise<Outcome> {
    let body = Buffer.from(`${batch.lines.join('\n')}\n`);
    const headers: Record<string, string> = { 'content-type': 'application/x-ndjson' };
    if (body.length >= gzipMinBytes) {
      body = gzipSync(body);
      headers['content-encoding'] = 'gzip';
    }
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    try {
      const res = await post(url, body, headers, { timeoutMs: requestTimeoutMs, agent });
      if (res.status >= 200 && res.status < 300) return { kind: 'delivered', rejected: rejectedLines(res.body) };
      if (res.status === 413) return { kind: 'too-large' };
      const why = `collector answered ${res.status}: ${res.body.slice(0, 300)}`;
      // 400/415/422: the batch itself is wrong. Auth, rate limits and server errors may clear up.
      if (res.status === 400 || res.status === 415 || res.status === 422) return { kind: 'rejected', why };
      return { kind: 'retry', why };
    } catch (err) {
      return { kind: 'retry', why: (err as Error).message };
    }
  }

  return {
    stats: () => ({
      queued: buffer.pending,
      sent: counters.sent,
      dropped: counters.dropped + (spool?.discarded ?? 0),
      rejected: counters.rejected,
      spooled: counters.spooled,
      failures: counters.failures,
      spoolBytes: spool?.diskBytes ?? 0,
      ...(lastError !== undefined && { lastError }),
    }),
    async stop() {
      if (stopped) return;
      unsubscribe();
      clearTimeout(flushTimer);
      clearTimeout(retryTimer);
      flushTimer = retryTimer = undefined;
      await running;
      // One last attempt, bounded in time; with a spool whatever is left stays on disk for next time.
      if (buffer.pending > 0) {
        stopped = true;
        const deadline = new Promise<void>((resolve) => unref(setTimeout(resolve, options.stopTimeoutMs ?? 5000)));
        await Promise.race([deliver(), deadline]);
      }
      stopped = true;
      if (!spool && buffer.pending > 0) {
        counters.dropped += buffer.pending;
        log.warn({ events: buffer.pending }, 'event stream: undelivered events lost at stop (no spool directory)');
      }
      closed = true;
      agent.destroy();
      buffer.close();
    },
  };
}
