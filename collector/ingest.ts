import type { IncomingMessage } from 'node:http';
import { gunzip } from 'node:zlib';
import type { EgressEvent } from '../events/schema.js';
import type { RejectedLine } from '../events/delivery/ingest-url.js';
import { EventValidationError, validateEvent } from '../events/validate.js';

export class IngestError extends Error {
  constructor(
    readonly status: 400 | 413 | 415,
    message: string,
    /** Lines refused one by one, when that is why the batch was refused. */
    readonly rejected: RejectedLine[] = [],
  ) {
    super(message);
  }
}

export interface IngestLimits {
  /** Request body bytes as sent (compressed or not). */
  maxBodyBytes: number;
  /** Body bytes after decompression. */
  maxDecodedBytes: number;
  maxEvents: number;
}

/** Read the request body, refusing more than `max` bytes without reading it all. */
export function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (declared > max) {
      reject(new IngestError(413, `batch of ${declared} bytes is over the limit of ${max} bytes`));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > max) {
        failed = true;
        reject(new IngestError(413, `batch is over the limit of ${max} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
  });
}

function decode(body: Buffer, encoding: string | undefined, limits: IngestLimits): Promise<Buffer> {
  const enc = (encoding ?? 'identity').trim().toLowerCase();
  if (enc === 'identity' || enc === '') {
    return Promise.resolve(body);
  }
  if (enc !== 'gzip' && enc !== 'x-gzip') return Promise.reject(new IngestError(415, `content-encoding "${enc}" is not supported (use gzip or none)`));
  return new Promise((resolve, reject) => {
    gunzip(body, { maxOutputLength: limits.maxDecodedBytes }, (err, out) => {
      if (!err) resolve(out);
      else if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
        reject(new IngestError(413, `batch decompresses to more than ${limits.maxDecodedBytes} bytes`));
      } else reject(new IngestError(400, `body is not valid gzip: ${err.message}`));
    });
  });
}

/**
 * UTF-8 bytes of a dictionary string at most: PostgreSQL's unique index on eg_strings(text) refuses an entry over 2,704
 * bytes (fewer when it does not compress), which failed the whole batch. A sidecar writes such a host: a CONNECT to a
 * long junk target is an invalid-host decision naming it as written (cut at 4,096 characters).
 */
export const MAX_DICTIONARY_TEXT_BYTES = 2048;

/** String.prototype.isWellFormed (ES2024; node 20 has it, this TypeScript lib does not): no lone UTF-16 surrogate. */
const isWellFormed = (text: string): boolean => (text as string & { isWellFormed(): boolean }).isWellFormed();

/**
 * A string the stores keep as text, refused when a store cannot keep it as it is: a lone surrogate, which has no UTF-8
 * form (encoding writes U+FFFD, so two ids may become one key); and, for a `dictionary` string (the host and the CI
 * context), NUL, which PostgreSQL's text type refuses, or more than MAX_DICTIONARY_TEXT_BYTES. So its line is reported
 * and the rest of its batch stored: PostgreSQL failed the whole batch on such a string (503), which a stream client
 * sent again and again, with everything queued behind it. Here, not in validateEvent: a report of an events file
 * shows such an event. Native checks: fewer instructions than a regular expression or a loop (docs/collector.md,
 * "Review of the sixth round's ingest and search changes").
 */
function checkStorable(v: unknown, key: string, dictionary: boolean): void {
  if (typeof v !== 'string') return;
  if (dictionary) {
    if (v.includes('\0')) throw new EventValidationError(`"${key}" holds a NUL character`);
    // At most 3 bytes of UTF-8 per UTF-16 unit: only a longer string can be over.
    if (v.length > MAX_DICTIONARY_TEXT_BYTES / 3 && Buffer.byteLength(v) > MAX_DICTIONARY_TEXT_BYTES) {
      throw new EventValidationError(`"${key}" is longer than ${MAX_DICTIONARY_TEXT_BYTES} bytes of UTF-8`);
    }
  }
  if (!isWellFormed(v)) throw new EventValidationError(`"${key}" holds a lone UTF-16 surrogate`);
}

/** A valid event whose text every store can keep (checkStorable); throws EventValidationError. */
export function storableEvent(event: EgressEvent): EgressEvent {
  checkStorable(event.id, 'id', false);
  checkStorable(event.host, 'host', true);
  const ci = event.event === 'decision' ? event.ci : undefined;
  if (ci) {
    // The CI context's text that becomes dictionary strings (its repository, and the job key: job_id or the other three).
    checkStorable(ci.repository, 'ci.repository', true);
    checkStorable(ci.run_id, 'ci.run_id', true);
    checkStorable(ci.job, 'ci.job', true);
    checkStorable(ci.job_id, 'ci.job_id', true);
  }
  return event;
}

export interface ParsedBatch {
  events: EgressEvent[];
  rejected: RejectedLine[];
}

/**
 * Parse and validate an NDJSON batch line by line: valid events are kept, invalid lines are reported by line
 * number (one junk event must not cost the events around it). A batch with no valid event at all is a 400.
 */
export function parseBatch(text: string, maxEvents: number): ParsedBatch {
  const events: EgressEvent[] = [];
  const rejected: RejectedLine[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    if (events.length + rejected.length >= maxEvents) throw new IngestError(413, `batch has more than ${maxEvents} events`);
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      rejected.push({ line: i + 1, error: `not JSON (${(err as Error).message})` });
      continue;
    }
    try {
      events.push(storableEvent(validateEvent(value)));
    } catch (err) {
      if (!(err instanceof EventValidationError)) throw err;
      rejected.push({ line: i + 1, error: err.message });
    }
  }
  if (events.length === 0) {
    const first = rejected[0];
    throw new IngestError(400, first ? `no valid event in the batch (line ${first.line}: ${first.error})` : 'the batch holds no events', rejected);
  }
  return { events, rejected };
}

export async function readBatch(req: IncomingMessage, limits: IngestLimits): Promise<ParsedBatch> {
  const body = await readBody(req, limits.maxBodyBytes);
  const decoded = await decode(body, req.headers['content-encoding'], limits);
  if (decoded.length > limits.maxDecodedBytes) throw new IngestError(413, `batch is over the limit of ${limits.maxDecodedBytes} bytes`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(decoded);
  } catch {
    throw new IngestError(400, 'body is not UTF-8');
  }
  return parseBatch(text, limits.maxEvents);
}
