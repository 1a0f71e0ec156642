import type { IncomingMessage } from 'node:http';
import { gunzip } from 'node:zlib';
import type { EgressEvent } from '../events/schema.js';
import type { RejectedLine } from '../events/delivery/ingest-url.js';
import { EventValidationError, storableEvent, validateEvent } from '../events/validate.js';

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
